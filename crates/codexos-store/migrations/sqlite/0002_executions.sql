-- Agents, executions, the event timeline and execution leases.
--
-- agent_versions gains what the registry lists and sorts by: version_key is a
-- precedence key computed by the caller (semver precedence as a byte-sortable
-- string), so "the latest version" is one ordered index lookup.
ALTER TABLE agent_versions ADD COLUMN version_key TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN created_by TEXT;
CREATE INDEX agent_versions_latest ON agent_versions (tenant_id, agent_id, version_key);

-- What an execution ends with (JSON text, written once when it finishes) and
-- its running totals, as columns so that usage and metrics can sum them.
ALTER TABLE executions ADD COLUMN outcome TEXT;
ALTER TABLE executions ADD COLUMN steps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN cost_microdollars BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN cpu_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN peak_memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN wall_ms BIGINT NOT NULL DEFAULT 0;

-- Listing a tenant's executions newest first (ids are time-ordered UUIDv7),
-- filtered by status or by agent; unfiltered listing uses UNIQUE (tenant_id, id).
CREATE INDEX executions_tenant_status ON executions (tenant_id, status, id);
CREATE INDEX executions_tenant_agent_version ON executions (tenant_id, agent_version_id, id);

-- Taking over executions whose worker died: only running rows hold leases.
-- (Queued ones are taken in order through executions_queue.)
CREATE INDEX executions_lease_expiry ON executions (lease_expires_at) WHERE status = 'running';

-- Event paging (seq > after ORDER BY seq) and the next seq (MAX(seq)) use
-- the primary key (execution_id, seq).
