use std::fmt;

/// What can go wrong in the store, with the context a caller needs to say
/// something useful.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("{0} already exists")]
    Conflict(Entity),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    /// The worker no longer holds the execution's lease: another worker took
    /// it over, or it finished. Nothing was written. (A unit variant: the
    /// caller holds the lease, so it knows which execution.)
    #[error("this worker no longer holds the execution's lease")]
    LeaseLost,
    /// An event's JSON is beyond any sane size; the engine caps what it
    /// records, so this is a bug upstream rather than something to store.
    #[error("the '{kind}' event payload is {bytes} bytes, over the {limit}-byte limit")]
    PayloadTooLarge { kind: String, bytes: usize, limit: usize },
    /// The request does not fit the object's state (e.g. resuming an
    /// execution that is not paused); nothing was changed.
    #[error("{0}")]
    InvalidState(String),
    /// The caller's role does not allow this change (checked in the same
    /// transaction as the change).
    #[error("{0}")]
    NotPermitted(String),
    /// The tenant's executions that have not finished are at its quota
    /// (`create_execution_within`); nothing was created.
    #[error("the tenant runs {active} executions, its limit; wait for one to finish")]
    ExecutionQuota { active: i64, limit: u32 },
    /// `finish_execution` was given a status that is not final.
    #[error("cannot finish an execution as '{0}': not a final status")]
    NotFinal(codexos_core::ExecutionStatus),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The kinds of objects the store names in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Tenant,
    ApiKey,
    Agent,
    AgentVersion,
    Execution,
    ApprovalRequest,
    Secret,
    AuditEntry,
    Member,
    User,
    SsoConfig,
    PublisherKey,
    PolicyVersion,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Tenant => "tenant",
            Entity::ApiKey => "api key",
            Entity::Agent => "agent",
            Entity::AgentVersion => "agent version",
            Entity::Execution => "execution",
            Entity::ApprovalRequest => "approval request",
            Entity::Secret => "secret",
            Entity::AuditEntry => "audit entry",
            Entity::Member => "member",
            Entity::User => "user",
            Entity::SsoConfig => "single sign-on configuration",
            Entity::PublisherKey => "publisher key",
            Entity::PolicyVersion => "policy version",
        })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether a database error is a unique-constraint violation, which
    /// callers turn into a conflict rather than a failure.
    pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
    }
}

/// Reads a column that must hold one of our ids.
pub(crate) fn parse_id<T>(text: &str, parse: impl Fn(&str) -> Result<T, codexos_core::ids::IdError>) -> Result<T> {
    parse(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}
