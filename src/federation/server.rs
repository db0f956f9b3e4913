//! Inbound Server-Server endpoints: our keys, the key notary, version, and queries.

use axum::{extract::State, Json};
use ruma::api::federation::{
    discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version},
    query::{get_profile_information, get_room_information},
};
use serde_json::{json, Value};

use super::Federation;
use crate::{
    client_api::extract::Ruma,
    error::{MatrixError, Result},
    storage::{accounts as account_repo, aliases as alias_repo},
};

pub async fn server_keys(State(federation): State<Federation>, _: Ruma<get_server_keys::v2::Request>) -> Result<Json<Value>> {
    Ok(Json(federation.own_keys()?))
}

pub async fn notary_query(
    State(federation): State<Federation>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let min = u64::from(b.minimum_valid_until_ts.0) as i64;
    Ok(Json(json!({ "server_keys": federation.notary_keys(&b.server_name, min).await? })))
}

pub async fn notary_batch(
    State(federation): State<Federation>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<Json<Value>> {
    let mut all = Vec::new();
    for (server, keys) in &request.body.server_keys {
        let min = keys
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.0) as i64)
            .max()
            .unwrap_or(0);
        all.extend(federation.notary_keys(server, min).await?);
    }
    Ok(Json(json!({ "server_keys": all })))
}

pub async fn version(_: Ruma<get_server_version::v1::Request>) -> Json<Value> {
    Json(json!({ "server": { "name": "weft", "version": env!("CARGO_PKG_VERSION") } }))
}

pub async fn query_profile(
    State(federation): State<Federation>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<Json<Value>> {
    let user = &request.body.user_id;
    if !federation.is_local(user.server_name()) {
        return Err(MatrixError::invalid_param("That user is not on this server"));
    }
    let row = account_repo::get_user(federation.db.pool(), user.as_str())
        .await?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| MatrixError::not_found("Profile not found"))?;
    let mut profile = serde_json::Map::new();
    let field = request.body.field.as_ref().map(|f| f.as_str().to_owned());
    if let Some(name) = row.displayname.filter(|_| field.as_deref().is_none_or(|f| f == "displayname")) {
        profile.insert("displayname".into(), name.into());
    }
    if let Some(avatar) = row.avatar_url.filter(|_| field.as_deref().is_none_or(|f| f == "avatar_url")) {
        profile.insert("avatar_url".into(), avatar.into());
    }
    Ok(Json(Value::Object(profile)))
}

pub async fn query_directory(
    State(federation): State<Federation>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<Json<Value>> {
    let alias = &request.body.room_alias;
    if !federation.is_local(alias.server_name()) {
        return Err(MatrixError::not_found("That alias is not on this server"));
    }
    let (room_id, _) = alias_repo::resolve(federation.db.pool(), alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [federation.server_name()] })))
}
