//! Accounts: users, passwords, devices and access tokens.

pub mod password;
pub mod uia;

use std::time::Duration;

use rand::{distributions::Alphanumeric, Rng};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::{
    error::{MatrixError, Result},
    storage::{accounts as repo, user_directory as directory_repo, Db},
};

/// The user and device behind an access token.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_admin: bool,
    /// A guest account: only the endpoints the spec opens to guests.
    pub is_guest: bool,
    /// Locked by an admin: nothing but logging out (`M_USER_LOCKED`).
    pub is_locked: bool,
    /// Suspended by an admin: may read, not act (`M_USER_SUSPENDED`).
    pub is_suspended: bool,
    /// Set when an application service acts as this user (its `as_token`): the service's id.
    pub appservice_id: Option<String>,
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
    /// How long an access token issued with a refresh token lives.
    refreshable_lifetime: Duration,
    /// Announces device changes (new, renamed, deleted devices) to syncs and other servers.
    device_lists: Option<crate::e2ee::E2ee>,
    /// When each device was last written as seen, and from where: a device's
    /// `last_seen_ts` / `last_seen_ip` is written at most once a `SEEN_GRANULARITY` (or
    /// when its address changes), not on every request.
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), (Option<String>, i64)>>>,
}

/// How stale a device's `last_seen_ts` may get (Synapse batches its writes likewise).
const SEEN_GRANULARITY_MS: i64 = 60_000;

/// A fresh login: the tokens are shown to the client once and stored only hashed.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    /// With `refresh_token: true`: the refresh token, and when the access token expires.
    pub refresh: Option<(String, Duration)>,
}

const DEFAULT_REFRESHABLE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long an OpenID token stays valid (Synapse: one hour).
const OPENID_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

