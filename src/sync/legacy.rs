//! The v1 API's event stream (`GET /events`) and initial syncs (`GET /initialSync`,
//! `GET /rooms/{roomId}/initialSync`): deprecated, but in the spec and still used (SyTest
//! among others). Each is /sync's answer in the older shape: the same positions and tokens,
//! so a token from one works with the others.

use std::{collections::HashMap, time::Duration};

use ruma::{api::client::filter::FilterDefinition, DeviceId, RoomId, UInt, UserId};
use serde_json::{json, Map, Value};

use super::{token::SyncToken, Sync, SyncRequest};
use crate::error::{MatrixError, Result};

/// Events of one room the event stream hands out per response at most (the rest of a longer
/// gap is skipped, as /sync skips it).
const STREAM_ROOM_LIMIT: u32 = 500;

/// Messages per room of an initial sync when the client gives no `limit` (Synapse's).
pub const DEFAULT_INITIAL_LIMIT: u32 = 10;

impl Sync {
    /// `GET /events`: what happened since `from` (now, when absent), as one flat chunk, after
    /// waiting up to `timeout` for something. With `room`, only that room's events; `limit`
    /// caps each room's (at most 500).
    pub async fn event_stream(
        &self,
        user: &UserId,
        device: &DeviceId,
        from: Option<SyncToken>,
        room: Option<&RoomId>,
        limit: Option<u32>,
        timeout: Duration,
    ) -> Result<Value> {
        let from = match from {
            Some(from) => from,
            None => self.current().await?,
        };
        let mut filter = FilterDefinition::default();
        filter.room.timeline.limit = Some(UInt::from(limit.unwrap_or(STREAM_ROOM_LIMIT).clamp(1, STREAM_ROOM_LIMIT)));
        filter.room.include_leave = true;
        let response = self
            .sync(SyncRequest { user, device, since: Some(from), filter, full_state: false, set_presence: "online", timeout })
            .await?;

        let mut chunk = Vec::new();
        let wanted = |room_id: &str| room.is_none_or(|r| r.as_str() == room_id);
        for (section, parts) in [("join", &["timeline", "ephemeral", "account_data"][..]), ("leave", &["timeline"][..])] {
            for (room_id, room_section) in rooms_of(&response, section) {
                if !wanted(room_id) {
                    continue;
                }
                for part in parts {
                    chunk.extend(events_of(&room_section[part]).map(|event| with_room_id(event, room_id)));
                }
            }
        }
        for (room_id, invite) in rooms_of(&response, "invite") {
            if !wanted(room_id) {
                continue;
            }
            // The invite itself: the invitee's member event of the stripped state.
            let own = events_of(&invite["invite_state"])
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str());
            chunk.extend(own.map(|event| with_room_id(event, room_id)));
        }
        if room.is_none() {
            chunk.extend(events_of(&response["presence"]).map(v1_format));
            chunk.extend(events_of(&response["account_data"]).cloned());
        }
        Ok(json!({ "chunk": chunk, "start": from.encode(), "end": response["next_batch"] }))
    }

    /// `GET /initialSync`: every room of the user with its current state and latest
    /// `limit` messages, presence, account data and receipts; `archived` adds rooms left.
    pub async fn initial_sync(&self, user: &UserId, device: &DeviceId, limit: u32, archived: bool) -> Result<Value> {
        let response = self.full_sync(user, device, limit, archived).await?;
        let mut rooms = Vec::new();
        let mut receipts = Vec::new();
        for (membership, room_id, section) in room_sections(&response) {
            receipts.extend(events_of(&section["ephemeral"]).filter(|e| e["type"] == "m.receipt").map(|e| with_room_id(e, room_id)));
            rooms.push(room_view(user, membership, room_id, section, &response["next_batch"]));
        }
        Ok(json!({
            "end": response["next_batch"],
            "rooms": rooms,
            "presence": events_of(&response["presence"]).map(v1_format).collect::<Vec<_>>(),
            "account_data": events_of(&response["account_data"]).cloned().collect::<Vec<_>>(),
            "receipts": receipts,
        }))
    }

    /// `GET /rooms/{roomId}/initialSync`: one room of the user's (joined, invited or left),
    /// as `/initialSync` shows it, with the presence of its members and its receipts.
    pub async fn room_initial_sync(&self, user: &UserId, device: &DeviceId, room_id: &RoomId, limit: u32) -> Result<Value> {
        let response = self.full_sync(user, device, limit, true).await?;
        let Some((membership, _, section)) = room_sections(&response).into_iter().find(|(_, id, _)| *id == room_id.as_str()) else {
            return Err(MatrixError::forbidden("You are not in this room"));
        };
        let mut view = room_view(user, membership, room_id.as_str(), section, &response["next_batch"]);
        let members: std::collections::HashSet<&str> = view["state"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join")
            .filter_map(|e| e["state_key"].as_str())
            .collect();
        let presence: Vec<Value> = events_of(&response["presence"])
            .filter(|e| e["sender"].as_str().is_some_and(|s| members.contains(s)))
            .map(v1_format)
            .collect();
        let receipts: Vec<Value> =
            events_of(&section["ephemeral"]).filter(|e| e["type"] == "m.receipt").map(|e| with_room_id(e, room_id.as_str())).collect();
        view["presence"] = presence.into();
        view["receipts"] = receipts.into();
        Ok(view)
    }

    /// An initial /sync of everything, timelines of `limit` events.
    async fn full_sync(&self, user: &UserId, device: &DeviceId, limit: u32, archived: bool) -> Result<Value> {
        let mut filter = FilterDefinition::default();
        filter.room.timeline.limit = Some(UInt::from(limit.min(STREAM_ROOM_LIMIT)));
        filter.room.include_leave = archived;
        self.sync(SyncRequest { user, device, since: None, filter, full_state: false, set_presence: "online", timeout: Duration::ZERO })
            .await
    }
}

