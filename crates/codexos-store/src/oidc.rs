//! Single sign-on per tenant with OpenID Connect, as the database holds it:
//! each tenant's identity provider (`tenant_oidc`), the logins under way
//! between the redirect to the provider and its answer (`oidc_logins`,
//! single-use), and the provisioning of the members who log in. The
//! protocol itself (discovery, tokens, signatures) is the server's; the
//! client secret reaches the store sealed, never in clear.

use codexos_core::{Role, SecretName, TenantId, TenantSlug, UserId, now_millis};
use sqlx::Row;

use crate::api_keys::hash_secret;
use crate::error::parse_id;
use crate::secrets::SealedSecret;
use crate::{Entity, Intent, Member, Result, Store, StoreError, normalize_email};

/// Logins under way a tenant may have at once: each start of a login
/// writes one before anybody is known, so their number must be bounded.
pub const MAX_PENDING_OIDC_LOGINS: i64 = 10_000;

/// How the client authenticates to the provider's token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcClientSecret {
    /// A public client: PKCE alone.
    None,
    /// The value of one of the tenant's secrets, by name.
    Secret(SecretName),
    /// Sealed with the tenant's data key, kept with the configuration.
    Sealed(SealedSecret),
}

/// A tenant's identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantOidc {
    /// Exactly as the provider's discovery document and ID tokens name it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: OidcClientSecret,
    /// The role of a user joining the tenant by logging in.
    pub default_role: Role,
    /// Lowercase email domains allowed to log in; empty for any.
    pub allowed_domains: Vec<String>,
    /// The scopes asked for, `openid` among them.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A login about to be sent to the provider: what its answer is checked
/// against. `state` is the random value the answer comes back with; only
/// its SHA-256 is stored.
#[derive(Debug, Clone, Copy)]
pub struct NewOidcLogin<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub redirect_after: &'a str,
    pub ttl_ms: i64,
}

/// A login under way, as taken back when the provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLogin {
    pub tenant: TenantId,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_after: String,
    pub expires_at: i64,
}

