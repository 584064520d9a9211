//! People: users (global identities, found by email), their memberships in
//! tenants (with a role), login sessions, and the throttle that slows and
//! locks password guessing. Password hashing is the caller's (the store
//! keeps the encoded hash); session secrets are stored as SHA-256 like keys.

use codexos_core::{Role, SessionId, TenantId, TenantSlug, UserId, now_millis};
use sqlx::Row;

use crate::api_keys::{BearerSecret, Credential, KEY_RANDOM_CHARS, Principal, hash_secret, new_secret};
use crate::error::{Entity, parse_id};
use crate::{Backend, Intent, Result, Store, StoreError};

/// Every session secret starts with this.
const SESSION_PREFIX: &str = "cxs_";

/// A member of a tenant, as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub user: UserId,
    pub email: String,
    pub role: Role,
    /// Whether the user can log in with a password.
    pub has_password: bool,
    pub created_at: i64,
}

/// What a login needs to check a password: the user and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub user: UserId,
    pub password_hash: Option<String>,
    /// The user's role in the tenant, `None` when not a member.
    pub role: Option<Role>,
}

/// A new session: its id, its secret (for the cookie) and its expiry.
#[derive(Debug)]
pub struct NewSession {
    pub id: SessionId,
    pub secret: BearerSecret,
    pub expires_at: i64,
}

/// Recent login attempts of one subject (an account or an address) that
/// did not succeed (or have not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub failures: i64,
    pub locked_until: Option<i64>,
}

/// The outcome of counting an attempt: `locked_until` is set when the
/// subject was locked already (the attempt was not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginAttempt {
    pub locked_until: Option<i64>,
    pub state: Throttle,
}

