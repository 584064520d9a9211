use codexos_core::{Role, TenantId, TenantSlug, UserId, now_millis};
use sqlx::Row;

use crate::api_keys::{BearerSecret, insert_api_key};
use crate::error::{Entity, parse_id};
use crate::{Intent, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: String,
    pub created_at: i64,
}

/// What the first start of an installation created: shown to the operator once.
#[derive(Debug)]
pub struct Bootstrap {
    pub tenant: Tenant,
    pub owner_email: String,
    pub owner_key: BearerSecret,
}

pub const DEFAULT_TENANT: &str = "default";
const OWNER_EMAIL: &str = "owner@localhost";

impl Store {
    /// On an empty installation, creates the `default` tenant, its owner and
    /// an owner API key, atomically. Returns `None` when a tenant exists
    /// already (including when another process bootstrapped concurrently).
    pub async fn bootstrap(&self) -> Result<Option<Bootstrap>> {
        let mut tx = self.system_tx(Intent::Write).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants").fetch_one(&mut *tx).await?;
        if existing > 0 {
            return Ok(None);
        }
        let slug = TenantSlug::parse(DEFAULT_TENANT).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let created = match insert_tenant_with_owner(self, &mut tx, &slug, "Default", OWNER_EMAIL).await {
            Err(StoreError::Conflict(Entity::Tenant)) => return Ok(None),
            other => other?,
        };
        tx.commit().await?;
        Ok(Some(created))
    }

    /// Creates a tenant with `owner_email` as its owner (an existing user
    /// keeps their password; a new one has none until set) and an owner API
    /// key, atomically: an operator's action. `Conflict` if the slug is taken.
    pub async fn create_tenant_with_owner(
        &self,
        slug: &TenantSlug,
        name: &str,
        owner_email: &str,
    ) -> Result<Bootstrap> {
        let mut tx = self.system_tx(Intent::Write).await?;
        let created = insert_tenant_with_owner(self, &mut tx, slug, name, owner_email).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Creates a tenant; `Conflict` if the slug is taken.
    pub async fn create_tenant(&self, slug: &TenantSlug, name: &str) -> Result<Tenant> {
        let tenant =
            Tenant { id: TenantId::new(), slug: slug.clone(), name: name.to_owned(), created_at: now_millis() };
        // Slugs are unique across the installation.
        let mut tx = self.system_tx(Intent::Write).await?;
        let inserted = sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.id.to_string())
            .bind(tenant.slug.as_str())
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => return Err(StoreError::Conflict(Entity::Tenant)),
            other => other?,
        };
        tx.commit().await?;
        Ok(tenant)
    }

    /// The tenant itself; `NotFound` if it does not exist.
    pub async fn tenant(&self, tenant: TenantId) -> Result<Tenant> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound(Entity::Tenant))?;
        tx.commit().await?;
        tenant_from_row(&row)
    }

    /// Every tenant, by slug (an operator's view: spans tenants).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let rows =
            sqlx::query("SELECT id, slug, name, created_at FROM tenants ORDER BY slug").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Number of tenants in the installation.
    pub async fn count_tenants(&self) -> Result<i64> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM tenants").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(count)
    }
}

fn tenant_from_row(row: &sqlx::any::AnyRow) -> Result<Tenant> {
    let id: String = row.try_get("id")?;
    let slug: String = row.try_get("slug")?;
    Ok(Tenant {
        id: parse_id(&id, TenantId::parse)?,
        slug: TenantSlug::parse(&slug).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

async fn insert_tenant_with_owner(
    store: &Store,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    slug: &TenantSlug,
    name: &str,
    owner_email: &str,
) -> Result<Bootstrap> {
    let now = now_millis();
    let tenant = Tenant { id: TenantId::new(), slug: slug.clone(), name: name.to_owned(), created_at: now };
    let inserted = sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant.id.to_string())
        .bind(tenant.slug.as_str())
        .bind(&tenant.name)
        .bind(now)
        .execute(&mut **tx)
        .await;
    match inserted {
        Err(err) if StoreError::is_unique_violation(&err) => return Err(StoreError::Conflict(Entity::Tenant)),
        other => other?,
    };
    let email = crate::identity::normalize_email(owner_email);
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(&email).fetch_optional(&mut **tx).await?;
    let owner = match existing {
        Some(id) => parse_id(&id, UserId::parse)?,
        None => {
            let owner = UserId::new();
            sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
                .bind(owner.to_string())
                .bind(&email)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            owner
        }
    };
    // From here on, the new tenant's own rows.
    store.set_tenant(tx, tenant.id).await?;
    sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant.id.to_string())
        .bind(owner.to_string())
        .bind(Role::Owner.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let new_key = crate::NewApiKey { name: "owner".to_owned(), role: Role::Owner, user: Some(owner), expires_at: None };
    let (_, owner_key) = insert_api_key(tx, tenant.id, &new_key).await?;
    Ok(Bootstrap { tenant, owner_email: email, owner_key })
}
