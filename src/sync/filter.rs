//! Sync filters: stored per user, and applied to the events of a sync response.

use ruma::{
    api::client::filter::{Filter, FilterDefinition, RoomEventFilter, RoomFilter},
    RoomId, UserId,
};
use serde_json::Value;

use crate::{
    error::{MatrixError, Result},
    rooms::read::type_matches,
    storage::{filters as repo, Db},
};

pub async fn store(db: &Db, user: &UserId, filter: &FilterDefinition) -> Result<String> {
    let definition = serde_json::to_string(filter).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let mut tx = db.begin_write().await?;
    let id = repo::insert(&mut tx, user.as_str(), &definition).await?;
    tx.commit().await?;
    Ok(id.to_string())
}

pub async fn load(db: &Db, user: &UserId, filter_id: &str) -> Result<FilterDefinition> {
    let id: i64 = filter_id.parse().map_err(|_| MatrixError::not_found("Filter not found"))?;
    let definition = repo::get(db.pool(), user.as_str(), id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Filter not found"))?;
    serde_json::from_str(&definition).map_err(|e| MatrixError::internal(format!("stored filter unreadable: {e}")))
}

/// The type and sender conditions every filter kind shares.
fn types_and_senders_allow(
    types: Option<&[String]>,
    not_types: &[String],
    senders: Option<&[ruma::OwnedUserId]>,
    not_senders: &[ruma::OwnedUserId],
    event: &Value,
) -> bool {
    let sender = event["sender"].as_str().unwrap_or("");
    let kind = event["type"].as_str().unwrap_or("");
    !not_types.iter().any(|t| type_matches(t, kind))
        && types.is_none_or(|types| types.iter().any(|t| type_matches(t, kind)))
        && !not_senders.iter().any(|s| s.as_str() == sender)
        && senders.is_none_or(|senders| senders.iter().any(|s| s.as_str() == sender))
}

/// The generic part of a filter (types, senders) against a client event.
pub fn event_allowed(filter: &Filter, event: &Value) -> bool {
    types_and_senders_allow(filter.types.as_deref(), &filter.not_types, filter.senders.as_deref(), &filter.not_senders, event)
}

/// A room event filter against a client event (types, senders, url).
pub fn room_event_allowed(filter: &RoomEventFilter, event: &Value) -> bool {
    if !types_and_senders_allow(filter.types.as_deref(), &filter.not_types, filter.senders.as_deref(), &filter.not_senders, event) {
        return false;
    }
    let has_url = event["content"].get("url").is_some();
    use ruma::api::client::filter::UrlFilter;
    !matches!((&filter.url_filter, has_url), (Some(UrlFilter::EventsWithUrl), false) | (Some(UrlFilter::EventsWithoutUrl), true))
}

/// Whether a room is in scope of a room event filter's rooms / not_rooms.
pub fn room_event_filter_includes(filter: &RoomEventFilter, room_id: &RoomId) -> bool {
    !filter.not_rooms.iter().any(|r| r == room_id) && filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}

/// Whether a room is in scope of the sync's room filter.
pub fn room_included(filter: &RoomFilter, room_id: &RoomId) -> bool {
    !filter.not_rooms.iter().any(|r| r == room_id) && filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}
