-- A password belongs to a membership, not to the global user: an admin of
-- one tenant who sets a member's password sets it for that tenant only, and
-- can never log in as the same person elsewhere.
ALTER TABLE memberships ADD COLUMN password_hash TEXT;

-- Login sessions: a random secret in an HTTP-only cookie, stored as its
-- SHA-256 like API keys. A session belongs to a membership: removing the
-- member ends their sessions.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

-- Failed logins per subject (`account:<email>` or `address:<ip>`), for
-- slowing and locking brute force. Not tenant data: an attacker guessing
-- passwords has no tenant.
CREATE TABLE login_throttle (
    subject          TEXT PRIMARY KEY,
    failures         BIGINT NOT NULL,
    first_failure_at BIGINT NOT NULL,
    locked_until     BIGINT
);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions
    USING (codexos_visible(tenant_id)) WITH CHECK (codexos_visible(tenant_id));
