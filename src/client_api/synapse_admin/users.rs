//! Synapse's admin API for accounts: users listed, queried, created or modified,
//! deactivated, their password reset, their devices and joined rooms; whois. Paths, JSON
//! and errors as Synapse's `docs/admin_api/user_admin_api.md`.

use axum::{extract::State, http::StatusCode};
use ruma::{
    api::{auth_scheme::AccessToken, request, response},
    metadata, OwnedUserId, UserId,
};
use serde::{Deserialize, Serialize};

use super::{require_admin, require_local};
use crate::client_api::extract::{Ruma, RumaResponse};
use crate::{
    accounts::Accounts,
    error::{MatrixError, Result},
    rooms::Rooms,
    storage::{accounts as repo, rooms as room_repo},
};

/// An account as the admin API shows it (Synapse's fields; those weft has no such thing
/// for are at their empty value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminUser {
    pub name: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub threepids: Vec<serde_json::Value>,
    pub external_ids: Vec<serde_json::Value>,
    pub is_guest: bool,
    pub admin: bool,
    pub deactivated: bool,
    pub erased: bool,
    pub shadow_banned: bool,
    pub locked: bool,
    pub suspended: bool,
    pub approved: bool,
    /// Milliseconds since the epoch.
    pub creation_ts: i64,
    pub last_seen_ts: Option<i64>,
    pub user_type: Option<String>,
    pub appservice_id: Option<String>,
}

impl AdminUser {
    fn from_row(row: repo::AdminUserRow) -> Result<Self> {
        Ok(Self {
            name: UserId::parse(row.user_id)?,
            displayname: row.displayname,
            avatar_url: row.avatar_url,
            threepids: Vec::new(),
            external_ids: Vec::new(),
            is_guest: row.is_guest,
            admin: row.is_admin,
            deactivated: row.deactivated,
            erased: row.erased,
            shadow_banned: false,
            locked: row.locked,
            suspended: row.suspended,
            approved: true,
            creation_ts: row.created_ts,
            last_seen_ts: row.last_seen_ts,
            user_type: None,
            appservice_id: row.appservice_id,
        })
    }
}

async fn admin_user(accounts: &Accounts, user_id: &UserId) -> Result<AdminUser> {
    let row = repo::admin_user(accounts.db().pool(), user_id.as_str()).await?.ok_or_else(|| MatrixError::not_found("User not found"))?;
    AdminUser::from_row(row)
}

pub mod list_users {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/users",
    }

    #[request]
    #[derive(Default)]
    pub struct Request {
        /// The offset to start at (the previous page's `next_token`).
        #[ruma_api(query)]
        pub from: Option<String>,
        #[ruma_api(query)]
        pub limit: Option<i64>,
        /// Part of the user id.
        #[ruma_api(query)]
        pub user_id: Option<String>,
        /// Part of the user id or display name.
        #[ruma_api(query)]
        pub name: Option<String>,
        #[ruma_api(query)]
        pub guests: Option<bool>,
        #[ruma_api(query)]
        pub deactivated: Option<bool>,
        #[ruma_api(query)]
        pub locked: Option<bool>,
        #[ruma_api(query)]
        pub admins: Option<bool>,
        #[ruma_api(query)]
        pub order_by: Option<String>,
        /// `f` (default) or `b`.
        #[ruma_api(query)]
        pub dir: Option<String>,
    }

    #[response]
    pub struct Response {
        pub users: Vec<AdminUser>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_token: Option<String>,
        pub total: i64,
    }
}

/// The column (or expression) each of Synapse's `order_by` values sorts by. Fields weft
/// has no such thing for (user_type, shadow_banned, approved) are equal for every
/// account, so they fall through to the user id.
fn order_column(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        "name" => "u.user_id",
        "displayname" => "COALESCE(u.displayname, '')",
        "avatar_url" => "COALESCE(u.avatar_url, '')",
        "creation_ts" => "u.created_ts",
        "admin" => "u.is_admin",
        "is_guest" => "u.is_guest",
        "deactivated" => "u.deactivated",
        "locked" => "u.locked",
        "suspended" => "u.suspended",
        "last_seen_ts" => "COALESCE((SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id), 0)",
        "user_type" | "shadow_banned" | "approved" => "u.user_id",
        _ => return None,
    })
}

