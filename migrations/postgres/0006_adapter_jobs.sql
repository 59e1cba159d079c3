-- Asynchronous jobs of the vendor adapters (Pi Health Triage's analyze jobs): the request is
-- kept so a job interrupted by a restart is run again.
CREATE TABLE adapter_jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    request     TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    diagnostics TEXT,
    principal   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CHECK (state IN ('queued', 'running', 'completed', 'failed'))
);
CREATE INDEX adapter_jobs_state ON adapter_jobs(state);
