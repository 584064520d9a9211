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

-- A tenant's sandbox CPU counts for its month as each step is recorded:
-- whatever raises an execution's `cpu_ms` (the worker's journal appends
-- and the execution's end, under its lease) adds the difference to the
-- tenant's `usage`, in the same transaction and without another round
-- trip. The month is that of the write (`updated_at`, set with it), UTC.
CREATE TRIGGER executions_count_cpu AFTER UPDATE OF cpu_ms ON executions
WHEN new.cpu_ms > old.cpu_ms
BEGIN
    INSERT INTO usage (tenant_id, period, metric, amount, updated_at)
    VALUES (new.tenant_id, strftime('%Y-%m', new.updated_at / 1000, 'unixepoch'), 'cpu_ms',
            new.cpu_ms - old.cpu_ms, new.updated_at)
    ON CONFLICT (tenant_id, period, metric) DO UPDATE SET amount = usage.amount + excluded.amount,
        updated_at = excluded.updated_at;
END;
