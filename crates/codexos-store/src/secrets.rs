//! Tenant secrets as the database holds them: ciphertexts, and each
//! tenant's data key wrapped by the master key. The store never sees a
//! secret's value or an unwrapped key (`codexos-secrets` seals and opens
//! them); it keeps the bytes and the metadata.

use codexos_core::{SecretName, TenantId, now_millis};
use sqlx::Row;

use crate::error::parse_id;
use crate::{Entity, Intent, Result, Store, StoreError};

/// A tenant's data key, wrapped by the master key `master_key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataKey {
    pub version: i64,
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
}

/// A secret as sealed: the nonce and the ciphertext (with its tag), and the
/// version of the data key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub key_version: i64,
}

/// What may be shown of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    pub name: SecretName,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// The tenant's wrapped data key, if it has one yet.
    pub async fn data_key(&self, tenant: TenantId) -> Result<Option<StoredDataKey>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_data_key(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Stores the tenant's first data key, unless another process stored
    /// one first; answers the one that is stored (ours or theirs), so every
    /// process seals with the same key.
    pub async fn insert_data_key(&self, tenant: TenantId, key: &StoredDataKey) -> Result<StoredDataKey> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let inserted = sqlx::query(
            "INSERT INTO tenant_data_keys (tenant_id, version, master_key_id, nonce, wrapped_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(key.version)
        .bind(&key.master_key_id)
        .bind(key.nonce.clone())
        .bind(key.wrapped_key.clone())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound(Entity::Tenant));
            }
            Err(err) => return Err(err.into()),
        }
        let stored = fetch_data_key(&mut tx, tenant)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a tenant's data key vanished as it was stored".to_owned()))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Creates or replaces a secret; answers it and whether it is new.
    pub async fn put_secret(
        &self,
        tenant: TenantId,
        name: &SecretName,
        sealed: &SealedSecret,
    ) -> Result<(SecretInfo, bool)> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let replaced = sqlx::query(
            "UPDATE secrets SET ciphertext = $1, nonce = $2, key_version = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND name = $6",
        )
        .bind(sealed.ciphertext.clone())
        .bind(sealed.nonce.clone())
        .bind(sealed.key_version)
        .bind(now)
        .bind(tenant.to_string())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let created = replaced == 0;
        if created {
            let inserted = sqlx::query(
                "INSERT INTO secrets (tenant_id, name, ciphertext, nonce, key_version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(tenant.to_string())
            .bind(name.as_str())
            .bind(sealed.ciphertext.clone())
            .bind(sealed.nonce.clone())
            .bind(sealed.key_version)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // Another request created it between our update and insert.
                Err(err) if StoreError::is_unique_violation(&err) => return Err(StoreError::Conflict(Entity::Secret)),
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                    return Err(StoreError::NotFound(Entity::Tenant));
                }
                Err(err) => return Err(err.into()),
            }
        }
        let info = fetch_secret(&mut tx, tenant, name).await?.ok_or(StoreError::NotFound(Entity::Secret))?.0;
        tx.commit().await?;
        Ok((info, created))
    }

    /// The tenant's secrets by name, without their values.
    pub async fn list_secrets(&self, tenant: TenantId) -> Result<Vec<SecretInfo>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query("SELECT name, created_at, updated_at FROM secrets WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        // Sorted here, byte-wise: the backends' collations differ.
        let mut secrets = rows.iter().map(info_from_row).collect::<Result<Vec<_>>>()?;
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(secrets)
    }

    /// One secret, sealed; `None` when the tenant has no such secret.
    pub async fn sealed_secret(
        &self,
        tenant: TenantId,
        name: &SecretName,
    ) -> Result<Option<(SecretInfo, SealedSecret)>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_secret(&mut tx, tenant, name).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Deletes a secret; `NotFound` when the tenant has none by that name.
    pub async fn delete_secret(&self, tenant: TenantId, name: &SecretName) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.to_string())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(Entity::Secret));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The master keys that wrap some tenant's data key, with how many each.
    /// Not tenant data: what an operator needs to know before a start or a
    /// rotation.
    pub async fn master_keys_in_use(&self) -> Result<Vec<(String, i64)>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let rows = sqlx::query(
            "SELECT master_key_id, COUNT(*) AS tenants FROM tenant_data_keys GROUP BY master_key_id ORDER BY master_key_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok((row.try_get("master_key_id")?, row.try_get("tenants")?))).collect()
    }

    /// Re-wraps every tenant's data key with `rewrap` (unwrap with the old
    /// master key, wrap with the new one), all in one transaction: either
    /// every data key moves to the new master key or none does. Answers how
    /// many keys were re-wrapped. The secrets are not touched.
    pub async fn rewrap_data_keys<E>(
        &self,
        mut rewrap: impl FnMut(TenantId, &StoredDataKey) -> Result<StoredDataKey, E>,
    ) -> Result<Result<u64, E>> {
        let mut tx = self.system_tx(Intent::Write).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, version, master_key_id, nonce, wrapped_key FROM tenant_data_keys ORDER BY tenant_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let tenant: String = row.try_get("tenant_id")?;
            keys.push((parse_id(&tenant, TenantId::parse)?, data_key_from_row(row)?));
        }
        let now = now_millis();
        for (tenant, key) in &keys {
            let new_key = match rewrap(*tenant, key) {
                Ok(new_key) => new_key,
                // Nothing is committed: the transaction rolls back on drop.
                Err(err) => return Ok(Err(err)),
            };
            sqlx::query(
                "UPDATE tenant_data_keys SET master_key_id = $1, nonce = $2, wrapped_key = $3, updated_at = $4 \
                 WHERE tenant_id = $5 AND version = $6",
            )
            .bind(&new_key.master_key_id)
            .bind(new_key.nonce.clone())
            .bind(new_key.wrapped_key.clone())
            .bind(now)
            .bind(tenant.to_string())
            .bind(key.version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(keys.len() as u64))
    }
}

async fn fetch_data_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<Option<StoredDataKey>> {
    let row =
        sqlx::query("SELECT version, master_key_id, nonce, wrapped_key FROM tenant_data_keys WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    row.as_ref().map(data_key_from_row).transpose()
}

fn data_key_from_row(row: &sqlx::any::AnyRow) -> Result<StoredDataKey> {
    Ok(StoredDataKey {
        version: row.try_get("version")?,
        master_key_id: row.try_get("master_key_id")?,
        nonce: row.try_get("nonce")?,
        wrapped_key: row.try_get("wrapped_key")?,
    })
}

async fn fetch_secret(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    name: &SecretName,
) -> Result<Option<(SecretInfo, SealedSecret)>> {
    let row = sqlx::query(
        "SELECT name, created_at, updated_at, nonce, ciphertext, key_version FROM secrets \
         WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant.to_string())
    .bind(name.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let sealed = SealedSecret {
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        key_version: row.try_get("key_version")?,
    };
    Ok(Some((info_from_row(&row)?, sealed)))
}

fn info_from_row(row: &sqlx::any::AnyRow) -> Result<SecretInfo> {
    let name: String = row.try_get("name")?;
    Ok(SecretInfo {
        name: SecretName::parse(&name).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
