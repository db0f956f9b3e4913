//! Wakes long-polling /sync requests, only those of users a change concerns.
//!
//! Race-free by construction: a sync subscribes to its user's signal *before* it reads the
//! stream positions, so a write that lands between the read and the wait still wakes it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct Notifier {
    /// One signal per user with a sync in progress; the value is a change counter.
    users: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's wake-up signal. Mark it seen (`borrow_and_update`) before reading positions.
    pub fn subscribe(&self, user_id: &str) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() > 1024 {
            // Drop signals nobody waits on any more.
            users.retain(|_, sender| sender.receiver_count() > 0);
        }
        users.entry(user_id.to_owned()).or_insert_with(|| watch::Sender::new(0)).subscribe()
    }

    /// Wakes the syncs of these users (users with no sync in progress cost nothing).
    pub fn wake<I, S>(&self, user_ids: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for user_id in user_ids {
            if let Some(sender) = users.get(user_id.as_ref()) {
                sender.send_modify(|counter| *counter = counter.wrapping_add(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_between_subscribe_and_wait_is_not_lost() {
        let notifier = Notifier::new();
        let mut signal = notifier.subscribe("@a:x");
        signal.borrow_and_update();
        // The write lands after the positions were read but before the wait starts.
        notifier.wake(["@a:x"]);
        tokio::time::timeout(std::time::Duration::from_secs(1), signal.changed()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn only_concerned_users_wake() {
        let notifier = Notifier::new();
        let mut a = notifier.subscribe("@a:x");
        let mut b = notifier.subscribe("@b:x");
        a.borrow_and_update();
        b.borrow_and_update();
        notifier.wake(["@a:x"]);
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
    }
}
