//! E2EE endpoints: keys upload / query / claim / changes, cross-signing, key backup.

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use ruma::api::client::{
    backup::{
        add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
        delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
        get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
    keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
};
use serde_json::{json, Value};

use super::extract::Ruma;
use crate::{
    accounts::{
        uia::{UiaContext, PASSWORD},
        Accounts,
    },
    e2ee::E2ee,
    error::{MatrixError, Result},
    federation::Federation,
    sync::{token::SyncToken, Sync},
};

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| MatrixError::bad_json(e.to_string()))
}

fn raw_value<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))
}

pub async fn upload(State(e2ee): State<E2ee>, request: Ruma<upload_keys::v3::Request>) -> Result<Json<Value>> {
    let user = request.user().clone();
    let body = &request.body;
    let device_keys = body.device_keys.as_ref().map(raw_value).transpose()?;
    let mut one_time_keys = BTreeMap::new();
    for (id, key) in &body.one_time_keys {
        one_time_keys.insert(id.to_string(), raw_value(key)?);
    }
    let mut fallback_keys = BTreeMap::new();
    for (id, key) in &body.fallback_keys {
        fallback_keys.insert(id.to_string(), raw_value(key)?);
    }
    let counts = e2ee.upload(&user.user_id, user.device_id.as_str(), device_keys, one_time_keys, fallback_keys).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

pub async fn query(
    State(e2ee): State<E2ee>,
    State(federation): State<Federation>,
    request: Ruma<get_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.user().user_id.clone();
    let mut wanted = BTreeMap::new();
    let mut remote: BTreeMap<ruma::OwnedServerName, BTreeMap<ruma::OwnedUserId, Vec<ruma::OwnedDeviceId>>> = BTreeMap::new();
    for (target, devices) in &request.body.device_keys {
        if target.server_name() != e2ee_server(&request) {
            remote.entry(target.server_name().to_owned()).or_default().insert(target.clone(), devices.clone());
            continue;
        }
        wanted.insert(target.to_string(), devices.iter().map(ToString::to_string).collect());
    }
    let mut response = e2ee.query(&user, &wanted).await?;
    // Other servers' users: asked of their servers, failures reported per server.
    for (server, users) in remote {
        let ask = ruma::api::federation::keys::get_keys::v1::Request::new(users);
        match federation.send(&server, ask).await {
            Ok(answer) => {
                for (user, devices) in answer.device_keys {
                    let devices: serde_json::Map<String, Value> = devices
                        .into_iter()
                        .filter_map(|(device, keys)| Some((device.to_string(), serde_json::from_str(keys.json().get()).ok()?)))
                        .collect();
                    response["device_keys"][user.as_str()] = Value::Object(devices);
                }
                for (user, key) in answer.master_keys {
                    response["master_keys"][user.as_str()] = serde_json::from_str(key.json().get()).unwrap_or(Value::Null);
                }
                for (user, key) in answer.self_signing_keys {
                    response["self_signing_keys"][user.as_str()] = serde_json::from_str(key.json().get()).unwrap_or(Value::Null);
                }
            }
            Err(error) => {
                response["failures"][server.as_str()] = json!({ "errcode": error.errcode, "error": error.message });
            }
        }
    }
    Ok(Json(response))
}

fn e2ee_server<T>(request: &Ruma<T>) -> &ruma::ServerName {
    request.user().user_id.server_name()
}

pub async fn claim(
    State(e2ee): State<E2ee>,
    State(federation): State<Federation>,
    request: Ruma<claim_keys::v3::Request>,
) -> Result<Json<Value>> {
    let server = request.user().user_id.server_name().to_owned();
    let mut wanted = BTreeMap::new();
    let mut remote: BTreeMap<ruma::OwnedServerName, BTreeMap<ruma::OwnedUserId, BTreeMap<ruma::OwnedDeviceId, ruma::OneTimeKeyAlgorithm>>> =
        BTreeMap::new();
    for (user, devices) in &request.body.one_time_keys {
        if user.server_name() != server {
            remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
            continue;
        }
        let devices: BTreeMap<String, String> = devices.iter().map(|(d, a)| (d.to_string(), a.to_string())).collect();
        wanted.insert(user.to_string(), devices);
    }
    let mut response = e2ee.claim(&wanted).await?;
    let mut failures = serde_json::Map::new();
    for (server, users) in remote {
        match federation.send(&server, ruma::api::federation::keys::claim_keys::v1::Request::new(users)).await {
            Ok(answer) => {
                let claimed = serde_json::to_value(&answer.one_time_keys).unwrap_or(Value::Null);
                for (user, devices) in claimed.as_object().into_iter().flatten() {
                    response["one_time_keys"][user] = devices.clone();
                }
            }
            Err(error) => {
                failures.insert(server.to_string(), json!({ "errcode": error.errcode, "error": error.message }));
            }
        }
    }
    response["failures"] = Value::Object(failures);
    Ok(Json(response))
}

pub async fn changes(State(sync): State<Sync>, request: Ruma<get_key_changes::v3::Request>) -> Result<Json<Value>> {
    let user = request.user().user_id.clone();
    let from = SyncToken::parse(&request.body.from)?;
    let to = SyncToken::parse(&request.body.to)?;
    let (changed, left) = sync.key_changes(&user, &from, &to).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

pub async fn upload_signing_keys(
    State(e2ee): State<E2ee>,
    State(accounts): State<Accounts>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    // Replacing existing cross-signing keys needs the password; setting them up the first
    // time does not (as Synapse does, per MSC3967).
    if e2ee.has_master_key(&user).await? {
        accounts
            .user_interactive_auth(body.auth.as_ref(), &[&[PASSWORD]], UiaContext { user: Some(&user), registration_tokens: &[], operation: "device_signing_upload", keep_completed: false })
            .await?;
    }
    let master = body.master_key.as_ref().map(raw_value).transpose()?;
    let self_signing = body.self_signing_key.as_ref().map(raw_value).transpose()?;
    let user_signing = body.user_signing_key.as_ref().map(raw_value).transpose()?;
    e2ee.upload_signing_keys(&user, master, self_signing, user_signing).await?;
    Ok(Json(json!({})))
}

pub async fn upload_signatures(State(e2ee): State<E2ee>, request: Ruma<upload_signatures::v3::Request>) -> Result<Json<Value>> {
    let user = request.user().user_id.clone();
    let mut signed: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (target, keys) in &request.body.signed_keys {
        let keys = to_value(keys)?;
        let keys = keys.as_object().ok_or_else(|| MatrixError::bad_json("signed keys must be objects"))?;
        signed.insert(target.to_string(), keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
    Ok(Json(e2ee.upload_signatures(&user, &signed).await?))
}

pub async fn create_backup(State(e2ee): State<E2ee>, request: Ruma<create_backup_version::v3::Request>) -> Result<Json<Value>> {
    let algorithm = raw_value(&request.body.algorithm)?;
    let version = e2ee.create_backup(&request.user().user_id, &algorithm).await?;
    Ok(Json(json!({ "version": version })))
}

pub async fn latest_backup(State(e2ee): State<E2ee>, request: Ruma<get_latest_backup_info::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(e2ee.backup_info(&request.user().user_id, None).await?))
}

pub async fn backup_info(State(e2ee): State<E2ee>, request: Ruma<get_backup_info::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(e2ee.backup_info(&request.user().user_id, Some(&request.body.version)).await?))
}

pub async fn update_backup(State(e2ee): State<E2ee>, request: Ruma<update_backup_version::v3::Request>) -> Result<Json<Value>> {
    let algorithm = raw_value(&request.body.algorithm)?;
    e2ee.update_backup(&request.user().user_id, &request.body.version, &algorithm).await?;
    Ok(Json(json!({})))
}

pub async fn delete_backup(State(e2ee): State<E2ee>, request: Ruma<delete_backup_version::v3::Request>) -> Result<Json<Value>> {
    e2ee.delete_backup(&request.user().user_id, &request.body.version).await?;
    Ok(Json(json!({})))
}

pub async fn put_keys(State(e2ee): State<E2ee>, request: Ruma<add_backup_keys::v3::Request>) -> Result<Json<Value>> {
    let mut keys = Vec::new();
    for (room, backup) in &request.body.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.to_string(), session.clone(), raw_value(data)?));
        }
    }
    Ok(Json(e2ee.put_backup_keys(&request.user().user_id, &request.body.version, keys).await?))
}

