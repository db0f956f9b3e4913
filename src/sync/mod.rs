//! /sync: the notifier that wakes long-polls, sync tokens, filters, and the response builder.

pub mod filter;
pub mod lazy_members;
pub mod legacy;
pub mod notifier;
pub mod rooms;
pub mod sliding;
pub mod token;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use ruma::{api::client::filter::FilterDefinition, DeviceId, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Map, Value};

use self::{notifier::Notifier, token::SyncToken};
use crate::{
    ephemeral::{presence::Presence, receipts::Receipts, to_device::ToDevice, typing::Typing},
    e2ee::E2ee,
    error::Result,
    push::{rules::PUSH_RULES, Push},
    rooms::Rooms,
    storage::{account_data, events as event_repo, rooms as room_repo, stream_heads, Db},
};

/// Longest long-poll honoured, so proxies and clients do not time out first.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a sync reads from.
#[derive(Clone)]
pub struct Sync {
    db: Db,
    rooms: Rooms,
    notifier: Notifier,
    typing: Typing,
    receipts: Receipts,
    presence: Presence,
    to_device: ToDevice,
    push: Push,
    e2ee: E2ee,
    /// Sliding sync connections and what each was sent.
    connections: sliding::connection::Connections,
    /// Member events each device was sent by lazy-loading syncs.
    lazy_members: lazy_members::LazyMembersSent,
}

/// One /sync request.
pub struct SyncRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub since: Option<SyncToken>,
    pub filter: FilterDefinition,
    pub full_state: bool,
    pub set_presence: &'a str,
    pub timeout: Duration,
}

impl Sync {
    pub fn new(
        db: Db,
        rooms: Rooms,
        notifier: Notifier,
        typing: Typing,
        receipts: Receipts,
        presence: Presence,
        to_device: ToDevice,
        push: Push,
        e2ee: E2ee,
    ) -> Self {
        Self { db, rooms, notifier, typing, receipts, presence, to_device, push, e2ee, connections: Default::default(), lazy_members: Default::default() }
    }

    /// The positions of every stream now.
    async fn current(&self) -> Result<SyncToken> {
        let heads = stream_heads(self.db.pool()).await?;
        Ok(SyncToken {
            events: heads.events,
            account_data: heads.account_data,
            receipts: heads.receipts,
            typing: self.typing.current_serial(),
            presence: heads.presence,
            to_device: 0,
            device_lists: heads.device_lists,
        })
    }

    /// Answers a sync: at once when there is news (or for an initial or full-state sync),
    /// otherwise when news arrives or the timeout passes.
    pub async fn sync(&self, request: SyncRequest<'_>) -> Result<Value> {
        // Subscribe before reading any position: a write in between still wakes us.
        let mut signal = self.notifier.subscribe(request.user.as_str());
        signal.borrow_and_update();
        let _presence = Box::pin(self.presence.sync_started(request.user, request.set_presence)).await?;
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        loop {
            let current = self.current().await?;
            let since = request.since.map(|s| s.clamp_to(&current));
            // Boxed: the builder's state lives on the heap only while it runs, so a parked
            // long-poll (thousands of them) keeps a small future.
            let (response, has_news) = Box::pin(self.build(&request, since, current)).await?;
            if has_news || since.is_none() || request.full_state {
                return Ok(response);
            }
            match tokio::time::timeout_at(deadline, signal.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out (or the notifier went away): answer with nothing new.
                _ => return Ok(response),
            }
        }
    }

