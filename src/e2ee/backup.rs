//! Server-side key backup: versions, and room keys with the spec's replacement rules.

use ruma::UserId;
use serde_json::{json, Map, Value};

use super::{parse_object, E2ee};
use crate::{
    error::{MatrixError, Result},
    storage::e2ee::{self as repo, BackupKey},
};

fn parse_version(version: &str) -> Result<i64> {
    version.parse().map_err(|_| MatrixError::not_found("Unknown backup version"))
}

/// Whether `new` should replace `old` (spec: verified beats unverified, then the lower
/// first_message_index, then the lower forwarded_count).
fn better(new: &BackupKey, old: &BackupKey) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

impl E2ee {
    pub async fn create_backup(&self, user: &UserId, algorithm: &Value) -> Result<String> {
        let (name, auth_data) = split_algorithm(algorithm)?;
        let mut tx = self.db.begin_write().await?;
        let version = repo::create_backup(&mut tx, user.as_str(), &name, &auth_data).await?;
        tx.commit().await?;
        Ok(version.to_string())
    }

    /// The backup version's info (the latest when `version` is None).
    pub async fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let version = version.map(parse_version).transpose()?;
        let backup = repo::backup(self.db.pool(), user.as_str(), version)
            .await?
            .ok_or_else(|| MatrixError::not_found(if version.is_some() { "Unknown backup version" } else { "No current backup version" }))?;
        let count = repo::count_backup_keys(self.db.pool(), user.as_str(), backup.version).await?;
        Ok(json!({
            "algorithm": backup.algorithm,
            "auth_data": parse_object(&backup.auth_data),
            "count": count,
            "etag": backup.etag.to_string(),
            "version": backup.version.to_string(),
        }))
    }

    pub async fn update_backup(&self, user: &UserId, version: &str, algorithm: &Value) -> Result<()> {
        let number = parse_version(version)?;
        let existing = repo::backup(self.db.pool(), user.as_str(), Some(number))
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        let (name, auth_data) = split_algorithm(algorithm)?;
        if name != existing.algorithm {
            return Err(MatrixError::invalid_param("The algorithm of a backup version cannot change"));
        }
        if algorithm.get("version").and_then(Value::as_str).is_some_and(|v| v != version) {
            return Err(MatrixError::invalid_param("version in the body does not match the path"));
        }
        let mut tx = self.db.begin_write().await?;
        repo::update_backup(&mut tx, user.as_str(), number, &auth_data).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let number = parse_version(version)?;
        let mut tx = self.db.begin_write().await?;
        let deleted = repo::delete_backup(&mut tx, user.as_str(), number).await?;
        tx.commit().await?;
        if !deleted {
            return Err(MatrixError::not_found("Unknown backup version"));
        }
        Ok(())
    }

    /// Keys may only be added to the current (latest) version.
    async fn current_version(&self, user: &UserId, version: &str) -> Result<i64> {
        let latest = repo::backup(self.db.pool(), user.as_str(), None).await?;
        match latest {
            Some(latest) if latest.version.to_string() == version => Ok(latest.version),
            Some(latest) => Err(MatrixError::new(http::StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version")
                .with("current_version", latest.version.to_string().into())),
            None => Err(MatrixError::not_found("Unknown backup version")),
        }
    }

    /// Stores keys (room, session, KeyBackupData) by the replacement rules; returns {etag, count}.
    pub async fn put_backup_keys(&self, user: &UserId, version: &str, keys: Vec<(String, String, Value)>) -> Result<Value> {
        let number = self.current_version(user, version).await?;
        let mut tx = self.db.begin_write().await?;
        let mut changed = false;
        for (room_id, session_id, data) in keys {
            let field = |name: &str| data.get(name).ok_or_else(|| MatrixError::bad_json(format!("key backup data needs {name}")));
            let new = BackupKey {
                room_id,
                session_id,
                first_message_index: field("first_message_index")?.as_i64().ok_or_else(|| MatrixError::bad_json("first_message_index"))?,
                forwarded_count: field("forwarded_count")?.as_i64().ok_or_else(|| MatrixError::bad_json("forwarded_count"))?,
                is_verified: field("is_verified")?.as_bool().ok_or_else(|| MatrixError::bad_json("is_verified"))?,
                session_data: field("session_data")?.to_string(),
            };
            let replace = match repo::backup_key(&mut tx, user.as_str(), number, &new.room_id, &new.session_id).await? {
                Some(old) => better(&new, &old),
                None => true,
            };
            if replace {
                repo::put_backup_key(&mut tx, user.as_str(), number, &new).await?;
                changed = true;
            }
        }
        if changed {
            repo::bump_backup_etag(&mut tx, user.as_str(), number).await?;
        }
        tx.commit().await?;
        self.etag_and_count(user, number).await
    }

    pub async fn delete_backup_keys(&self, user: &UserId, version: &str, room: Option<&str>, session: Option<&str>) -> Result<Value> {
        let number = parse_version(version)?;
        repo::backup(self.db.pool(), user.as_str(), Some(number)).await?.ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        let mut tx = self.db.begin_write().await?;
        repo::delete_backup_keys(&mut tx, user.as_str(), number, room, session).await?;
        repo::bump_backup_etag(&mut tx, user.as_str(), number).await?;
        tx.commit().await?;
        self.etag_and_count(user, number).await
    }

    async fn etag_and_count(&self, user: &UserId, number: i64) -> Result<Value> {
        let backup = repo::backup(self.db.pool(), user.as_str(), Some(number)).await?.ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        let count = repo::count_backup_keys(self.db.pool(), user.as_str(), number).await?;
        Ok(json!({ "etag": backup.etag.to_string(), "count": count }))
    }

    /// Keys of a version as `{rooms: {room: {sessions: {session: data}}}}`, narrowed to a room
    /// or a session when given.
    pub async fn get_backup_keys(&self, user: &UserId, version: &str, room: Option<&str>, session: Option<&str>) -> Result<Value> {
        let number = parse_version(version)?;
        repo::backup(self.db.pool(), user.as_str(), Some(number)).await?.ok_or_else(|| MatrixError::not_found("Unknown backup version"))?;
        let keys = repo::backup_keys(self.db.pool(), user.as_str(), number, room, session).await?;
        let mut rooms: Map<String, Value> = Map::new();
        for key in keys {
            let data = json!({
                "first_message_index": key.first_message_index,
                "forwarded_count": key.forwarded_count,
                "is_verified": key.is_verified,
                "session_data": parse_object(&key.session_data),
            });
            rooms
                .entry(key.room_id)
                .or_insert_with(|| json!({ "sessions": {} }))["sessions"][key.session_id] = data;
        }
        Ok(json!({ "rooms": rooms }))
    }
}

fn split_algorithm(body: &Value) -> Result<(String, String)> {
    let name = body["algorithm"].as_str().ok_or_else(|| MatrixError::bad_json("algorithm is required"))?;
    let auth_data = body.get("auth_data").filter(|a| a.is_object()).ok_or_else(|| MatrixError::bad_json("auth_data must be an object"))?;
    Ok((name.to_owned(), auth_data.to_string()))
}
