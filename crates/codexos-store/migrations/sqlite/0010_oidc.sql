-- Single sign-on per tenant with OpenID Connect (docs/tenancy.md).
--
-- A tenant's identity provider: its issuer (discovery is at
-- {issuer}/.well-known/openid-configuration), our client id there, and the
-- client secret, if any: either the name of one of the tenant's secrets, or
-- sealed here with the tenant's data key like a secret (nonce, ciphertext,
-- data key version); neither for a public client (PKCE alone). New users
-- join with `default_role`; `allowed_domains` (a JSON array of lowercase
-- domains, empty for any) limits whose email may log in.
CREATE TABLE tenant_oidc (
    tenant_id                  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    issuer                     TEXT NOT NULL,
    client_id                  TEXT NOT NULL,
    client_secret_name         TEXT,
    client_secret_nonce        BLOB,
    client_secret_ciphertext   BLOB,
    client_secret_key_version  BIGINT,
    default_role               TEXT NOT NULL REFERENCES roles(name),
    allowed_domains            TEXT NOT NULL,
    scopes                     TEXT NOT NULL,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL
);

-- Logins under way: from the redirect to the identity provider until its
-- answer comes back (or ten minutes pass). Found by the SHA-256 of the
-- `state` parameter and deleted as it is read, so each answers once. The
-- nonce and the PKCE verifier must be kept as they are: the ID token is
-- checked against the one, the token endpoint against the other.
CREATE TABLE oidc_logins (
    state_hash      TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    nonce           TEXT NOT NULL,
    pkce_verifier   TEXT NOT NULL,
    redirect_after  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX oidc_logins_expiry ON oidc_logins (expires_at);
