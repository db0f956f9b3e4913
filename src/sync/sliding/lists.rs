//! The rooms a sliding sync can show: the user's memberships with their recency, list
//! filters, sorting by `bump_stamp`, and picking a list's `ranges`.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{api::client::sync::sync_events::v5::request::ListFilters, directory::RoomTypeFilter, OwnedRoomId, RoomId, UInt, UserId};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{connection::Snapshot, Span};
use crate::{
    error::Result,
    storage::{account_data, receipts as receipt_repo, sliding::{self as repo, UserRoom}},
    sync::Sync,
};

/// One room the user may see in a list.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub room_id: OwnedRoomId,
    pub membership: String,
    pub membership_event_id: String,
    pub membership_stream: i64,
    /// Recency: the newest bump event the user may see (for a room left, not past the leave).
    pub bump_stamp: i64,
}

impl Candidate {
    /// What a membership row shows: `None` for a row with an invalid room id.
    fn from_row(row: &UserRoom) -> Option<Self> {
        let room_id = RoomId::parse(&row.room_id).ok()?;
        let bump_stamp = match row.membership.as_str() {
            "join" => row.bump_stamp.unwrap_or(row.membership_stream),
            "invite" | "knock" => row.membership_stream,
            _ => row.bump_stamp.map_or(row.membership_stream, |b| b.min(row.membership_stream)),
        };
        Some(Self {
            room_id,
            membership: row.membership.clone(),
            membership_event_id: row.membership_event_id.clone(),
            membership_stream: row.membership_stream,
            bump_stamp,
        })
    }

    pub fn joined(&self) -> bool {
        self.membership == "join"
    }

    /// Whether the room has a timeline for the user (joined, or left / banned: up to then).
    pub fn has_timeline(&self) -> bool {
        matches!(self.membership.as_str(), "join" | "leave" | "ban")
    }

    /// The newest stream position the user sees of the room.
    pub fn up_to(&self, now: i64) -> i64 {
        if self.joined() {
            now
        } else {
            self.membership_stream.min(now)
        }
    }
}

/// A candidate looked up by its room id (without a copy of the id as the key).
struct ById(Arc<Candidate>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        <RoomId as Hash>::hash(&self.0.room_id, state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.room_id == other.0.room_id
    }
}

impl Eq for ById {}

impl Borrow<RoomId> for ById {
    fn borrow(&self) -> &RoomId {
        &self.0.room_id
    }
}

/// The user's rooms, with the facts filters need loaded on first use.
pub(crate) struct Candidates {
    /// The rooms shown, by id (lists sort them; nothing depends on this set's order).
    by_id: HashSet<ById>,
    memberships: MembershipCache,
    user: String,
    direct: OnceCell<HashSet<String>>,
    encrypted: OnceCell<HashSet<String>>,
    room_types: OnceCell<HashMap<String, Option<String>>>,
}

/// The user's memberships as last read, kept by the connection: an incremental response
/// re-reads only the rooms with events since (a membership or recency change is an event).
/// Kept as parsed candidates, shared, so a response copies pointers, not ids.
#[derive(Debug, Clone)]
pub struct MembershipCache {
    rows: Arc<Vec<Arc<Candidate>>>,
    read_at: Instant,
}

/// Past this age the cache is read again whole (catches what no event announces: forgets).
const MEMBERSHIP_CACHE_AGE: Duration = Duration::from_secs(60);

