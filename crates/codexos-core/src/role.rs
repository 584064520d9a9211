//! Roles a member or an API key holds within a tenant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The fixed set of roles, from most to least powerful. The permissions
/// each one grants are defined with the endpoints that check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Developer,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    /// Whether a holder of `self` may hand out `other` (e.g. create a key
    /// with that role): nobody can grant more than they hold.
    pub fn can_grant(self, other: Role) -> bool {
        self <= other
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{0}' (expected owner, admin, developer or viewer)")]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| RoleError(text.chars().take(32).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn nobody_grants_more_than_they_hold() {
        assert!(Role::Owner.can_grant(Role::Admin));
        assert!(Role::Admin.can_grant(Role::Admin));
        assert!(!Role::Developer.can_grant(Role::Admin));
        assert!(!Role::Viewer.can_grant(Role::Developer));
    }
}

/// What a caller may do. Every endpoint declares the one it needs; each role
/// holds a fixed set (see `Role::allows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// See the installation's detailed health (queue, workers, host).
    #[serde(rename = "health:read")]
    HealthRead,
    #[serde(rename = "agents:read")]
    AgentsRead,
    #[serde(rename = "agents:write")]
    AgentsWrite,
    #[serde(rename = "executions:read")]
    ExecutionsRead,
    #[serde(rename = "executions:run")]
    ExecutionsRun,
    #[serde(rename = "executions:approve")]
    ExecutionsApprove,
    #[serde(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// List the tenant's secrets by name (never their values).
    #[serde(rename = "secrets:read")]
    SecretsRead,
    /// Set and delete the tenant's secrets.
    #[serde(rename = "secrets:write")]
    SecretsWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "tenant:admin")]
    TenantAdmin,
    #[serde(rename = "billing:manage")]
    BillingManage,
}

impl Permission {
    pub const ALL: [Permission; 13] = [
        Permission::HealthRead,
        Permission::AgentsRead,
        Permission::AgentsWrite,
        Permission::ExecutionsRead,
        Permission::ExecutionsRun,
        Permission::ExecutionsApprove,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::SecretsRead,
        Permission::SecretsWrite,
        Permission::AuditRead,
        Permission::TenantAdmin,
        Permission::BillingManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::HealthRead => "health:read",
            Permission::AgentsRead => "agents:read",
            Permission::AgentsWrite => "agents:write",
            Permission::ExecutionsRead => "executions:read",
            Permission::ExecutionsRun => "executions:run",
            Permission::ExecutionsApprove => "executions:approve",
            Permission::KeysRead => "keys:read",
            Permission::KeysWrite => "keys:write",
            Permission::SecretsRead => "secrets:read",
            Permission::SecretsWrite => "secrets:write",
            Permission::AuditRead => "audit:read",
            Permission::TenantAdmin => "tenant:admin",
            Permission::BillingManage => "billing:manage",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    /// The permission table. Owners hold everything; admins everything but
    /// billing; developers build and run (and see which secrets exist);
    /// viewers read.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Owner => true,
            Role::Admin => permission != BillingManage,
            Role::Developer => {
                matches!(
                    permission,
                    AgentsRead | AgentsWrite | ExecutionsRead | ExecutionsRun | ExecutionsApprove | SecretsRead
                )
            }
            Role::Viewer => matches!(permission, AgentsRead | ExecutionsRead | AuditRead),
        }
    }
}

#[cfg(test)]
mod permission_tests {
    use super::*;

    #[test]
    fn the_permission_matrix() {
        use Permission::*;
        // Columns: owner, admin, developer, viewer (docs/tenancy.md).
        let table = [
            (HealthRead, [true, true, false, false]),
            (AgentsRead, [true, true, true, true]),
            (AgentsWrite, [true, true, true, false]),
            (ExecutionsRead, [true, true, true, true]),
            (ExecutionsRun, [true, true, true, false]),
            (ExecutionsApprove, [true, true, true, false]),
            (KeysRead, [true, true, false, false]),
            (KeysWrite, [true, true, false, false]),
            (SecretsRead, [true, true, true, false]),
            (SecretsWrite, [true, true, false, false]),
            (AuditRead, [true, true, false, true]),
            (TenantAdmin, [true, true, false, false]),
            (BillingManage, [true, false, false, false]),
        ];
        assert_eq!(table.len(), Permission::ALL.len(), "every permission is in the table");
        for (permission, expected) in table {
            let actual = Role::ALL.map(|role| role.allows(permission));
            assert_eq!(actual, expected, "{permission}");
        }
    }
}
