//! Password change, deactivation, devices and profile.

use axum::extract::State;
use ruma::{
    api::client::{
        account::{change_password, deactivate, ThirdPartyIdRemovalStatus},
        device::{self, delete_device, delete_devices, get_device, get_devices, update_device},
        profile::{get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name},
    },
    MilliSecondsSinceUnixEpoch, UInt, UserId,
};

use super::extract::{Ruma, RumaResponse};
use crate::{
    appservice::client::AppServiceClient,
    accounts::{
        uia::{UiaContext, PASSWORD},
        Accounts,
    },
    error::{MatrixError, Result},
    federation::Federation,
    rooms::Rooms,
    storage::{accounts as repo, rooms as room_repo},
};

/// UIA with the account's password, as password change, deactivation and device deletion need.
/// `operation` names what the request does, so a session cannot be reused for another.
async fn password_uia(accounts: &Accounts, user: &UserId, auth: Option<&ruma::api::client::uiaa::AuthData>, operation: &str) -> Result<()> {
    accounts
        .user_interactive_auth(auth, &[&[PASSWORD]], UiaContext { user: Some(user), registration_tokens: &[], operation, keep_completed: false })
        .await
}

pub async fn change_password(
    State(accounts): State<Accounts>,
    request: Ruma<change_password::v3::Request>,
) -> Result<RumaResponse<change_password::v3::Response>> {
    let user = request.user().clone();
    password_uia(&accounts, &user.user_id, request.body.auth.as_ref(), "change_password").await?;
    accounts.set_password(&user.user_id, &request.body.new_password).await?;
    if request.body.logout_devices {
        accounts.logout_all(&user.user_id, Some(user.device_id.as_str())).await?;
    }
    Ok(RumaResponse(change_password::v3::Response::new()))
}

pub async fn deactivate(
    State(accounts): State<Accounts>,
    State(rooms): State<Rooms>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<RumaResponse<deactivate::v3::Response>> {
    let user = request.user().clone();
    // An application service manages its users' accounts without their passwords.
    if user.appservice_id.is_none() {
        password_uia(&accounts, &user.user_id, request.body.auth.as_ref(), "deactivate").await?;
    }
    deactivate_account(&accounts, &rooms, &user.user_id, request.body.erase).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport)))
}

/// Deactivates an account (the user's own request or an admin's): leaves every room first,
/// so other members see the user go, then removes devices, tokens and profile; `erase`
/// also hides the user's events from now on.
pub async fn deactivate_account(accounts: &Accounts, rooms: &Rooms, user_id: &UserId, erase: bool) -> Result<()> {
    for membership in ["join", "invite", "knock"] {
        for room in room_repo::rooms_with_membership(accounts.db().pool(), user_id.as_str(), membership).await? {
            let room_id = ruma::RoomId::parse(room)?;
            if let Err(error) =
                rooms.change_membership(&room_id, user_id, user_id, crate::rooms::membership::Change::Leave, None, false).await
            {
                tracing::warn!(%room_id, %error, "deactivation: could not leave room");
            }
        }
    }
    accounts.deactivate(user_id).await?;
    if erase {
        rooms.erase_user(user_id).await?;
    }
    Ok(())
}

fn device_from_row(row: repo::DeviceRow) -> device::Device {
    let mut device = device::Device::new(row.device_id.into());
    device.display_name = row.display_name;
    device.last_seen_ip = row.last_seen_ip;
    device.last_seen_ts = row
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts.max(0) as u64).ok())
        .map(MilliSecondsSinceUnixEpoch);
    device
}

pub async fn list_devices(
    State(accounts): State<Accounts>,
    request: Ruma<get_devices::v3::Request>,
) -> Result<RumaResponse<get_devices::v3::Response>> {
    let rows = repo::list_devices(accounts.db().pool(), request.user().user_id.as_str()).await?;
    Ok(RumaResponse(get_devices::v3::Response::new(rows.into_iter().map(device_from_row).collect())))
}