impl Candidates {
    pub async fn load(sync: &Sync, user: &UserId, span: Span, previous: Option<&Snapshot>, changes: &Changes) -> Result<Self> {
        let rooms_with_events = &changes.rooms_with_events;
        let cached = previous.and_then(|p| p.memberships.as_ref()).filter(|c| c.read_at.elapsed() < MEMBERSHIP_CACHE_AGE);
        let memberships = match cached {
            Some(cache) if rooms_with_events.is_empty() => cache.clone(),
            Some(cache) => {
                let mut rows: Vec<Arc<Candidate>> =
                    cache.rows.iter().filter(|r| !rooms_with_events.contains(r.room_id.as_str())).cloned().collect();
                rows.extend(changes.memberships.iter().filter_map(Candidate::from_row).map(Arc::new));
                MembershipCache { rows: Arc::new(rows), read_at: cache.read_at }
            }
            None => {
                let rows = repo::user_rooms(sync.db.pool(), user.as_str()).await?;
                MembershipCache { rows: Arc::new(rows.iter().filter_map(Candidate::from_row).map(Arc::new).collect()), read_at: Instant::now() }
            }
        };
        let mut by_id = HashSet::with_capacity(memberships.rows.len());
        for row in memberships.rows.iter() {
            let room_id = &row.room_id;
            if sync.rooms.is_being_created(room_id) {
                continue;
            }
            // Rooms left or banned from are shown only to a connection that learns of it
            // now: it saw the room before, or the leave is newer than its position.
            if matches!(row.membership.as_str(), "leave" | "ban") {
                let seen_before = previous.is_some_and(|p| p.rooms.contains_key(room_id));
                let news = span.from.is_some_and(|from| row.membership_stream > from.events);
                if !(seen_before || news) {
                    continue;
                }
            }
            by_id.insert(ById(Arc::clone(row)));
        }
        Ok(Self {
            by_id,
            memberships,
            user: user.to_string(),
            direct: OnceCell::new(),
            encrypted: OnceCell::new(),
            room_types: OnceCell::new(),
        })
    }

    /// What the connection keeps for the next response.
    pub fn memberships(&self) -> MembershipCache {
        self.memberships.clone()
    }

    pub fn contains(&self, room_id: &RoomId) -> bool {
        self.by_id.contains(room_id)
    }

    pub fn get(&self, room_id: &RoomId) -> Option<&Candidate> {
        self.by_id.get(room_id).map(|c| &*c.0)
    }

    /// Rooms in `m.direct` (global account data): the user's DMs.
    pub async fn is_dm(&self, sync: &Sync, room_id: &RoomId) -> Result<bool> {
        Ok(self.direct(sync).await?.contains(room_id.as_str()))
    }

