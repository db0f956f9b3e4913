//! One room of a sliding sync response: everything for a room new to the connection
//! (`initial`), or what changed since the connection last saw it.

use std::collections::{HashMap, HashSet};

use js_option::JsOption;
use ruma::{
    api::client::{filter::RoomEventFilter, sync::sync_events::v5},
    serde::Raw,
    DeviceId, OwnedMxcUri, UInt, UserId,
};
use serde_json::Value;

use super::{connection::SentRoom, lists::Candidate, lists::Candidates, RoomConfig, Span};
use crate::{
    error::Result,
    rooms::{pdu_from_row, read::Viewer},
    storage::{events as event_repo, sliding as repo, state as state_repo},
    sync::{
        rooms::{without_room_id, Timeline},
        Sync,
    },
};

const MAX_HEROES: i64 = 5;

/// The state types a room's sliding-sync facts (name, avatar) derive from.
const FACT_TYPES: [&str; 2] = ["m.room.name", "m.room.avatar"];

pub(crate) struct BuiltRoom {
    pub room: v5::response::Room,
    pub initial: bool,
    pub unread: (u64, u64),
    /// Ids of the timeline events sent (receipts of a new room are for these).
    pub timeline_ids: HashSet<String>,
}

/// JSON as one of ruma's raw event types.
pub(crate) fn raw<T>(value: &Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(value).expect("JSON values serialize"))
}

fn uint(n: impl TryInto<u64>) -> UInt {
    n.try_into().ok().and_then(|n| UInt::try_from(n).ok()).unwrap_or_default()
}

