//! Tenant policy bundles (docs/policy.md): every version kept, the highest
//! the current one. The store keeps the modules and data as given; the
//! caller compiles a bundle before putting it, so that only policies that
//! compile are ever stored.

use codexos_core::{ExecutionId, TenantId, UserId, now_millis};
use sqlx::Row;

use crate::error::parse_id;
use crate::{Entity, Intent, Result, Store, StoreError};

/// A bundle to store as the tenant's next version.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPolicyBundle {
    /// Rego texts by module name (a JSON object of strings).
    pub modules: serde_json::Value,
    /// The data document (a JSON object).
    pub data: serde_json::Value,
    /// The digest of modules and data, computed by the caller.
    pub sha256: String,
    pub created_by: Option<UserId>,
}

/// One stored version of a tenant's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyBundle {
    pub version: i64,
    pub modules: serde_json::Value,
    pub data: serde_json::Value,
    pub sha256: String,
    pub created_by: Option<UserId>,
    pub created_at: i64,
}

/// A version as listed, without its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyVersion {
    pub version: i64,
    pub sha256: String,
    pub created_by: Option<UserId>,
    pub created_at: i64,
}

/// Puts at once may pick the same version number on PostgreSQL (SQLite
/// serializes writers); each try stores at least one of them, and the
/// others try again, up to this many times. Setting a policy is a rare
/// administrator's act.
const PUT_ATTEMPTS: usize = 8;

impl Store {
    /// Stores `bundle` as the tenant's next version (1 for the first) and
    /// makes it the current one, in one transaction.
    pub async fn put_policy(&self, tenant: TenantId, bundle: &NewPolicyBundle) -> Result<PolicyBundle> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_put_policy(tenant, bundle).await {
                Err(StoreError::Conflict(Entity::PolicyVersion)) if attempt < PUT_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    async fn try_put_policy(&self, tenant: TenantId, bundle: &NewPolicyBundle) -> Result<PolicyBundle> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM policy_bundles WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let stored = PolicyBundle {
            version: latest.unwrap_or(0) + 1,
            modules: bundle.modules.clone(),
            data: bundle.data.clone(),
            sha256: bundle.sha256.clone(),
            created_by: bundle.created_by,
            created_at: now_millis(),
        };
        let inserted = sqlx::query(
            "INSERT INTO policy_bundles (tenant_id, version, modules, data, sha256, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.to_string())
        .bind(stored.version)
        .bind(stored.modules.to_string())
        .bind(stored.data.to_string())
        .bind(&stored.sha256)
        .bind(stored.created_by.map(|user| user.to_string()))
        .bind(stored.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(err) if StoreError::is_unique_violation(&err) => {
                return Err(StoreError::Conflict(Entity::PolicyVersion));
            }
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound(Entity::Tenant));
            }
            Err(err) => return Err(err.into()),
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The tenant's current policy (its highest version), if it set one.
    pub async fn current_policy(&self, tenant: TenantId) -> Result<Option<PolicyBundle>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT version, modules, data, sha256, created_by, created_at FROM policy_bundles \
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(bundle_from_row).transpose()
    }

    /// One version of the tenant's policy; `NotFound(PolicyVersion)` if it
    /// has no such version.
    pub async fn policy_version(&self, tenant: TenantId, version: i64) -> Result<PolicyBundle> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT version, modules, data, sha256, created_by, created_at FROM policy_bundles \
             WHERE tenant_id = $1 AND version = $2",
        )
        .bind(tenant.to_string())
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        bundle_from_row(&row.ok_or(StoreError::NotFound(Entity::PolicyVersion))?)
    }

    /// Every version of the tenant's policy, newest first, without content.
    pub async fn policy_versions(&self, tenant: TenantId) -> Result<Vec<PolicyVersion>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(
            "SELECT version, sha256, created_by, created_at FROM policy_bundles WHERE tenant_id = $1 \
             ORDER BY version DESC",
        )
        .bind(tenant.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(PolicyVersion {
                    version: row.try_get("version")?,
                    sha256: row.try_get("sha256")?,
                    created_by: created_by(row)?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The member who created an execution (for its policy's input), if a
    /// member did.
    pub async fn execution_creator(&self, tenant: TenantId, execution: ExecutionId) -> Result<Option<UserId>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query("SELECT created_by FROM executions WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(execution.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        created_by(&row.ok_or(StoreError::NotFound(Entity::Execution))?)
    }
}

fn created_by(row: &sqlx::any::AnyRow) -> Result<Option<UserId>> {
    let text: Option<String> = row.try_get("created_by")?;
    text.map(|text| parse_id(&text, UserId::parse)).transpose()
}

fn bundle_from_row(row: &sqlx::any::AnyRow) -> Result<PolicyBundle> {
    let json = |column: &str| -> Result<serde_json::Value> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|err| StoreError::Corrupt(format!("policy_bundles.{column}: {err}")))
    };
    Ok(PolicyBundle {
        version: row.try_get("version")?,
        modules: json("modules")?,
        data: json("data")?,
        sha256: row.try_get("sha256")?,
        created_by: created_by(row)?,
        created_at: row.try_get("created_at")?,
    })
}
