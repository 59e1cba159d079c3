-- What a search asked for (the query string of a QIDO-RS or FHIR search), beside the action.
ALTER TABLE audit_log ADD COLUMN query TEXT;
