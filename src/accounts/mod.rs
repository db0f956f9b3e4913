//! Accounts: users, passwords, devices and access tokens.

pub mod password;
pub mod uia;

use rand::{distributions::Alphanumeric, Rng};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::{
    error::{MatrixError, Result},
    storage::{accounts as repo, Db},
};

/// The user and device behind an access token.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_admin: bool,
    token_hash: String,
}

impl Requester {
    pub fn token_hash(&self) -> &str {
        &self.token_hash
    }
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    server_name: OwnedServerName,
    passwords: password::Passwords,
}

/// A fresh login: the token is shown to the client once and stored only hashed.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

pub fn random_string(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Accounts {
    pub fn new(db: Db, server_name: OwnedServerName) -> Self {
        Self { db, server_name, passwords: password::Passwords::default() }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Resolves an access token; `M_UNKNOWN_TOKEN` when it is not (or no longer) valid.
    pub async fn authenticate(&self, token: &str) -> Result<Requester> {
        let token_hash = hash_token(token);
        let owner = repo::token_owner(self.db.pool(), &token_hash)
            .await?
            .ok_or_else(|| MatrixError::unknown_token("Unknown access token").with("soft_logout", false.into()))?;
        if owner.deactivated {
            return Err(MatrixError::unknown_token("Account deactivated"));
        }
        Ok(Requester {
            user_id: UserId::parse(owner.user_id).map_err(|e| MatrixError::internal(e.to_string()))?,
            device_id: owner.device_id.into(),
            is_admin: owner.is_admin,
            token_hash,
        })
    }

    /// Builds and validates a local user id from a localpart (lower-cased as clients expect).
    pub fn local_user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        if !valid {
            return Err(MatrixError::invalid_username(
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            ));
        }
        let user_id = UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| MatrixError::invalid_username(e.to_string()))?;
        if user_id.as_str().len() > 255 {
            return Err(MatrixError::invalid_username("User ID is too long"));
        }
        Ok(user_id)
    }

    /// Parses what a client typed as a user: a localpart or a full id of this server.
    pub fn parse_login_user(&self, user: &str) -> Result<OwnedUserId> {
        if user.starts_with('@') {
            let user_id = UserId::parse(user.to_lowercase()).map_err(|_| MatrixError::invalid_username("Invalid user ID"))?;
            if user_id.server_name() != self.server_name {
                return Err(MatrixError::forbidden("Invalid username or password"));
            }
            Ok(user_id)
        } else {
            self.local_user_id(&user.to_lowercase())
        }
    }

    pub async fn is_available(&self, user_id: &UserId) -> Result<bool> {
        Ok(!repo::user_exists(self.db.pool(), user_id.as_str()).await?)
    }

    /// Creates an account. `M_USER_IN_USE` if taken.
    pub async fn create_user(&self, user_id: &UserId, password: Option<&str>, is_admin: bool) -> Result<()> {
        let hash = match password {
            Some(password) => Some(self.passwords.hash(password.to_owned()).await?),
            None => None,
        };
        if !repo::create_user(self.db.pool(), user_id.as_str(), hash.as_deref(), is_admin).await? {
            return Err(MatrixError::user_in_use("User ID already taken"));
        }
        Ok(())
    }

    /// Checks a password; errors with `M_FORBIDDEN` on mismatch, `M_USER_DEACTIVATED` when so.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let user = repo::get_user(self.db.pool(), user_id.as_str()).await?;
        let Some(user) = user else {
            return Err(MatrixError::forbidden("Invalid username or password"));
        };
        if user.deactivated {
            return Err(MatrixError::user_deactivated("This account has been deactivated"));
        }
        let Some(hash) = user.password_hash else {
            return Err(MatrixError::forbidden("Invalid username or password"));
        };
        if self.passwords.verify(hash, password.to_owned()).await? {
            Ok(())
        } else {
            Err(MatrixError::forbidden("Invalid username or password"))
        }
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self.passwords.hash(password.to_owned()).await?;
        repo::set_password_hash(self.db.pool(), user_id.as_str(), Some(&hash)).await?;
        Ok(())
    }

    /// Starts a session on a (new or existing) device and returns its token.
    pub async fn login(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<&str>,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase().into());
        let access_token = format!("wft_{}", random_string(40));
        let mut tx = self.db.begin_write().await?;
        repo::upsert_device(&mut **tx, user_id.as_str(), device_id.as_str(), display_name).await?;
        // A re-login on the same device replaces its old session.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&mut **tx)
            .await?;
        repo::insert_token(&mut **tx, &hash_token(&access_token), user_id.as_str(), device_id.as_str()).await?;
        tx.commit().await?;
        Ok(Session { user_id: user_id.to_owned(), device_id, access_token })
    }

    pub async fn logout(&self, requester: &Requester) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::delete_device(&mut tx, requester.user_id.as_str(), requester.device_id.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes every device (and token) of the user, except `keep` when given.
    pub async fn logout_all(&self, user_id: &UserId, keep: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::delete_all_devices(&mut tx, user_id.as_str(), keep).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_device(&self, user_id: &UserId, device_id: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::delete_device(&mut tx, user_id.as_str(), device_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::delete_all_devices(&mut tx, user_id.as_str(), None).await?;
        repo::deactivate(&mut **tx, user_id.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }
}

