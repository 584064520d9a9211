//! The agent registry: agents by name, each with immutable versions.

use codexos_core::{AgentId, AgentVersionId, PublisherKeyId, SignatureStatus, TenantId, UserId, now_millis};
use sqlx::Row;

use crate::error::{Entity, parse_id};
use crate::{Intent, Result, Store, StoreError};

/// A version to register; the agent is created with its first version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgentVersion {
    pub name: String,
    pub version: String,
    /// The version's precedence as a byte-sortable string, computed by the
    /// caller: the store only compares keys, it does not parse versions.
    pub version_key: String,
    pub kind: String,
    pub description: String,
    /// The manifest's TOML text, as registered.
    pub manifest: String,
    pub manifest_sha256: String,
    /// What the caller found checking the manifest's signature, and the
    /// key that made it (registered with the tenant).
    pub signature_status: SignatureStatus,
    pub publisher_key_id: Option<PublisherKeyId>,
    pub created_by: Option<UserId>,
}

/// One registered version of an agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentVersion {
    pub id: AgentVersionId,
    pub agent_id: AgentId,
    pub name: String,
    pub version: String,
    pub kind: String,
    pub description: String,
    pub manifest: String,
    pub manifest_sha256: String,
    /// What registration found checking the manifest's signature.
    pub signature_status: SignatureStatus,
    /// The key that signed it, for a signed version.
    pub publisher_key_id: Option<PublisherKeyId>,
    /// That key's name in the tenant.
    pub publisher_name: Option<String>,
    pub created_at: i64,
}

/// An agent as listed: its latest version and how many it has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentSummary {
    pub id: AgentId,
    pub name: String,
    /// The version with the highest version key.
    pub latest: AgentVersion,
    pub version_count: i64,
    pub created_at: i64,
}

const VERSION_COLUMNS: &str = "v.id, v.agent_id, a.name, v.version, v.kind, v.description, v.manifest, \
                               v.manifest_sha256, v.signature_status, v.publisher_key_id, \
                               p.name AS publisher_name, v.created_at";
const VERSIONS_FROM: &str = "agent_versions v JOIN agents a ON a.tenant_id = v.tenant_id AND a.id = v.agent_id \
                             LEFT JOIN publisher_keys p ON p.tenant_id = v.tenant_id AND p.key_id = v.publisher_key_id";
/// Highest precedence first; versions of equal precedence (build metadata)
/// newest first, so the order is total.
const NEWEST_FIRST: &str = "v.version_key DESC, v.created_at DESC, v.id DESC";

