-- Nodes sharing this database: each writes its row at start and refreshes heartbeat_at;
-- rows whose heartbeat is older than the expiry are removed by any live node.
CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    -- One id per process, so a second process started with the same node id is told apart.
    instance TEXT NOT NULL,
    roles TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Associations (and STOW-RS requests) that delivered instances of a study and are still
-- open, per node: a study completes on its quiet window only when no live node holds one.
-- A dead node's entries go with its row.
CREATE TABLE study_senders (
    study_uid TEXT NOT NULL,
    node_id TEXT NOT NULL REFERENCES cluster_nodes (node_id) ON DELETE CASCADE,
    association_id TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    PRIMARY KEY (study_uid, node_id, association_id)
);
CREATE INDEX study_senders_by_association ON study_senders (node_id, association_id);
