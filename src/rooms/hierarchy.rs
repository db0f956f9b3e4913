//! Spaces seen from this server: room summaries, the `m.space.child` links of a room, and
//! who may see a room's summary (the peek/join rules of `/hierarchy`).

use std::cmp::Ordering;

use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::Rooms;
use crate::{
    error::Result,
    storage::{rooms as room_repo, state as state_repo},
};

/// One `m.space.child` link of a space, with the event clients see in `children_state`.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    pub via: Vec<OwnedServerName>,
    /// The stripped child event, with its `origin_server_ts`.
    pub event: Value,
}

/// Orders children as the spec says: by a valid `order` string, then those without one, then
/// by the child event's timestamp, then by room id.
fn child_order(a: &Value, b: &Value) -> Ordering {
    let order = |event: &Value| {
        event["content"]["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.chars().all(|c| ('\x20'..='\x7e').contains(&c)))
            .map(str::to_owned)
    };
    let key = |event: &Value| {
        let order = order(event);
        (order.is_none(), order, event["origin_server_ts"].as_i64().unwrap_or(0), event["state_key"].as_str().unwrap_or("").to_owned())
    };
    key(a).cmp(&key(b))
}

/// Reads `m.space.child` events (stripped, with timestamps) into ordered links: those without
/// a non-empty `via` are not links, and with `suggested_only` only suggested children count.
pub fn children_from_events(events: impl IntoIterator<Item = Value>, suggested_only: bool) -> Vec<SpaceChild> {
    let mut events: Vec<Value> = events
        .into_iter()
        .filter(|e| e["type"] == "m.space.child")
        .filter(|e| !suggested_only || e["content"]["suggested"] == true)
        .filter(|e| e["content"]["via"].as_array().is_some_and(|v| !v.is_empty()))
        .collect();
    events.sort_by(child_order);
    events
        .into_iter()
        .filter_map(|event| {
            let room_id = RoomId::parse(event["state_key"].as_str()?).ok()?;
            let via = event["content"]["via"]
                .as_array()?
                .iter()
                .filter_map(|s| ServerName::parse(s.as_str()?).ok())
                .collect();
            Some(SpaceChild { room_id, via, event })
        })
        .collect()
}

impl Rooms {
    /// The summary of a room this server is in: the fields of `RoomSummary` in the spec.
    pub async fn room_summary(&self, room_id: &RoomId) -> Result<Value> {
        let content = |kind: &'static str| self.current_state_content(room_id, kind, "");
        let text = |content: &Option<Value>, key: &str| content.as_ref().and_then(|c| c.get(key)).and_then(Value::as_str).map(str::to_owned);
        let joined = self.joined_members(room_id).await?.len();
        let join_rules = content("m.room.join_rules").await?;
        let join_rule = text(&join_rules, "join_rule").unwrap_or_else(|| "invite".to_owned());
        let history = text(&content("m.room.history_visibility").await?, "history_visibility");
        let guest = text(&content("m.room.guest_access").await?, "guest_access");
        let mut summary = json!({
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable": history.as_deref() == Some("world_readable"),
            "guest_can_join": guest.as_deref() == Some("can_join"),
            "join_rule": join_rule,
            "room_version": self.room_version(room_id).await?,
        });
        let optional = [
            ("name", text(&content("m.room.name").await?, "name")),
            ("topic", text(&content("m.room.topic").await?, "topic")),
            ("canonical_alias", text(&content("m.room.canonical_alias").await?, "alias")),
            ("avatar_url", text(&content("m.room.avatar").await?, "url")),
            ("room_type", text(&content("m.room.create").await?, "type")),
            ("encryption", text(&content("m.room.encryption").await?, "algorithm")),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                summary[key] = value.into();
            }
        }
        if join_rule == "restricted" || join_rule == "knock_restricted" {
            summary["allowed_room_ids"] = allowed_rooms(join_rules.as_ref()).into();
        }
        Ok(summary)
    }

    /// The room's `m.space.child` links in the spec's order.
    pub async fn space_children(&self, room_id: &RoomId, suggested_only: bool) -> Result<Vec<SpaceChild>> {
        let state = state_repo::current_state(self.db().pool(), room_id.as_str()).await?;
        let mut events = Vec::new();
        for (_, event_id) in state.iter().filter(|((kind, _), _)| kind == "m.space.child") {
            if let Some(pdu) = self.pdu(&ruma::EventId::parse(event_id.as_str())?).await? {
                let mut event = super::remote::stripped(&pdu);
                event["origin_server_ts"] = json!(pdu.fields.origin_server_ts);
                events.push(event);
            }
        }
        Ok(children_from_events(events, suggested_only))
    }

    /// Whether a local user may see the summary of a room this server is in: anyone for rooms
    /// one can join, knock on or read without joining; members and invitees; for restricted
    /// rooms, members of an allowed room.
    pub async fn summary_visible_to_user(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        if self.openly_peekable(room_id).await? {
            return Ok(true);
        }
        if matches!(self.membership_of(room_id, user).await?.as_deref(), Some("join" | "invite")) {
            return Ok(true);
        }
        for allowed in allowed_rooms(self.current_state_content(room_id, "m.room.join_rules", "").await?.as_ref()) {
            if room_repo::membership(self.db().pool(), &allowed, user.as_str()).await?.is_some_and(|(m, _)| m == "join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The same question for another server asking on behalf of its users: rooms it is in or
    /// invited to, and restricted rooms when it is in an allowed room.
    pub async fn summary_visible_to_server(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        if self.openly_peekable(room_id).await? {
            return Ok(true);
        }
        let on_server = |user: &String| UserId::parse(user.as_str()).is_ok_and(|u| u.server_name() == server);
        for membership in ["join", "invite"] {
            if room_repo::members_with_membership(self.db().pool(), room_id.as_str(), membership).await?.iter().any(on_server) {
                return Ok(true);
            }
        }
        for allowed in allowed_rooms(self.current_state_content(room_id, "m.room.join_rules", "").await?.as_ref()) {
            if room_repo::members_with_membership(self.db().pool(), &allowed, "join").await?.iter().any(on_server) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rooms anyone may look into: public or knockable join rules, or world-readable history.
    async fn openly_peekable(&self, room_id: &RoomId) -> Result<bool> {
        let rule = self.current_state_content(room_id, "m.room.join_rules", "").await?;
        if matches!(rule.as_ref().and_then(|c| c["join_rule"].as_str()), Some("public" | "knock" | "knock_restricted")) {
            return Ok(true);
        }
        let history = self.current_state_content(room_id, "m.room.history_visibility", "").await?;
        Ok(history.as_ref().and_then(|c| c["history_visibility"].as_str()) == Some("world_readable"))
    }
}

/// The rooms whose members a restricted join rule admits.
pub fn allowed_rooms(join_rules: Option<&Value>) -> Vec<String> {
    let Some(rules) = join_rules else { return Vec::new() };
    if !matches!(rules["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
        return Vec::new();
    }
    rules["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["type"] == "m.room_membership")
        .filter_map(|entry| entry["room_id"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(room: &str, order: Option<&str>, ts: i64) -> Value {
        let mut content = json!({ "via": ["example.org"] });
        if let Some(order) = order {
            content["order"] = order.into();
        }
        json!({ "type": "m.space.child", "state_key": room, "content": content, "origin_server_ts": ts, "sender": "@a:example.org" })
    }

    #[test]
    fn children_follow_order_then_timestamp_then_room_id() {
        let events = vec![
            child("!d:x", None, 1),
            child("!c:x", Some("b"), 9),
            child("!b:x", None, 1),
            child("!a:x", Some("a"), 5),
            child("!e:x", Some("\u{1}bad"), 0),
        ];
        let order: Vec<String> = children_from_events(events, false).into_iter().map(|c| c.room_id.to_string()).collect();
        assert_eq!(order, ["!a:x", "!c:x", "!e:x", "!b:x", "!d:x"]);
    }

    #[test]
    fn links_need_via_and_suggested_only_keeps_suggested() {
        let mut no_via = child("!a:x", None, 1);
        no_via["content"]["via"] = json!([]);
        let mut suggested = child("!b:x", None, 2);
        suggested["content"]["suggested"] = true.into();
        let plain = child("!c:x", None, 3);
        let all = children_from_events(vec![no_via.clone(), suggested.clone(), plain.clone()], false);
        assert_eq!(all.iter().map(|c| c.room_id.as_str()).collect::<Vec<_>>(), ["!b:x", "!c:x"]);
        let only = children_from_events(vec![no_via, suggested, plain], true);
        assert_eq!(only.iter().map(|c| c.room_id.as_str()).collect::<Vec<_>>(), ["!b:x"]);
    }
}
