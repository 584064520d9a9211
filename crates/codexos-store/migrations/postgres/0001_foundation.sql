-- The foundation schema. Timestamps are milliseconds since the Unix epoch
-- (BIGINT), ids are UUID text: the same shapes on SQLite and PostgreSQL.
-- Every tenant-owned table carries tenant_id, and references between
-- tenant-owned rows go through (tenant_id, id), so a row can never point at
-- another tenant's data.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- The fixed roles; permissions per role are defined in code with the endpoints.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL
);
INSERT INTO roles (name, description) VALUES
    ('owner', 'everything, including billing and deleting the tenant'),
    ('admin', 'manage members, keys, quotas, policies and agents'),
    ('developer', 'register agents and run executions'),
    ('viewer', 'read agents, executions and the audit log');

-- Users are global identities; what they may do in a tenant is a membership.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE memberships (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL REFERENCES roles(name),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Only the SHA-256 of a key is stored; keys are random, 256 bits, so a fast
-- hash is enough and lookup is one indexed query.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id      TEXT REFERENCES users(id) ON DELETE SET NULL,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL REFERENCES roles(name),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE agent_versions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id        TEXT NOT NULL,
    version         TEXT NOT NULL,
    manifest        TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signature       TEXT,
    publisher_key   TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (agent_id, version),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_versions_tenant ON agent_versions (tenant_id);

CREATE TABLE executions (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_version_id    TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'paused', 'waiting_approval', 'succeeded', 'failed', 'cancelled')),
    task                TEXT NOT NULL,
    workspace           TEXT NOT NULL,
    parent_execution_id TEXT,
    parent_step         BIGINT,
    lease_owner         TEXT,
    lease_expires_at    BIGINT,
    created_by          TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_version_id) REFERENCES agent_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_execution_id) REFERENCES executions (tenant_id, id)
);
CREATE INDEX executions_tenant ON executions (tenant_id, created_at);
CREATE INDEX executions_queue ON executions (status, created_at);

-- Append-only: the timeline of an execution, one row per step event.
CREATE TABLE execution_events (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    execution_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    checkpoint_id TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (execution_id, seq),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX execution_events_tenant ON execution_events (tenant_id);

CREATE TABLE checkpoints (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    execution_id  TEXT NOT NULL,
    step          BIGINT NOT NULL,
    tree_id       TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX checkpoints_execution ON checkpoints (tenant_id, execution_id, step);

-- Append-only and hash-chained per tenant; the platform never updates or deletes rows.
CREATE TABLE audit_entries (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    seq         BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    request_id  TEXT,
    details     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    entry_hash  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE secrets (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    ciphertext  BYTEA NOT NULL,
    nonce       BYTEA NOT NULL,
    key_version BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Metered usage per tenant, per billing period (YYYY-MM) and metric.
CREATE TABLE usage (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    period      TEXT NOT NULL,
    metric      TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, period, metric)
);

-- Live worker processes; not tenant-owned. A worker whose heartbeat is older
-- than the lease timeout is dead.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
