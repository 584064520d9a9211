-- Quotas per tenant, set by an installation's operator (`codexos tenant
-- quota`). A NULL column takes the installation's default (the `[quotas]`
-- settings); a tenant without a row runs on the defaults alone. What a
-- tenant used is counted in `usage` (foundation), per calendar month.
CREATE TABLE tenant_quotas (
    tenant_id                  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    requests_per_second        BIGINT,
    burst                      BIGINT,
    max_concurrent_executions  BIGINT,
    cpu_seconds_per_month      BIGINT,
    storage_bytes              BIGINT,
    updated_at                 BIGINT NOT NULL
);

-- Counting a tenant's executions that have not finished (the concurrency
-- quota, checked at every creation) reads only those.
CREATE INDEX executions_active ON executions (tenant_id, status)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');

-- Row-level security like every tenant table (0007); the application
-- role's grants come from the default privileges set there.
ALTER TABLE tenant_quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_quotas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_quotas
    USING (codexos_visible(tenant_id)) WITH CHECK (codexos_visible(tenant_id));
