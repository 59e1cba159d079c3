-- RadAnalyzer V3 adapter (/v3): metering and per-patient measurement history.

-- One row per prediction call that reached billing (single, batch, stream, completed or failed
-- capture session), billable or not; written in the same transaction as its history row.
CREATE TABLE radanalyzer_calls (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL REFERENCES api_keys(id),
    uuid        TEXT,
    call_type   TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    result_code INTEGER NOT NULL,
    billable    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    tier        TEXT NOT NULL,
    rate_cents  INTEGER,
    month       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    CHECK (call_type IN ('single', 'session')),
    CHECK (billable IN (0, 1)),
    CHECK (reason IN ('valid_vhs', 'no_valid_vhs', 'recheck_24h'))
);
-- Monthly usage per key, and the recheck lookup per key and patient.
CREATE INDEX radanalyzer_calls_usage ON radanalyzer_calls(key_id, month, billable);
CREATE INDEX radanalyzer_calls_recheck ON radanalyzer_calls(key_id, uuid, created_at);

-- Valid measurements per key and patient (`uuid`), for historic_vhs / historic_vlas.
CREATE TABLE radanalyzer_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL REFERENCES api_keys(id),
    uuid        TEXT NOT NULL,
    call_id     INTEGER NOT NULL REFERENCES radanalyzer_calls(id),
    measured_at INTEGER NOT NULL,
    vhs         REAL NOT NULL,
    vlas        REAL
);
CREATE INDEX radanalyzer_history_patient ON radanalyzer_history(key_id, uuid, measured_at);