    async fn build(&self, request: &SyncRequest<'_>, since: Option<SyncToken>, current: SyncToken) -> Result<(Value, bool)> {
        let user = request.user;
        let from = since.unwrap_or_default();
        let mut next = current;
        let mut has_news = false;

        // Account data changes, global and per room, in one read.
        let mut global_account_data = Vec::new();
        let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
        for (room, kind, content) in account_data::changed_since(self.db.pool(), user.as_str(), from.account_data).await? {
            let event = json!({ "type": kind, "content": parse_object(&content) });
            if room.is_empty() {
                global_account_data.push(event);
            } else {
                room_account_data.entry(room).or_default().push(event);
            }
        }

        // Rooms. Lazy-loading syncs leave out member events the device already has, unless
        // it asks for redundant ones (or for everything again).
        let lazy_options = &request.filter.room.state.lazy_load_options;
        let skip_redundant = matches!(lazy_options, ruma::api::client::filter::LazyLoadOptions::Enabled { include_redundant_members: false });
        let mut lazy_sent = lazy_members::LazySent::default();
        if skip_redundant && !request.full_state {
            if let Some(given) = request.since {
                lazy_sent.before = self.lazy_members.as_of(user.as_str(), request.device.as_str(), &given.encode());
            }
        }
        let room_sections = self.room_sections(request, since, &current, &room_account_data, &mut lazy_sent).await?;
        has_news |= !room_sections.is_empty();
        let mut response = Map::new();
        if !room_sections.is_empty() {
            response.insert("rooms".into(), Value::Object(room_sections));
        }

        // Global account data.
        let filter = &request.filter;
        let mut global = global_account_data;
        // Clients learn their push rules from account data: an initial sync always has them.
        if since.is_none() && !global.iter().any(|e| e["type"] == PUSH_RULES) {
            global.push(self.push.rules_event(user).await?);
        }
        global.retain(|event| filter::event_allowed(&filter.account_data, event));
        if !global.is_empty() {
            has_news = true;
            response.insert("account_data".into(), json!({ "events": global }));
        }

        // Presence of users sharing a room.
        let presence: Vec<Value> = self
            .presence
            .changes_for(user, from.presence)
            .await?
            .into_iter()
            .filter(|event| filter::event_allowed(&filter.presence, event))
            .collect();
        if !presence.is_empty() {
            has_news = true;
            response.insert("presence".into(), json!({ "events": presence }));
        }

        // To-device messages.
        let delivery = self.to_device.deliver(user, request.device.as_str(), from.to_device).await?;
        next.to_device = delivery.position.max(from.to_device);
        if !delivery.events.is_empty() {
            has_news = true;
            response.insert("to_device".into(), json!({ "events": delivery.events }));
        }

        // Device lists: whose devices the client should (re)fetch or forget.
        if let Some(since) = since {
            let (changed, left) = self.key_changes(user, &since, &current).await?;
            if !changed.is_empty() || !left.is_empty() {
                has_news = true;
                response.insert("device_lists".into(), json!({ "changed": changed, "left": left }));
            }
        }
        let (otk_counts, fallback_types) = self.e2ee.device_key_state(user, request.device.as_str()).await?;
        response.insert("device_one_time_keys_count".into(), otk_counts);
        response.insert("device_unused_fallback_key_types".into(), fallback_types);

        if skip_redundant {
            let mut sent: std::collections::HashSet<String> = lazy_sent.before.as_deref().cloned().unwrap_or_default();
            sent.extend(lazy_sent.now);
            self.lazy_members.record(user.as_str(), request.device.as_str(), next.encode(), sent);
        }
        response.insert("next_batch".into(), next.encode().into());
        Ok((Value::Object(response), has_news))
    }

    /// Users whose keys the client should refetch (changed) or forget (left) between two
    /// positions: membership changes in shared rooms, and device or cross-signing key changes.
    pub async fn key_changes(&self, user: &UserId, from: &SyncToken, to: &SyncToken) -> Result<(Vec<String>, Vec<String>)> {
        let (changed, left) = self.device_list_changes(user, from.events, to.events).await?;
        let mut changed: BTreeSet<String> = changed.into_iter().collect();
        changed.extend(self.e2ee.changed_between(user, from.device_lists, to.device_lists).await?);
        changed.retain(|u| !left.contains(u));
        Ok((changed.into_iter().collect(), left))
    }

    /// Users who newly share a room with `user` (changed) and who no longer share any (left),
    /// from membership changes after `since`.
    async fn device_list_changes(&self, user: &UserId, since: i64, up_to: i64) -> Result<(Vec<String>, Vec<String>)> {
        if since >= up_to {
            return Ok((Vec::new(), Vec::new()));
        }
        let changes = event_repo::membership_changes_between(self.db.pool(), user.as_str(), since, up_to).await?;
        if changes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let sharing: BTreeSet<String> = room_repo::users_sharing_rooms(self.db.pool(), user.as_str()).await?.into_iter().collect();
        let mut changed = BTreeSet::new();
        let mut left = BTreeSet::new();
        for (room_id, member, membership) in changes {
            if member == user.as_str() {
                // The user joined or left a room: everyone in it may have changed status.
                for other in room_repo::members_with_membership(self.db.pool(), &room_id, "join").await? {
                    if other == user.as_str() {
                        continue;
                    }
                    if sharing.contains(&other) {
                        changed.insert(other);
                    } else {
                        left.insert(other);
                    }
                }
                if membership != "join" {
                    // Members of a room the user left who share no other room.
                    for other in room_repo::members_with_membership(self.db.pool(), &room_id, "join").await? {
                        if !sharing.contains(&other) && other != user.as_str() {
                            left.insert(other);
                        }
                    }
                }
            } else if (membership == "join" && sharing.contains(&member)) || membership == "invite" || membership == "knock" {
                // Newly joined, invited or knocking (as Synapse counts them): their keys are
                // wanted, e.g. to encrypt for invited members.
                changed.insert(member);
            } else if !sharing.contains(&member) {
                left.insert(member);
            }
        }
        changed.retain(|u| !left.contains(u));
        Ok((changed.into_iter().collect(), left.into_iter().collect()))
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }
}

fn parse_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// Room ids of the user's rooms, by current membership.
pub(crate) struct Memberships {
    pub rooms: Vec<(OwnedRoomId, String, String, i64)>,
}

impl Memberships {
    pub async fn load(db: &Db, user: &UserId) -> Result<Self> {
        let mut rooms = Vec::new();
        for (room, membership, event_id, stream, forgotten) in room_repo::memberships_of(db.pool(), user.as_str()).await? {
            if forgotten {
                continue;
            }
            if let Ok(room_id) = RoomId::parse(room) {
                rooms.push((room_id, membership, event_id, stream));
            }
        }
        Ok(Self { rooms })
    }
}
