//! Sync: the notifier that wakes long-polling clients when new data is persisted.
//! (The /sync endpoint itself is tracked separately; this is the position it will wait on.)

use tokio::sync::watch;

/// The latest persisted room-event stream position, observable without races: a waiter
/// subscribes first, then reads, so a write between the two is never missed.
#[derive(Clone)]
pub struct Notifier {
    events: watch::Sender<i64>,
}

impl Notifier {
    pub fn new(start: i64) -> Self {
        Self { events: watch::Sender::new(start) }
    }

    pub fn notify(&self, position: i64) {
        self.events.send_if_modified(|current| {
            if position > *current {
                *current = position;
                true
            } else {
                false
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.events.subscribe()
    }

    pub fn current(&self) -> i64 {
        *self.events.borrow()
    }
}