/// The rooms of one section of a /sync response (`join`, `invite`, `leave`).
fn rooms_of<'a>(response: &'a Value, section: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    response["rooms"][section].as_object().into_iter().flatten().map(|(id, room)| (id.as_str(), room))
}

/// Every room of a /sync response with the user's membership in it.
fn room_sections(response: &Value) -> Vec<(&'static str, &str, &Value)> {
    let mut all = Vec::new();
    for (section, membership) in [("join", "join"), ("invite", "invite"), ("leave", "leave")] {
        all.extend(rooms_of(response, section).map(|(id, room)| (membership, id, room)));
    }
    all
}

/// The `events` of a /sync block (`timeline`, `state`, `ephemeral`...).
fn events_of(block: &Value) -> impl Iterator<Item = &Value> {
    block["events"].as_array().into_iter().flatten()
}

fn with_room_id(event: &Value, room_id: &str) -> Value {
    let mut event = v1_format(event);
    if let Some(object) = event.as_object_mut() {
        object.insert("room_id".into(), room_id.into());
    }
    event
}

/// An event in the v1 API's shape, as Synapse serves these endpoints: the sender also as
/// `user_id`, and `age`, `prev_content`, `replaces_state` and `redacted_because` also at the
/// top level; presence with its user as `content.user_id`.
fn v1_format(event: &Value) -> Value {
    let mut event = event.clone();
    let Some(object) = event.as_object_mut() else { return event };
    if let Some(sender) = object.get("sender").cloned() {
        if object.get("type").and_then(Value::as_str) == Some("m.presence") {
            if let Some(content) = object.get_mut("content").and_then(Value::as_object_mut) {
                content.entry("user_id").or_insert(sender.clone());
            }
        }
        object.entry("user_id").or_insert(sender);
    }
    if let Some(unsigned) = object.get("unsigned").and_then(Value::as_object).cloned() {
        for key in ["age", "redacted_because", "replaces_state", "prev_content"] {
            if let Some(value) = unsigned.get(key) {
                object.entry(key).or_insert(value.clone());
            }
        }
    }
    event
}

/// One room as the v1 initial syncs show it, from its /sync section.
fn room_view(user: &UserId, membership: &str, room_id: &str, section: &Value, end: &Value) -> Value {
    let mut view = Map::new();
    view.insert("room_id".into(), room_id.into());
    if membership == "invite" {
        let stripped: Vec<Value> = events_of(&section["invite_state"]).map(|e| with_room_id(e, room_id)).collect();
        let invite = stripped.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str()).cloned();
        view.insert("membership".into(), "invite".into());
        view.insert("invite".into(), invite.unwrap_or(Value::Null));
        view.insert("state".into(), stripped.into());
        return Value::Object(view);
    }
    // The current state: the state before the timeline, updated by the timeline's state events.
    let timeline: Vec<Value> = events_of(&section["timeline"]).map(|e| with_room_id(e, room_id)).collect();
    let mut state: HashMap<(String, String), Value> = HashMap::new();
    let mut order = Vec::new();
    for event in events_of(&section["state"]).map(|e| with_room_id(e, room_id)).chain(timeline.iter().filter(|e| e.get("state_key").is_some()).cloned()) {
        let key = (event["type"].as_str().unwrap_or_default().to_owned(), event["state_key"].as_str().unwrap_or_default().to_owned());
        if state.insert(key.clone(), event).is_none() {
            order.push(key);
        }
    }
    let state: Vec<Value> = order.iter().filter_map(|key| state.remove(key)).collect();
    // A room left or banned from: the membership its last member event says.
    let own_membership = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str())
        .and_then(|e| e["content"]["membership"].as_str())
        .unwrap_or(membership)
        .to_owned();
    let public = state.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "public");
    view.insert("membership".into(), own_membership.into());
    view.insert(
        "messages".into(),
        json!({ "chunk": timeline, "start": section["timeline"]["prev_batch"], "end": end }),
    );
    view.insert("state".into(), state.into());
    view.insert("visibility".into(), if public { "public" } else { "private" }.into());
    view.insert("account_data".into(), events_of(&section["account_data"]).cloned().collect::<Vec<_>>().into());
    Value::Object(view)
}
