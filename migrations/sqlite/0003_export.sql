-- Results back to the PACS (SQLite): the outputs to generate per result (DICOM SR and overlay),
-- and the export outbox, one row per output instance per destination.

-- Inserted in the same transaction as the result, so no result loses its outputs on a crash.
CREATE TABLE report_outputs (
    result_id     INTEGER PRIMARY KEY REFERENCES results(id),
    study_uid     TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    run_after     INTEGER NOT NULL DEFAULT 0,
    lease_until   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK (state IN ('pending', 'done', 'failed'))
);
CREATE INDEX report_outputs_claim ON report_outputs(state, run_after);

-- Inserted in the same transaction that indexes the generated outputs.
CREATE TABLE exports (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id        INTEGER NOT NULL REFERENCES results(id),
    study_uid        TEXT NOT NULL,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    output           TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    file_path        TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    UNIQUE (destination, sop_instance_uid),
    CHECK (state IN ('pending', 'sent', 'dead', 'cancelled'))
);
CREATE INDEX exports_claim ON exports(state, next_attempt_at);
CREATE INDEX exports_study ON exports(study_uid);
