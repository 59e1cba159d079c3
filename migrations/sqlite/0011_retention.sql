-- Retention: when a study's received instances were removed (its results and derived
-- outputs stay). Cleared when the study receives instances again.
ALTER TABLE studies ADD COLUMN purged_at INTEGER;

-- Files a purge has committed to removing, until they are removed: a start after a crash
-- between the commit and the unlink finishes the job before it accepts anything.
CREATE TABLE purged_files (
    file_path   TEXT PRIMARY KEY,
    study_uid   TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
