//! Sliding sync extensions: to-device messages, E2EE key state, account data, receipts and
//! typing, each over the rooms it is scoped to (`lists` / `rooms`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::{
    api::client::sync::sync_events::{
        v5::{self, request::ExtensionRoomConfig},
        DeviceLists,
    },
    OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::{json, Value};

use super::{lists::Candidates, room::raw, SlidingRequest, Span};
use crate::{
    error::{MatrixError, Result},
    push::rules::PUSH_RULES,
    storage::account_data,
    sync::Sync,
};

/// What extensions are scoped over.
pub(crate) struct Scope<'a> {
    /// The rooms in each list's ranges, by list name.
    pub windows: &'a HashMap<String, Vec<OwnedRoomId>>,
    pub subscriptions: &'a BTreeMap<OwnedRoomId, v5::request::RoomSubscription>,
    pub candidates: &'a Candidates,
    /// Rooms sent whole in this response, with the ids of their timeline events.
    pub initial_rooms: &'a HashMap<OwnedRoomId, HashSet<String>>,
}

impl Scope<'_> {
    /// The rooms an extension applies to: the windows of the named lists (all when not
    /// given) and the named subscriptions (`*` or not given: all subscriptions).
    fn rooms(&self, lists: Option<&Vec<String>>, rooms: Option<&Vec<ExtensionRoomConfig>>) -> BTreeSet<OwnedRoomId> {
        let mut picked = BTreeSet::new();
        for (name, window) in self.windows {
            if lists.is_none_or(|names| names.iter().any(|n| n == name || n == "*")) {
                picked.extend(window.iter().cloned());
            }
        }
        let all_subscribed = rooms.is_none_or(|r| r.contains(&ExtensionRoomConfig::AllSubscribed));
        if all_subscribed {
            picked.extend(self.subscriptions.keys().filter(|r| self.candidates.contains(r)).cloned());
        }
        for config in rooms.into_iter().flatten() {
            if let ExtensionRoomConfig::Room(room_id) = config {
                if self.candidates.contains(room_id) {
                    picked.insert(room_id.clone());
                }
            }
        }
        picked
    }

    fn joined(&self, rooms: BTreeSet<OwnedRoomId>) -> impl Iterator<Item = OwnedRoomId> + '_ {
        rooms.into_iter().filter(|r| self.candidates.get(r).is_some_and(|c| c.joined()))
    }
}

fn enabled(flag: Option<bool>) -> bool {
    flag == Some(true)
}

