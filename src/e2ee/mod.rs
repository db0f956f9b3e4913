//! End-to-end encryption support: the server stores and hands out keys exactly as the spec
//! says and never decrypts anything.

pub mod backup;
pub mod cross_signing;

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{json, Map, Value};

use crate::{
    error::{MatrixError, Result},
    storage::{e2ee as repo, rooms as room_repo, Db},
    sync::notifier::Notifier,
};

#[derive(Clone)]
pub struct E2ee {
    db: Db,
    notifier: Notifier,
    edus: Option<crate::outbox::EduQueue>,
}

fn parse_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// `algorithm:key_id` → algorithm.
fn algorithm_of(key_id: &str) -> Result<&str> {
    match key_id.split_once(':') {
        Some((algorithm, id)) if !algorithm.is_empty() && !id.is_empty() => Ok(algorithm),
        _ => Err(MatrixError::invalid_param(format!("Key id {key_id:?} is not algorithm:id"))),
    }
}

impl E2ee {
    pub fn new(db: Db, notifier: Notifier) -> Self {
        Self { db, notifier, edus: None }
    }

    /// Device and cross-signing key changes of local users go out as EDUs.
    pub fn with_federation(mut self, edus: crate::outbox::EduQueue) -> Self {
        self.edus = Some(edus);
        self
    }

