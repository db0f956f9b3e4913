//! Send-to-device messaging: stored per device until its next sync proves receipt.

use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    error::Result,
    storage::{accounts as account_repo, to_device as repo, Db},
    sync::notifier::Notifier,
};

#[derive(Clone)]
pub struct ToDevice {
    db: Db,
    notifier: Notifier,
}

/// One batch of to-device events for a sync, and the position it reaches.
pub struct Delivery {
    pub events: Vec<Value>,
    pub position: i64,
}

impl ToDevice {
    pub fn new(db: Db, notifier: Notifier) -> Self {
        Self { db, notifier }
    }

    /// Queues `messages` (user → device id or `*` → content) from the sender, once per
    /// (sender device, txn id). Returns false for a repeated transaction.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &str,
        event_type: &str,
        txn_id: &str,
        messages: &[(String, String, String)],
        server_name: &ruma::ServerName,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        if !repo::claim_txn(&mut tx, sender.as_str(), sender_device, txn_id).await? {
            return Ok(false);
        }
        let mut recipients = Vec::new();
        for (user, device, content) in messages {
            let Ok(user_id) = UserId::parse(user.as_str()) else { continue };
            if user_id.server_name() != server_name {
                tracing::warn!(%user_id, "to-device message for a remote user dropped: federation is not available");
                continue;
            }
            let devices: Vec<String> = if device == "*" {
                account_repo::list_devices(&mut *tx, user).await?.into_iter().map(|d| d.device_id).collect()
            } else {
                vec![device.clone()]
            };
            for device in devices {
                repo::insert(&mut tx, user, &device, sender.as_str(), event_type, content).await?;
            }
            recipients.push(user.clone());
        }
        tx.commit().await?;
        self.notifier.wake(&recipients);
        Ok(true)
    }

    /// Deletes what the device received up to `since`, then returns what is pending after it.
    pub async fn deliver(&self, user: &UserId, device: &str, since: i64) -> Result<Delivery> {
        if since > 0 {
            repo::delete_up_to(self.db.pool(), user.as_str(), device, since).await?;
        }
        let pending = repo::pending(self.db.pool(), user.as_str(), device, since, 100).await?;
        let position = pending.last().map(|(p, ..)| *p).unwrap_or(since);
        let events = pending
            .into_iter()
            .map(|(_, sender, kind, content)| {
                let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
                json!({ "sender": sender, "type": kind, "content": content })
            })
            .collect();
        Ok(Delivery { events, position })
    }
}