impl Sync {
    /// Fills the response's extensions; true when any carries news.
    pub(super) async fn sliding_extensions(
        &self,
        request: &SlidingRequest<'_>,
        scope: &Scope<'_>,
        span: Span,
        out: &mut v5::response::Extensions,
    ) -> Result<bool> {
        let asked = &request.body.extensions;
        let user = request.user;
        let mut news = false;

        if enabled(asked.to_device.enabled) {
            let since = match &asked.to_device.since {
                Some(since) => since.parse::<i64>().map_err(|_| MatrixError::invalid_param("to_device.since must be a number"))?,
                None => 0,
            };
            let delivery = self.to_device.deliver(user, request.device.as_str(), since).await?;
            news |= !delivery.events.is_empty();
            let mut to_device = v5::response::ToDevice::default();
            to_device.next_batch = delivery.position.max(since).to_string();
            to_device.events = delivery.events.iter().map(raw).collect();
            out.to_device = Some(to_device);
        }

        if enabled(asked.e2ee.enabled) {
            let (counts, fallback) = self.e2ee.device_key_state(user, request.device.as_str()).await?;
            out.e2ee.device_one_time_keys_count = serde_json::from_value(counts)?;
            out.e2ee.device_unused_fallback_key_types = Some(serde_json::from_value(fallback)?);
            if let Some(from) = span.from {
                let (changed, left) = self.key_changes(user, &from, &span.to).await?;
                let parse = |ids: Vec<String>| ids.into_iter().filter_map(|u| UserId::parse(u).ok()).collect::<Vec<OwnedUserId>>();
                let mut lists = DeviceLists::default();
                lists.changed = parse(changed);
                lists.left = parse(left);
                news |= !lists.is_empty();
                out.e2ee.device_lists = lists;
            }
        }

        if enabled(asked.account_data.enabled) {
            let from = span.from.map(|f| f.account_data).unwrap_or(0);
            let changed = span.from.is_none_or(|f| f.account_data < span.to.account_data);
            let rows = if changed { account_data::changed_since(self.db.pool(), user.as_str(), from).await? } else { Vec::new() };
            let (mut global, mut by_room) = account_data_by_room(rows);
            // Clients learn their push rules here: a new connection always has them.
            if span.from.is_none() && !global.iter().any(|e| e["type"] == PUSH_RULES) {
                global.push(self.push.rules_event(user).await?);
            }
            out.account_data.global = global.iter().map(raw).collect();
            // Rooms new to an existing connection get all their account data: read once.
            let mut all_by_room: Option<HashMap<String, Vec<Value>>> = None;
            for room_id in scope.rooms(asked.account_data.lists.as_ref(), asked.account_data.rooms.as_ref()) {
                let events = if span.from.is_some() && scope.initial_rooms.contains_key(&room_id) {
                    if all_by_room.is_none() {
                        all_by_room = Some(account_data_by_room(account_data::changed_since(self.db.pool(), user.as_str(), 0).await?).1);
                    }
                    all_by_room.as_mut().and_then(|all| all.remove(room_id.as_str())).unwrap_or_default()
                } else {
                    by_room.remove(room_id.as_str()).unwrap_or_default()
                };
                if !events.is_empty() {
                    out.account_data.rooms.insert(room_id, events.iter().map(raw).collect());
                }
            }
            news |= !out.account_data.is_empty() && span.from.is_some();
        }

        if enabled(asked.receipts.enabled) {
            let rooms = scope.rooms(asked.receipts.lists.as_ref(), asked.receipts.rooms.as_ref());
            let joined: Vec<OwnedRoomId> = scope.joined(rooms).collect();
            // Rooms new to the connection get their receipts from the start, the others
            // those since the connection's position: one read for each kind.
            let (new_rooms, known_rooms): (Vec<&RoomId>, Vec<&RoomId>) =
                joined.iter().map(|r| r.as_ref()).partition(|r: &&RoomId| scope.initial_rooms.contains_key(*r));
            let mut events = self.receipts.events_since(&new_rooms, user, 0).await?;
            for (room_id, event) in &mut events {
                if let Some(timeline_ids) = scope.initial_rooms.get(room_id) {
                    // Of a room new to the connection: receipts of the events it was sent,
                    // and the user's own.
                    keep_receipts(event, timeline_ids, user.as_str());
                }
            }
            if let Some(from) = span.from.filter(|from| from.receipts < span.to.receipts) {
                events.extend(self.receipts.events_since(&known_rooms, user, from.receipts).await?);
            }
            for (room_id, event) in events {
                if event["content"].as_object().is_some_and(|c| !c.is_empty()) {
                    out.receipts.rooms.insert(room_id, raw(&event));
                }
            }
            news |= !out.receipts.is_empty() && span.from.is_some();
        }

        if enabled(asked.typing.enabled) {
            let rooms = scope.rooms(asked.typing.lists.as_ref(), asked.typing.rooms.as_ref());
            let since = span.from.map(|f| f.typing).unwrap_or(0);
            for room_id in scope.joined(rooms) {
                let since = if scope.initial_rooms.contains_key(&room_id) { 0 } else { since };
                if let Some(users) = self.typing.changed_since(&room_id, since) {
                    if since == 0 && users.is_empty() {
                        continue;
                    }
                    let event = json!({ "type": "m.typing", "content": { "user_ids": users } });
                    out.typing.rooms.insert(room_id, raw(&event));
                }
            }
            news |= !out.typing.is_empty() && span.from.is_some();
        }
        Ok(news)
    }
}

/// Account data rows (room or "", type, content) as events: (global, by room).
fn account_data_by_room(rows: Vec<(String, String, String)>) -> (Vec<Value>, HashMap<String, Vec<Value>>) {
    let mut global = Vec::new();
    let mut by_room: HashMap<String, Vec<Value>> = HashMap::new();
    for (room, kind, content) in rows {
        let event = json!({ "type": kind, "content": serde_json::from_str::<Value>(&content).unwrap_or_else(|_| json!({})) });
        if room.is_empty() {
            global.push(event);
        } else {
            by_room.entry(room).or_default().push(event);
        }
    }
    (global, by_room)
}

/// Keeps the receipts for the given events and the viewer's own receipts.
fn keep_receipts(event: &mut Value, event_ids: &HashSet<String>, viewer: &str) {
    let Some(content) = event["content"].as_object_mut() else { return };
    content.retain(|event_id, by_type| {
        if event_ids.contains(event_id) {
            return true;
        }
        let Some(by_type) = by_type.as_object_mut() else { return false };
        for users in by_type.values_mut() {
            if let Some(users) = users.as_object_mut() {
                users.retain(|user, _| user == viewer);
            }
        }
        by_type.retain(|_, users| users.as_object().is_some_and(|u| !u.is_empty()));
        !by_type.is_empty()
    });
}