/// Normalizes an email for lookup: addresses are compared case-insensitively.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    /// Adds `email` to the tenant with `role`, creating the user if nobody
    /// has that email yet, with `password_hash` (if given) as the password
    /// of this membership: passwords are per tenant, so what one tenant's
    /// admin sets opens nothing of another's. `Conflict` if already a member.
    pub async fn add_member(
        &self,
        tenant: TenantId,
        email: &str,
        role: Role,
        password_hash: Option<&str>,
    ) -> Result<Member> {
        let email = normalize_email(email);
        let now = now_millis();
        // Users are global: found or created across tenants, then the
        // membership is written as the tenant.
        let mut tx = self.system_tx(Intent::Write).await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(&email).fetch_optional(&mut *tx).await?;
        let user = match existing {
            Some(id) => parse_id(&id, UserId::parse)?,
            None => {
                let user = UserId::new();
                sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
                    .bind(user.to_string())
                    .bind(&email)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                user
            }
        };
        self.set_tenant(&mut tx, tenant).await?;
        let inserted = sqlx::query(
            "INSERT INTO memberships (tenant_id, user_id, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => return Err(StoreError::Conflict(Entity::Member)),
            other => other?,
        };
        tx.commit().await?;
        Ok(Member { user, email, role, has_password: password_hash.is_some(), created_at: now })
    }

    /// The tenant's members, oldest first.
    pub async fn list_members(&self, tenant: TenantId) -> Result<Vec<Member>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(
            "SELECT u.id, u.email, m.password_hash, m.role, m.created_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(tenant.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(member_from_row).collect()
    }

    /// One member; `NotFound` for a user who is not a member of this tenant.
    pub async fn member(&self, tenant: TenantId, user: UserId) -> Result<Member> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found = fetch_member(&mut tx, tenant, user).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Changes a member's role, for a caller holding `by`: nobody changes a
    /// member above their own role or grants more than they hold (checked
    /// here, under the row's lock, so a concurrent promotion cannot slip
    /// past). A tenant keeps at least one owner.
    pub async fn set_member_role(&self, tenant: TenantId, user: UserId, role: Role, by: Role) -> Result<Member> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let current = self.lock_member(&mut tx, tenant, user).await?;
        if !by.can_grant(current.role) || !by.can_grant(role) {
            return Err(StoreError::NotPermitted(format!("a {by} cannot change a {} into a {role}", current.role)));
        }
        if current.role == Role::Owner && role != Role::Owner {
            self.ensure_another_owner(&mut tx, tenant).await?;
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE tenant_id = $2 AND user_id = $3")
            .bind(role.as_str())
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Member { role, ..current })
    }

    /// Removes a member: their sessions end with the membership and their
    /// keys in this tenant are revoked. A tenant keeps at least one owner.
    pub async fn remove_member(&self, tenant: TenantId, user: UserId, by: Role) -> Result<Member> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let current = self.lock_member(&mut tx, tenant, user).await?;
        if !by.can_grant(current.role) {
            return Err(StoreError::NotPermitted(format!("a {by} cannot remove a {}", current.role)));
        }
        if current.role == Role::Owner {
            self.ensure_another_owner(&mut tx, tenant).await?;
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now_millis())
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(current)
    }

    /// What a login to `tenant` as `email` must check: `None` for an
    /// unknown tenant, else the tenant and the user if there is one. Spans
    /// tenants (the caller is not yet anybody's).
    pub async fn login_record(
        &self,
        tenant: &TenantSlug,
        email: &str,
    ) -> Result<Option<(TenantId, Option<LoginRecord>)>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let tenant_id: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(tenant_id) = tenant_id else { return Ok(None) };
        let row = sqlx::query(
            "SELECT u.id, m.password_hash, m.role FROM users u \
             LEFT JOIN memberships m ON m.user_id = u.id AND m.tenant_id = $1 WHERE u.email = $2",
        )
        .bind(&tenant_id)
        .bind(normalize_email(email))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let tenant_id = parse_id(&tenant_id, TenantId::parse)?;
        let Some(row) = row else { return Ok(Some((tenant_id, None))) };
        let user: String = row.try_get("id")?;
        let role: Option<String> = row.try_get("role")?;
        Ok(Some((
            tenant_id,
            Some(LoginRecord {
                user: parse_id(&user, UserId::parse)?,
                password_hash: row.try_get("password_hash")?,
                role: role.map(|role| parse_role(&role)).transpose()?,
            }),
        )))
    }

    /// A member's password hash in this tenant, for checking the current
    /// one before a change.
    pub async fn password_hash(&self, tenant: TenantId, user: UserId) -> Result<Option<String>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let hash: Option<Option<String>> =
            sqlx::query_scalar("SELECT password_hash FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.to_string())
                .bind(user.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        hash.ok_or(StoreError::NotFound(Entity::Member))
    }

    /// Sets a member's password in this tenant and ends their sessions here
    /// (whoever knew the old password is logged out).
    pub async fn set_password(&self, tenant: TenantId, user: UserId, password_hash: &str) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let updated = sqlx::query("UPDATE memberships SET password_hash = $1 WHERE tenant_id = $2 AND user_id = $3")
            .bind(password_hash)
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::Member));
        }
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now_millis())
            .bind(tenant.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Opens a session for a member, valid for `ttl_ms`.
    pub async fn create_session(&self, tenant: TenantId, user: UserId, ttl_ms: i64) -> Result<NewSession> {
        let id = SessionId::new();
        let secret = new_secret(SESSION_PREFIX);
        let now = now_millis();
        let expires_at = now.saturating_add(ttl_ms);
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, user_id, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(user.to_string())
        .bind(hash_secret(&secret))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        // Expired sessions of this member go while we are here.
        sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND expires_at < $3")
            .bind(tenant.to_string())
            .bind(user.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(NewSession { id, secret: BearerSecret::new(secret), expires_at })
    }

    /// The live session with this secret, as a caller: one indexed lookup.
    /// Unknown, revoked and expired sessions all answer `None`.
    pub async fn authenticate_session(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with(SESSION_PREFIX) || secret.len() != SESSION_PREFIX.len() + KEY_RANDOM_CHARS {
            return Ok(None);
        }
        let mut tx = self.system_tx(Intent::Read).await?;
        let row = sqlx::query(
            "SELECT s.id, s.tenant_id, s.user_id, m.role, t.slug FROM sessions s \
             JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id \
             JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.secret_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
        )
        .bind(hash_secret(secret))
        .bind(now_millis())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let tenant: String = row.try_get("tenant_id")?;
        let user: String = row.try_get("user_id")?;
        let role: String = row.try_get("role")?;
        let slug: String = row.try_get("slug")?;
        Ok(Some(Principal {
            tenant: parse_id(&tenant, TenantId::parse)?,
            tenant_slug: TenantSlug::parse(&slug).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            credential: Credential::Session(parse_id(&id, SessionId::parse)?),
            user: Some(parse_id(&user, UserId::parse)?),
            role: parse_role(&role)?,
        }))
    }

    /// Ends a session (logout); harmless if it already ended.
    pub async fn revoke_session(&self, tenant: TenantId, session: SessionId) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now_millis())
            .bind(tenant.to_string())
            .bind(session.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a login attempt of `subject` before its password is checked,
    /// atomically, so that guesses sent in parallel are each counted: the
    /// answer says whether the subject was locked already (then nothing is
    /// counted, and the attempt must be refused unchecked) and the state
    /// after counting. Attempts older than `window_ms` are forgotten first
    /// (never while a lock lasts); `lock_for` says, from the new count, how
    /// long the subject is locked (0: not). A successful login gives its
    /// attempt back (`forgive_login_attempt`).
    pub async fn count_login_attempt(
        &self,
        subject: &str,
        window_ms: i64,
        lock_for: impl Fn(i64) -> i64,
    ) -> Result<LoginAttempt> {
        let now = now_millis();
        let mut tx = self.begin(Intent::Write).await?;
        sqlx::query(
            "INSERT INTO login_throttle (subject, failures, first_failure_at, locked_until) VALUES ($1, 0, $2, NULL) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(subject)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let (failures, first, locked_until): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT failures, first_failure_at, locked_until FROM login_throttle WHERE subject = $1{lock}"
        ))
        .bind(subject)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(until) = locked_until.filter(|until| *until > now) {
            tx.commit().await?;
            return Ok(LoginAttempt { locked_until: Some(until), state: Throttle { failures, locked_until } });
        }
        let (failures, first) = if now - first <= window_ms { (failures + 1, first) } else { (1, now) };
        let lock_ms = lock_for(failures);
        let locked_until = (lock_ms > 0).then(|| now.saturating_add(lock_ms));
        sqlx::query(
            "UPDATE login_throttle SET failures = $1, first_failure_at = $2, locked_until = $3 WHERE subject = $4",
        )
        .bind(failures)
        .bind(first)
        .bind(locked_until)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        // Subjects whose window and lock have both passed are forgotten
        // (the table holds only recent trouble).
        sqlx::query(
            "DELETE FROM login_throttle WHERE first_failure_at < $1 AND (locked_until IS NULL OR locked_until < $2)",
        )
        .bind(now.saturating_sub(window_ms))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(LoginAttempt { locked_until: None, state: Throttle { failures, locked_until } })
    }

    /// Gives back the attempt a successful login counted.
    pub async fn forgive_login_attempt(&self, subject: &str) -> Result<()> {
        sqlx::query("UPDATE login_throttle SET failures = failures - 1 WHERE subject = $1 AND failures > 0")
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a subject's failures (after a successful login).
    pub async fn clear_login_failures(&self, subject: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_throttle WHERE subject = $1").bind(subject).execute(&self.pool).await?;
        Ok(())
    }
}

async fn fetch_member(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    user: UserId,
) -> Result<Member> {
    let row = sqlx::query(
        "SELECT u.id, u.email, m.password_hash, m.role, m.created_at FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.user_id = $2",
    )
    .bind(tenant.to_string())
    .bind(user.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound(Entity::Member))?;
    member_from_row(&row)
}

impl Store {
    /// The member, with their row locked for the rest of the transaction
    /// (on SQLite the write transaction holds the whole database).
    async fn lock_member(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Member> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE")
                .bind(tenant.to_string())
                .bind(user.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        }
        fetch_member(tx, tenant, user).await
    }

    /// Fails unless another owner remains, with the owners' rows locked so
    /// that two owners demoting each other at once cannot both pass.
    async fn ensure_another_owner(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: TenantId,
    ) -> Result<()> {
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let owners: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner'{lock}"
        ))
        .bind(tenant.to_string())
        .fetch_all(&mut **tx)
        .await?;
        if owners.len() <= 1 {
            return Err(StoreError::InvalidState(
                "a tenant keeps at least one owner: make another member owner first".into(),
            ));
        }
        Ok(())
    }
}

fn member_from_row(row: &sqlx::any::AnyRow) -> Result<Member> {
    let user: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    let hash: Option<String> = row.try_get("password_hash")?;
    Ok(Member {
        user: parse_id(&user, UserId::parse)?,
        email: row.try_get("email")?,
        role: parse_role(&role)?,
        has_password: hash.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

fn parse_role(text: &str) -> Result<Role> {
    text.parse().map_err(|err: codexos_core::role::RoleError| StoreError::Corrupt(err.to_string()))
}
