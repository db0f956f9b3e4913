//! Simplified sliding sync (MSC4186), as matrix-rust-sdk (Element X) and Synapse speak it:
//! lists of the user's rooms sorted by recency with windows (`ranges`), explicit room
//! subscriptions, per-room `required_state` and `timeline_limit`, and extensions. A
//! connection remembers what it was sent (`connection`), so responses carry changes only.

pub mod connection;
mod extensions;
mod lists;
pub mod required_state;
mod room;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{stream::FuturesOrdered, StreamExt};
use ruma::{api::client::sync::sync_events::v5, DeviceId, OwnedRoomId, UserId};

use self::{
    connection::{Connections, SentRoom, Snapshot},
    lists::Candidates,
    required_state::RequiredState,
};
use super::{token::SyncToken, Sync, MAX_TIMEOUT};
use crate::error::Result;

/// Largest timeline asked per room.
const MAX_TIMELINE_LIMIT: usize = 100;

/// Rooms of one response built concurrently (the database pool has 8 connections).
const ROOMS_BUILT_AT_ONCE: usize = 6;

/// One sliding sync request, with what ruma's types do not carry.
pub struct SlidingRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub body: &'a v5::Request,
    /// `filters.spaces` of each list, by list name (not in ruma's `ListFilters`).
    pub spaces: HashMap<String, Vec<OwnedRoomId>>,
}

/// What one room is asked for: the union over the lists and subscriptions naming it.
#[derive(Debug, Clone)]
pub(crate) struct RoomConfig {
    pub timeline_limit: usize,
    pub required_state: Arc<RequiredState>,
}

impl RoomConfig {
    fn new(details_limit: usize, required: RequiredState) -> Self {
        Self { timeline_limit: details_limit.min(MAX_TIMELINE_LIMIT), required_state: Arc::new(required) }
    }

    fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        if self.required_state != other.required_state {
            let mut merged = (*self.required_state).clone();
            merged.merge(&other.required_state);
            self.required_state = Arc::new(merged);
        }
    }
}

/// The positions a response covers: `from` (None for a new connection) up to `to`.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    pub from: Option<SyncToken>,
    pub to: SyncToken,
}

impl Sync {
    pub fn sliding_connections(&self) -> &Connections {
        &self.connections
    }

    /// Answers a sliding sync request: at once for a new connection or when there is news,
    /// otherwise when news arrives or the timeout passes.
    pub async fn sliding_sync(&self, request: SlidingRequest<'_>) -> Result<v5::Response> {
        let body = request.body;
        let user = request.user.as_str();
        let device = request.device.as_str();
        let conn_id = body.conn_id.as_deref().unwrap_or("");
        // Subscribe before reading any position: a write in between still wakes us.
        let mut signal = self.notifier.subscribe(user);
        signal.borrow_and_update();
        let previous = self.connections.resume(user, device, conn_id, body.pos.as_deref())?.snapshot;
        let set_presence = body.set_presence.as_str().to_owned();
        let _presence = Box::pin(self.presence.sync_started(request.user, &set_presence)).await?;
        let deadline = tokio::time::Instant::now() + body.timeout.unwrap_or(Duration::ZERO).min(MAX_TIMEOUT);
        loop {
            let current = self.current().await?;
            let span = Span { from: previous.as_ref().map(|p| p.token.clamp_to(&current)), to: current };
            let (mut response, snapshot, has_news) = Box::pin(self.build_sliding(&request, previous.as_deref(), span)).await?;
            let timed_out = tokio::time::Instant::now() >= deadline;
            if has_news || previous.is_none() || timed_out {
                response.pos = match (&body.pos, has_news || previous.is_none()) {
                    // Nothing new: the same position serves again (no state to keep).
                    (Some(pos), false) => pos.clone(),
                    _ => self.connections.store(user, device, conn_id, snapshot),
                };
                response.txn_id = body.txn_id.clone();
                return Ok(response);
            }
            if tokio::time::timeout_at(deadline, signal.changed()).await.is_err() {
                // Timed out: one more pass answers (with whatever is there, usually nothing).
                continue;
            }
        }
    }