pub async fn get_users(State(accounts): State<Accounts>, request: Ruma<list_users::Request>) -> Result<RumaResponse<list_users::Response>> {
    require_admin(request.user())?;
    let body = request.body;
    let offset = match body.from.as_deref() {
        None => 0,
        Some(from) => from.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| MatrixError::invalid_param("Query parameter from must be a string representing a positive integer."))?,
    };
    let limit = body.limit.unwrap_or(100);
    if limit < 0 {
        return Err(MatrixError::invalid_param("Query parameter limit must be a positive integer."));
    }
    let descending = match body.dir.as_deref() {
        None | Some("f") => false,
        Some("b") => true,
        Some(_) => return Err(MatrixError::invalid_param("Unknown direction: dir must be 'f' or 'b'")),
    };
    let order_by = match body.order_by.as_deref() {
        None => "u.user_id",
        Some(order) => order_column(order).ok_or_else(|| MatrixError::invalid_param(format!("Unknown value for order_by: {order}")))?,
    };
    let listing = repo::UserListing {
        user_id: body.user_id,
        name: body.name,
        guests: body.guests.unwrap_or(true),
        deactivated: body.deactivated.unwrap_or(false),
        locked: body.locked.unwrap_or(false),
        admins: body.admins,
        order_by,
        descending,
        offset,
        limit: limit.min(1000),
    };
    let (rows, total) = repo::list_users(accounts.db().pool(), &listing).await?;
    let shown = rows.len() as i64;
    let users = rows.into_iter().map(AdminUser::from_row).collect::<Result<Vec<_>>>()?;
    let next_token = (offset + shown < total && shown > 0).then(|| (offset + shown).to_string());
    Ok(RumaResponse(list_users::Response { users, next_token, total }))
}

pub mod user {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/users/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub user: AdminUser,
    }
}

pub async fn get_user(State(accounts): State<Accounts>, request: Ruma<user::Request>) -> Result<RumaResponse<user::Response>> {
    require_admin(request.user())?;
    require_local(&accounts, &request.body.user_id)?;
    Ok(RumaResponse(user::Response { user: admin_user(&accounts, &request.body.user_id).await? }))
}

pub mod put_user {
    use super::*;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/users/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// Log the user's devices out when the password changes (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub logout_devices: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub displayname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub avatar_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub admin: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub deactivated: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub locked: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub threepids: Option<Vec<serde_json::Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub user_type: Option<String>,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub user: AdminUser,
    }
}

/// Creates the account (201) or changes what the body names (200); the answer is the
/// account as it now is.
pub async fn put_user(
    State(accounts): State<Accounts>,
    State(rooms): State<Rooms>,
    request: Ruma<put_user::Request>,
) -> Result<(StatusCode, RumaResponse<put_user::Response>)> {
    require_admin(request.user())?;
    let requester = request.user().user_id.clone();
    let body = request.body;
    let user_id = body.user_id;
    require_local(&accounts, &user_id)?;
    // Check what weft cannot store before changing anything.
    if body.threepids.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(MatrixError::invalid_param("Third-party identifiers are not supported by this server"));
    }
    if body.user_type.is_some() {
        return Err(MatrixError::invalid_param("User types are not supported by this server"));
    }
    if body.displayname.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(MatrixError::invalid_param("displayname is too long"));
    }
    let existing = repo::admin_user(accounts.db().pool(), user_id.as_str()).await?;
    let created = existing.is_none();
    match existing {
        None => {
            if body.deactivated == Some(true) {
                return Err(MatrixError::invalid_param("A new account cannot be created deactivated"));
            }
            accounts.local_user_id(user_id.localpart())?;
            accounts.create_user(&user_id, body.password.as_deref(), body.admin.unwrap_or(false)).await?;
        }
        Some(current) => {
            if body.deactivated == Some(false) && current.deactivated {
                let password = body.password.as_deref().ok_or_else(|| MatrixError::invalid_param("Must provide a password to re-activate an account."))?;
                accounts.reactivate(&user_id, password).await?;
            } else if let Some(password) = body.password.as_deref() {
                accounts.set_password(&user_id, password).await?;
                if body.logout_devices.unwrap_or(true) {
                    accounts.logout_all(&user_id, None).await?;
                }
            }
            if let Some(admin) = body.admin {
                if user_id == requester && !admin {
                    return Err(MatrixError::invalid_param("You may not demote yourself."));
                }
                accounts.set_admin(&user_id, admin).await?;
            }
        }
    }
    let mut profile_changed = false;
    if let Some(name) = body.displayname.as_deref() {
        accounts.set_displayname(&user_id, Some(name).filter(|n| !n.is_empty())).await?;
        profile_changed = true;
    }
    if let Some(url) = body.avatar_url.as_deref() {
        accounts.set_avatar_url(&user_id, Some(url).filter(|u| !u.is_empty())).await?;
        profile_changed = true;
    }
    if profile_changed && !created {
        rooms.propagate_profile(&user_id).await?;
    }
    if let Some(locked) = body.locked {
        accounts.set_locked(&user_id, locked).await?;
    }
    if body.deactivated == Some(true) && !created {
        crate::client_api::account::deactivate_account(&accounts, &rooms, &user_id, false).await?;
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, RumaResponse(put_user::Response { user: admin_user(&accounts, &user_id).await? })))
}

