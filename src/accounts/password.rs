//! Password hashing: argon2id with the crate's default (OWASP) parameters, which use 19 MiB
//! per hash. At most one hash per core runs at a time, so a burst of registrations or
//! logins queues instead of spawning a blocking thread (and its memory) per request.

use std::sync::Arc;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::error::{MatrixError, Result};

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        Self { permits: Arc::new(Semaphore::new(cores)) }
    }
}

impl Passwords {
    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| MatrixError::internal("password hashing stopped"))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| MatrixError::internal(e.to_string()))
    }

    /// A PHC string (`$argon2id$...`) for a new password.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| MatrixError::internal(format!("password hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches a stored PHC string (false for malformed strings).
    pub async fn verify(&self, hash: String, password: String) -> Result<bool> {
        self.run(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let passwords = Passwords::default();
        let first = passwords.hash("correct horse".into()).await.unwrap();
        let second = passwords.hash("correct horse".into()).await.unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second);
        assert!(passwords.verify(first.clone(), "correct horse".into()).await.unwrap());
        assert!(!passwords.verify(first, "wrong".into()).await.unwrap());
        assert!(!passwords.verify("not a hash".into(), "x".into()).await.unwrap());
    }
}
