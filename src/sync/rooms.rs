//! The `rooms` part of a sync response: joined, invited, left and knocked rooms.

use std::collections::{HashMap, HashSet};

use ruma::{api::client::filter::RoomEventFilter, RoomId, UserId};
use serde_json::{json, Map, Value};

use super::{filter, token::SyncToken, Memberships, Sync, SyncRequest};
use crate::rooms::remote::stripped;
use crate::{
    error::Result,
    rooms::{pdu_from_row, read::Viewer, visibility::VisibilityChecker, Pdu},
    storage::{
        events::{self as event_repo, EventRow},
        receipts as receipt_repo,
        rooms as room_repo,
        state::{self as state_repo, StateMap},
    },
};

const DEFAULT_TIMELINE_LIMIT: usize = 10;

pub(super) struct Timeline {
    pub events: Vec<Value>,
    pub limited: bool,
    pub prev_batch: String,
    /// Stream position just before the first event returned (state is taken there).
    pub start: i64,
    pub senders: HashSet<String>,
}

impl Sync {
    pub(super) async fn room_sections(
        &self,
        request: &SyncRequest<'_>,
        since: Option<SyncToken>,
        current: &SyncToken,
        account_data: &HashMap<String, Vec<Value>>,
        lazy_sent: &mut super::lazy_members::LazySent,
    ) -> Result<Map<String, Value>> {
        let user = request.user;
        let room_filter = &request.filter.room;
        let memberships = Memberships::load(&self.db, user).await?;
        let from = since.unwrap_or_default();

        // Which rooms have anything new: events, receipts, account data, typing.
        let (active, receipt_rooms): (HashSet<String>, HashSet<String>) = match since {
            Some(since) => (
                event_repo::rooms_with_events_between(self.db.pool(), since.events, current.events).await?.into_iter().collect(),
                receipt_repo::rooms_changed_since(self.db.pool(), since.receipts).await?.into_iter().collect(),
            ),
            None => (HashSet::new(), HashSet::new()),
        };

        let mut ignored: Option<std::sync::Arc<HashSet<String>>> = None;
        let mut join = Map::new();
        let mut invite = Map::new();
        let mut leave = Map::new();
        let mut knock = Map::new();
        for (room_id, membership, event_id, membership_stream) in &memberships.rooms {
            if !filter::room_included(room_filter, room_id) {
                continue;
            }
            let changed_since = since.is_none_or(|s| *membership_stream > s.events);
            match membership.as_str() {
                "join" => {
                    // Joined since the last sync (not, say, a display name change of a
                    // member): the room comes with its full state and timeline.
                    let newly_joined = match since {
                        Some(s) if *membership_stream > s.events => {
                            room_repo::membership_at(self.db.pool(), room_id.as_str(), user.as_str(), s.events).await?.as_deref() != Some("join")
                        }
                        _ => false,
                    };
                    let interesting = since.is_none()
                        || request.full_state
                        || newly_joined
                        || active.contains(room_id.as_str())
                        || receipt_rooms.contains(room_id.as_str())
                        || account_data.contains_key(room_id.as_str())
                        || self.typing.changed_since(room_id, from.typing).is_some();
                    if !interesting {
                        continue;
                    }
                    let section = self
                        .room_section(request, room_id, since, current.events, newly_joined, account_data, true, receipt_rooms.contains(room_id.as_str()), lazy_sent)
                        .await?;
                    if let Some(section) = section {
                        join.insert(room_id.to_string(), section);
                    }
                }
                "invite" if changed_since => {
                    let state = self.stripped_state(room_id, user, event_id).await?;
                    // Invites from users the user ignores are not shown (the spec's rule).
                    let inviter = state
                        .iter()
                        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str())
                        .and_then(|e| e["sender"].as_str());
                    if let Some(inviter) = inviter {
                        if ignored.is_none() {
                            ignored = Some(crate::rooms::visibility::ignored_users(&self.rooms, user).await?);
                        }
                        if ignored.as_ref().is_some_and(|ignored| ignored.contains(inviter)) {
                            continue;
                        }
                    }
                    invite.insert(room_id.to_string(), json!({ "invite_state": { "events": state } }));
                }
                "knock" if changed_since => {
                    let state = self.stripped_state(room_id, user, event_id).await?;
                    knock.insert(room_id.to_string(), json!({ "knock_state": { "events": state } }));
                }
                "leave" | "ban" if (since.is_some() && changed_since) || (since.is_none() && room_filter.include_leave) => {
                    // Joined and left since the last sync: the client never had the room, so
                    // it comes whole up to the leave (as for a new join). A rejected invite
                    // is no such case: that user never saw the room's state.
                    let never_seen = match since {
                        Some(s) => {
                            room_repo::membership_at(self.db.pool(), room_id.as_str(), user.as_str(), s.events).await?.as_deref() != Some("join")
                                && room_repo::joined_between(self.db.pool(), room_id.as_str(), user.as_str(), s.events, *membership_stream).await?
                        }
                        None => false,
                    };
                    let section = self
                        .room_section(request, room_id, since, *membership_stream, never_seen, account_data, false, false, lazy_sent)
                        .await?;
                    if let Some(section) = section {
                        leave.insert(room_id.to_string(), section);
                    }
                }
                _ => {}
            }
        }
        let mut rooms = Map::new();
        for (key, section) in [("join", join), ("invite", invite), ("leave", leave), ("knock", knock)] {
            if !section.is_empty() {
                rooms.insert(key.into(), Value::Object(section));
            }
        }
        Ok(rooms)
    }

    /// A joined (or left) room's section; None when nothing in it is new.
    #[allow(clippy::too_many_arguments)]
    async fn room_section(
        &self,
        request: &SyncRequest<'_>,
        room_id: &RoomId,
        since: Option<SyncToken>,
        up_to: i64,
        newly_joined: bool,
        account_data: &HashMap<String, Vec<Value>>,
        joined: bool,
        new_receipts: bool,
        lazy_sent: &mut super::lazy_members::LazySent,
    ) -> Result<Option<Value>> {
        let user = request.user;
        let room_filter = &request.filter.room;
        let from = since.unwrap_or_default();
        let viewer = Viewer { user_id: user, device_id: Some(request.device) };
        let timeline_filter = &room_filter.timeline;
        let limit = timeline_filter.limit.map(|l| u64::from(l) as usize).unwrap_or(DEFAULT_TIMELINE_LIMIT).min(500);
        let after = if newly_joined || since.is_none() { 0 } else { from.events };
        let timeline = if limit == 0 {
            // `limit: 0` asks for state only: no events, the span is one gap (so the state
            // block carries what changed in it).
            Timeline { events: Vec::new(), limited: after < up_to, prev_batch: format!("s{up_to}"), start: up_to, senders: HashSet::new() }
        } else if filter::room_event_filter_includes(timeline_filter, room_id) {
            self.timeline(room_id, user, joined, after, up_to, limit, timeline_filter, viewer).await?
        } else {
            Timeline { events: Vec::new(), limited: false, prev_batch: format!("s{up_to}"), start: up_to, senders: HashSet::new() }
        };

        // State: everything at the timeline's start for a new view of the room, else the
        // changes between `since` and the timeline's start when the timeline has a gap.
        let full = since.is_none() || newly_joined || request.full_state;
        let state_filter = &room_filter.state;
        let lazy = !state_filter.lazy_load_options.is_disabled();
        // Member events changed in a gap: sent even when lazy loading (as Synapse), so the
        // client learns of joins and leaves it did not see.
        let mut changed_in_gap: HashSet<String> = HashSet::new();
        let state_ids: Vec<String> = if full {
            self.state_at(room_id, timeline.start).await?.into_values().collect()
        } else if timeline.limited {
            let state_before = self.state_at(room_id, timeline.start).await?;
            let at_since = self.state_at(room_id, from.events).await?;
            changed_in_gap = state_before.iter().filter(|(key, id)| at_since.get(*key) != Some(*id)).map(|(_, id)| id.clone()).collect();
            let mut ids: Vec<String> = changed_in_gap.iter().cloned().collect();
            if lazy {
                // And the members of this timeline's senders, changed or not.
                for sender in &timeline.senders {
                    if let Some(id) = state_before.get(&("m.room.member".to_owned(), sender.clone())) {
                        if !changed_in_gap.contains(id) {
                            ids.push(id.clone());
                        }
                    }
                }
            }
            ids
        } else if lazy {
            // Members of this timeline's senders, so names resolve without a full state.
            let state_before = self.state_at(room_id, timeline.start).await?;
            timeline
                .senders
                .iter()
                .filter_map(|sender| state_before.get(&("m.room.member".to_owned(), sender.clone())).cloned())
                .collect()
        } else {
            // An incremental sync without a gap: the timeline carries every state change.
            Vec::new()
        };
        let mut state = Vec::new();
        if filter::room_event_filter_includes(state_filter, room_id) {
            for id in state_ids {
                let Some(row) = event_repo::get(self.db.pool(), &id).await? else { continue };
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                let is_member = pdu.kind().to_string() == "m.room.member";
                if lazy && is_member && !changed_in_gap.contains(&id) {
                    let member = pdu.state_key().unwrap_or("");
                    if member != user.as_str() && !timeline.senders.contains(member) {
                        continue;
                    }
                    // Already sent to this device (and unchanged since): redundant.
                    if !full && lazy_sent.was_sent(&id) {
                        continue;
                    }
                }
                if lazy && is_member {
                    lazy_sent.now.push(id.clone());
                }
                let event = without_room_id(self.rooms.client_event_plain(&row, &pdu, Some(viewer)).await?);
                if filter::room_event_allowed(state_filter, &event) {
                    state.push(event);
                }
            }
        }

        // Member events in the timeline are the device's too.
        if lazy {
            let timeline_members = timeline.events.iter().filter(|e| e["type"] == "m.room.member");
            lazy_sent.now.extend(timeline_members.filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        }

        // Ephemeral events and room account data (joined rooms only).
        let mut ephemeral = Vec::new();
        let mut room_account_data = Vec::new();
        if joined {
            let ephemeral_filter = &room_filter.ephemeral;
            if filter::room_event_filter_includes(ephemeral_filter, room_id) {
                if let Some(users) = self.typing.changed_since(room_id, if since.is_none() { 0 } else { from.typing }) {
                    ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
                // Receipts: all of them for a new view, else only if the room has new ones.
                if since.is_none() || newly_joined || new_receipts {
                    if let Some(receipts) = self.receipts.event_since(room_id, user, from.receipts).await? {
                        ephemeral.push(receipts);
                    }
                }
                ephemeral.retain(|e| filter::room_event_allowed(ephemeral_filter, e));
            }
            if filter::room_event_filter_includes(&room_filter.account_data, room_id) {
                room_account_data = account_data
                    .get(room_id.as_str())
                    .map(|events| events.iter().filter(|e| filter::room_event_allowed(&room_filter.account_data, e)).cloned().collect())
                    .unwrap_or_default();
            }
        }

        if since.is_some() && !full && timeline.events.is_empty() && state.is_empty() && ephemeral.is_empty() && room_account_data.is_empty() {
            return Ok(None);
        }
        let mut section = json!({
            "timeline": { "events": timeline.events, "limited": timeline.limited, "prev_batch": timeline.prev_batch },
            "state": { "events": state },
            "account_data": { "events": room_account_data },
        });
        if joined {
            section["ephemeral"] = json!({ "events": ephemeral });
            // The spec lets an unchanged summary be left out: it is sent for a new view of
            // the room and whenever membership changed in what this sync returns.
            let is_member_event = |e: &Value| e["type"] == "m.room.member";
            if full || timeline.events.iter().any(is_member_event) || state.iter().any(is_member_event) {
                section["summary"] = self.summary(room_id, user).await?;
            }
            let per_thread = room_filter.timeline.unread_thread_notifications;
            let (main, threads) = self.push.unread(user, room_id, per_thread).await?;
            section["unread_notifications"] = main;
            if let Some(threads) = threads {
                section["unread_thread_notifications"] = threads;
            }
        }
        Ok(Some(section))
    }

    /// The newest `limit` visible, filter-matching events in `(after, up_to]`, oldest first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn timeline(
        &self,
        room_id: &RoomId,
        user: &UserId,
        joined: bool,
        after: i64,
        up_to: i64,
        limit: usize,
        filter: &RoomEventFilter,
        viewer: Viewer<'_>,
    ) -> Result<Timeline> {
        let mut checker = VisibilityChecker::new(&self.rooms, user, joined);
        let mut picked: Vec<(EventRow, Pdu, Value)> = Vec::new();
        let mut cursor = up_to;
        let mut limited = false;
        // Twice what is asked, for events hidden from the user; small timelines (sliding
        // sync's room lists ask for one event) read a few rows, not a fixed 20.
        let batch = limit as i64 * 2 + 1;
        'scan: loop {
            let rows = event_repo::newest_in_range(self.db.pool(), room_id.as_str(), after, cursor, batch).await?;
            let exhausted = (rows.len() as i64) < batch;
            for row in rows {
                cursor = row.stream_ordering - 1;
                if picked.len() >= limit {
                    limited = true;
                    break 'scan;
                }
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                if !checker.can_see(&row, &pdu).await? {
                    continue;
                }
                let event = without_room_id(self.rooms.client_event_plain(&row, &pdu, Some(viewer)).await?);
                if filter::room_event_allowed(filter, &event) {
                    picked.push((row, pdu, event));
                }
            }
            if exhausted {
                break;
            }
        }
        picked.reverse();
        let (items, mut events): (Vec<(EventRow, Pdu)>, Vec<Value>) =
            picked.into_iter().map(|(row, pdu, event)| ((row, pdu), event)).unzip();
        self.rooms.attach_bundles(items.iter().map(|(row, pdu)| (row, pdu)), &mut events, Some(viewer)).await?;
        let (prev_batch, start) = match items.first() {
            Some((row, _)) => (format!("t{}_{}", row.depth, row.stream_ordering), row.stream_ordering - 1),
            None => (format!("s{up_to}"), up_to),
        };
        let senders = items.iter().map(|(_, pdu)| pdu.fields.sender.to_string()).collect();
        Ok(Timeline { events, limited, prev_batch, start, senders })
    }

    /// The room's state after the last event at or before a stream position.
    pub(super) async fn state_at(&self, room_id: &RoomId, position: i64) -> Result<StateMap> {
        match event_repo::latest_at(self.db.pool(), room_id.as_str(), position).await? {
            // Backfilled history sits below every stream position (its state is of the past).
            Some(row) if row.stream_ordering > 0 => Ok(state_repo::load_group(self.db.pool(), row.state_group).await?),
            _ => {
                // Nothing of the room in this server's own stream yet: a room joined over
                // federation, whose first event here (the join) took the state the resident
                // server sent. The state before it is that state, less the event itself.
                let Some(first) = event_repo::first_after(self.db.pool(), room_id.as_str(), position.max(0)).await? else {
                    return Ok(StateMap::new());
                };
                let mut state = state_repo::load_group(self.db.pool(), first.state_group).await?;
                let pdu = pdu_from_row(&first.event_id, &first.room_id, &first.json)?;
                if let Some(key) = pdu.state_key() {
                    if state.get(&(pdu.kind().to_string(), key.to_owned())) == Some(&first.event_id) {
                        state.remove(&(pdu.kind().to_string(), key.to_owned()));
                    }
                }
                Ok(state)
            }
        }
    }

    /// Stripped state for an invite or knock, plus the membership event itself.
    pub(super) async fn stripped_state(&self, room_id: &RoomId, user: &UserId, membership_event: &str) -> Result<Vec<Value>> {
        let mut events = self.rooms.stripped_room_state(room_id, user).await?;
        if let Some(row) = event_repo::get(self.db.pool(), membership_event).await? {
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            // The inviter's own member event, so clients can show who invited.
            if let Some(inviter) = self.rooms.current_state_event(room_id, "m.room.member", pdu.fields.sender.as_str()).await? {
                if inviter.event_id != pdu.event_id {
                    events.push(stripped(&inviter));
                }
            }
            events.push(stripped(&pdu));
        }
        Ok(events)
    }

    /// `summary`: up to five heroes and the joined and invited member counts.
    async fn summary(&self, room_id: &RoomId, user: &UserId) -> Result<Value> {
        let joined = room_repo::members_with_membership(self.db.pool(), room_id.as_str(), "join").await?;
        let invited = room_repo::members_with_membership(self.db.pool(), room_id.as_str(), "invite").await?;
        let mut summary = json!({
            "m.joined_member_count": joined.len(),
            "m.invited_member_count": invited.len(),
        });
        // Heroes name a room that has no name of its own (the spec: required only when the
        // name and canonical alias are unset or empty), as Synapse leaves them out.
        let named = self.rooms.current_state_content(room_id, "m.room.name", "").await?.is_some_and(|c| c["name"].as_str().is_some_and(|n| !n.is_empty()))
            || self.rooms.current_state_content(room_id, "m.room.canonical_alias", "").await?.is_some_and(|c| c["alias"].as_str().is_some_and(|a| !a.is_empty()));
        if !named {
            let heroes: Vec<&String> = joined.iter().chain(invited.iter()).filter(|u| u.as_str() != user.as_str()).take(5).collect();
            summary["m.heroes"] = json!(heroes);
        }
        Ok(summary)
    }
}

pub(super) fn without_room_id(mut event: Value) -> Value {
    if let Some(map) = event.as_object_mut() {
        map.remove("room_id");
    }
    event
}
