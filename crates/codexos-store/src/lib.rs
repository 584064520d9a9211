//! The only crate that speaks SQL.
//!
//! One `Store` serves SQLite (embedded, WAL) and PostgreSQL through sqlx's
//! `Any` driver: the schema keeps to shapes both share (text ids, BIGINT
//! millisecond timestamps, text JSON), so every query is written once. Each
//! backend has its own migrations, embedded in the binary and applied at
//! connect. Every function on tenant-owned data takes the `TenantId` and
//! filters by it.

mod agents;
mod api_keys;
mod audit;
mod checkpoints;
mod connect;
mod control;
mod error;
mod events;
mod executions;
mod identity;
mod leases;
mod memories;
mod oidc;
mod policies;
mod publishers;
mod queue;
mod quotas;
mod retention;
mod secrets;
mod tenants;

pub use agents::{AgentSummary, AgentVersion, NewAgentVersion};
pub use api_keys::{ApiKey, BearerSecret, Credential, NewApiKey, Principal};
pub use audit::{
    AuditCheckpoint, AuditEntry, AuditHead, AuditOutcome, AuditProof, AuditProofEntry, Auditor, NewAuditEntry,
    audit_origin,
};
pub use checkpoints::CheckpointUsage;
pub use connect::{Backend, DatabaseReport};
pub use control::{ControlAction, ControlRequest, NewFork};
pub use error::{Entity, Result, StoreError};
pub use events::{Event, MAX_EVENT_PAYLOAD_BYTES, NewEvent};
pub use executions::{Execution, ExecutionFilter, ExecutionTotals, NewExecution};
pub use identity::{LoginAttempt, LoginRecord, Member, NewSession, Throttle, normalize_email};
pub use leases::{Lease, LeasedExecution};
pub use memories::{MAX_MEMORY_BYTES, Memory, NewMemory};
pub use oidc::{MAX_PENDING_OIDC_LOGINS, NewOidcLogin, OidcClientSecret, OidcLogin, TenantOidc};
pub use policies::{NewPolicyBundle, PolicyBundle, PolicyVersion};
pub use publishers::{NewPublisherKey, PublisherKey};
pub use queue::{QueueStats, WorkerId};
pub use quotas::{TenantUsage, UsageMetric};
pub use retention::{Purged, RetentionPolicy};
pub use secrets::{SealedSecret, SecretInfo, StoredDataKey};
pub use tenants::{Bootstrap, Tenant};

use sqlx::{AnyPool, Row};

/// Whether a transaction will write: SQLite must know before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Read,
    Write,
}

/// A handle on the database; cheap to clone (it is a pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// What [`Store::ping`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseCheck {
    pub round_trip: std::time::Duration,
    /// The role queries run as (PostgreSQL).
    pub role: Option<String>,
    /// Whether row-level security binds that role (PostgreSQL).
    pub row_level_security: Option<bool>,
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One round trip to the database, for health checks: how long it took
    /// and, on PostgreSQL, which role the platform's connections act as and
    /// whether row-level security binds it (it must: a superuser, a
    /// table owner or a BYPASSRLS role would see every tenant).
    pub async fn ping(&self) -> Result<DatabaseCheck> {
        let started = std::time::Instant::now();
        let (role, row_level_security) = match self.backend {
            Backend::Sqlite => {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                (None, None)
            }
            Backend::Postgres => {
                let row = sqlx::query(
                    "SELECT current_user::text, \
                            (SELECT NOT (rolsuper OR rolbypassrls) FROM pg_roles WHERE rolname = current_user) \
                            AND NOT EXISTS (SELECT 1 FROM pg_tables \
                                            WHERE schemaname = current_schema() AND tableowner = current_user)",
                )
                .fetch_one(&self.pool)
                .await?;
                (Some(row.try_get::<String, _>(0)?), Some(row.try_get::<bool, _>(1)?))
            }
        };
        Ok(DatabaseCheck { round_trip: started.elapsed(), role, row_level_security })
    }

    /// Waits for connections in use to be returned, then closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction bound to one tenant. On PostgreSQL the tenant is also
    /// set as a transaction-local setting, for the row-level security
    /// policies that the tenancy work adds to every tenant table.
    async fn tenant_tx(
        &self,
        tenant: codexos_core::TenantId,
        intent: Intent,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.begin(intent).await?;
        self.set_tenant(&mut tx, tenant).await?;
        Ok(tx)
    }

    /// A transaction that spans tenants, for the few operations that must
    /// (finding a key's tenant, leasing from the shared queue, signing every
    /// log at shutdown, retention). On PostgreSQL it says so in a
    /// transaction-local setting that the row-level security policies
    /// accept in place of a tenant; tenant transactions never set it.
    async fn system_tx(&self, intent: Intent) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.begin(intent).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT set_config('codexos.system', 'on', true)").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Binds a transaction to a tenant once it knows which (see `tenant_tx`).
    async fn set_tenant(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: codexos_core::TenantId,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            // A transaction that started across tenants (leasing) narrows
            // to this one from here on.
            sqlx::query("SELECT set_config('codexos.tenant_id', $1, true), set_config('codexos.system', 'off', true)")
                .bind(tenant.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Starts a transaction. On SQLite a transaction that will write takes
    /// the write lock up front (`BEGIN IMMEDIATE`): a read transaction that
    /// later writes fails at once with "database is locked" if another
    /// connection wrote in between, and no busy timeout helps with that.
    async fn begin(&self, intent: Intent) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match (self.backend, intent) {
            (Backend::Sqlite, Intent::Write) => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.pool.begin().await?,
        })
    }
}
