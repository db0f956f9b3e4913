//! Which member events each device was sent by its lazy-loading syncs, so that incremental
//! syncs leave out the redundant ones (`include_redundant_members: false`, the default), as
//! Synapse does. Kept per sync token: a client that retries a sync whose answer it lost
//! sends the same `since` and gets again what it missed. Only memory: a device whose entry
//! is gone (evicted, restarted, another process) is sent the redundant members again, which
//! the spec allows.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;

/// Devices remembered, and tokens remembered per device.
const DEVICES: usize = 10_000;
const TOKENS_PER_DEVICE: usize = 3;

type SentSet = Arc<HashSet<String>>;

#[derive(Clone)]
pub struct LazyMembersSent {
    devices: Arc<Mutex<LruCache<(String, String), VecDeque<(String, SentSet)>>>>,
}

impl Default for LazyMembersSent {
    fn default() -> Self {
        Self { devices: Arc::new(Mutex::new(LruCache::new(NonZeroUsize::new(DEVICES).expect("non-zero")))) }
    }
}

impl LazyMembersSent {
    /// The member event ids the device had been sent as of a sync token it answered with.
    pub fn as_of(&self, user: &str, device: &str, token: &str) -> Option<SentSet> {
        let mut devices = self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tokens = devices.get(&(user.to_owned(), device.to_owned()))?;
        tokens.iter().find(|(t, _)| t == token).map(|(_, sent)| sent.clone())
    }

    /// Records what the device has been sent as of the token a sync answered with.
    pub fn record(&self, user: &str, device: &str, token: String, sent: HashSet<String>) {
        let mut devices = self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (user.to_owned(), device.to_owned());
        if devices.get(&key).is_none() {
            devices.put(key.clone(), VecDeque::new());
        }
        let Some(tokens) = devices.get_mut(&key) else { return };
        tokens.retain(|(t, _)| *t != token);
        tokens.push_back((token, Arc::new(sent)));
        while tokens.len() > TOKENS_PER_DEVICE {
            tokens.pop_front();
        }
    }
}

/// One sync's view of it: what was sent before, and the member events this sync sends.
#[derive(Default)]
pub struct LazySent {
    pub before: Option<SentSet>,
    pub now: Vec<String>,
}

impl LazySent {
    pub fn was_sent(&self, event_id: &str) -> bool {
        self.before.as_ref().is_some_and(|sent| sent.contains(event_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_token_and_bounded() {
        let sent = LazyMembersSent::default();
        sent.record("@a:x", "D", "t1".into(), HashSet::from(["$1".to_owned()]));
        sent.record("@a:x", "D", "t2".into(), HashSet::from(["$1".to_owned(), "$2".to_owned()]));
        assert_eq!(sent.as_of("@a:x", "D", "t1").unwrap().len(), 1, "a retry from t1 sees what t1 had");
        assert_eq!(sent.as_of("@a:x", "D", "t2").unwrap().len(), 2);
        assert!(sent.as_of("@a:x", "OTHER", "t2").is_none());
        for n in 3..10 {
            sent.record("@a:x", "D", format!("t{n}"), HashSet::new());
        }
        assert!(sent.as_of("@a:x", "D", "t1").is_none(), "old tokens are forgotten");
        assert!(sent.as_of("@a:x", "D", "t9").is_some());
    }
}
