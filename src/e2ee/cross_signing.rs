//! Cross-signing: master, self-signing and user-signing keys, and signatures on keys.

use std::collections::BTreeMap;

use ruma::{serde::Base64, CanonicalJsonObject, UserId};
use serde_json::{json, Map, Value};

use super::{parse_object, E2ee};
use crate::{
    error::{MatrixError, Result},
    storage::e2ee as repo,
};

/// The (single) ed25519 public key of a cross-signing key.
pub fn public_key_of(key: &Value) -> Option<String> {
    let keys = key["keys"].as_object()?;
    let (key_id, public) = keys.iter().next()?;
    let public = public.as_str()?;
    (key_id == &format!("ed25519:{public}")).then(|| public.to_owned())
}

/// Checks `signer`'s signature with `key_id` (`ed25519:<name>`) and public key over `object`
/// (its `signatures` and `unsigned` set aside).
fn verify(object: &Value, signer: &str, key_id: &str, public: &str, signature: &str) -> bool {
    let mut signed = object.clone();
    if let Some(map) = signed.as_object_mut() {
        map.remove("unsigned");
        map.insert("signatures".into(), json!({ signer: { key_id: signature } }));
    }
    let Ok(canonical) = crate::crypto::to_canonical(&signed) else { return false };
    let ruma::CanonicalJsonValue::Object(canonical): ruma::CanonicalJsonValue = canonical else { return false };
    let Ok(public) = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(public) else { return false };
    let keys: BTreeMap<String, Base64> = [(key_id.to_owned(), public)].into();
    let map = [(signer.to_owned(), keys)].into();
    ruma::signatures::verify_json(&map, &canonical as &CanonicalJsonObject).is_ok()
}

/// The signature `signer` made with `key_id` in a key object, if any.
fn signature_in<'a>(object: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    object["signatures"][signer][key_id].as_str()
}

fn check_key(key: &Value, user: &UserId, usage: &str) -> Result<String> {
    if key["user_id"].as_str() != Some(user.as_str()) {
        return Err(MatrixError::invalid_param(format!("{usage} key is for another user")));
    }
    if !key["usage"].as_array().is_some_and(|u| u.iter().any(|v| v == usage)) {
        return Err(MatrixError::invalid_param(format!("{usage} key lacks the {usage} usage")));
    }
    if key["keys"].as_object().map(Map::len) != Some(1) {
        return Err(MatrixError::invalid_param(format!("{usage} key must hold exactly one key")));
    }
    public_key_of(key).ok_or_else(|| MatrixError::invalid_param(format!("{usage} key id must be ed25519:<public key>")))
}

impl E2ee {
    pub async fn has_master_key(&self, user: &UserId) -> Result<bool> {
        Ok(repo::cross_signing_key(self.db.pool(), user.as_str(), "master").await?.is_some())
    }

    /// keys/device_signing/upload (after UIA): the sub-keys must be signed by the master key.
    pub async fn upload_signing_keys(
        &self,
        user: &UserId,
        master: Option<Value>,
        self_signing: Option<Value>,
        user_signing: Option<Value>,
    ) -> Result<()> {
        let master_public = match &master {
            Some(key) => check_key(key, user, "master")?,
            None => match repo::cross_signing_key(self.db.pool(), user.as_str(), "master").await? {
                Some(text) => public_key_of(&parse_object(&text)).ok_or_else(|| MatrixError::internal("stored master key unreadable"))?,
                None if self_signing.is_some() || user_signing.is_some() => {
                    return Err(MatrixError::invalid_param("Upload a master key first"));
                }
                None => return Ok(()),
            },
        };
        let master_key_id = format!("ed25519:{master_public}");
        for (key, usage) in [(&self_signing, "self_signing"), (&user_signing, "user_signing")] {
            if let Some(key) = key {
                check_key(key, user, usage)?;
                let signed = signature_in(key, user.as_str(), &master_key_id)
                    .is_some_and(|sig| verify(key, user.as_str(), &master_key_id, &master_public, sig));
                if !signed {
                    return Err(MatrixError::invalid_param(format!("The {usage} key is not signed by the master key")));
                }
            }
        }
        let mut tx = self.db.begin_write().await?;
        for (key, kind) in [(master, "master"), (self_signing, "self_signing"), (user_signing, "user_signing")] {
            if let Some(key) = key {
                repo::set_cross_signing_key(&mut tx, user.as_str(), kind, &key.to_string()).await?;
            }
        }
        repo::mark_device_list_change(&mut tx, user.as_str()).await?;
        tx.commit().await?;
        self.announce_device_change(user).await?;
        self.send_signing_key_update(user).await
    }

