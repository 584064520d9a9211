//! The vocabulary every CodexOS crate shares: identifiers, roles and the
//! typed settings of a process.
//!
//! This crate holds no I/O beyond reading the settings file, so every other
//! crate can depend on it without pulling in a runtime, a database or HTTP.

pub mod execution;
pub mod ids;
pub mod publisher;
pub mod quota;
pub mod role;
pub mod settings;
pub mod size;

pub use execution::ExecutionStatus;
pub use ids::{AgentId, AgentVersionId, ApiKeyId, ExecutionId, SecretName, SessionId, TenantId, TenantSlug, UserId};
pub use publisher::{PublisherKeyId, SignatureStatus};
pub use quota::{QuotaOverrides, Quotas, UsagePeriod};
pub use role::{Permission, Role};
pub use settings::{DatabaseBackend, LogFormat, ModelEndpoint, Settings, SettingsError};
pub use size::parse_size;

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub fn now_millis() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// Formats a stored timestamp as RFC 3339 (UTC, milliseconds) for people and JSON.
pub fn format_millis(millis: i64) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}
