-- Semantic memory: notes an agent stores with its `remember` tool and finds
-- again with `recall`, per tenant and agent, ranked by full-text relevance.
-- Each note carries its expiry (from the agent's retention period); expired
-- notes are never returned and are purged on schedule.
CREATE TABLE memories (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_name    TEXT COLLATE "C" NOT NULL,
    execution_id  TEXT,               -- where the note was written; informational, notes outlive executions
    content       TEXT NOT NULL,
    tags          TEXT NOT NULL,      -- a JSON array of strings
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    -- English stemming, like the porter stemmer of the SQLite index.
    search        TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content || ' ' || tags)) STORED,
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX memories_scope ON memories (tenant_id, agent_name, created_at);
CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX memories_search ON memories USING GIN (search);