pub mod deactivate {
    use super::*;

    metadata! {
        method: POST,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/deactivate/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
        #[serde(default)]
        pub erase: bool,
    }

    #[response]
    pub struct Response {
        pub id_server_unbind_result: String,
    }
}

pub async fn deactivate_user(
    State(accounts): State<Accounts>,
    State(rooms): State<Rooms>,
    request: Ruma<deactivate::Request>,
) -> Result<RumaResponse<deactivate::Response>> {
    require_admin(request.user())?;
    let user_id = &request.body.user_id;
    require_local(&accounts, user_id)?;
    admin_user(&accounts, user_id).await?;
    crate::client_api::account::deactivate_account(&accounts, &rooms, user_id, request.body.erase).await?;
    // No identity server bindings are kept, so there is nothing left bound.
    Ok(RumaResponse(deactivate::Response { id_server_unbind_result: "success".into() }))
}

pub mod reset_password {
    use super::*;

    metadata! {
        method: POST,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/reset_password/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
        pub new_password: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub logout_devices: Option<bool>,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

pub async fn reset_password(
    State(accounts): State<Accounts>,
    request: Ruma<reset_password::Request>,
) -> Result<RumaResponse<reset_password::Response>> {
    require_admin(request.user())?;
    let body = request.body;
    require_local(&accounts, &body.user_id)?;
    let user = admin_user(&accounts, &body.user_id).await?;
    if user.deactivated {
        return Err(MatrixError::invalid_param("The account is deactivated"));
    }
    accounts.set_password(&body.user_id, &body.new_password).await?;
    if body.logout_devices.unwrap_or(true) {
        accounts.logout_all(&body.user_id, None).await?;
    }
    Ok(RumaResponse(reset_password::Response {}))
}

pub mod whois {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/whois/{user_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        pub user_id: Option<OwnedUserId>,
        pub devices: std::collections::BTreeMap<String, ruma::api::client::admin::get_user_info::v3::DeviceInfo>,
    }
}

pub async fn whois(State(accounts): State<Accounts>, request: Ruma<whois::Request>) -> Result<RumaResponse<whois::Response>> {
    require_admin(request.user())?;
    let answer = crate::client_api::admin::whois_of(&accounts, request.user(), &request.body.user_id).await?;
    Ok(RumaResponse(whois::Response { user_id: answer.user_id, devices: answer.devices }))
}

/// A device as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_user_agent: Option<String>,
    pub user_id: OwnedUserId,
}

pub mod devices {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/users/{user_id}/devices",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        pub devices: Vec<AdminDevice>,
        pub total: i64,
    }
}

pub async fn user_devices(State(accounts): State<Accounts>, request: Ruma<devices::Request>) -> Result<RumaResponse<devices::Response>> {
    require_admin(request.user())?;
    let user_id = &request.body.user_id;
    require_local(&accounts, user_id)?;
    admin_user(&accounts, user_id).await?;
    let devices: Vec<AdminDevice> = repo::list_devices(accounts.db().pool(), user_id.as_str())
        .await?
        .into_iter()
        .map(|d| AdminDevice {
            device_id: d.device_id,
            display_name: d.display_name,
            last_seen_ip: d.last_seen_ip,
            last_seen_ts: d.last_seen_ts,
            last_seen_user_agent: None,
            user_id: user_id.clone(),
        })
        .collect();
    let total = devices.len() as i64;
    Ok(RumaResponse(devices::Response { devices, total }))
}

pub mod joined_rooms {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/users/{user_id}/joined_rooms",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
    }

    #[response]
    pub struct Response {
        pub joined_rooms: Vec<String>,
        pub total: i64,
    }
}

pub async fn user_joined_rooms(
    State(accounts): State<Accounts>,
    request: Ruma<joined_rooms::Request>,
) -> Result<RumaResponse<joined_rooms::Response>> {
    require_admin(request.user())?;
    let user_id = &request.body.user_id;
    // Remote users too: the rooms this server shares with them.
    let joined_rooms = room_repo::rooms_with_membership(accounts.db().pool(), user_id.as_str(), "join").await?;
    let total = joined_rooms.len() as i64;
    Ok(RumaResponse(joined_rooms::Response { joined_rooms, total }))
}