pub fn random_string(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn new_access_token() -> String {
    format!("wft_{}", random_string(40))
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Accounts {
    pub fn new(db: Db, server_name: OwnedServerName) -> Self {
        Self {
            db,
            server_name,
            passwords: password::Passwords::default(),
            refreshable_lifetime: DEFAULT_REFRESHABLE_LIFETIME,
            device_lists: None,
            seen: Default::default(),
        }
    }

    /// Device changes are announced through the E2EE service (device lists in /sync,
    /// m.device_list_update to other servers).
    pub fn with_device_lists(mut self, e2ee: crate::e2ee::E2ee) -> Self {
        self.device_lists = Some(e2ee);
        self
    }

    async fn announce_device_change(&self, user_id: &UserId, device_id: &str, deleted: bool) -> Result<()> {
        match &self.device_lists {
            Some(e2ee) => e2ee.local_device_changed(user_id, device_id, deleted).await,
            None => Ok(()),
        }
    }

    /// Lifetime of access tokens issued with refresh tokens.
    pub fn with_refreshable_lifetime(mut self, lifetime: Duration) -> Self {
        self.refreshable_lifetime = lifetime;
        self
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
        if owner.expires_ts.is_some_and(|expires| expires <= crate::storage::now_ms()) {
            // The client refreshes and carries on: a soft logout.
            return Err(MatrixError::unknown_token("Access token expired").with("soft_logout", true.into()));
        }
        if !owner.used {
            let mut tx = self.db.begin_write().await?;
            repo::mark_token_used(&mut tx, &token_hash, owner.refresh_token_hash.as_deref()).await?;
            tx.commit().await?;
        }
        Ok(Requester {
            user_id: UserId::parse(owner.user_id).map_err(|e| MatrixError::internal(e.to_string()))?,
            device_id: owner.device_id.into(),
            is_admin: owner.is_admin,
            is_guest: owner.is_guest,
            is_locked: owner.locked,
            is_suspended: owner.suspended,
            appservice_id: None,
            token_hash,
        })
    }

    /// An application service acting as one of its users (identity assertion), the
    /// service having checked that the user is in its namespace. The user must have been
    /// registered; a device, when named, must be the user's. Without one the request has
    /// no device: `device_id` is empty.
    pub async fn masquerade(&self, appservice_id: &str, user_id: &UserId, device_id: Option<&str>, is_sender: bool) -> Result<Requester> {
        let user = repo::get_user(self.db.pool(), user_id.as_str()).await?;
        let user = match user {
            Some(user) => user,
            None if is_sender => {
                // The service's own user exists from the first start (see `ensure_appservice_user`).
                return Err(MatrixError::forbidden(format!("Application service user {user_id} is missing")));
            }
            None => return Err(MatrixError::forbidden(format!("Application service has not registered this user ({user_id})"))),
        };
        if user.deactivated {
            return Err(MatrixError::forbidden(format!("User {user_id} is deactivated")));
        }
        if let Some(device_id) = device_id {
            if repo::get_device(self.db.pool(), user_id.as_str(), device_id).await?.is_none() {
                return Err(MatrixError::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN_DEVICE", format!("Device {device_id} is not one of {user_id}'s")));
            }
        }
        let (locked, suspended) = repo::moderation(self.db.pool(), user_id.as_str()).await?.unwrap_or_default();
        Ok(Requester {
            user_id: user_id.to_owned(),
            device_id: device_id.unwrap_or_default().into(),
            is_admin: user.is_admin,
            is_guest: user.is_guest,
            is_locked: locked,
            is_suspended: suspended,
            appservice_id: Some(appservice_id.to_owned()),
            token_hash: String::new(),
        })
    }

    /// Creates an application service's own user if it does not exist yet (a service acts
    /// as it before registering anyone), marked as the service's.
    pub async fn ensure_appservice_user(&self, user_id: &UserId, appservice_id: &str) -> Result<()> {
        if repo::user_exists(self.db.pool(), user_id.as_str()).await? {
            return Ok(());
        }
        match self.create_user_with_hash(user_id, None, false).await {
            Err(error) if error.errcode != "M_USER_IN_USE" => return Err(error),
            _ => {}
        }
        crate::storage::appservice::set_user_appservice(self.db.pool(), user_id.as_str(), appservice_id).await?;
        Ok(())
    }

    /// Records that a device made a request from `ip` (for the device list's and whois's
    /// "last seen"): written in the background, at most once a minute per device unless
    /// the address changed.
    pub fn note_seen(&self, requester: &Requester, ip: Option<std::net::IpAddr>) {
        let now = crate::storage::now_ms();
        let ip = ip.map(|ip| ip.to_string());
        let key = (requester.user_id.to_string(), requester.device_id.to_string());
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((last_ip, last_ts)) = seen.get(&key) {
                if *last_ip == ip && now - last_ts < SEEN_GRANULARITY_MS {
                    return;
                }
            }
            seen.insert(key.clone(), (ip.clone(), now));
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            let written = async {
                let mut tx = db.begin_write().await?;
                repo::touch_device(&mut **tx, &key.0, &key.1, ip.as_deref()).await?;
                tx.commit().await
            };
            if let Err(error) = written.await {
                tracing::warn!(%error, "could not record a device as seen");
            }
        });
    }

    /// A local account's (locked, suspended) flags; `M_NOT_FOUND` for no such account or a
    /// deactivated one (the spec's answer for both).
    pub async fn moderation(&self, user_id: &UserId) -> Result<(bool, bool)> {
        let known = repo::get_user(self.db.pool(), user_id.as_str()).await?.filter(|user| !user.deactivated);
        let flags = match known {
            Some(_) => repo::moderation(self.db.pool(), user_id.as_str()).await?,
            None => None,
        };
        flags.ok_or_else(|| MatrixError::not_found("User not found"))
    }

    /// Locks or unlocks an account. Its tokens stay valid (the spec: a lock is lifted
    /// without logging in again).
    pub async fn set_locked(&self, user_id: &UserId, locked: bool) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::set_locked(&mut tx, user_id.as_str(), locked).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_admin(&self, user_id: &UserId, is_admin: bool) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::set_admin(&mut tx, user_id.as_str(), is_admin).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings a deactivated account back with a new password (deactivation removed the
    /// old one); it is listed in the user directory again.
    pub async fn reactivate(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self.passwords.hash(password.to_owned()).await?;
        let mut tx = self.db.begin_write().await?;
        repo::reactivate(&mut tx, user_id.as_str(), &hash).await?;
        self.refresh_directory_entry(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_suspended(&self, user_id: &UserId, suspended: bool) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::set_suspended(&mut tx, user_id.as_str(), suspended).await?;
        tx.commit().await?;
        Ok(())
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
        self.create_user_with_hash(user_id, hash.as_deref(), is_admin).await
    }

    /// The parameters a UIA session keeps (`{}` when none): a registration's, see `register`.
    pub async fn session_params(&self, session: &str) -> Result<serde_json::Value> {
        Ok(repo::uia_params(self.db.pool(), session).await?)
    }

    pub async fn keep_session_params(&self, session: &str, params: &serde_json::Value) -> Result<()> {
        Ok(repo::set_uia_params(self.db.pool(), session, params).await?)
    }

    /// A password's stored form (for a registration that completes in a later request).
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        self.passwords.hash(password.to_owned()).await
    }

    /// Creates an account whose password was hashed by `hash_password`.
    pub async fn create_user_with_hash(&self, user_id: &UserId, hash: Option<&str>, is_admin: bool) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if !repo::create_user(&mut **tx, user_id.as_str(), hash, is_admin).await? {
            return Err(MatrixError::user_in_use("User ID already taken"));
        }
        // A new account's display name is its localpart, as Synapse sets it: clients show
        // a name, not a raw user id.
        repo::set_displayname(&mut **tx, user_id.as_str(), Some(user_id.localpart())).await?;
        directory_repo::upsert(&mut tx, user_id.as_str(), Some(user_id.localpart()), None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or with None removes) the user's display name, in the user directory too.
    /// Member events in the user's rooms follow through `Rooms::propagate_profile`.
    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::set_displayname(&mut **tx, user_id.as_str(), name).await?;
        self.refresh_directory_entry(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (or removes) the user's avatar, in the user directory too.
    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::set_avatar_url(&mut **tx, user_id.as_str(), url).await?;
        self.refresh_directory_entry(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The directory shows full accounts' global profiles; guests and deactivated accounts
    /// are not listed.
    async fn refresh_directory_entry(&self, tx: &mut crate::storage::Tx, user_id: &UserId) -> Result<()> {
        match repo::get_user(&mut **tx, user_id.as_str()).await? {
            Some(user) if !user.deactivated && !user.is_guest => {
                directory_repo::upsert(tx, user_id.as_str(), user.displayname.as_deref(), user.avatar_url.as_deref()).await?
            }
            _ => directory_repo::remove(tx, user_id.as_str()).await?,
        }
        Ok(())
    }

    /// Creates a guest account with a numeric localpart (as Synapse's guests have).
    pub async fn create_guest(&self) -> Result<OwnedUserId> {
        for _ in 0..8 {
            let localpart = rand::random::<u32>().to_string();
            let user_id = self.local_user_id(&localpart)?;
            if repo::create_guest(self.db.pool(), user_id.as_str()).await? {
                return Ok(user_id);
            }
        }
        Err(MatrixError::internal("could not find a free guest id"))
    }

    /// Makes the guest `user_id` a full account with `password`, keeping its id, rooms and
    /// devices. `M_FORBIDDEN` when it is not a guest account.
    pub async fn upgrade_guest(&self, user_id: &UserId, hash: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if !repo::upgrade_guest(&mut tx, user_id.as_str(), hash).await? {
            return Err(MatrixError::forbidden("Not a guest account"));
        }
        self.refresh_directory_entry(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new OpenID token for `user_id`, valid for `OPENID_TOKEN_LIFETIME`.
    pub async fn issue_openid_token(&self, user_id: &UserId) -> Result<(String, Duration)> {
        let token = random_string(32);
        let expires = crate::storage::now_ms() + OPENID_TOKEN_LIFETIME.as_millis() as i64;
        let mut tx = self.db.begin_write().await?;
        repo::insert_openid_token(&mut tx, &hash_token(&token), user_id.as_str(), expires).await?;
        tx.commit().await?;
        Ok((token, OPENID_TOKEN_LIFETIME))
    }

    /// The user an OpenID token was issued to, while it is valid.
    pub async fn openid_token_owner(&self, token: &str) -> Result<Option<OwnedUserId>> {
        match repo::openid_token_owner(self.db.pool(), &hash_token(token)).await? {
            Some(user) => Ok(Some(UserId::parse(user)?)),
            None => Ok(None),
        }
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
        if !self.passwords.verify(hash, password.to_owned()).await? {
            return Err(MatrixError::forbidden("Invalid username or password"));
        }
        // A locked account cannot log in (it could do nothing with the session).
        if repo::moderation(self.db.pool(), user_id.as_str()).await?.is_some_and(|(locked, _)| locked) {
            return Err(MatrixError::new(http::StatusCode::UNAUTHORIZED, "M_USER_LOCKED", "This account has been locked")
                .with("soft_logout", true.into()));
        }
        Ok(())
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self.passwords.hash(password.to_owned()).await?;
        repo::set_password_hash(self.db.pool(), user_id.as_str(), Some(&hash)).await?;
        Ok(())
    }

    /// Starts a session on a (new or existing) device and returns its token.
    /// `refreshable`: the client asked for a refresh token (`refresh_token: true`); its access
    /// token then expires.
    pub async fn login(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<&str>,
        refreshable: bool,
    ) -> Result<Session> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase().into());
        let mut tx = self.db.begin_write().await?;
        let new_device = repo::get_device(&mut **tx, user_id.as_str(), device_id.as_str()).await?.is_none();
        repo::upsert_device(&mut **tx, user_id.as_str(), device_id.as_str(), display_name).await?;
        if new_device {
            crate::storage::e2ee::mark_device_list_change(&mut tx, user_id.as_str()).await?;
        }
        // A re-login on the same device replaces its old session.
        repo::delete_device_tokens(&mut tx, user_id.as_str(), device_id.as_str()).await?;
        let session = if refreshable {
            self.issue_refreshable(&mut tx, user_id, device_id, None).await?
        } else {
            let access_token = new_access_token();
            repo::insert_token(&mut **tx, &hash_token(&access_token), user_id.as_str(), device_id.as_str()).await?;
            Session { user_id: user_id.to_owned(), device_id, access_token, refresh: None }
        };
        tx.commit().await?;
        if new_device {
            self.announce_device_change(user_id, session.device_id.as_str(), false).await?;
        }
        Ok(session)
    }

    /// A new access token that expires, with a refresh token replacing `prev` (if any).
    async fn issue_refreshable(
        &self,
        tx: &mut crate::storage::Tx,
        user_id: &UserId,
        device_id: OwnedDeviceId,
        prev: Option<&str>,
    ) -> Result<Session> {
        let access_token = new_access_token();
        let refresh_token = format!("wfr_{}", random_string(40));
        let refresh_hash = hash_token(&refresh_token);
        let expires = crate::storage::now_ms() + self.refreshable_lifetime.as_millis() as i64;
        repo::insert_refresh_token(tx, &refresh_hash, user_id.as_str(), device_id.as_str(), prev).await?;
        repo::insert_refreshable_token(tx, &hash_token(&access_token), user_id.as_str(), device_id.as_str(), expires, &refresh_hash).await?;
        Ok(Session { user_id: user_id.to_owned(), device_id, access_token, refresh: Some((refresh_token, self.refreshable_lifetime)) })
    }

    /// `POST /refresh`: trades a refresh token for a new access and refresh token. The old
    /// refresh token keeps working until the new pair is used, so a lost answer can be
    /// retried; a token that is unknown or already replaced and used is `M_UNKNOWN_TOKEN`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let token_hash = hash_token(refresh_token);
        let mut tx = self.db.begin_write().await?;
        let Some((user, device, prev)) = repo::refresh_token_owner(&mut **tx, &token_hash).await? else {
            return Err(MatrixError::unknown_token("Unknown refresh token").with("soft_logout", false.into()));
        };
        let user_id = UserId::parse(user).map_err(|e| MatrixError::internal(e.to_string()))?;
        // Using this token proves the client has it: the one it replaced is done with.
        if let Some(prev) = prev {
            repo::delete_refresh_token(&mut tx, &prev).await?;
        }
        repo::delete_refresh_children(&mut tx, &token_hash).await?;
        let session = self.issue_refreshable(&mut tx, &user_id, device.into(), Some(&token_hash)).await?;
        tx.commit().await?;
        Ok(session)
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
        self.announce_device_change(user_id, device_id, true).await
    }

    /// Renames a device (None clears its name); false when the user has no such device.
    pub async fn rename_device(&self, user_id: &UserId, device_id: &str, display_name: Option<&str>) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        if !repo::rename_device(&mut **tx, user_id.as_str(), device_id, display_name).await? {
            return Ok(false);
        }
        crate::storage::e2ee::mark_device_list_change(&mut tx, user_id.as_str()).await?;
        tx.commit().await?;
        self.announce_device_change(user_id, device_id, false).await?;
        Ok(true)
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let devices = repo::list_devices(self.db.pool(), user_id.as_str()).await?;
        let mut tx = self.db.begin_write().await?;
        repo::delete_all_devices(&mut tx, user_id.as_str(), None).await?;
        repo::deactivate(&mut **tx, user_id.as_str()).await?;
        directory_repo::remove(&mut tx, user_id.as_str()).await?;
        tx.commit().await?;
        for device in devices {
            self.announce_device_change(user_id, &device.device_id, true).await?;
        }
        Ok(())
    }
}

