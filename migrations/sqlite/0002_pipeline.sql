-- The pipeline: claimable jobs, versioned results, API keys and the read audit (SQLite).

-- Jobs are rebuilt so that only automatic jobs are unique per study version: a reprocess
-- request adds a job (and later a result version) for a version that already has one.
CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid     TEXT NOT NULL REFERENCES studies(study_uid),
    study_version INTEGER NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'inference',
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    model_id      TEXT,
    requested_by  TEXT,
    worker        TEXT,
    lease_until   INTEGER,
    run_after     INTEGER NOT NULL DEFAULT 0,
    started_at    INTEGER,
    finished_at   INTEGER,
    result_id     INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK (kind IN ('inference', 'reprocess')),
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed'))
);
INSERT INTO jobs_new (id, study_uid, study_version, kind, state, attempts, last_error, created_at, updated_at)
    SELECT id, study_uid, study_version, kind, state, attempts, last_error, created_at, updated_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE UNIQUE INDEX jobs_one_per_version ON jobs(study_uid, study_version) WHERE kind = 'inference';
CREATE INDEX jobs_claim ON jobs(state, run_after, id);
CREATE INDEX jobs_study ON jobs(study_uid, id);

CREATE TABLE results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid     TEXT NOT NULL REFERENCES studies(study_uid),
    study_version INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    job_id        INTEGER NOT NULL UNIQUE REFERENCES jobs(id),
    model_id      TEXT NOT NULL,
    model_version TEXT NOT NULL,
    status        TEXT NOT NULL,
    urgency       TEXT NOT NULL,
    patient_id    TEXT,
    body          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (study_uid, version)
);

ALTER TABLE studies ADD COLUMN urgency TEXT;
ALTER TABLE studies ADD COLUMN result_version INTEGER;
ALTER TABLE studies ADD COLUMN result_at INTEGER;
CREATE INDEX studies_urgency ON studies(urgency);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    key_prefix   TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    action      TEXT NOT NULL,
    patient_id  TEXT,
    study_uid   TEXT,
    remote_addr TEXT,
    request_id  TEXT,
    status      INTEGER
);
CREATE INDEX audit_patient ON audit_log(patient_id, at);
CREATE INDEX audit_at ON audit_log(at);
