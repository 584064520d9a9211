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
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The kinds of objects the store names in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Tenant,
    ApiKey,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Tenant => "tenant",
            Entity::ApiKey => "api key",
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
