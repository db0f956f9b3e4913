//! Ephemeral data (typing, receipts, presence) waiting for the next transaction of each
//! service that asked for it (`receive_ephemeral`). Held in memory, as Synapse holds it:
//! it describes the moment, and a restart loses no message.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde_json::Value;
use tokio::sync::watch;

/// What is held per service while it is slow or down: the newest so many.
const MAX_HELD: usize = 1000;

/// One piece of ephemeral data, with what decides which services it concerns.
#[derive(Debug, Clone)]
pub struct EphemeralItem {
    /// The room a typing or receipt EDU is for.
    pub room_id: Option<String>,
    /// The user a presence update is about.
    pub user_id: Option<String>,
    pub edu: Value,
}

/// The default holds nothing: no service receives ephemeral data.
#[derive(Clone)]
pub struct EphemeralOutbox {
    /// Ids of the services that receive ephemeral data; only these hold any.
    receivers: Arc<Vec<String>>,
    held: Arc<Mutex<HashMap<String, VecDeque<EphemeralItem>>>>,
    wake: Arc<watch::Sender<u64>>,
}

impl Default for EphemeralOutbox {
    fn default() -> Self {
        Self::new(&super::AppServices::default())
    }
}

impl EphemeralOutbox {
    pub fn new(services: &super::AppServices) -> Self {
        let receivers = services.all().iter().filter(|s| s.receive_ephemeral && s.url().is_some()).map(|s| s.id().to_owned()).collect();
        Self { receivers: Arc::new(receivers), held: Arc::default(), wake: Arc::new(watch::Sender::new(0)) }
    }

    /// Whether any service wants ephemeral data (callers skip building it otherwise).
    pub fn wanted(&self) -> bool {
        !self.receivers.is_empty()
    }

    pub fn push(&self, item: EphemeralItem) {
        if self.receivers.is_empty() {
            return;
        }
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            for id in self.receivers.iter() {
                let queue = held.entry(id.clone()).or_default();
                if queue.len() == MAX_HELD {
                    queue.pop_front();
                }
                queue.push_back(item.clone());
            }
        }
        self.wake.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Everything held for the service, oldest first.
    pub fn take(&self, appservice_id: &str) -> Vec<EphemeralItem> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get_mut(appservice_id).map(|queue| queue.drain(..).collect()).unwrap_or_default()
    }

    /// Wakes the senders of the services that receive ephemeral data: something they read
    /// from the database (to-device messages) was written.
    pub fn poke(&self) {
        if !self.receivers.is_empty() {
            self.wake.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }
}