impl Sync {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sliding_room(
        &self,
        user: &UserId,
        device: &DeviceId,
        candidates: &Candidates,
        entry: &Candidate,
        config: &RoomConfig,
        sent: Option<&SentRoom>,
        span: Span,
    ) -> Result<Option<BuiltRoom>> {
        let room_id = &entry.room_id;
        let mut room = v5::response::Room::new();
        room.bump_stamp = Some(uint(entry.bump_stamp.max(0)));
        // A room is sent whole when the connection has not seen it with this membership, or
        // when a longer timeline is now asked for.
        let initial = sent.is_none_or(|s| s.membership != entry.membership || s.timeline_limit < config.timeline_limit);

        // Invites and knocks: the stripped state the server has, once.
        if !entry.has_timeline() {
            if !initial {
                return Ok(None);
            }
            let stripped = self.stripped_state(room_id, user, &entry.membership_event_id).await?;
            for event in &stripped {
                match event["type"].as_str() {
                    Some("m.room.name") => room.name = event["content"]["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned),
                    Some("m.room.avatar") => {
                        if let Some(url) = event["content"]["url"].as_str() {
                            room.avatar = JsOption::Some(OwnedMxcUri::from(url));
                        }
                    }
                    Some("m.room.member") if event["state_key"] == user.as_str() => {
                        room.is_dm = Some(event["content"]["is_direct"].as_bool().unwrap_or(false));
                    }
                    _ => {}
                }
            }
            // Knocks travel in the same field: the client tells them apart by the
            // membership in the stripped state.
            room.invite_state = Some(stripped.iter().map(raw).collect());
            room.initial = Some(true);
            return Ok(Some(BuiltRoom { room, initial: true, unread: (0, 0), timeline_ids: HashSet::new() }));
        }

        let viewer = Viewer { user_id: user, device_id: Some(device) };
        let up_to = entry.up_to(span.to.events);
        let after = match sent {
            Some(sent) if !initial => sent.events_up_to,
            _ => 0,
        };
        let timeline = if config.timeline_limit == 0 || after >= up_to {
            Timeline { events: Vec::new(), limited: false, prev_batch: format!("s{up_to}"), start: up_to, senders: HashSet::new() }
        } else {
            self.timeline(room_id, user, entry.joined(), after, up_to, config.timeline_limit, &RoomEventFilter::default(), viewer).await?
        };

        // State: all that is required for a new view; else what changed and what the
        // request newly requires.
        let required = &config.required_state;
        let left_state = if entry.joined() { None } else { Some(self.state_at(room_id, up_to).await?) };
        let mut state_ids: Vec<String> = Vec::new();
        let mut changed_types: HashSet<String> = HashSet::new();
        if initial {
            state_ids = self.required_state_ids(room_id, left_state.as_ref(), required, &timeline.senders, |_, _| true).await?;
        } else if let Some(sent) = sent {
            // The newest change of each state key in the span, if it is still the state.
            let mut newest: HashMap<(String, String), String> = HashMap::new();
            // A timeline with no gap holds every event of the span, state changes included.
            let changes: Vec<(String, String, String)> = if timeline.limited || config.timeline_limit == 0 {
                repo::state_changes_between(self.db.pool(), room_id.as_str(), after, up_to).await?
            } else {
                timeline
                    .events
                    .iter()
                    .filter_map(|e| Some((e["type"].as_str()?.to_owned(), e["state_key"].as_str()?.to_owned(), e["event_id"].as_str()?.to_owned())))
                    .collect()
            };
            for (kind, key, id) in changes {
                changed_types.insert(kind.clone());
                newest.insert((kind, key), id);
            }
            for ((kind, key), id) in &newest {
                if required.matches(kind, key, &timeline.senders) {
                    state_ids.push(id.clone());
                }
            }
            let already: HashSet<(String, String)> = newest.into_keys().collect();
            let old = sent.required_state.clone();
            let grown = old != *required;
            // Lazy members: senders whose member event the old rules did not already send
            // (the user's own, under `$ME`, is sent once and then only when it changes).
            let lazy = required.lazy_members() && timeline.senders.iter().any(|sender| !old.matches("m.room.member", sender, &HashSet::new()));
            if grown || lazy {
                let more = self
                    .required_state_ids(room_id, left_state.as_ref(), required, &timeline.senders, move |kind, key| {
                        !already.contains(&(kind.to_owned(), key.to_owned())) && !old.matches(kind, key, &HashSet::new())
                    })
                    .await?;
                state_ids.extend(more);
            }
        }
        state_ids.sort();
        state_ids.dedup();
        let mut required_state = Vec::new();
        // The room's name and avatar events among those sent, by type: the room's facts come from them when the
        // request covers those types (Element X's does), saving a lookup each.
        let mut sent_state: HashMap<String, Value> = HashMap::new();
        for row in event_repo::get_many(self.db.pool(), &state_ids).await? {
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            let event = without_room_id(self.rooms.client_event_plain(&row, &pdu, Some(viewer)).await?);
            required_state.push(raw(&event));
            let kind = pdu.fields.kind.to_string();
            if initial && pdu.fields.state_key.as_deref() == Some("") && FACT_TYPES.contains(&kind.as_str()) {
                sent_state.insert(kind, pdu.content_value());
            }
        }

        // Room facts: on a new view, or when what they derive from changed.
        let left_state = &left_state;
        let sent_state = &sent_state;
        let no_senders = HashSet::new();
        let no_senders = &no_senders;
        let state_content = |kind: &'static str| async move {
            // All of the type's current state was read for `required_state` just now.
            if initial && required.matches(kind, "", no_senders) {
                return Ok(sent_state.get(kind).cloned());
            }
            match left_state {
                Some(state) => match state.get(&(kind.to_owned(), String::new())) {
                    Some(id) => Ok(event_repo::get(self.db.pool(), id)
                        .await?
                        .and_then(|row| serde_json::from_str::<Value>(&row.json).ok())
                        .map(|e| e["content"].clone())),
                    None => Ok(None),
                },
                None => self.rooms.current_state_content(room_id, kind, "").await,
            }
        };
        let name = if initial || changed_types.contains("m.room.name") || changed_types.contains("m.room.member") {
            state_content("m.room.name").await?.and_then(|c| c["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned))
        } else {
            None
        };
        if initial || changed_types.contains("m.room.name") {
            room.name = name.clone();
        }
        if initial || changed_types.contains("m.room.avatar") {
            room.avatar = match state_content("m.room.avatar").await?.and_then(|c| c["url"].as_str().map(str::to_owned)) {
                Some(url) if !url.is_empty() => JsOption::Some(OwnedMxcUri::from(url)),
                _ if initial => JsOption::Undefined,
                _ => JsOption::Null,
            };
        }
        if initial || changed_types.contains("m.room.member") {
            let (joined, invited) = repo::member_counts(self.db.pool(), room_id.as_str()).await?;
            room.joined_count = Some(uint(joined));
            room.invited_count = Some(uint(invited));
            if name.is_none() {
                room.heroes = Some(self.heroes(room_id.as_str(), user).await?);
            }
        }
        if initial {
            room.is_dm = Some(candidates.is_dm(self, room_id).await?);
            room.initial = Some(true);
        }
        let unread = if entry.joined() {
            let (main, _) = self.push.unread(user, room_id, false).await?;
            (main["notification_count"].as_u64().unwrap_or(0), main["highlight_count"].as_u64().unwrap_or(0))
        } else {
            (0, 0)
        };
        let facts_changed = room.name.is_some() || !room.avatar.is_undefined() || room.joined_count.is_some();
        if !initial && timeline.events.is_empty() && required_state.is_empty() && !facts_changed && sent.is_some_and(|s| s.unread == unread) {
            return Ok(None);
        }
        room.unread_notifications.notification_count = Some(uint(unread.0));
        room.unread_notifications.highlight_count = Some(uint(unread.1));
        room.num_live = Some(uint(if initial { 0 } else { timeline.events.len() }));
        room.limited = timeline.limited;
        room.prev_batch = Some(timeline.prev_batch);
        let timeline_ids = timeline.events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect();
        room.timeline = timeline.events.iter().map(raw).collect();
        room.required_state = required_state;
        Ok(Some(BuiltRoom { room, initial, unread, timeline_ids }))
    }

    /// Ids of the state events `required` asks for (and `keep` lets through): of the current
    /// state, or of `left_state` for a room the user left.
    async fn required_state_ids(
        &self,
        room_id: &ruma::RoomId,
        left_state: Option<&state_repo::StateMap>,
        required: &super::required_state::RequiredState,
        senders: &HashSet<String>,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<String>> {
        if required.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<(String, String, String)> = match (left_state, required.lookup(senders)) {
            (Some(state), _) => state.iter().map(|((t, k), id)| (t.clone(), k.clone(), id.clone())).collect(),
            (None, Some((types, exact))) => repo::current_state_subset(self.db.pool(), room_id.as_str(), &types, &exact).await?,
            (None, None) => state_repo::current_state(self.db.pool(), room_id.as_str())
                .await?
                .into_iter()
                .map(|((t, k), id)| (t, k, id))
                .collect(),
        };
        Ok(entries
            .into_iter()
            .filter(|(kind, key, _)| required.matches(kind, key, senders) && keep(kind, key))
            .map(|(_, _, id)| id)
            .collect())
    }

    /// Up to five other members, with their display names and avatars: what clients name
    /// and picture an unnamed room by.
    async fn heroes(&self, room_id: &str, user: &UserId) -> Result<Vec<v5::response::Hero>> {
        let mut heroes = Vec::new();
        for (member, json) in repo::heroes(self.db.pool(), room_id, user.as_str(), MAX_HEROES).await? {
            let Ok(member) = UserId::parse(member) else { continue };
            let content = json.and_then(|j| serde_json::from_str::<Value>(&j).ok()).map(|e| e["content"].clone()).unwrap_or_default();
            let mut hero = v5::response::Hero::new(member);
            hero.name = content["displayname"].as_str().map(str::to_owned);
            hero.avatar = content["avatar_url"].as_str().filter(|u| !u.is_empty()).map(OwnedMxcUri::from);
            heroes.push(hero);
        }
        Ok(heroes)
    }
}
