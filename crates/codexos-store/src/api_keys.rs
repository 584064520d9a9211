use std::fmt;

use codexos_core::{ApiKeyId, Role, SessionId, TenantId, TenantSlug, UserId, now_millis};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::error::{Entity, parse_id};
use crate::{Intent, Result, Store, StoreError};

/// Every key starts with this, so scanners and people recognise one.
const KEY_PREFIX: &str = "cxo_";
/// 43 base62 characters carry 256 bits.
pub(crate) const KEY_RANDOM_CHARS: usize = 43;
/// How much of a key is kept in clear to tell keys apart in listings.
const KEY_DISPLAY_CHARS: usize = KEY_PREFIX.len() + 8;

/// A newly made API key's or session's secret: shown once, never stored,
/// never printed by `Debug`.
pub struct BearerSecret(String);

impl BearerSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerSecret(..)")
    }
}

/// What a caller asks for when creating a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    pub user: Option<UserId>,
    pub expires_at: Option<i64>,
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who is calling: the result of authenticating a key or a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub tenant_slug: TenantSlug,
    pub credential: Credential,
    pub user: Option<UserId>,
    pub role: Role,
}

/// What the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey(ApiKeyId),
    Session(SessionId),
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey(id) => write!(f, "key:{id}"),
            Credential::Session(id) => write!(f, "session:{id}"),
        }
    }
}

pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `prefix` and 256 random bits as base62.
pub(crate) fn new_secret(prefix: &str) -> String {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(KEY_RANDOM_CHARS).map(char::from).collect();
    format!("{prefix}{random}")
}

impl BearerSecret {
    pub(crate) fn new(secret: String) -> Self {
        Self(secret)
    }
}

pub(crate) async fn insert_api_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    new_key: &NewApiKey,
) -> Result<(ApiKey, BearerSecret)> {
    let secret = new_secret(KEY_PREFIX);
    let key = ApiKey {
        id: ApiKeyId::new(),
        name: new_key.name.clone(),
        prefix: secret[..KEY_DISPLAY_CHARS].to_owned(),
        role: new_key.role,
        created_at: now_millis(),
        expires_at: new_key.expires_at,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, secret_hash, role, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(key.id.to_string())
    .bind(tenant.to_string())
    .bind(new_key.user.map(|user| user.to_string()))
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(hash_secret(&secret))
    .bind(key.role.as_str())
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok((key, BearerSecret(secret)))
}

const KEY_COLUMNS: &str = "id, name, prefix, role, created_at, expires_at, revoked_at";

impl Store {
    /// Finds the live key with this secret: one indexed lookup by hash.
    /// Unknown, revoked and expired keys all answer `None`.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with(KEY_PREFIX) || secret.len() != KEY_PREFIX.len() + KEY_RANDOM_CHARS {
            return Ok(None);
        }
        let now = now_millis();
        // Which tenant the key belongs to is what this finds out.
        let mut tx = self.system_tx(Intent::Read).await?;
        // A key made by a member holds at most the member's role now: a
        // member demoted since keeps no more than the new role, and one
        // removed keeps nothing.
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.user_id, k.role, m.role AS member_role, t.slug FROM api_keys k \
             JOIN tenants t ON t.id = k.tenant_id \
             LEFT JOIN memberships m ON m.tenant_id = k.tenant_id AND m.user_id = k.user_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2) \
             AND (k.user_id IS NULL OR m.user_id IS NOT NULL)",
        )
        .bind(hash_secret(secret))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let tenant: String = row.try_get("tenant_id")?;
        let key: String = row.try_get("id")?;
        let user: Option<String> = row.try_get("user_id")?;
        let role: String = row.try_get("role")?;
        let member_role: Option<String> = row.try_get("member_role")?;
        let slug: String = row.try_get("slug")?;
        let parse_role = |text: &str| {
            text.parse().map_err(|err: codexos_core::role::RoleError| StoreError::Corrupt(err.to_string()))
        };
        let key_role: Role = parse_role(&role)?;
        // Roles order from most to least powerful: the larger is the lesser.
        let role = match member_role {
            Some(member_role) => key_role.max(parse_role(&member_role)?),
            None => key_role,
        };
        Ok(Some(Principal {
            tenant: parse_id(&tenant, TenantId::parse)?,
            tenant_slug: TenantSlug::parse(&slug).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            credential: Credential::ApiKey(parse_id(&key, ApiKeyId::parse)?),
            user: user.as_deref().map(|user| parse_id(user, UserId::parse)).transpose()?,
            role,
        }))
    }

    pub async fn create_api_key(&self, tenant: TenantId, new_key: &NewApiKey) -> Result<(ApiKey, BearerSecret)> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let created = insert_api_key(&mut tx, tenant, new_key).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows =
            sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"))
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.iter().map(key_from_row).collect()
    }

    /// One key of this tenant; `NotFound` for a key of another tenant.
    pub async fn api_key(&self, tenant: TenantId, key: ApiKeyId) -> Result<ApiKey> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_key(&mut tx, tenant, key).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Revokes a key of this tenant; `NotFound` for a key of another tenant
    /// exactly as for one that does not exist. Revoking twice is harmless.
    pub async fn revoke_api_key(&self, tenant: TenantId, key: ApiKeyId) -> Result<ApiKey> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now_millis())
            .bind(tenant.to_string())
            .bind(key.to_string())
            .execute(&mut *tx)
            .await?;
        let found = fetch_key(&mut tx, tenant, key).await?;
        tx.commit().await?;
        Ok(found)
    }
}

async fn fetch_key(tx: &mut sqlx::Transaction<'static, sqlx::Any>, tenant: TenantId, key: ApiKeyId) -> Result<ApiKey> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant.to_string())
        .bind(key.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::ApiKey))?;
    key_from_row(&row)
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKey> {
    let id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: parse_id(&id, ApiKeyId::parse)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        role: role.parse().map_err(|err: codexos_core::role::RoleError| StoreError::Corrupt(err.to_string()))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        assert_eq!(format!("{:?}", BearerSecret("cxo_secret".to_owned())), "BearerSecret(..)");
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
