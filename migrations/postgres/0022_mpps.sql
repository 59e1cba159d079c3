-- Modality Performed Procedure Steps (PS3.4 Annex F) received by the MPPS SCP, and the
-- instances each step lists: a COMPLETED step whose instances have all arrived completes its
-- study at once; a DISCONTINUED step completes what arrived.
CREATE TABLE mpps_steps (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT,
    -- IN PROGRESS, COMPLETED or DISCONTINUED.
    status TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    accession_number TEXT,
    modality TEXT,
    procedure_step_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (status IN ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED'))
);
CREATE INDEX mpps_steps_study ON mpps_steps (study_uid);

CREATE TABLE mpps_instances (
    step_uid TEXT NOT NULL REFERENCES mpps_steps (sop_instance_uid) ON DELETE CASCADE,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT,
    series_uid TEXT,
    PRIMARY KEY (step_uid, sop_instance_uid)
);

-- How each completion was decided: release+quiet, stable-age or mpps.
ALTER TABLE studies ADD COLUMN completed_by TEXT;
