//! Sliding sync connections: what each (user, device, conn_id) has been sent, so that a
//! response carries only changes. Kept in memory, bounded in number and expiring; a `pos`
//! that is not known (expired, evicted, from before a restart) is `M_UNKNOWN_POS`, on which
//! clients start the connection again.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::OwnedRoomId;

use super::required_state::RequiredState;
use crate::{
    accounts::random_string,
    error::{MatrixError, Result},
    sync::token::SyncToken,
};

/// Connections kept at once; the least recently used goes first.
const MAX_CONNECTIONS: usize = 10_000;
/// A connection unused this long is forgotten.
const IDLE_EXPIRY: Duration = Duration::from_secs(30 * 60);
/// Positions of one connection kept, so a client retrying a request whose answer it lost
/// (same `pos` again) is answered from the same point.
const KEPT_POSITIONS: usize = 3;

/// What a connection had been sent of a room.
#[derive(Debug, Clone)]
pub struct SentRoom {
    /// Events up to this stream position were covered.
    pub events_up_to: i64,
    /// The required state the room was last sent with.
    pub required_state: Arc<RequiredState>,
    pub timeline_limit: usize,
    /// The membership it was last sent with (an invite that became a join is sent anew).
    pub membership: String,
    /// (notification_count, highlight_count) last sent.
    pub unread: (u64, u64),
}

/// A connection's state after one response.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub token: SyncToken,
    pub rooms: HashMap<OwnedRoomId, SentRoom>,
    /// List counts last sent, by list name.
    pub list_counts: HashMap<String, usize>,
    /// The user's memberships as read for this response.
    pub memberships: Option<super::lists::MembershipCache>,
}

struct Connection {
    /// Random per connection: a `pos` of an earlier connection (or process) never matches.
    id: String,
    next_seq: u64,
    positions: VecDeque<(u64, Arc<Snapshot>)>,
    last_used: Instant,
}

type Key = (String, String, String);

#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<Key, Connection>>>,
}

/// Where a request continues from: a new connection, or the snapshot its `pos` names.
#[derive(Debug)]
pub struct Resumed {
    pub snapshot: Option<Arc<Snapshot>>,
}

fn key(user: &str, device: &str, conn_id: &str) -> Key {
    (user.to_owned(), device.to_owned(), conn_id.to_owned())
}

fn unknown_pos() -> MatrixError {
    MatrixError::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN_POS", "Unknown position; start the connection again")
}

impl Connections {
    /// The snapshot a request's `pos` names. No `pos`: a new connection (an old one with the
    /// same conn_id is dropped).
    pub fn resume(&self, user: &str, device: &str, conn_id: &str, pos: Option<&str>) -> Result<Resumed> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = key(user, device, conn_id);
        let Some(pos) = pos else {
            map.remove(&key);
            return Ok(Resumed { snapshot: None });
        };
        let (id, seq) = pos.rsplit_once('_').ok_or_else(unknown_pos)?;
        let seq: u64 = seq.parse().map_err(|_| unknown_pos())?;
        let connection = map.get_mut(&key).filter(|c| c.id == id && c.last_used.elapsed() < IDLE_EXPIRY).ok_or_else(unknown_pos)?;
        let snapshot = connection.positions.iter().find(|(s, _)| *s == seq).map(|(_, snap)| snap.clone()).ok_or_else(unknown_pos)?;
        connection.last_used = Instant::now();
        Ok(Resumed { snapshot: Some(snapshot) })
    }

    /// Stores the state after a response and returns the `pos` that names it.
    pub fn store(&self, user: &str, device: &str, conn_id: &str, snapshot: Snapshot) -> String {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CONNECTIONS {
            map.retain(|_, c| c.last_used.elapsed() < IDLE_EXPIRY);
            if map.len() >= MAX_CONNECTIONS {
                if let Some(oldest) = map.iter().min_by_key(|(_, c)| c.last_used).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
        }
        let connection = map.entry(key(user, device, conn_id)).or_insert_with(|| Connection {
            id: random_string(8),
            next_seq: 1,
            positions: VecDeque::new(),
            last_used: Instant::now(),
        });
        let seq = connection.next_seq;
        connection.next_seq += 1;
        connection.positions.push_back((seq, Arc::new(snapshot)));
        while connection.positions.len() > KEPT_POSITIONS {
            connection.positions.pop_front();
        }
        connection.last_used = Instant::now();
        format!("{}_{}", connection.id, seq)
    }

    /// Forgets every connection of a device (logout, device deletion).
    pub fn forget_device(&self, user: &str, device: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(u, d, _), _| !(u == user && d == device));
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for connection in map.values_mut() {
            connection.last_used = Instant::now() - IDLE_EXPIRY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_resume_until_expired() {
        let connections = Connections::default();
        assert!(connections.resume("@a:x", "D", "", None).unwrap().snapshot.is_none());
        let pos = connections.store("@a:x", "D", "", Snapshot::default());
        assert!(connections.resume("@a:x", "D", "", Some(&pos)).unwrap().snapshot.is_some());
        // Retrying the same pos works (the answer may have been lost).
        assert!(connections.resume("@a:x", "D", "", Some(&pos)).unwrap().snapshot.is_some());
        // Another device or conn_id does not share it.
        assert_eq!(connections.resume("@a:x", "E", "", Some(&pos)).unwrap_err().errcode, "M_UNKNOWN_POS");
        assert_eq!(connections.resume("@a:x", "D", "other", Some(&pos)).unwrap_err().errcode, "M_UNKNOWN_POS");
        assert_eq!(connections.resume("@a:x", "D", "", Some("garbage")).unwrap_err().errcode, "M_UNKNOWN_POS");
        connections.expire_all();
        assert_eq!(connections.resume("@a:x", "D", "", Some(&pos)).unwrap_err().errcode, "M_UNKNOWN_POS");
    }

    #[test]
    fn only_recent_positions_are_kept() {
        let connections = Connections::default();
        let first = connections.store("@a:x", "D", "", Snapshot::default());
        for _ in 0..KEPT_POSITIONS {
            connections.store("@a:x", "D", "", Snapshot::default());
        }
        assert_eq!(connections.resume("@a:x", "D", "", Some(&first)).unwrap_err().errcode, "M_UNKNOWN_POS");
    }
}