    /// keys/signatures/upload: signatures of the requester's devices (by their self-signing
    /// key), of their master key (by a device), and of other users' master keys (by their
    /// user-signing key). Returns failures per user and key.
    pub async fn upload_signatures(&self, requester: &UserId, signed: &BTreeMap<String, BTreeMap<String, Value>>) -> Result<Value> {
        let mut failures = Map::new();
        let mut accepted: Vec<(String, String, String, String)> = Vec::new();
        let mut changed_users = Vec::new();
        for (target_user, keys) in signed {
            for (key_id, uploaded) in keys {
                match self.check_signature(requester, target_user, key_id, uploaded).await {
                    Ok(found) => {
                        accepted.extend(found);
                        changed_users.push(target_user.clone());
                    }
                    Err(message) => {
                        failures
                            .entry(target_user.clone())
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .expect("object")
                            .insert(key_id.clone(), json!({ "errcode": "M_INVALID_SIGNATURE", "error": message }));
                    }
                }
            }
        }
        let mut tx = self.db.begin_write().await?;
        for (target_user, target_key, signer_key_id, signature) in &accepted {
            repo::add_signature(&mut tx, target_user, target_key, requester.as_str(), signer_key_id, signature).await?;
        }
        changed_users.sort();
        changed_users.dedup();
        for user in &changed_users {
            repo::mark_device_list_change(&mut tx, user).await?;
        }
        tx.commit().await?;
        for user in &changed_users {
            if let Ok(user) = UserId::parse(user.as_str()) {
                self.announce_device_change(&user).await?;
            }
        }
        // The requester's own newly signed keys go to the servers sharing their rooms (as
        // Synapse sends them): a signed device as a device update, a signed master key as a
        // signing-key update. Signatures of other users' keys stay private.
        let own_devices: Vec<String> = repo::device_keys(self.db.pool(), requester.as_str()).await?.into_iter().map(|(device, _)| device).collect();
        let mut own_master_signed = false;
        let mut own_signed_devices: Vec<&str> = Vec::new();
        for (target_user, target_key, _, _) in &accepted {
            if target_user != requester.as_str() {
                continue;
            }
            if own_devices.contains(target_key) {
                if !own_signed_devices.contains(&target_key.as_str()) {
                    own_signed_devices.push(target_key);
                }
            } else {
                own_master_signed = true;
            }
        }
        for device in own_signed_devices {
            self.local_device_changed(requester, device, false).await?;
        }
        if own_master_signed {
            self.send_signing_key_update(requester).await?;
        }
        Ok(json!({ "failures": failures }))
    }

    /// The valid new signatures in an upload: (target user, target key, signer key id, signature).
    async fn check_signature(
        &self,
        requester: &UserId,
        target_user: &str,
        key_id: &str,
        uploaded: &Value,
    ) -> std::result::Result<Vec<(String, String, String, String)>, String> {
        let db = self.db.pool();
        let stored = |kind: &'static str, user: String| async move {
            repo::cross_signing_key(db, &user, kind).await.map_err(|e| e.to_string()).map(|k| k.map(|t| parse_object(&t)))
        };
        // Which key is being signed, and with which of the requester's keys.
        let (target, signer_keys): (Value, Vec<(String, String)>) = if target_user == requester.as_str() {
            let device = repo::device_keys(db, target_user)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|(device_id, _)| device_id == key_id);
            match device {
                Some((_, device_json)) => {
                    let self_signing = stored("self_signing", target_user.to_owned()).await?.ok_or("No self-signing key")?;
                    let public = public_key_of(&self_signing).ok_or("Bad self-signing key")?;
                    (parse_object(&device_json), vec![(format!("ed25519:{public}"), public)])
                }
                None => {
                    let master = stored("master", target_user.to_owned()).await?.ok_or("Unknown key")?;
                    if public_key_of(&master).as_deref() != Some(key_id) {
                        return Err("Unknown key".into());
                    }
                    // The master key signed by one of the user's devices.
                    let devices = repo::device_keys(db, target_user).await.map_err(|e| e.to_string())?;
                    let device_keys = devices
                        .into_iter()
                        .filter_map(|(device_id, json)| {
                            let key_id = format!("ed25519:{device_id}");
                            parse_object(&json)["keys"][&key_id].as_str().map(|public| (key_id, public.to_owned()))
                        })
                        .collect();
                    (master, device_keys)
                }
            }
        } else {
            let master = stored("master", target_user.to_owned()).await?.ok_or("Unknown key")?;
            if public_key_of(&master).as_deref() != Some(key_id) {
                return Err("Only master keys of other users can be signed".into());
            }
            let user_signing = stored("user_signing", requester.to_string()).await?.ok_or("No user-signing key")?;
            let public = public_key_of(&user_signing).ok_or("Bad user-signing key")?;
            (master, vec![(format!("ed25519:{public}"), public)])
        };
        let mut found = Vec::new();
        for (signer_key_id, public) in signer_keys {
            if let Some(signature) = signature_in(uploaded, requester.as_str(), &signer_key_id) {
                if !verify(&target, requester.as_str(), &signer_key_id, &public, signature) {
                    return Err(format!("Invalid signature by {signer_key_id}"));
                }
                found.push((target_user.to_owned(), key_id.to_owned(), signer_key_id, signature.to_owned()));
            }
        }
        if found.is_empty() {
            return Err("No signature by a key this user may sign with".into());
        }
        Ok(found)
    }
}
