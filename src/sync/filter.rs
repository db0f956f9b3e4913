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

fn sender_and_type(event: &Value) -> (&str, &str) {
    (event["sender"].as_str().unwrap_or(""), event["type"].as_str().unwrap_or(""))
}

/// The generic part of a filter (types, senders) against a client event.
pub fn event_allowed(filter: &Filter, event: &Value) -> bool {
    let (sender, kind) = sender_and_type(event);
    if filter.not_types.iter().any(|t| type_matches(t, kind)) {
        return false;
    }
    if filter.types.as_ref().is_some_and(|types| !types.iter().any(|t| type_matches(t, kind))) {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if filter.senders.as_ref().is_some_and(|senders| !senders.iter().any(|s| s.as_str() == sender)) {
        return false;
    }
    true
}

/// A room event filter against a client event (types, senders, url).
pub fn room_event_allowed(filter: &RoomEventFilter, event: &Value) -> bool {
    let (sender, kind) = sender_and_type(event);
    if filter.not_types.iter().any(|t| type_matches(t, kind)) {
        return false;
    }
    if filter.types.as_ref().is_some_and(|types| !types.iter().any(|t| type_matches(t, kind))) {
        return false;
    }
    if filter.not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if filter.senders.as_ref().is_some_and(|senders| !senders.iter().any(|s| s.as_str() == sender)) {
        return false;
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = event["content"].get("url").is_some();
        use ruma::api::client::filter::UrlFilter;
        match url_filter {
            UrlFilter::EventsWithUrl if !has_url => return false,
            UrlFilter::EventsWithoutUrl if has_url => return false,
            _ => {}
        }
    }
    true
}

/// Whether a room is in scope of a room event filter's rooms / not_rooms.
pub fn room_event_filter_includes(filter: &RoomEventFilter, room_id: &RoomId) -> bool {
    !filter.not_rooms.iter().any(|r| r == room_id) && filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}

/// Whether a room is in scope of the sync's room filter.
pub fn room_included(filter: &RoomFilter, room_id: &RoomId) -> bool {
    !filter.not_rooms.iter().any(|r| r == room_id) && filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
}
