//! Synapse's admin API for rooms: list (paging, search, order), details, members, state;
//! deletion (v1, and v2 with its status), blocking.
//! Paths and JSON as Synapse's `docs/admin_api/rooms.md`.

use std::cmp::Ordering;

use axum::{extract::State, http::StatusCode};
use ruma::{
    api::{auth_scheme::AccessToken, request, response},
    metadata, OwnedRoomId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::require_admin;
use crate::{
    client_api::extract::{Ruma, RumaResponse},
    error::{MatrixError, Result},
    rooms::{
        deletion::{Shutdown, ShutdownOptions},
        pdu_from_row, Rooms,
    },
    storage::{events as events_repo, purge as purge_repo, rooms as room_repo, state as state_repo},
};

/// A room as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRoom {
    pub room_id: String,
    pub name: Option<String>,
    pub canonical_alias: Option<String>,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub version: String,
    pub creator: String,
    pub encryption: Option<String>,
    pub federatable: bool,
    pub public: bool,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub state_events: i64,
    pub room_type: Option<String>,
}

/// The details view: the listing's fields and a few more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRoomDetails {
    #[serde(flatten)]
    pub room: AdminRoom,
    pub avatar: Option<String>,
    pub topic: Option<String>,
}

fn text(state: &std::collections::HashMap<String, Value>, kind: &str, key: &str) -> Option<String> {
    state.get(kind).and_then(|content| content[key].as_str()).map(str::to_owned)
}

fn admin_room(row: &room_repo::RoomSummaryRow) -> AdminRoom {
    let create = row.state.get("m.room.create");
    AdminRoom {
        room_id: row.room_id.clone(),
        name: text(&row.state, "m.room.name", "name"),
        canonical_alias: text(&row.state, "m.room.canonical_alias", "alias"),
        joined_members: row.joined_members,
        joined_local_members: row.joined_local_members,
        version: row.room_version.clone(),
        creator: row.creator.clone(),
        encryption: text(&row.state, "m.room.encryption", "algorithm"),
        federatable: create.and_then(|c| c["m.federate"].as_bool()).unwrap_or(true),
        public: row.published,
        join_rules: text(&row.state, "m.room.join_rules", "join_rule"),
        guest_access: text(&row.state, "m.room.guest_access", "guest_access"),
        history_visibility: text(&row.state, "m.room.history_visibility", "history_visibility"),
        state_events: row.state_events,
        room_type: create.and_then(|c| c["type"].as_str()).map(str::to_owned),
    }
}

pub mod list_rooms {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms",
    }

    #[request]
    #[derive(Default)]
    pub struct Request {
        #[ruma_api(query)]
        pub from: Option<i64>,
        #[ruma_api(query)]
        pub limit: Option<i64>,
        #[ruma_api(query)]
        pub order_by: Option<String>,
        /// `f` (default) or `b`.
        #[ruma_api(query)]
        pub dir: Option<String>,
        /// Part of the room's name, canonical alias or id (case-insensitive).
        #[ruma_api(query)]
        pub search_term: Option<String>,
    }

    #[response]
    pub struct Response {
        pub rooms: Vec<AdminRoom>,
        pub offset: i64,
        pub total_rooms: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub prev_batch: Option<i64>,
    }
}

