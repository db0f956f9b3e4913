//! In-memory copies of what every send reads: room versions and state-group lookups (both
//! immutable once written), and parsed events, which change only when redacted — a
//! generation counter keeps a read that raced a redaction from caching the old text.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Mutex, RwLock},
};

use lru::LruCache;
use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId};

use super::Pdu;

const EVENTS: usize = 8192;
const STATE_LOOKUPS: usize = 16384;

pub struct RoomCaches {
    versions: RwLock<HashMap<OwnedRoomId, RoomVersionId>>,
    state_lookups: Mutex<LruCache<(i64, String, String), Option<String>>>,
    events: Mutex<Events>,
    /// Users deactivated with erasure (loaded on first use; they only ever grow).
    erased: RwLock<Option<std::collections::HashSet<String>>>,
}

struct Events {
    lru: LruCache<OwnedEventId, Pdu>,
    /// Bumped by every redaction; a read that began under an older generation is not cached.
    generation: u64,
}

impl Default for RoomCaches {
    fn default() -> Self {
        let size = |n: usize| NonZeroUsize::new(n).expect("non-zero cache size");
        Self {
            versions: RwLock::default(),
            state_lookups: Mutex::new(LruCache::new(size(STATE_LOOKUPS))),
            events: Mutex::new(Events { lru: LruCache::new(size(EVENTS)), generation: 0 }),
            erased: RwLock::default(),
        }
    }
}

impl RoomCaches {
    /// Whether the user is erased; None until the set is loaded.
    pub fn is_erased(&self, user: &str) -> Option<bool> {
        self.erased.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|set| set.contains(user))
    }

    pub fn set_erased(&self, users: impl IntoIterator<Item = String>) {
        let mut erased = self.erased.write().unwrap_or_else(|p| p.into_inner());
        erased.get_or_insert_with(Default::default).extend(users);
    }

    pub fn version(&self, room_id: &OwnedRoomId) -> Option<RoomVersionId> {
        self.versions.read().unwrap_or_else(|p| p.into_inner()).get(room_id).cloned()
    }

    pub fn remember_version(&self, room_id: OwnedRoomId, version: RoomVersionId) {
        self.versions.write().unwrap_or_else(|p| p.into_inner()).insert(room_id, version);
    }

    /// The room is gone from the database (purged): this server no longer knows it.
    pub fn forget_room(&self, room_id: &OwnedRoomId) {
        self.versions.write().unwrap_or_else(|p| p.into_inner()).remove(room_id);
    }

    /// A cached lookup of (type, state_key) in a state group: Some(answer) when known.
    pub fn state_lookup(&self, group: i64, kind: &str, key: &str) -> Option<Option<String>> {
        let mut lookups = self.state_lookups.lock().unwrap_or_else(|p| p.into_inner());
        lookups.get(&(group, kind.to_owned(), key.to_owned())).cloned()
    }

    pub fn remember_state_lookup(&self, group: i64, kind: &str, key: &str, answer: Option<String>) {
        let mut lookups = self.state_lookups.lock().unwrap_or_else(|p| p.into_inner());
        lookups.put((group, kind.to_owned(), key.to_owned()), answer);
    }

    /// The generation to pass to `remember_event` for a read starting now.
    pub fn event_generation(&self) -> u64 {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).generation
    }

    pub fn event(&self, event_id: &OwnedEventId) -> Option<Pdu> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).lru.get(event_id).cloned()
    }

    /// Caches an event read from the database, unless a redaction happened since the read began.
    pub fn remember_event(&self, pdu: &Pdu, read_at_generation: u64) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.generation == read_at_generation {
            events.lru.put(pdu.event_id.clone(), pdu.clone());
        }
    }

    /// After a redaction committed: drop the old text and stop racing reads from caching it.
    pub fn forget_event(&self, event_id: &OwnedEventId) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.lru.pop(event_id);
        events.generation += 1;
    }
}