    async fn direct(&self, sync: &Sync) -> Result<&HashSet<String>> {
        self.direct
            .get_or_try_init(|| async {
                let content = account_data::get(sync.db.pool(), &self.user, "", "m.direct").await?;
                let mut rooms = HashSet::new();
                if let Some(Value::Object(by_user)) = content.and_then(|c| serde_json::from_str::<Value>(&c).ok()) {
                    for ids in by_user.values() {
                        rooms.extend(ids.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
                Ok::<_, crate::error::MatrixError>(rooms)
            })
            .await
    }

    async fn encrypted(&self, sync: &Sync) -> Result<&HashSet<String>> {
        self.encrypted
            .get_or_try_init(|| async { Ok::<_, crate::error::MatrixError>(repo::encrypted_rooms(sync.db.pool(), &self.user).await?) })
            .await
    }

    async fn room_types(&self, sync: &Sync) -> Result<&HashMap<String, Option<String>>> {
        self.room_types
            .get_or_try_init(|| async {
                let creates = repo::create_events(sync.db.pool(), &self.user).await?;
                Ok::<_, crate::error::MatrixError>(
                    creates
                        .into_iter()
                        .map(|(room, json)| {
                            let kind = serde_json::from_str::<Value>(&json)
                                .ok()
                                .and_then(|e| e["content"]["type"].as_str().map(str::to_owned));
                            (room, kind)
                        })
                        .collect(),
                )
            })
            .await
    }

    /// The rooms passing a list's filters, most recent first.
    pub async fn filtered_sorted(&self, sync: &Sync, filters: Option<&ListFilters>, spaces: &[OwnedRoomId]) -> Result<Vec<&Candidate>> {
        let mut picked: Vec<&Candidate> = Vec::with_capacity(self.by_id.len());
        let in_spaces = if spaces.is_empty() { None } else { Some(space_children(sync, spaces).await?) };
        for ById(candidate) in &self.by_id {
            if let Some(children) = &in_spaces {
                if !children.contains(candidate.room_id.as_str()) {
                    continue;
                }
            }
            if let Some(filters) = filters {
                if !self.passes(sync, candidate, filters).await? {
                    continue;
                }
            }
            picked.push(candidate);
        }
        picked.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(picked)
    }

    async fn passes(&self, sync: &Sync, candidate: &Candidate, filters: &ListFilters) -> Result<bool> {
        let room = candidate.room_id.as_str();
        if let Some(wanted) = filters.is_invite {
            if (candidate.membership == "invite") != wanted {
                return Ok(false);
            }
        }
        if let Some(wanted) = filters.is_dm {
            if self.direct(sync).await?.contains(room) != wanted {
                return Ok(false);
            }
        }
        if let Some(wanted) = filters.is_encrypted {
            if self.encrypted(sync).await?.contains(room) != wanted {
                return Ok(false);
            }
        }
        if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
            let kind = self.room_types(sync).await?.get(room).cloned().flatten();
            let matches = |filter: &RoomTypeFilter| match filter {
                RoomTypeFilter::Default => kind.is_none(),
                other => other.as_str() == kind.as_deref(),
            };
            if filters.not_room_types.iter().any(matches) {
                return Ok(false);
            }
            if !filters.room_types.is_empty() && !filters.room_types.iter().any(matches) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What changed in the span: the rooms with events (with the user's membership in each, read
/// in the same statement) and the rooms with new receipts (unread counts). The only rooms an
/// incremental response may have news of, besides rooms newly wanted.
#[derive(Default)]
pub(crate) struct Changes {
    pub rooms_with_events: HashSet<String>,
    /// The user's membership rows of those rooms (rooms the user is not in have none).
    memberships: Vec<UserRoom>,
    pub rooms_with_receipts: HashSet<String>,
}

pub(crate) async fn changes(sync: &Sync, user: &UserId, span: Span) -> Result<Changes> {
    let Some(from) = span.from else { return Ok(Changes::default()) };
    let mut changes = Changes::default();
    if span.to.events > from.events {
        for (room_id, membership) in repo::rooms_with_events_for(sync.db.pool(), user.as_str(), from.events, span.to.events).await? {
            changes.rooms_with_events.insert(room_id);
            changes.memberships.extend(membership);
        }
    }
    if span.to.receipts > from.receipts {
        changes.rooms_with_receipts.extend(receipt_repo::rooms_changed_since(sync.db.pool(), from.receipts).await?);
    }
    Ok(changes)
}

/// Rooms that are children (`m.space.child` with `via`) of any of the spaces.
async fn space_children(sync: &Sync, spaces: &[OwnedRoomId]) -> Result<HashSet<String>> {
    let mut children = HashSet::new();
    for space in spaces {
        for (child, json) in repo::space_children(sync.db.pool(), space.as_str()).await? {
            let has_via = serde_json::from_str::<Value>(&json)
                .ok()
                .is_some_and(|e| e["content"]["via"].as_array().is_some_and(|v| !v.is_empty()));
            if has_via {
                children.insert(child);
            }
        }
    }
    Ok(children)
}

/// The rooms at the (inclusive) index ranges of a sorted list.
pub(crate) fn in_ranges(sorted: &[&Candidate], ranges: &[(UInt, UInt)]) -> Vec<OwnedRoomId> {
    let mut picked = Vec::new();
    let mut seen = HashSet::new();
    for (start, end) in ranges {
        let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
        let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
        if start >= sorted.len() || start > end {
            continue;
        }
        for candidate in &sorted[start..=end.min(sorted.len() - 1)] {
            if seen.insert(&candidate.room_id) {
                picked.push(candidate.room_id.clone());
            }
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_clamped() {
        let candidates: Vec<Candidate> = (0..5)
            .map(|i| Candidate {
                room_id: format!("!r{i}:x").try_into().unwrap(),
                membership: "join".into(),
                membership_event_id: format!("$m{i}"),
                membership_stream: i,
                bump_stamp: i,
            })
            .collect();
        let rooms: Vec<&Candidate> = candidates.iter().collect();
        let r = |a: u32, b: u32| (UInt::from(a), UInt::from(b));
        assert_eq!(in_ranges(&rooms, &[r(0, 1)]).len(), 2);
        assert_eq!(in_ranges(&rooms, &[r(3, 99)]).len(), 2);
        assert_eq!(in_ranges(&rooms, &[r(0, 1), r(1, 2)]).len(), 3);
        assert!(in_ranges(&rooms, &[r(7, 9)]).is_empty());
        assert!(in_ranges(&[], &[r(0, 0)]).is_empty());
    }
}