/// Synapse's `order_by` values. Text orders put rooms without the value last, as
/// PostgreSQL's NULLs do in Synapse; counts order largest first, as Synapse does.
fn compare(order_by: &str, a: &AdminRoom, b: &AdminRoom) -> Option<Ordering> {
    fn text(a: &Option<String>, b: &Option<String>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    Some(match order_by {
        "name" | "alphabetical" => text(&a.name, &b.name),
        "canonical_alias" => text(&a.canonical_alias, &b.canonical_alias),
        "joined_members" | "size" => b.joined_members.cmp(&a.joined_members),
        "joined_local_members" => b.joined_local_members.cmp(&a.joined_local_members),
        "state_events" => b.state_events.cmp(&a.state_events),
        "version" => a.version.cmp(&b.version),
        "creator" => a.creator.cmp(&b.creator),
        "encryption" => text(&a.encryption, &b.encryption),
        "federatable" => b.federatable.cmp(&a.federatable),
        "public" => b.public.cmp(&a.public),
        "join_rules" => text(&a.join_rules, &b.join_rules),
        "guest_access" => text(&a.guest_access, &b.guest_access),
        "history_visibility" => text(&a.history_visibility, &b.history_visibility),
        _ => return None,
    })
}

pub async fn list(State(rooms): State<Rooms>, request: Ruma<list_rooms::Request>) -> Result<RumaResponse<list_rooms::Response>> {
    require_admin(request.user())?;
    let body = request.body;
    let offset = body.from.unwrap_or(0);
    let limit = body.limit.unwrap_or(100);
    if offset < 0 || limit < 0 {
        return Err(MatrixError::invalid_param("from and limit must be positive integers"));
    }
    let order_by = body.order_by.as_deref().unwrap_or("name");
    let descending = match body.dir.as_deref() {
        None | Some("f") => false,
        Some("b") => true,
        Some(_) => return Err(MatrixError::invalid_param("Unknown direction: dir must be 'f' or 'b'")),
    };
    let probe = admin_room(&room_repo::RoomSummaryRow::default());
    if compare(order_by, &probe, &probe).is_none() {
        return Err(MatrixError::invalid_param(format!("Unknown value for order_by: {order_by}")));
    }
    let suffix = format!(":{}", rooms.server_name());
    let mut all: Vec<AdminRoom> = room_repo::room_summaries(rooms.db().pool(), None, &suffix).await?.iter().map(admin_room).collect();
    if let Some(term) = body.search_term.as_deref().map(str::to_lowercase).filter(|t| !t.is_empty()) {
        all.retain(|room| {
            [Some(&room.room_id), room.name.as_ref(), room.canonical_alias.as_ref()].into_iter().flatten().any(|v| v.to_lowercase().contains(&term))
        });
    }
    all.sort_by(|a, b| {
        let order = compare(order_by, a, b).unwrap_or(Ordering::Equal).then_with(|| a.room_id.cmp(&b.room_id));
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    let total_rooms = all.len() as i64;
    let page: Vec<AdminRoom> = all.into_iter().skip(offset as usize).take(limit.min(1000) as usize).collect();
    let end = offset + page.len() as i64;
    Ok(RumaResponse(list_rooms::Response {
        rooms: page,
        offset,
        total_rooms,
        next_batch: (end < total_rooms).then_some(end),
        prev_batch: (offset > 0).then(|| (offset - limit).max(0)),
    }))
}

pub mod room_details {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub room: AdminRoomDetails,
    }
}

pub async fn details(State(rooms): State<Rooms>, request: Ruma<room_details::Request>) -> Result<RumaResponse<room_details::Response>> {
    require_admin(request.user())?;
    let suffix = format!(":{}", rooms.server_name());
    let summaries = room_repo::room_summaries(rooms.db().pool(), Some(request.body.room_id.as_str()), &suffix).await?;
    let row = summaries.first().ok_or_else(|| MatrixError::not_found("Room not found"))?;
    Ok(RumaResponse(room_details::Response {
        room: AdminRoomDetails {
            room: admin_room(row),
            avatar: text(&row.state, "m.room.avatar", "url"),
            topic: text(&row.state, "m.room.topic", "topic"),
        },
    }))
}

pub mod room_members {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}/members",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        pub members: Vec<String>,
        pub total: i64,
    }
}

pub async fn members(State(rooms): State<Rooms>, request: Ruma<room_members::Request>) -> Result<RumaResponse<room_members::Response>> {
    require_admin(request.user())?;
    let room_id = request.body.room_id.as_str();
    if room_repo::room_version(rooms.db().pool(), room_id).await?.is_none() {
        return Err(MatrixError::not_found("Room not found"));
    }
    let members = room_repo::joined_members(rooms.db().pool(), room_id).await?;
    let total = members.len() as i64;
    Ok(RumaResponse(room_members::Response { members, total }))
}

pub mod room_state {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}/state",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        pub state: Vec<Value>,
    }
}

/// The room's current state as client events (what the room's members see, whatever the
/// admin's own membership).
pub async fn state(State(rooms): State<Rooms>, request: Ruma<room_state::Request>) -> Result<RumaResponse<room_state::Response>> {
    require_admin(request.user())?;
    let room_id = &request.body.room_id;
    if room_repo::room_version(rooms.db().pool(), room_id.as_str()).await?.is_none() {
        return Err(MatrixError::not_found("Room not found"));
    }
    let ids: Vec<String> = state_repo::current_state(rooms.db().pool(), room_id.as_str()).await?.into_values().collect();
    let mut state = Vec::with_capacity(ids.len());
    for row in events_repo::get_many(rooms.db().pool(), &ids).await? {
        let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
        state.push(rooms.client_event_plain(&row, &pdu, None).await?);
    }
    Ok(RumaResponse(room_state::Response { state }))
}

/// The body of a room deletion (v1 and v2 alike).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteRoomBody {
    /// Synapse moves the local members into a new room made by this user; weft does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_room_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub block: bool,
    #[serde(default = "ruma::serde::default_true")]
    pub purge: bool,
    #[serde(default)]
    pub force_purge: bool,
}

pub mod delete_room_v1 {
    use super::*;

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(body)]
        pub body: DeleteRoomBody,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub shutdown: Shutdown,
    }
}

pub mod delete_room_v2 {
    use super::*;

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(body)]
        pub body: DeleteRoomBody,
    }

    #[response]
    pub struct Response {
        pub delete_id: String,
    }
}