pub async fn get_device(
    State(accounts): State<Accounts>,
    request: Ruma<get_device::v3::Request>,
) -> Result<RumaResponse<get_device::v3::Response>> {
    let row = repo::get_device(accounts.db().pool(), request.user().user_id.as_str(), request.body.device_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Device not found"))?;
    Ok(RumaResponse(get_device::v3::Response::new(device_from_row(row))))
}

pub async fn update_device(
    State(accounts): State<Accounts>,
    request: Ruma<update_device::v3::Request>,
) -> Result<RumaResponse<update_device::v3::Response>> {
    let renamed = accounts.rename_device(&request.user().user_id, request.body.device_id.as_str(), request.body.display_name.as_deref()).await?;
    if !renamed {
        return Err(MatrixError::not_found("Device not found"));
    }
    Ok(RumaResponse(update_device::v3::Response::new()))
}

pub async fn delete_device(
    State(accounts): State<Accounts>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>> {
    let user = request.user().clone();
    if repo::get_device(accounts.db().pool(), user.user_id.as_str(), request.body.device_id.as_str()).await?.is_none() {
        return Err(MatrixError::not_found("Device not found"));
    }
    password_uia(&accounts, &user.user_id, request.body.auth.as_ref(), &format!("delete_device {}", request.body.device_id)).await?;
    accounts.delete_device(&user.user_id, request.body.device_id.as_str()).await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

pub async fn delete_devices(
    State(accounts): State<Accounts>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>> {
    let user = request.user().clone();
    let operation = format!("delete_devices {}", request.body.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","));
    password_uia(&accounts, &user.user_id, request.body.auth.as_ref(), &operation).await?;
    for device_id in &request.body.devices {
        accounts.delete_device(&user.user_id, device_id.as_str()).await?;
    }
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}

/// A remote user's profile, asked of their server.
async fn remote_profile(federation: &Federation, user_id: &UserId) -> Result<(Option<String>, Option<String>)> {
    let request = ruma::api::federation::query::get_profile_information::v1::Request::new(user_id.to_owned());
    let response = federation.send(user_id.server_name(), request).await?;
    let field = |name: &str| response.data.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Ok((field("displayname"), field("avatar_url")))
}

/// (displayname, avatar_url) of a local or remote user. An unknown local user in an
/// application service's namespace is asked of the service, which may create it.
async fn profile_of(
    accounts: &Accounts,
    federation: &Federation,
    appservice_client: &AppServiceClient,
    user_id: &UserId,
) -> Result<(Option<String>, Option<String>)> {
    if federation.is_local(user_id.server_name()) {
        let row = match profile_row(accounts, user_id).await {
            Err(error) if error.status == http::StatusCode::NOT_FOUND && appservice_client.user_created(user_id).await => {
                profile_row(accounts, user_id).await?
            }
            found => found?,
        };
        Ok((row.displayname, row.avatar_url))
    } else {
        remote_profile(federation, user_id).await
    }
}

async fn profile_row(accounts: &Accounts, user_id: &UserId) -> Result<repo::UserRow> {
    repo::get_user(accounts.db().pool(), user_id.as_str())
        .await?
        .filter(|u| !u.deactivated || u.displayname.is_some())
        .ok_or_else(|| MatrixError::not_found("Profile not found"))
}

pub async fn get_profile(
    State(accounts): State<Accounts>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<RumaResponse<get_profile::v3::Response>> {
    let (displayname, avatar_url) = profile_of(&accounts, &federation, &appservice_client, &request.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = displayname {
        response.data.set("displayname".into(), name.into());
    }
    if let Some(avatar) = avatar_url {
        response.data.set("avatar_url".into(), avatar.into());
    }
    Ok(RumaResponse(response))
}

pub async fn get_displayname(
    State(accounts): State<Accounts>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<get_display_name::v3::Request>,
) -> Result<RumaResponse<get_display_name::v3::Response>> {
    let (displayname, _) = profile_of(&accounts, &federation, &appservice_client, &request.body.user_id).await?;
    Ok(RumaResponse(get_display_name::v3::Response::new(displayname)))
}

pub async fn get_avatar_url(
    State(accounts): State<Accounts>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<get_avatar_url::v3::Request>,
) -> Result<RumaResponse<get_avatar_url::v3::Response>> {
    let (_, avatar_url) = profile_of(&accounts, &federation, &appservice_client, &request.body.user_id).await?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(avatar_url.map(Into::into))))
}

fn require_self(requester: &UserId, target: &UserId) -> Result<()> {
    if requester != target {
        return Err(MatrixError::forbidden("You cannot change another user's profile"));
    }
    Ok(())
}

pub async fn set_displayname(
    State(accounts): State<Accounts>,
    State(rooms): State<Rooms>,
    request: Ruma<set_display_name::v3::Request>,
) -> Result<RumaResponse<set_display_name::v3::Response>> {
    let user = request.user().user_id.clone();
    require_self(&user, &request.body.user_id)?;
    let name = request.body.displayname.as_deref().filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > 256) {
        return Err(MatrixError::bad_json("displayname is too long"));
    }
    accounts.set_displayname(&user, name).await?;
    rooms.propagate_profile(&user).await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

pub async fn set_avatar_url(
    State(accounts): State<Accounts>,
    State(rooms): State<Rooms>,
    request: Ruma<set_avatar_url::v3::Request>,
) -> Result<RumaResponse<set_avatar_url::v3::Response>> {
    let user = request.user().user_id.clone();
    require_self(&user, &request.body.user_id)?;
    let url = request.body.avatar_url.as_ref().map(|u| u.as_str()).filter(|u| !u.is_empty());
    accounts.set_avatar_url(&user, url).await?;
    rooms.propagate_profile(&user).await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}

/// An OpenID token a third party (a widget, an integration manager) exchanges at this
/// server's federation `openid/userinfo` for the user's id.
pub async fn request_openid_token(
    State(accounts): State<Accounts>,
    request: Ruma<ruma::api::client::account::request_openid_token::v3::Request>,
) -> Result<RumaResponse<ruma::api::client::account::request_openid_token::v3::Response>> {
    let user = &request.user().user_id;
    if *user != request.body.user_id {
        return Err(MatrixError::forbidden("Cannot request an OpenID token for another user"));
    }
    let (token, lifetime) = accounts.issue_openid_token(user).await?;
    Ok(RumaResponse(ruma::api::client::account::request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        accounts.server_name().to_owned(),
        lifetime,
    )))
}
