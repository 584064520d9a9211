-- Tenant secrets (docs/tenancy.md). Each tenant's data key, wrapped
-- (AES-256-GCM) by the installation's master key: the id of that master key
-- is kept next to it, so a rotation knows what to re-wrap and a process
-- knows which key it needs. The secrets themselves (table `secrets`, from
-- the foundation) are sealed by the data key of version `key_version`;
-- a master key rotation changes this table only.
CREATE TABLE tenant_data_keys (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    master_key_id  TEXT NOT NULL,
    nonce          BLOB NOT NULL,
    wrapped_key    BLOB NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX tenant_data_keys_master_key ON tenant_data_keys (master_key_id);