    async fn build_sliding(
        &self,
        request: &SlidingRequest<'_>,
        previous: Option<&Snapshot>,
        span: Span,
    ) -> Result<(v5::Response, Snapshot, bool)> {
        let user = request.user;
        let body = request.body;
        let changes = lists::changes(self, user, span).await?;
        let candidates = Candidates::load(self, user, span, previous, &changes).await?;

        // Lists: each filtered and sorted, the rooms in its ranges picked.
        let mut response = v5::Response::new(String::new());
        let mut wanted: HashMap<OwnedRoomId, RoomConfig> = HashMap::new();
        let mut list_windows: HashMap<String, Vec<OwnedRoomId>> = HashMap::new();
        let mut list_counts = HashMap::new();
        let mut has_news = false;
        for (name, list) in &body.lists {
            let spaces = request.spaces.get(name).map(Vec::as_slice).unwrap_or_default();
            let sorted = candidates.filtered_sorted(self, list.filters.as_ref(), spaces).await?;
            let window = lists::in_ranges(&sorted, &list.ranges);
            let config = RoomConfig::new(
                usize::try_from(u64::from(list.room_details.timeline_limit)).unwrap_or(usize::MAX),
                RequiredState::new(&list.room_details.required_state, user.as_str()),
            );
            for room_id in &window {
                wanted.entry(room_id.clone()).and_modify(|c| c.merge(&config)).or_insert_with(|| config.clone());
            }
            if previous.is_none_or(|p| p.list_counts.get(name) != Some(&sorted.len())) {
                has_news = true;
            }
            list_counts.insert(name.clone(), sorted.len());
            response.lists.insert(name.clone(), {
                let mut list = v5::response::List::default();
                list.count = ruma::UInt::try_from(sorted.len()).unwrap_or_default();
                list
            });
            list_windows.insert(name.clone(), window);
        }
        // Subscriptions: rooms asked for by id (only rooms the user has a membership in).
        for (room_id, subscription) in &body.room_subscriptions {
            if !candidates.contains(room_id) {
                continue;
            }
            let config = RoomConfig::new(
                usize::try_from(u64::from(subscription.timeline_limit)).unwrap_or(usize::MAX),
                RequiredState::new(&subscription.required_state, user.as_str()),
            );
            wanted.entry(room_id.clone()).and_modify(|c| c.merge(&config)).or_insert_with(|| config.clone());
        }

        // Rooms: what each wanted room has new for this connection.
        let mut snapshot = Snapshot {
            token: span.to,
            rooms: previous.map(|p| p.rooms.clone()).unwrap_or_default(),
            list_counts,
            memberships: Some(candidates.memberships()),
        };
        let mut initial_rooms: HashMap<OwnedRoomId, std::collections::HashSet<String>> = HashMap::new();
        let mut to_look = Vec::new();
        for (room_id, config) in &wanted {
            let Some(entry) = candidates.get(room_id) else { continue };
            let sent = previous.and_then(|p| p.rooms.get(room_id));
            let needs_look = match sent {
                None => true,
                Some(sent) => {
                    sent.membership != entry.membership
                        || sent.events_up_to < span.from.map(|f| f.events).unwrap_or(0)
                        || sent.timeline_limit < config.timeline_limit
                        || sent.required_state != config.required_state
                        || changes.rooms_with_events.contains(room_id.as_str())
                        || changes.rooms_with_receipts.contains(room_id.as_str())
                }
            };
            if needs_look {
                to_look.push((room_id, config, entry, sent));
            }
        }
        // Rooms are independent: several are built at once, so one room's reads overlap
        // another's hand-offs to the database threads (a new connection's page is 20 rooms).
        let candidates = &candidates;
        type Building<'f> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<room::BuiltRoom>>> + Send + 'f>>;
        let mut pending = to_look.into_iter();
        let mut running = FuturesOrdered::new();
        let mut built_rooms = Vec::new();
        loop {
            while running.len() < ROOMS_BUILT_AT_ONCE {
                let Some((room_id, config, entry, sent)) = pending.next() else { break };
                let building: Building<'_> = Box::pin(self.sliding_room(user, request.device, candidates, entry, config, sent, span));
                running.push_back(async move { (room_id, config, entry, sent, building.await) });
            }
            match running.next().await {
                Some((room_id, config, entry, sent, built)) => built_rooms.push((room_id, config, entry, sent, built?)),
                None => break,
            }
        }
        for (room_id, config, entry, sent, built) in built_rooms {
            let mut unread = sent.map(|s| s.unread).unwrap_or_default();
            if let Some(built) = built {
                if built.initial {
                    initial_rooms.insert(room_id.clone(), built.timeline_ids);
                }
                unread = built.unread;
                response.rooms.insert(room_id.clone(), built.room);
            }
            snapshot.rooms.insert(
                room_id.clone(),
                SentRoom {
                    events_up_to: entry.up_to(span.to.events),
                    required_state: config.required_state.clone(),
                    timeline_limit: config.timeline_limit,
                    membership: entry.membership.clone(),
                    unread,
                },
            );
        }
        has_news |= !response.rooms.is_empty();

        // Extensions, over the rooms each one is scoped to.
        let scope = extensions::Scope { windows: &list_windows, subscriptions: &body.room_subscriptions, candidates: &candidates, initial_rooms: &initial_rooms };
        let extension_news = self.sliding_extensions(request, &scope, span, &mut response.extensions).await?;
        has_news |= extension_news;
        Ok((response, snapshot, has_news))
    }
}
