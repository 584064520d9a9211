-- Each tenant's retention policy: how long (milliseconds) finished
-- executions, their events and their checkpoints, and the agents' semantic
-- memory notes are kept. NULL keeps them for ever. A scheduled job of the
-- workers applies it and audits every purge.
CREATE TABLE tenant_retention (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    executions_ms  BIGINT,
    events_ms      BIGINT,
    checkpoints_ms BIGINT,
    memories_ms    BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX executions_finished ON executions (tenant_id, finished_at);
