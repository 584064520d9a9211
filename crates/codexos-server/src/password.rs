//! Passwords for local login: Argon2id with the crate's recommended
//! parameters, stored as PHC strings (algorithm, parameters and salt travel
//! with the hash, so they can be raised later without breaking old ones).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Bounds on a new password: long enough to resist guessing, short enough
/// that hashing it costs what we planned.
pub const MIN_CHARS: usize = 12;
pub const MAX_BYTES: usize = 1024;

/// Whether `password` may be set, or why not.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_CHARS {
        return Err(format!("a password has at least {MIN_CHARS} characters"));
    }
    if password.len() > MAX_BYTES {
        return Err(format!("a password has at most {MAX_BYTES} bytes"));
    }
    Ok(())
}

/// Hashes a password (tens of milliseconds: call it off the async threads).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| format!("cannot hash the password: {err}"))
}

/// Whether `password` matches `stored`. Without a stored hash (an unknown
/// user, or one without a password) a fixed hash is checked instead, so the
/// answer takes as long either way and timing does not tell who exists.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let candidate = stored.unwrap_or(DECOY);
    let Ok(parsed) = PasswordHash::new(candidate) else { return false };
    let matches =
        password.len() <= MAX_BYTES && Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    matches && stored.is_some()
}

/// The Argon2id hash of a random string nobody knows, with the default parameters.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3Vb0vPYHz3Kq6R2ZC3Vw0nGXUu6sQn1tWQnQx2m8J0Q";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let first = hash("correct horse battery").unwrap();
        let second = hash("correct horse battery").unwrap();
        assert_ne!(first, second, "every hash has its own salt");
        assert!(first.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&first)));
        assert!(!verify("correct horse batterY", Some(&first)));
    }

    #[test]
    fn without_a_hash_nothing_verifies() {
        assert!(PasswordHash::new(DECOY).is_ok(), "the decoy must parse, or the timing differs");
        assert!(!verify("anything", None));
        assert!(!verify("anything", Some("not a hash")));
    }

    #[test]
    fn new_passwords_are_bounded() {
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(MAX_BYTES + 1)).is_err());
        assert!(check_new("twelve chars").is_ok());
    }
}
