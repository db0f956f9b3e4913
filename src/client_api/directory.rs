//! Room aliases and the public room directory.

use axum::extract::State;
use ruma::{
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::{aliases, Visibility},
    },
    api::federation::directory as federation_directory,
    directory::{Filter, RoomNetwork},
    RoomAliasId, RoomId, ServerName, UInt, UserId,
};

use serde_json::Value;

use super::extract::{Ruma, RumaResponse};
use crate::{
    appservice::{client::AppServiceClient, AppServices},
    error::{MatrixError, Result},
    federation::Federation,
    rooms::{
        directory::{self, DirectoryPage, Listing},
        EventTemplate, Rooms,
    },
    storage::{aliases as alias_repo, rooms as room_repo},
};

fn require_local_alias(rooms: &Rooms, alias: &RoomAliasId) -> Result<()> {
    if alias.server_name() != rooms.server_name() {
        return Err(MatrixError::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

/// An application service manages the aliases in its namespaces, and only those; other
/// users may not take an alias a service holds exclusively (spec: M_EXCLUSIVE).
fn check_alias_namespace(appservices: &AppServices, requester: &crate::accounts::Requester, alias: &RoomAliasId) -> Result<()> {
    match appservices.of_requester(requester) {
        Some(service) if !service.is_interested_in_alias(alias.as_str()) => {
            Err(MatrixError::exclusive("This application service has not reserved this kind of alias"))
        }
        Some(_) => Ok(()),
        None if appservices.exclusive_owner_of_alias(alias.as_str()).is_some() => {
            Err(MatrixError::exclusive("This alias is reserved by an application service"))
        }
        None => Ok(()),
    }
}

pub async fn create(
    State(rooms): State<Rooms>,
    State(appservices): State<AppServices>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<RumaResponse<create_alias::v3::Response>> {
    let requester = request.user();
    let user = &requester.user_id;
    let body = &request.body;
    require_local_alias(&rooms, &body.room_alias)?;
    check_alias_namespace(&appservices, requester, &body.room_alias)?;
    if requester.appservice_id.is_none() {
        // A service manages its aliases without joining the rooms (as in Synapse).
        rooms.require_joined(&body.room_id, user).await?;
    } else if rooms.room_version(&body.room_id).await.is_err() {
        return Err(MatrixError::not_found("Room not found"));
    }
    if !alias_repo::insert(rooms.db().pool(), body.room_alias.as_str(), body.room_id.as_str(), user.as_str()).await? {
        return Err(MatrixError::new(http::StatusCode::CONFLICT, "M_UNKNOWN", "Room alias already exists"));
    }
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

pub async fn resolve(
    State(rooms): State<Rooms>,
    State(federation): State<crate::federation::Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<get_alias::v3::Request>,
) -> Result<RumaResponse<get_alias::v3::Response>> {
    let alias = &request.body.room_alias;
    if alias.server_name() != rooms.server_name() {
        // Remote aliases are asked of their server.
        let query = ruma::api::federation::query::get_room_information::v1::Request::new(alias.clone());
        let answer = federation.send(alias.server_name(), query).await?;
        return Ok(RumaResponse(get_alias::v3::Response::new(answer.room_id, answer.servers)));
    }
    let room_id = resolve_local_alias(&rooms, &appservice_client, alias).await?.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(RumaResponse(get_alias::v3::Response::new(room_id, vec![rooms.server_name().to_owned()])))
}

/// The room a local alias names. An unknown alias in an application service's namespace
/// is asked of that service, which may create it (spec: room alias queries).
pub async fn resolve_local_alias(rooms: &Rooms, appservice_client: &AppServiceClient, alias: &RoomAliasId) -> Result<Option<ruma::OwnedRoomId>> {
    if let Some((room_id, _)) = alias_repo::resolve(rooms.db().pool(), alias.as_str()).await? {
        return Ok(Some(RoomId::parse(room_id)?));
    }
    if !appservice_client.alias_created(alias).await {
        return Ok(None);
    }
    Ok(alias_repo::resolve(rooms.db().pool(), alias.as_str()).await?.map(|(room_id, _)| RoomId::parse(room_id)).transpose()?)
}

/// The alias's creator, a server admin, the application service whose namespace holds it,
/// or a room member allowed to set the canonical alias may delete it. A deleted alias is also taken out of `m.room.canonical_alias`.
pub async fn delete(
    State(rooms): State<Rooms>,
    State(appservices): State<AppServices>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>> {
    let requester = request.user().clone();
    let alias = &request.body.room_alias;
    require_local_alias(&rooms, alias)?;
    if requester.appservice_id.is_some() {
        check_alias_namespace(&appservices, &requester, alias)?;
    }
    let (room_id, creator) = alias_repo::resolve(rooms.db().pool(), alias.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    let room_id = RoomId::parse(room_id)?;
    let allowed = creator == requester.user_id.as_str()
        || requester.is_admin
        || requester.appservice_id.is_some()
        || can_edit_canonical_alias(&rooms, &room_id, &requester.user_id).await?;
    if !allowed {
        return Err(MatrixError::forbidden("You may not delete this alias"));
    }
    alias_repo::delete(rooms.db().pool(), alias.as_str()).await?;
    if let Some(mut content) = rooms.current_state_content(&room_id, "m.room.canonical_alias", "").await? {
        let mut changed = false;
        if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            content.as_object_mut().map(|c| c.remove("alias"));
            changed = true;
        }
        if let Some(alt) = content.get_mut("alt_aliases").and_then(Value::as_array_mut) {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if changed && rooms.membership_of(&room_id, &requester.user_id).await?.as_deref() == Some("join") {
            let template = EventTemplate::state("m.room.canonical_alias".into(), "", content);
            if let Err(error) = rooms.send(&room_id, &requester.user_id, template, None).await {
                tracing::warn!(%room_id, %error, "could not update canonical alias after alias deletion");
            }
        }
    }
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

async fn can_edit_canonical_alias(rooms: &Rooms, room_id: &RoomId, user: &UserId) -> Result<bool> {
    if rooms.membership_of(room_id, user).await?.as_deref() != Some("join") {
        return Ok(false);
    }
    let power = rooms.power_levels(room_id).await?;
    Ok(power.user_level(user) >= power.event_level("m.room.canonical_alias", true))
}

pub async fn room_aliases(
    State(rooms): State<Rooms>,
    request: Ruma<aliases::v3::Request>,
) -> Result<RumaResponse<aliases::v3::Response>> {
    let room_id = &request.body.room_id;
    // Server admins see any room's aliases, as in Synapse (admin tools list them).
    if !request.user().is_admin {
        rooms.check_can_read(room_id, &request.user().user_id).await?;
    }
    let list = alias_repo::for_room(rooms.db().pool(), room_id.as_str()).await?;
    let list = list.into_iter().map(RoomAliasId::parse).collect::<Result<Vec<_>, _>>()?;
    Ok(RumaResponse(aliases::v3::Response::new(list)))
}

pub async fn get_visibility(
    State(rooms): State<Rooms>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<RumaResponse<get_room_visibility::v3::Response>> {
    let room_id = &request.body.room_id;
    rooms.room_version(room_id).await?;
    let visibility = if room_repo::is_published(rooms.db().pool(), room_id.as_str()).await? { Visibility::Public } else { Visibility::Private };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(visibility)))
}

pub async fn set_visibility(
    State(rooms): State<Rooms>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<RumaResponse<set_room_visibility::v3::Response>> {
    let requester = request.user().clone();
    let room_id = &request.body.room_id;
    rooms.room_version(room_id).await?;
    if !requester.is_admin && !can_edit_canonical_alias(&rooms, room_id, &requester.user_id).await? {
        return Err(MatrixError::forbidden("You may not change this room's directory visibility"));
    }
    let publish = match &request.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => return Err(MatrixError::invalid_param(format!("Unknown visibility {}", other.as_str()))),
    };
    room_repo::set_published(rooms.db().pool(), room_id.as_str(), publish).await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

/// The directory of `server`: ours, or another server's asked over federation.
async fn directory_of(
    rooms: &Rooms,
    federation: &Federation,
    server: Option<&ServerName>,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: Filter,
    network: RoomNetwork,
) -> Result<DirectoryPage> {
    match server.filter(|s| *s != rooms.server_name()) {
        None => directory::page(rooms, Listing::of_network(&network)?, limit, since, &filter).await,
        Some(server) => {
            let mut request = federation_directory::get_public_rooms_filtered::v1::Request::new();
            request.limit = limit;
            request.since = since.map(str::to_owned);
            request.filter = filter;
            request.room_network = network;
            let response = federation.send(server, request).await?;
            Ok(DirectoryPage {
                chunk: response.chunk,
                next_batch: response.next_batch,
                prev_batch: response.prev_batch,
                total_room_count_estimate: response.total_room_count_estimate,
            })
        }
    }
}

pub async fn public_rooms(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<RumaResponse<get_public_rooms::v3::Response>> {
    let b = &request.body;
    let page = directory_of(&rooms, &federation, b.server.as_deref(), b.limit, b.since.as_deref(), Filter::new(), RoomNetwork::Matrix).await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = page.total_room_count_estimate;
    Ok(RumaResponse(response))
}

pub async fn public_rooms_filtered(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<RumaResponse<get_public_rooms_filtered::v3::Response>> {
    let b = request.body;
    let page = directory_of(&rooms, &federation, b.server.as_deref(), b.limit, b.since.as_deref(), b.filter, b.room_network).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = page.total_room_count_estimate;
    Ok(RumaResponse(response))
}
