//! Newtypes for identifiers, so an id of one kind cannot be passed where
//! another is expected, and an unvalidated string cannot reach the core.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7): ids sort by creation time,
            /// which keeps B-tree inserts local.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses an id given from outside (a path segment, a CLI argument).
            pub fn parse(text: &str) -> Result<Self, IdError> {
                Uuid::parse_str(text).map(Self).map_err(|_| IdError {
                    kind: stringify!($name),
                    text: text.chars().take(64).collect(),
                })
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: the unit of isolation. Every tenant-owned row carries one.
    TenantId
);
uuid_id!(
    /// A user: an identity that can be a member of several tenants.
    UserId
);
uuid_id!(
    /// An API key's public id (never the secret).
    ApiKeyId
);
uuid_id!(
    /// A login session's public id (never its secret).
    SessionId
);
uuid_id!(
    /// A registered agent (all its versions).
    AgentId
);
uuid_id!(
    /// One version of an agent: an immutable manifest.
    AgentVersionId
);
uuid_id!(
    /// One execution of an agent on a task.
    ExecutionId
);

/// A string that is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a valid {kind} (expected a UUID)")]
pub struct IdError {
    pub kind: &'static str,
    pub text: String,
}

/// A tenant's short name, as used in URLs and metric labels:
/// 1 to 63 characters of `[a-z0-9-]`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(text: &str) -> Result<Self, SlugError> {
        let valid_chars = text.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if text.is_empty() || text.len() > 63 || !valid_chars || text.starts_with('-') || text.ends_with('-') {
            return Err(SlugError(text.chars().take(64).collect()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TenantSlug {
    type Error = SlugError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<TenantSlug> for String {
    fn from(slug: TenantSlug) -> Self {
        slug.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid tenant slug (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')")]
pub struct SlugError(pub String);

/// A tenant secret's name: 1 to 128 characters of `[A-Za-z0-9_]`, not
/// starting with a digit (`GH_TOKEN`, `openai_key`): the shape of an
/// environment variable name, so a secret can be named where one is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl SecretName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(text: &str) -> Result<Self, SecretNameError> {
        let valid = text.bytes().next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
            && text.len() <= Self::MAX_LEN
            && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !valid {
            return Err(SecretNameError(text.chars().take(64).collect()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SecretName {
    type Error = SecretNameError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<SecretName> for String {
    fn from(name: SecretName) -> Self {
        name.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid secret name (1-128 characters of A-Z, a-z, 0-9 and '_', not starting with a digit)")]
pub struct SecretNameError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let tenant = TenantId::new();
        assert_eq!(TenantId::parse(&tenant.to_string()), Ok(tenant));
    }

    #[test]
    fn a_bad_id_names_its_kind() {
        let err = ExecutionId::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "'nope' is not a valid ExecutionId (expected a UUID)");
    }

    #[test]
    fn secret_names_are_validated() {
        for good in ["GH_TOKEN", "_x", "a", "openai_key2", &"K".repeat(128)] {
            assert!(SecretName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "a-b", "a b", "é", "A.B", &"K".repeat(129)] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs_are_validated() {
        for good in ["default", "acme-corp", "a", "t1"] {
            assert!(TenantSlug::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Acme", "a b", "a_b", &"x".repeat(64)] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }
}
