-- Hospital integration: MPPS, completion reasons, Storage Commitment.
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

-- Storage Commitment (PS3.4 Annex J) requested after a C-STORE export: one row per N-ACTION
-- transaction, resolved by the N-EVENT-REPORT the peer sends (on any node's listener).
CREATE TABLE storage_commitments (
    transaction_uid TEXT PRIMARY KEY,
    export_id BIGINT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    -- requested, committed or failed.
    state TEXT NOT NULL,
    failure_reason TEXT,
    reported_by TEXT,
    requested_at BIGINT NOT NULL,
    reported_at BIGINT,
    CHECK (state IN ('requested', 'committed', 'failed'))
);
CREATE INDEX storage_commitments_export ON storage_commitments (export_id);

-- When the peer confirmed custody of an export (Storage Commitment), if it was asked.
ALTER TABLE exports ADD COLUMN committed_at BIGINT;

-- Orders received as HL7 v2 ORM^O01 / OMI^O23 (inbound MLLP), by accession number: a STAT
-- order raises the urgency floor of its study's results.
CREATE TABLE hl7_orders (
    accession_number TEXT PRIMARY KEY,
    patient_id TEXT,
    placer_order_number TEXT,
    -- ORC-1: NW, XO, CA, ...
    order_control TEXT NOT NULL,
    -- S (STAT), A (ASAP), R (routine), ...
    priority TEXT,
    sending_application TEXT,
    received_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
