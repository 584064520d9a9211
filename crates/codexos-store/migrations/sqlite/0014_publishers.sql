-- Signed manifests (docs/manifest.md, "Signature"; docs/tenancy.md, "Publisher keys").
--
-- The publishers' public keys a tenant registered, by key id (derived from the
-- key: the same key has the same id in every tenant). `trusted_at` is when the
-- tenant chose to trust the key (NULL: registered, not trusted). A revoked key
-- (`revoked_at`) is kept, so that the versions it signed still name it, and
-- cannot be registered again.
CREATE TABLE publisher_keys (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    trusted_at  BIGINT,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    PRIMARY KEY (tenant_id, key_id)
);

-- What registration found about a version's signature, and the key that
-- signed it. (SQLite cannot add the composite foreign key to publisher_keys
-- to an existing table; PostgreSQL has it. Keys are never deleted.)
ALTER TABLE agent_versions ADD COLUMN signature_status TEXT NOT NULL DEFAULT 'unsigned'
    CHECK (signature_status IN ('unsigned', 'verified', 'untrusted'));
ALTER TABLE agent_versions ADD COLUMN publisher_key_id TEXT;

-- The SHA-256 of the manifest an execution was created with, checked again
-- when a worker starts it; NULL for executions created before.
ALTER TABLE executions ADD COLUMN manifest_sha256 TEXT;
