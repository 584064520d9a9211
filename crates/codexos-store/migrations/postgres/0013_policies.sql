-- Tenant policies (docs/policy.md): every version of a tenant's policy
-- bundle, numbered 1, 2, ... per tenant; the current policy is the highest
-- version (a tenant without one gets the default policy CodexOS ships).
-- Versions are never changed or deleted: what decided a past call can
-- always be read back. `modules` is a JSON object of Rego texts by module
-- name, `data` the JSON data document; `sha256` is the digest of both
-- (canonical JSON). A bundle is compiled before it is stored, so every
-- row holds a policy that compiled.
CREATE TABLE policy_bundles (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL CHECK (version > 0),
    modules     TEXT NOT NULL,
    data        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Row-level security like every tenant table (0007).
ALTER TABLE policy_bundles ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_bundles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON policy_bundles
    USING (codexos_visible(tenant_id)) WITH CHECK (codexos_visible(tenant_id));

-- Versions are never changed or deleted, not even by the platform: what
-- decided a past call can always be read back as it was.
REVOKE UPDATE, DELETE ON policy_bundles FROM codexos_app;
