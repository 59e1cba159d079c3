-- Retention: when a study's received instances were removed (its results and derived
-- outputs stay). Cleared when the study receives instances again.
ALTER TABLE studies ADD COLUMN purged_at INTEGER;