async fn shut_down(rooms: &Rooms, admin: &ruma::UserId, room_id: &ruma::RoomId, body: &DeleteRoomBody) -> Result<Shutdown> {
    if body.new_room_user_id.is_some() {
        return Err(MatrixError::invalid_param("new_room_user_id is not supported by this server: local members leave the room"));
    }
    rooms.shut_down(room_id, admin, ShutdownOptions { block: body.block, purge: body.purge, force_purge: body.force_purge }).await
}

/// Deletes the room and answers when done (Synapse's v1 form).
pub async fn delete_v1(State(rooms): State<Rooms>, request: Ruma<delete_room_v1::Request>) -> Result<RumaResponse<delete_room_v1::Response>> {
    require_admin(request.user())?;
    let shutdown = shut_down(&rooms, &request.user().user_id, &request.body.room_id, &request.body.body).await?;
    Ok(RumaResponse(delete_room_v1::Response { shutdown }))
}

/// Deletes the room (Synapse's v2 form): the answer is a `delete_id` whose status is kept
/// for polling. weft finishes the deletion before answering, so the status is final.
pub async fn delete_v2(State(rooms): State<Rooms>, request: Ruma<delete_room_v2::Request>) -> Result<RumaResponse<delete_room_v2::Response>> {
    require_admin(request.user())?;
    let room_id = &request.body.room_id;
    let outcome = shut_down(&rooms, &request.user().user_id, room_id, &request.body.body).await;
    if let Err(error) = &outcome {
        // What could not be attempted at all is the request's error, as in Synapse.
        if error.status == StatusCode::NOT_FOUND || error.errcode == "M_INVALID_PARAM" {
            return Err(outcome.unwrap_err());
        }
    }
    let delete_id = ruma::TransactionId::new().to_string();
    let (status, result, error) = match outcome {
        Ok(shutdown) => ("complete", shutdown, None),
        Err(error) => ("failed", Shutdown::default(), Some(error.message)),
    };
    let mut tx = rooms.db().begin_write().await?;
    purge_repo::record_deletion(
        &mut tx,
        &purge_repo::Deletion {
            delete_id: delete_id.clone(),
            room_id: room_id.to_string(),
            status: status.into(),
            result: serde_json::to_string(&result)?,
            error,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(RumaResponse(delete_room_v2::Response { delete_id }))
}

/// One deletion's status as Synapse reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletionStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub shutdown_room: Shutdown,
}

fn deletion_status(deletion: purge_repo::Deletion, with_id: bool) -> DeletionStatus {
    DeletionStatus {
        delete_id: with_id.then_some(deletion.delete_id),
        status: deletion.status,
        error: deletion.error,
        shutdown_room: serde_json::from_str(&deletion.result).unwrap_or_default(),
    }
}

pub mod room_delete_status {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/{room_id}/delete_status",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        pub results: Vec<DeletionStatus>,
    }
}

pub async fn delete_status_of_room(
    State(rooms): State<Rooms>,
    request: Ruma<room_delete_status::Request>,
) -> Result<RumaResponse<room_delete_status::Response>> {
    require_admin(request.user())?;
    let deletions = purge_repo::deletions_of_room(rooms.db().pool(), request.body.room_id.as_str()).await?;
    if deletions.is_empty() {
        return Err(MatrixError::not_found("No delete task for room"));
    }
    Ok(RumaResponse(room_delete_status::Response { results: deletions.into_iter().map(|d| deletion_status(d, true)).collect() }))
}

pub mod delete_status {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub delete_id: String,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub status: DeletionStatus,
    }
}

pub async fn delete_status_by_id(State(rooms): State<Rooms>, request: Ruma<delete_status::Request>) -> Result<RumaResponse<delete_status::Response>> {
    require_admin(request.user())?;
    let deletion = purge_repo::deletion(rooms.db().pool(), &request.body.delete_id).await?.ok_or_else(|| MatrixError::not_found("delete id not found"))?;
    Ok(RumaResponse(delete_status::Response { status: deletion_status(deletion, false) }))
}

/// Whether a room is blocked, and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockStatus {
    pub block: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

pub mod get_block {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}/block",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub status: BlockStatus,
    }
}

pub async fn block_status(State(rooms): State<Rooms>, request: Ruma<get_block::Request>) -> Result<RumaResponse<get_block::Response>> {
    require_admin(request.user())?;
    let by = rooms.blocked_by(&request.body.room_id).await?;
    Ok(RumaResponse(get_block::Response { status: BlockStatus { block: by.is_some(), user_id: by } }))
}

pub mod put_block {
    use super::*;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/rooms/{room_id}/block",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        pub block: bool,
    }

    #[response]
    pub struct Response {
        pub block: bool,
    }
}

pub async fn set_block(State(rooms): State<Rooms>, request: Ruma<put_block::Request>) -> Result<RumaResponse<put_block::Response>> {
    require_admin(request.user())?;
    rooms.set_blocked(&request.body.room_id, &request.user().user_id, request.body.block).await?;
    Ok(RumaResponse(put_block::Response { block: request.body.block }))
}
