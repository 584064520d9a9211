//! Publisher keys: the public Ed25519 keys a tenant registered to check the
//! signatures of manifests, and whether it trusts each. The store keeps the
//! text; the engine's `signing` module reads and checks it.

use codexos_core::{PublisherKeyId, TenantId, UserId, now_millis};
use sqlx::Row;

use crate::error::Entity;
use crate::{Intent, Result, Store, StoreError};

/// A key to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPublisherKey {
    /// Derived from the public key by the caller (`signing::PublicKey::id`).
    pub key_id: PublisherKeyId,
    pub name: String,
    /// The public key's text (`ed25519:...`).
    pub public_key: String,
    pub trusted: bool,
    pub created_by: Option<UserId>,
}

/// A registered publisher key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublisherKey {
    pub key_id: PublisherKeyId,
    pub name: String,
    pub public_key: String,
    /// Whether the tenant trusts manifests signed by this key; never for a
    /// revoked key.
    pub trusted: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
}

const KEY_COLUMNS: &str = "key_id, name, public_key, trusted_at, created_at, updated_at, revoked_at";

impl Store {
    /// Registers a key; `Conflict(PublisherKey)` if the tenant has it
    /// already, revoked or not (a revoked key stays revoked).
    pub async fn create_publisher_key(&self, tenant: TenantId, new_key: &NewPublisherKey) -> Result<PublisherKey> {
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let inserted = sqlx::query(
            "INSERT INTO publisher_keys (tenant_id, key_id, name, public_key, trusted_at, created_by, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(tenant.to_string())
        .bind(new_key.key_id.as_str())
        .bind(&new_key.name)
        .bind(&new_key.public_key)
        .bind(new_key.trusted.then_some(now))
        .bind(new_key.created_by.map(|user| user.to_string()))
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => {
                return Err(StoreError::Conflict(Entity::PublisherKey));
            }
            other => other?,
        };
        let created = fetch_key(&mut tx, tenant, &new_key.key_id).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// The tenant's keys, revoked ones too, by name and then id.
    pub async fn publisher_keys(&self, tenant: TenantId) -> Result<Vec<PublisherKey>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM publisher_keys WHERE tenant_id = $1 ORDER BY name, key_id"
        ))
        .bind(tenant.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(key_from_row).collect()
    }

    /// One key of the tenant; `NotFound(PublisherKey)` for another tenant's
    /// exactly as for one never registered.
    pub async fn publisher_key(&self, tenant: TenantId, key_id: &PublisherKeyId) -> Result<PublisherKey> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_key(&mut tx, tenant, key_id).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Trusts a key, or stops trusting it. `InvalidState` for a revoked key,
    /// which is never trusted again.
    pub async fn set_publisher_trust(
        &self,
        tenant: TenantId,
        key_id: &PublisherKeyId,
        trusted: bool,
    ) -> Result<PublisherKey> {
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let found = fetch_key(&mut tx, tenant, key_id).await?;
        if found.revoked_at.is_some() {
            return Err(StoreError::InvalidState(format!(
                "publisher key {key_id} is revoked; a revoked key cannot be trusted or distrusted"
            )));
        }
        if found.trusted != trusted {
            sqlx::query(
                "UPDATE publisher_keys SET trusted_at = $1, updated_at = $2 WHERE tenant_id = $3 AND key_id = $4",
            )
            .bind(trusted.then_some(now))
            .bind(now)
            .bind(tenant.to_string())
            .bind(key_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let updated = fetch_key(&mut tx, tenant, key_id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Revokes a key for good: it is no longer trusted, and manifests it
    /// signed no longer run. Revoking twice is harmless.
    pub async fn revoke_publisher_key(&self, tenant: TenantId, key_id: &PublisherKeyId) -> Result<PublisherKey> {
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query(
            "UPDATE publisher_keys SET revoked_at = $1, trusted_at = NULL, updated_at = $1 \
             WHERE tenant_id = $2 AND key_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant.to_string())
        .bind(key_id.as_str())
        .execute(&mut *tx)
        .await?;
        let found = fetch_key(&mut tx, tenant, key_id).await?;
        tx.commit().await?;
        Ok(found)
    }
}

async fn fetch_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    key_id: &PublisherKeyId,
) -> Result<PublisherKey> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM publisher_keys WHERE tenant_id = $1 AND key_id = $2"))
        .bind(tenant.to_string())
        .bind(key_id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::PublisherKey))?;
    key_from_row(&row)
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<PublisherKey> {
    let key_id: String = row.try_get("key_id")?;
    let trusted_at: Option<i64> = row.try_get("trusted_at")?;
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    Ok(PublisherKey {
        key_id: PublisherKeyId::parse(&key_id).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        name: row.try_get("name")?,
        public_key: row.try_get("public_key")?,
        trusted: trusted_at.is_some() && revoked_at.is_none(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        revoked_at,
    })
}