pub async fn put_room_keys(State(e2ee): State<E2ee>, request: Ruma<add_backup_keys_for_room::v3::Request>) -> Result<Json<Value>> {
    let b = &request.body;
    let mut keys = Vec::new();
    for (session, data) in &b.sessions {
        keys.push((b.room_id.to_string(), session.clone(), raw_value(data)?));
    }
    Ok(Json(e2ee.put_backup_keys(&request.user().user_id, &b.version, keys).await?))
}

pub async fn put_session_key(
    State(e2ee): State<E2ee>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let keys = vec![(b.room_id.to_string(), b.session_id.clone(), raw_value(&b.session_data)?)];
    Ok(Json(e2ee.put_backup_keys(&request.user().user_id, &b.version, keys).await?))
}

pub async fn get_keys(State(e2ee): State<E2ee>, request: Ruma<get_backup_keys::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(e2ee.get_backup_keys(&request.user().user_id, &request.body.version, None, None).await?))
}

pub async fn get_room_keys(State(e2ee): State<E2ee>, request: Ruma<get_backup_keys_for_room::v3::Request>) -> Result<Json<Value>> {
    let b = &request.body;
    let all = e2ee.get_backup_keys(&request.user().user_id, &b.version, Some(b.room_id.as_str()), None).await?;
    let sessions = all["rooms"][b.room_id.as_str()]["sessions"].clone();
    Ok(Json(json!({ "sessions": if sessions.is_null() { json!({}) } else { sessions } })))
}

pub async fn get_session_key(
    State(e2ee): State<E2ee>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let all = e2ee
        .get_backup_keys(&request.user().user_id, &b.version, Some(b.room_id.as_str()), Some(&b.session_id))
        .await?;
    let data = all["rooms"][b.room_id.as_str()]["sessions"][&b.session_id].clone();
    if data.is_null() {
        return Err(MatrixError::not_found("No key backed up for that session"));
    }
    Ok(Json(data))
}

pub async fn delete_keys(State(e2ee): State<E2ee>, request: Ruma<delete_backup_keys::v3::Request>) -> Result<Json<Value>> {
    Ok(Json(e2ee.delete_backup_keys(&request.user().user_id, &request.body.version, None, None).await?))
}

pub async fn delete_room_keys(State(e2ee): State<E2ee>, request: Ruma<delete_backup_keys_for_room::v3::Request>) -> Result<Json<Value>> {
    let b = &request.body;
    Ok(Json(e2ee.delete_backup_keys(&request.user().user_id, &b.version, Some(b.room_id.as_str()), None).await?))
}

pub async fn delete_session_key(
    State(e2ee): State<E2ee>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    Ok(Json(e2ee.delete_backup_keys(&request.user().user_id, &b.version, Some(b.room_id.as_str()), Some(&b.session_id)).await?))
}