impl Store {
    /// Registers a version, creating the agent on its first one;
    /// `Conflict(AgentVersion)` if the agent has this version already.
    pub async fn create_agent_version(&self, tenant: TenantId, new_version: &NewAgentVersion) -> Result<AgentVersion> {
        let now = now_millis();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        // Two first versions registered at once: one inserts, the other
        // waits for it (PostgreSQL) or for the write lock (SQLite) and then
        // finds the row.
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(AgentId::new().to_string())
        .bind(tenant.to_string())
        .bind(&new_version.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let agent_id: String = sqlx::query_scalar("SELECT id FROM agents WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.to_string())
            .bind(&new_version.name)
            .fetch_one(&mut *tx)
            .await?;
        let id = AgentVersionId::new();
        let inserted = sqlx::query(
            "INSERT INTO agent_versions (id, tenant_id, agent_id, version, version_key, kind, description, manifest, \
             manifest_sha256, signature_status, publisher_key_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(&agent_id)
        .bind(&new_version.version)
        .bind(&new_version.version_key)
        .bind(&new_version.kind)
        .bind(&new_version.description)
        .bind(&new_version.manifest)
        .bind(&new_version.manifest_sha256)
        .bind(new_version.signature_status.as_str())
        .bind(new_version.publisher_key_id.as_ref().map(PublisherKeyId::as_str))
        .bind(new_version.created_by.map(|user| user.to_string()))
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => {
                return Err(StoreError::Conflict(Entity::AgentVersion));
            }
            other => other?,
        };
        let row =
            sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM {VERSIONS_FROM} WHERE v.tenant_id = $1 AND v.id = $2"))
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        let version = version_from_row(&row)?;
        tx.commit().await?;
        Ok(version)
    }

    /// The tenant's agents by name, each with its latest version.
    pub async fn list_agents(&self, tenant: TenantId) -> Result<Vec<AgentSummary>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS}, a.created_at AS agent_created_at, \
               (SELECT COUNT(*) FROM agent_versions c WHERE c.tenant_id = a.tenant_id AND c.agent_id = a.id) \
                 AS version_count \
             FROM {VERSIONS_FROM} \
             WHERE a.tenant_id = $1 AND v.id = (SELECT v.id FROM agent_versions v \
               WHERE v.tenant_id = a.tenant_id AND v.agent_id = a.id ORDER BY {NEWEST_FIRST} LIMIT 1) \
             ORDER BY a.name"
        ))
        .bind(tenant.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let latest = version_from_row(row)?;
                Ok(AgentSummary {
                    id: latest.agent_id,
                    name: latest.name.clone(),
                    version_count: row.try_get("version_count")?,
                    created_at: row.try_get("agent_created_at")?,
                    latest,
                })
            })
            .collect()
    }

    /// An agent's versions, highest precedence first; `NotFound(Agent)` if
    /// the tenant has no agent of this name.
    pub async fn agent_versions(&self, tenant: TenantId, name: &str) -> Result<Vec<AgentVersion>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let agent_id = agent_id(&mut tx, tenant, name).await?;
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM {VERSIONS_FROM} WHERE v.tenant_id = $1 AND v.agent_id = $2 \
             ORDER BY {NEWEST_FIRST}"
        ))
        .bind(tenant.to_string())
        .bind(&agent_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(version_from_row).collect()
    }

    /// One version of an agent, or with `None` its highest-precedence one.
    /// `NotFound(Agent)` if there is no such agent, `NotFound(AgentVersion)`
    /// if the agent lacks that version.
    pub async fn agent_version(&self, tenant: TenantId, name: &str, version: Option<&str>) -> Result<AgentVersion> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let agent_id = agent_id(&mut tx, tenant, name).await?;
        let row = match version {
            Some(version) => {
                sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM {VERSIONS_FROM} \
                     WHERE v.tenant_id = $1 AND v.agent_id = $2 AND v.version = $3"
                ))
                .bind(tenant.to_string())
                .bind(&agent_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM {VERSIONS_FROM} WHERE v.tenant_id = $1 AND v.agent_id = $2 \
                     ORDER BY {NEWEST_FIRST} LIMIT 1"
                ))
                .bind(tenant.to_string())
                .bind(&agent_id)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        version_from_row(&row.ok_or(StoreError::NotFound(Entity::AgentVersion))?)
    }
}

async fn agent_id(tx: &mut sqlx::Transaction<'static, sqlx::Any>, tenant: TenantId, name: &str) -> Result<String> {
    sqlx::query_scalar("SELECT id FROM agents WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.to_string())
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::Agent))
}

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<AgentVersion> {
    let id: String = row.try_get("id")?;
    let agent_id: String = row.try_get("agent_id")?;
    let signature_status: String = row.try_get("signature_status")?;
    let publisher_key_id: Option<String> = row.try_get("publisher_key_id")?;
    Ok(AgentVersion {
        id: parse_id(&id, AgentVersionId::parse)?,
        agent_id: parse_id(&agent_id, AgentId::parse)?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        description: row.try_get("description")?,
        manifest: row.try_get("manifest")?,
        manifest_sha256: row.try_get("manifest_sha256")?,
        signature_status: signature_status.parse().map_err(|err| StoreError::Corrupt(format!("{err}")))?,
        publisher_key_id: publisher_key_id
            .map(|key_id| PublisherKeyId::parse(&key_id))
            .transpose()
            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
        publisher_name: row.try_get("publisher_name")?,
        created_at: row.try_get("created_at")?,
    })
}