impl Store {
    /// Sets the tenant's identity provider (created or replaced); answers
    /// it as stored.
    pub async fn put_tenant_oidc(&self, tenant: TenantId, config: &TenantOidc) -> Result<TenantOidc> {
        let (secret_name, sealed) = match &config.client_secret {
            OidcClientSecret::None => (None, None),
            OidcClientSecret::Secret(name) => (Some(name.as_str()), None),
            OidcClientSecret::Sealed(sealed) => (None, Some(sealed)),
        };
        let domains = serde_json::to_string(&config.allowed_domains)
            .map_err(|err| StoreError::Corrupt(format!("allowed domains: {err}")))?;
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let written = sqlx::query(
            "INSERT INTO tenant_oidc (tenant_id, issuer, client_id, client_secret_name, client_secret_nonce, \
               client_secret_ciphertext, client_secret_key_version, default_role, allowed_domains, scopes, \
               created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id) DO UPDATE SET issuer = excluded.issuer, client_id = excluded.client_id, \
               client_secret_name = excluded.client_secret_name, client_secret_nonce = excluded.client_secret_nonce, \
               client_secret_ciphertext = excluded.client_secret_ciphertext, \
               client_secret_key_version = excluded.client_secret_key_version, \
               default_role = excluded.default_role, allowed_domains = excluded.allowed_domains, \
               scopes = excluded.scopes, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(&config.issuer)
        .bind(&config.client_id)
        .bind(secret_name)
        .bind(sealed.map(|sealed| sealed.nonce.clone()))
        .bind(sealed.map(|sealed| sealed.ciphertext.clone()))
        .bind(sealed.map(|sealed| sealed.key_version))
        .bind(config.default_role.as_str())
        .bind(domains)
        .bind(config.scopes.join(" "))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match written {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound(Entity::Tenant));
            }
            Err(err) => return Err(err.into()),
        }
        let stored = fetch_config(&mut tx, tenant).await?.ok_or(StoreError::NotFound(Entity::SsoConfig))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The tenant's identity provider, if it has one.
    pub async fn tenant_oidc(&self, tenant: TenantId) -> Result<Option<TenantOidc>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_config(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// The tenant with this slug and its identity provider: `None` for no
    /// such tenant. Spans tenants (the caller is not anybody's yet).
    pub async fn tenant_oidc_by_slug(&self, slug: &TenantSlug) -> Result<Option<(TenantId, Option<TenantOidc>)>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let tenant: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(tenant) = tenant else { return Ok(None) };
        let tenant = parse_id(&tenant, TenantId::parse)?;
        self.set_tenant(&mut tx, tenant).await?;
        let config = fetch_config(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(Some((tenant, config)))
    }

    /// Removes the tenant's identity provider and the logins under way with
    /// it; `NotFound` when it has none. Sessions opened by SSO stay.
    pub async fn delete_tenant_oidc(&self, tenant: TenantId) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let deleted = sqlx::query("DELETE FROM tenant_oidc WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(Entity::SsoConfig));
        }
        sqlx::query("DELETE FROM oidc_logins WHERE tenant_id = $1").bind(tenant.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a login sent to the provider, valid for `ttl_ms`. The
    /// tenant's expired logins go while we are here; `InvalidState` when
    /// the tenant has too many under way (`MAX_PENDING_OIDC_LOGINS`).
    pub async fn begin_oidc_login(&self, tenant: TenantId, login: &NewOidcLogin<'_>) -> Result<()> {
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query("DELETE FROM oidc_logins WHERE tenant_id = $1 AND expires_at <= $2")
            .bind(tenant.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oidc_logins WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if pending >= MAX_PENDING_OIDC_LOGINS {
            return Err(StoreError::InvalidState(format!(
                "{pending} single sign-on logins are under way for this tenant; try again in a few minutes"
            )));
        }
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, tenant_id, nonce, pkce_verifier, redirect_after, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(hash_secret(login.state))
        .bind(tenant.to_string())
        .bind(login.nonce)
        .bind(login.pkce_verifier)
        .bind(login.redirect_after)
        .bind(now)
        .bind(now.saturating_add(login.ttl_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the login with this `state`: deleted as it is read, so a
    /// second answer with the same state finds nothing. `None` for an
    /// unknown (or already taken) state; an expired one is answered, for
    /// the caller to refuse in its tenant's name. Spans tenants: the state
    /// is what tells the tenant.
    pub async fn take_oidc_login(&self, state: &str) -> Result<Option<OidcLogin>> {
        let mut tx = self.system_tx(Intent::Write).await?;
        let row = sqlx::query(
            "DELETE FROM oidc_logins WHERE state_hash = $1 \
             RETURNING tenant_id, nonce, pkce_verifier, redirect_after, expires_at",
        )
        .bind(hash_secret(state))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let tenant: String = row.try_get("tenant_id")?;
        Ok(Some(OidcLogin {
            tenant: parse_id(&tenant, TenantId::parse)?,
            nonce: row.try_get("nonce")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            redirect_after: row.try_get("redirect_after")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// The member who logged in with `email`: an existing member as they
    /// are (their role untouched), otherwise the user (created without a
    /// password if nobody has that email) joins the tenant with `role`.
    /// Answers the member and whether they just joined.
    pub async fn provision_sso_member(&self, tenant: TenantId, email: &str, role: Role) -> Result<(Member, bool)> {
        if let Some(member) = self.member_by_email(tenant, email).await? {
            return Ok((member, false));
        }
        match self.add_member(tenant, email, role, None).await {
            Ok(member) => Ok((member, true)),
            // Another login of the same person got there first.
            Err(StoreError::Conflict(Entity::Member)) => self
                .member_by_email(tenant, email)
                .await?
                .map(|member| (member, false))
                .ok_or(StoreError::NotFound(Entity::Member)),
            Err(err) => Err(err),
        }
    }

    /// The tenant's member with this email, if any.
    pub async fn member_by_email(&self, tenant: TenantId, email: &str) -> Result<Option<Member>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, m.password_hash, m.role, m.created_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND u.email = $2",
        )
        .bind(tenant.to_string())
        .bind(normalize_email(email))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let user: String = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        let hash: Option<String> = row.try_get("password_hash")?;
        Ok(Some(Member {
            user: parse_id(&user, UserId::parse)?,
            email: row.try_get("email")?,
            role: parse_role(&role)?,
            has_password: hash.is_some(),
            created_at: row.try_get("created_at")?,
        }))
    }
}

async fn fetch_config(tx: &mut sqlx::Transaction<'static, sqlx::Any>, tenant: TenantId) -> Result<Option<TenantOidc>> {
    let row = sqlx::query(
        "SELECT issuer, client_id, client_secret_name, client_secret_nonce, client_secret_ciphertext, \
           client_secret_key_version, default_role, allowed_domains, scopes, created_at, updated_at \
         FROM tenant_oidc WHERE tenant_id = $1",
    )
    .bind(tenant.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let secret_name: Option<String> = row.try_get("client_secret_name")?;
    let nonce: Option<Vec<u8>> = row.try_get("client_secret_nonce")?;
    let ciphertext: Option<Vec<u8>> = row.try_get("client_secret_ciphertext")?;
    let key_version: Option<i64> = row.try_get("client_secret_key_version")?;
    let client_secret = match (secret_name, nonce, ciphertext, key_version) {
        (Some(name), None, None, None) => OidcClientSecret::Secret(
            SecretName::parse(&name).map_err(|err| StoreError::Corrupt(format!("SSO client secret name: {err}")))?,
        ),
        (None, Some(nonce), Some(ciphertext), Some(key_version)) => {
            OidcClientSecret::Sealed(SealedSecret { nonce, ciphertext, key_version })
        }
        (None, None, None, None) => OidcClientSecret::None,
        _ => return Err(StoreError::Corrupt("a tenant's SSO client secret is half stored".to_owned())),
    };
    let role: String = row.try_get("default_role")?;
    let domains: String = row.try_get("allowed_domains")?;
    let scopes: String = row.try_get("scopes")?;
    Ok(Some(TenantOidc {
        issuer: row.try_get("issuer")?,
        client_id: row.try_get("client_id")?,
        client_secret,
        default_role: parse_role(&role)?,
        allowed_domains: serde_json::from_str(&domains)
            .map_err(|err| StoreError::Corrupt(format!("a tenant's SSO allowed domains: {err}")))?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    }))
}

fn parse_role(text: &str) -> Result<Role> {
    text.parse().map_err(|err: codexos_core::role::RoleError| StoreError::Corrupt(err.to_string()))
}
