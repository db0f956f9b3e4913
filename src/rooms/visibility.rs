//! Who may see what: history visibility on every read path, and power levels.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{EventId, OwnedUserId, UserId};
use serde_json::Value;

use super::{Pdu, Rooms};
use crate::{error::Result, storage::events::EventRow};

/// The parts of m.room.power_levels the server's own checks need.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    pub users: HashMap<OwnedUserId, i64>,
    pub users_default: i64,
    pub redact: i64,
    pub state_default: i64,
    pub events_default: i64,
    pub events: HashMap<String, i64>,
    /// v12 creators have infinite power.
    pub creators: Vec<OwnedUserId>,
}

fn as_level(value: Option<&Value>, default: i64) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(default),
        _ => default,
    }
}

impl PowerLevels {
    pub fn from_content(content: Option<&Value>, create: Option<&Pdu>) -> Self {
        let empty = Value::Object(Default::default());
        let c = content.unwrap_or(&empty);
        let mut creators = Vec::new();
        let mut users = HashMap::new();
        if let Some(map) = c.get("users").and_then(Value::as_object) {
            for (user, level) in map {
                if let Ok(user) = UserId::parse(user.as_str()) {
                    users.insert(user, as_level(Some(level), 0));
                }
            }
        }
        if let Some(create) = create {
            if content.is_none() {
                // Without power levels the room creator has 100.
                users.insert(create.fields.sender.clone(), 100);
            }
            if create.fields.room_id.is_none() {
                // Room v12: the create event's sender and additional_creators are creators.
                creators.push(create.fields.sender.clone());
                if let Some(extra) = create.content_value().get("additional_creators").and_then(Value::as_array) {
                    creators.extend(extra.iter().filter_map(Value::as_str).filter_map(|u| UserId::parse(u).ok()));
                }
            }
        }
        let events = c
            .get("events")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), as_level(Some(v), 0))).collect())
            .unwrap_or_default();
        Self {
            users,
            users_default: as_level(c.get("users_default"), 0),
            redact: as_level(c.get("redact"), 50),
            state_default: as_level(c.get("state_default"), if content.is_some() { 50 } else { 0 }),
            events_default: as_level(c.get("events_default"), 0),
            events,
            creators,
        }
    }

    pub fn from_state(state: &HashMap<(String, String), Pdu>) -> Self {
        let power = state.get(&("m.room.power_levels".to_owned(), String::new())).map(Pdu::content_value);
        let create = state.get(&("m.room.create".to_owned(), String::new()));
        Self::from_content(power.as_ref(), create)
    }

    pub fn user_level(&self, user: &UserId) -> i64 {
        if self.creators.iter().any(|c| c == user) {
            return i64::MAX;
        }
        self.users.get(user).copied().unwrap_or(self.users_default)
    }

    /// Level needed to send an event of this type.
    pub fn event_level(&self, kind: &str, is_state: bool) -> i64 {
        self.events.get(kind).copied().unwrap_or(if is_state { self.state_default } else { self.events_default })
    }
}

/// Decides, per event, whether a user may see it, caching per state group (the lookups
/// themselves go through the rooms' caches: state groups never change).
pub struct VisibilityChecker<'a> {
    rooms: &'a Rooms,
    user: &'a UserId,
    currently_joined: bool,
    cache: HashMap<i64, (String, Option<String>)>,
    /// The users this user ignores, read on first use.
    ignored: Option<Arc<HashSet<String>>>,
}

/// The users `user` ignores (`m.ignored_user_list` account data), from the push service's
/// cache: read once, not for every room a sync builds.
pub async fn ignored_users(rooms: &Rooms, user: &UserId) -> Result<Arc<HashSet<String>>> {
    rooms.push.ignored_users(user).await
}

impl<'a> VisibilityChecker<'a> {
    /// `currently_joined`: the user's membership in the room now is `join`.
    pub fn new(rooms: &'a Rooms, user: &'a UserId, currently_joined: bool) -> Self {
        Self { rooms, user, currently_joined, cache: HashMap::new(), ignored: None }
    }

    /// The spec's rules: world_readable; joined at the event; `shared` and joined now;
    /// `invited` and invited (or joined) at the event. A user always sees their own
    /// membership events, and never the non-state events of users they ignore (state
    /// events stay: the room's state must stay whole).
    pub async fn can_see(&mut self, row: &EventRow, pdu: &Pdu) -> Result<bool> {
        if pdu.state_key() == Some(self.user.as_str()) && pdu.kind().to_string() == "m.room.member" {
            return Ok(true);
        }
        if pdu.state_key().is_none() {
            if self.ignored.is_none() {
                self.ignored = Some(ignored_users(self.rooms, self.user).await?);
            }
            if self.ignored.as_ref().is_some_and(|ignored| ignored.contains(pdu.fields.sender.as_str())) {
                return Ok(false);
            }
        }
        let (history, membership) = self.at_group(row.state_group).await?;
        if self.allows(&history, membership.as_deref()) {
            return Ok(true);
        }
        // A history_visibility change is visible if the visibility before it or after it
        // allows (the spec's rule): members who join later still see the room close up.
        if pdu.kind().to_string() == "m.room.history_visibility" {
            if let Some(prev) = pdu.prev_events.first() {
                if let Some(prev_row) = crate::storage::events::get_timeline(self.rooms.db().pool(), prev.as_str()).await? {
                    let (before, _) = self.at_group(prev_row.state_group).await?;
                    return Ok(self.allows(&before, membership.as_deref()));
                }
            }
        }
        Ok(false)
    }

    fn allows(&self, history: &str, membership: Option<&str>) -> bool {
        match history {
            "world_readable" => true,
            _ if membership == Some("join") => true,
            "invited" => membership == Some("invite"),
            "joined" => false,
            // "shared" and anything unknown behave as shared, the spec's default.
            _ => self.currently_joined,
        }
    }

    async fn at_group(&mut self, group: i64) -> Result<(String, Option<String>)> {
        if let Some(hit) = self.cache.get(&group) {
            return Ok(hit.clone());
        }
        let history = match self.rooms.lookup_in_group(group, "m.room.history_visibility", "").await? {
            Some(id) => content_field(self.rooms, &id, "history_visibility").await?.unwrap_or_else(|| "shared".into()),
            None => "shared".to_owned(),
        };
        let membership = match self.rooms.lookup_in_group(group, "m.room.member", self.user.as_str()).await? {
            Some(id) => content_field(self.rooms, &id, "membership").await?,
            None => None,
        };
        self.cache.insert(group, (history.clone(), membership.clone()));
        Ok((history, membership))
    }
}

/// A string field of an event's content (both fields read here survive redaction).
async fn content_field(rooms: &Rooms, event_id: &str, field: &str) -> Result<Option<String>> {
    let Some(pdu) = rooms.pdu(&EventId::parse(event_id)?).await? else {
        return Ok(None);
    };
    Ok(pdu.content_value().get(field).and_then(Value::as_str).map(str::to_owned))
}