    /// Another server says one of its users' devices or cross-signing keys changed.
    pub async fn remote_device_change(&self, user: &UserId) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::mark_device_list_change(&mut tx, user.as_str()).await?;
        tx.commit().await?;
        let watchers = room_repo::users_sharing_rooms(self.db.pool(), user.as_str()).await?;
        self.notifier.wake(watchers.iter().map(String::as_str));
        Ok(())
    }

    /// Tells the servers sharing rooms with `user` that a device's keys changed.
    async fn send_device_update(&self, user: &UserId, device: &str, keys: Option<&Value>, deleted: bool) -> Result<()> {
        let Some(edus) = &self.edus else { return Ok(()) };
        // stream_id is this change's position; prev_id the user's previous one, so the
        // receiver can tell whether it missed an update.
        let (stream_id, previous) = repo::user_device_list_positions(self.db.pool(), user.as_str()).await?;
        let mut content = json!({ "user_id": user, "device_id": device, "stream_id": stream_id, "prev_id": previous.into_iter().collect::<Vec<_>>() });
        if deleted {
            content["deleted"] = true.into();
        }
        if let Some(keys) = keys {
            content["keys"] = keys.clone();
        }
        edus.to_user_peers(user, &json!({ "edu_type": "m.device_list_update", "content": content })).await
    }

    /// Tells the servers sharing rooms with `user` that their cross-signing keys changed.
    pub(crate) async fn send_signing_key_update(&self, user: &UserId) -> Result<()> {
        let Some(edus) = &self.edus else { return Ok(()) };
        let mut content = json!({ "user_id": user });
        for (kind, field) in [("master", "master_key"), ("self_signing", "self_signing_key")] {
            if let Some(text) = repo::cross_signing_key(self.db.pool(), user.as_str(), kind).await? {
                let mut key = parse_object(&text);
                if let Some(public) = cross_signing::public_key_of(&key) {
                    self.merge_signatures(&mut key, user.as_str(), &public).await?;
                }
                content[field] = key;
            }
        }
        edus.to_user_peers(user, &json!({ "edu_type": "m.signing_key_update", "content": content })).await
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Wakes the syncs of everyone who shares a room with `user` (and the user), after their
    /// devices or cross-signing keys changed.
    pub(crate) async fn announce_device_change(&self, user: &UserId) -> Result<()> {
        let watchers = room_repo::users_sharing_rooms(self.db.pool(), user.as_str()).await?;
        self.notifier.wake(watchers.iter().map(String::as_str).chain([user.as_str()]));
        Ok(())
    }

    /// A local user's device was created, renamed or deleted (the change is already marked
    /// in the device-list stream): wakes the syncs that show it and tells the other servers
    /// sharing a room with the user, as Synapse does for every device change.
    pub async fn local_device_changed(&self, user: &UserId, device: &str, deleted: bool) -> Result<()> {
        self.announce_device_change(user).await?;
        let mut keys = if deleted {
            None
        } else {
            repo::device_keys(self.db.pool(), user.as_str()).await?.into_iter().find(|(d, _)| d == device).map(|(_, k)| parse_object(&k))
        };
        if let Some(keys) = &mut keys {
            // With the signatures uploaded since (cross-signing), as keys/query serves them.
            self.merge_signatures(keys, user.as_str(), device).await?;
        }
        self.send_device_update(user, device, keys.as_ref(), deleted).await
    }

    /// keys/upload: device keys, one-time keys, fallback keys. Returns the one-time key counts.
    pub async fn upload(
        &self,
        user: &UserId,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: BTreeMap<String, Value>,
        fallback_keys: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, i64>> {
        let mut tx = self.db.begin_write().await?;
        let mut changed = false;
        if let Some(keys) = device_keys {
            if keys["user_id"].as_str() != Some(user.as_str()) || keys["device_id"].as_str() != Some(device) {
                return Err(MatrixError::invalid_param("device_keys must be for the uploading user and device"));
            }
            if !keys["algorithms"].is_array() || !keys["keys"].is_object() || !keys["signatures"].is_object() {
                return Err(MatrixError::bad_json("device_keys needs algorithms, keys and signatures"));
            }
            changed = repo::set_device_keys(&mut tx, user.as_str(), device, &keys.to_string()).await?;
            if changed {
                repo::mark_device_list_change(&mut tx, user.as_str()).await?;
            }
        }
        for (key_id, key) in &one_time_keys {
            let algorithm = algorithm_of(key_id)?;
            let text = key.to_string();
            match repo::one_time_key(&mut tx, user.as_str(), device, key_id).await? {
                Some(existing) if parse_object(&existing) != *key => {
                    return Err(MatrixError::invalid_param(format!("One-time key {key_id} already exists with different content")));
                }
                Some(_) => {}
                None => repo::add_one_time_key(&mut tx, user.as_str(), device, key_id, algorithm, &text).await?,
            }
        }
        for (key_id, key) in &fallback_keys {
            let algorithm = algorithm_of(key_id)?;
            repo::set_fallback_key(&mut tx, user.as_str(), device, algorithm, key_id, &key.to_string()).await?;
        }
        tx.commit().await?;
        if changed {
            self.announce_device_change(user).await?;
            let keys = repo::device_keys(self.db.pool(), user.as_str()).await?.into_iter().find(|(d, _)| d == device).map(|(_, k)| parse_object(&k));
            self.send_device_update(user, device, keys.as_ref(), false).await?;
        }
        Ok(repo::one_time_key_counts(self.db.pool(), user.as_str(), device).await?.into_iter().collect())
    }

    /// keys/query for local users: device keys (with display names and uploaded signatures)
    /// and cross-signing keys (the user-signing key only for the requester).
    pub async fn query(&self, requester: &UserId, users: &BTreeMap<String, Vec<String>>) -> Result<Value> {
        let mut device_keys = Map::new();
        let mut master = Map::new();
        let mut self_signing = Map::new();
        let mut user_signing = Map::new();
        for (user, wanted) in users {
            let mut devices = Map::new();
            for (device_id, key_json) in repo::device_keys(self.db.pool(), user).await? {
                if !wanted.is_empty() && !wanted.contains(&device_id) {
                    continue;
                }
                let mut keys = parse_object(&key_json);
                self.merge_signatures(&mut keys, user, &device_id).await?;
                // Always an object, as Synapse serves it (clients read unsigned without checking).
                if !keys["unsigned"].is_object() {
                    keys["unsigned"] = Value::Object(Map::new());
                }
                if let Some(device) = crate::storage::accounts::get_device(self.db.pool(), user, &device_id).await? {
                    if let Some(name) = device.display_name {
                        keys["unsigned"]["device_display_name"] = name.into();
                    }
                }
                devices.insert(device_id, keys);
            }
            device_keys.insert(user.clone(), Value::Object(devices));
            for (kind, target) in [("master", &mut master), ("self_signing", &mut self_signing), ("user_signing", &mut user_signing)] {
                if kind == "user_signing" && user != requester.as_str() {
                    continue;
                }
                if let Some(text) = repo::cross_signing_key(self.db.pool(), user, kind).await? {
                    let mut key = parse_object(&text);
                    if let Some(public) = cross_signing::public_key_of(&key) {
                        self.merge_signatures(&mut key, user, &public).await?;
                    }
                    target.insert(user.clone(), key);
                }
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": {},
        }))
    }

    async fn merge_signatures(&self, key: &mut Value, user: &str, target: &str) -> Result<()> {
        for (signer, key_id, signature) in repo::signatures_for(self.db.pool(), user, target).await? {
            key["signatures"][signer][key_id] = signature.into();
        }
        Ok(())
    }

    /// keys/claim: one one-time key per (user, device, algorithm), each handed out exactly
    /// once; the fallback key when none are left.
    pub async fn claim(&self, wanted: &BTreeMap<String, BTreeMap<String, String>>) -> Result<Value> {
        let mut claimed = Map::new();
        let mut tx = self.db.begin_write().await?;
        for (user, devices) in wanted {
            let mut per_device = Map::new();
            for (device, algorithm) in devices {
                let key = match repo::take_one_time_key(&mut tx, user, device, algorithm).await? {
                    Some(key) => Some(key),
                    None => repo::use_fallback_key(&mut tx, user, device, algorithm).await?,
                };
                if let Some((key_id, key_json)) = key {
                    per_device.insert(device.clone(), json!({ key_id: parse_object(&key_json) }));
                }
            }
            if !per_device.is_empty() {
                claimed.insert(user.clone(), Value::Object(per_device));
            }
        }
        tx.commit().await?;
        Ok(json!({ "one_time_keys": claimed, "failures": {} }))
    }

    /// For /sync: unclaimed one-time keys per algorithm and unused fallback key types.
    pub async fn device_key_state(&self, user: &UserId, device: &str) -> Result<(Value, Value)> {
        let (counts, fallback) = repo::key_state(self.db.pool(), user.as_str(), device).await?;
        let mut counts: Map<String, Value> = counts.into_iter().map(|(algorithm, count)| (algorithm, count.into())).collect();
        // The spec's example always carries the signed_curve25519 count, zero included.
        counts.entry("signed_curve25519".to_owned()).or_insert(0.into());
        Ok((Value::Object(counts), json!(fallback)))
    }

    pub async fn device_list_position(&self) -> Result<i64> {
        Ok(repo::max_device_list_position(self.db.pool()).await?)
    }

    /// Users sharing a room with `user` (or the user) whose keys changed in `(after, up_to]`.
    pub async fn changed_between(&self, user: &UserId, after: i64, up_to: i64) -> Result<Vec<String>> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        Ok(repo::changed_users_between(self.db.pool(), user.as_str(), after, up_to).await?)
    }
}
