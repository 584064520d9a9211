-- The audit log's tree state per tenant: the size, the hash of the last
-- entry (the next entry's prev_hash) and the frontier of the Merkle tree
-- (its perfect subtrees' roots), so an append never reads older entries.
CREATE TABLE audit_heads (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    size        BIGINT NOT NULL,
    last_hash   TEXT NOT NULL,
    frontier    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Signed checkpoints (signed notes over origin, tree size, root and time),
-- written every N entries and at shutdown. Append-only like the entries.
CREATE TABLE audit_checkpoints (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    size        BIGINT NOT NULL,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, size)
);

-- The platform never rewrites history: the database itself refuses to. (On
-- PostgreSQL the application's role holds no UPDATE or DELETE grant.)
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
