//! The spec's administration endpoints: `GET /admin/whois/{userId}` and account moderation,
//! `/admin/lock/{userId}` and `/admin/suspend/{userId}` (spec: "Account locking", "Account
//! suspension"). What a lock or a suspension stops is enforced in the extractor
//! (`extract.rs`), for every endpoint alike.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    api::client::admin::{
        get_user_info::v3 as whois,
        is_user_locked::v1 as get_lock,
        is_user_suspended::v1 as get_suspension,
        lock_user::v1 as put_lock,
        suspend_user::v1 as put_suspension,
    },
    MilliSecondsSinceUnixEpoch, UInt, UserId,
};

use super::extract::{Ruma, RumaResponse};
use crate::{
    accounts::{Accounts, Requester},
    error::{MatrixError, Result},
    storage::accounts as repo,
};

/// Who a user is and from where their devices were last seen: for a server admin, or for
/// the user themself (Synapse's rule; the spec leaves it to the server).
pub async fn whois(State(accounts): State<Accounts>, request: Ruma<whois::Request>) -> Result<RumaResponse<whois::Response>> {
    Ok(RumaResponse(whois_of(&accounts, request.user(), &request.body.user_id).await?))
}

/// The whois answer (also served at Synapse's admin path).
pub async fn whois_of(accounts: &Accounts, requester: &Requester, target: &UserId) -> Result<whois::Response> {
    if !requester.is_admin && requester.user_id != *target {
        return Err(MatrixError::forbidden("You are not a server admin"));
    }
    if target.server_name() != accounts.server_name() {
        return Err(MatrixError::invalid_param("Can only whois a local user"));
    }
    if repo::get_user(accounts.db().pool(), target.as_str()).await?.is_none() {
        return Err(MatrixError::not_found("User not found"));
    }
    let mut devices = BTreeMap::new();
    for device in repo::list_devices(accounts.db().pool(), target.as_str()).await? {
        let mut connection = whois::ConnectionInfo::new();
        connection.ip = device.last_seen_ip;
        connection.last_seen =
            device.last_seen_ts.and_then(|ts| UInt::try_from(ts.max(0) as u64).ok()).map(MilliSecondsSinceUnixEpoch);
        let mut session = whois::SessionInfo::new();
        session.connections.push(connection);
        let mut info = whois::DeviceInfo::new();
        info.sessions.push(session);
        devices.insert(device.device_id, info);
    }
    let mut response = whois::Response::new();
    response.user_id = Some(target.to_owned());
    response.devices = devices;
    Ok(response)
}

/// The checks every moderation request passes, in the spec's order: the caller is an
/// admin (before any lookup, so nobody learns which accounts exist), the target is local,
/// exists and is not deactivated, and is not an admin. Returns the target's flags.
async fn moderation_target(accounts: &Accounts, requester: &Requester, target: &UserId) -> Result<(bool, bool)> {
    if !requester.is_admin {
        return Err(MatrixError::forbidden("You are not a server admin"));
    }
    if target.server_name() != accounts.server_name() {
        return Err(MatrixError::invalid_param("The user is not a local user of this server"));
    }
    let flags = accounts.moderation(target).await?;
    let target_is_admin = repo::get_user(accounts.db().pool(), target.as_str()).await?.is_some_and(|user| user.is_admin);
    if target_is_admin {
        return Err(MatrixError::forbidden("Server admins cannot be locked or suspended"));
    }
    Ok(flags)
}

pub async fn is_locked(State(accounts): State<Accounts>, request: Ruma<get_lock::Request>) -> Result<RumaResponse<get_lock::Response>> {
    let (locked, _) = moderation_target(&accounts, request.user(), &request.body.user_id).await?;
    Ok(RumaResponse(get_lock::Response::new(locked)))
}

pub async fn lock(State(accounts): State<Accounts>, request: Ruma<put_lock::Request>) -> Result<RumaResponse<put_lock::Response>> {
    moderation_target(&accounts, request.user(), &request.body.user_id).await?;
    accounts.set_locked(&request.body.user_id, request.body.locked).await?;
    Ok(RumaResponse(put_lock::Response::new(request.body.locked)))
}

pub async fn is_suspended(
    State(accounts): State<Accounts>,
    request: Ruma<get_suspension::Request>,
) -> Result<RumaResponse<get_suspension::Response>> {
    let (_, suspended) = moderation_target(&accounts, request.user(), &request.body.user_id).await?;
    Ok(RumaResponse(get_suspension::Response::new(suspended)))
}

pub async fn suspend(
    State(accounts): State<Accounts>,
    request: Ruma<put_suspension::Request>,
) -> Result<RumaResponse<put_suspension::Response>> {
    moderation_target(&accounts, request.user(), &request.body.user_id).await?;
    accounts.set_suspended(&request.body.user_id, request.body.suspended).await?;
    Ok(RumaResponse(put_suspension::Response::new(request.body.suspended)))
}
