-- Semantic memory: notes an agent stores with its `remember` tool and finds
-- again with `recall`, per tenant and agent, ranked by full-text relevance.
-- Each note carries its expiry (from the agent's retention period); expired
-- notes are never returned and are purged on schedule.
CREATE TABLE memories (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_name    TEXT NOT NULL,
    execution_id  TEXT,               -- where the note was written; informational, notes outlive executions
    content       TEXT NOT NULL,
    tags          TEXT NOT NULL,      -- a JSON array of strings
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX memories_scope ON memories (tenant_id, agent_name, created_at);
CREATE INDEX memories_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;

-- The full-text index over content and tags, kept in step by triggers; the
-- porter stemmer lets "failing tests" find "test failed".
CREATE VIRTUAL TABLE memories_fts USING fts5(
    content, tags, content = 'memories', content_rowid = 'rowid', tokenize = 'porter unicode61'
);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, tags) VALUES (new.rowid, new.content, new.tags);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, tags) VALUES ('delete', old.rowid, old.content, old.tags);
END;
