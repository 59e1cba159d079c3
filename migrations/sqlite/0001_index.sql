-- Index of received instances, study completion, jobs and the event log (SQLite).
-- Times are Unix epoch milliseconds (INTEGER) so SQLite and PostgreSQL share one code path.

CREATE TABLE patients (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_key   TEXT NOT NULL UNIQUE,
    patient_id    TEXT,
    patient_name  TEXT,
    birth_date    TEXT,
    sex           TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE studies (
    study_uid          TEXT PRIMARY KEY,
    patient_pk         INTEGER NOT NULL REFERENCES patients(id),
    patient_id         TEXT,
    patient_name       TEXT,
    patient_birth_date TEXT,
    patient_sex        TEXT,
    patient_age        TEXT,
    accession_number   TEXT,
    study_id           TEXT,
    study_date         TEXT,
    study_time         TEXT,
    study_description  TEXT,
    referring_physician TEXT,
    modalities         TEXT NOT NULL DEFAULT '',
    num_series         INTEGER NOT NULL DEFAULT 0,
    num_instances      INTEGER NOT NULL DEFAULT 0,
    status             TEXT NOT NULL,
    version            INTEGER NOT NULL DEFAULT 1,
    first_received_at  INTEGER NOT NULL,
    last_received_at   INTEGER NOT NULL,
    completed_at       INTEGER,
    updated_at         INTEGER NOT NULL,
    CHECK (status IN ('receiving', 'complete'))
);
CREATE INDEX studies_patient_id ON studies(patient_id);
CREATE INDEX studies_status ON studies(status);
CREATE INDEX studies_date ON studies(study_date);

CREATE TABLE series (
    series_uid     TEXT PRIMARY KEY,
    study_uid      TEXT NOT NULL REFERENCES studies(study_uid),
    modality       TEXT,
    body_part      TEXT,
    view_position  TEXT,
    series_number  INTEGER,
    series_description TEXT,
    num_instances  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
CREATE INDEX series_study ON series(study_uid);

CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid       TEXT NOT NULL REFERENCES series(series_uid),
    study_uid        TEXT NOT NULL REFERENCES studies(study_uid),
    sop_class_uid    TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    instance_number  INTEGER,
    rows_            INTEGER,
    columns_         INTEGER,
    frames           INTEGER,
    photometric      TEXT,
    file_path        TEXT NOT NULL,
    file_size        INTEGER NOT NULL,
    received_at      INTEGER NOT NULL,
    calling_ae       TEXT NOT NULL,
    association_id   TEXT NOT NULL,
    study_version    INTEGER NOT NULL
);
CREATE INDEX instances_series ON instances(series_uid);
CREATE INDEX instances_study ON instances(study_uid);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid     TEXT NOT NULL REFERENCES studies(study_uid),
    study_version INTEGER NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'inference',
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (study_uid, study_version, kind)
);
CREATE INDEX jobs_state ON jobs(state, id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL,
    study_uid  TEXT,
    patient_id TEXT,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_study ON events(study_uid, id);
