//! Send-to-device messaging: stored per device until its next sync proves receipt.

use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    appservice::ephemeral::EphemeralOutbox,
    error::Result,
    outbox::EduQueue,
    storage::{accounts as account_repo, to_device as repo, Db},
    sync::notifier::Notifier,
};

#[derive(Clone)]
pub struct ToDevice {
    db: Db,
    notifier: Notifier,
    edus: Option<EduQueue>,
    appservices: EphemeralOutbox,
}

/// One batch of to-device events for a sync, and the position it reaches.
pub struct Delivery {
    pub events: Vec<Value>,
    pub position: i64,
}

impl ToDevice {
    pub fn new(db: Db, notifier: Notifier) -> Self {
        Self { db, notifier, edus: None, appservices: EphemeralOutbox::default() }
    }

    /// Messages for application services' users wake their transaction senders.
    pub fn with_appservices(mut self, outbox: EphemeralOutbox) -> Self {
        self.appservices = outbox;
        self
    }

    /// Messages for users of other servers go out as m.direct_to_device EDUs.
    pub fn with_federation(mut self, edus: EduQueue) -> Self {
        self.edus = Some(edus);
        self
    }

    /// Messages from another server's user (an m.direct_to_device EDU) for local devices.
    pub async fn deliver_from_remote(&self, sender: &UserId, event_type: &str, messages: &[(String, String, String)]) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let mut recipients = Vec::new();
        for (user, device, content) in messages {
            let devices: Vec<String> = if device == "*" {
                account_repo::list_devices(&mut **tx, user).await?.into_iter().map(|d| d.device_id).collect()
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
        self.appservices.poke();
        Ok(())
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
        let mut remote: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = Default::default();
        for (user, device, content) in messages {
            let Ok(user_id) = UserId::parse(user.as_str()) else { continue };
            if user_id.server_name() != server_name {
                // Grouped per server into one m.direct_to_device EDU each.
                let per_user = remote.entry(user_id.server_name().to_string()).or_default();
                let devices = per_user.entry(user.clone()).or_insert_with(|| json!({}));
                devices[device] = serde_json::from_str(content).unwrap_or_else(|_| json!({}));
                continue;
            }
            let devices: Vec<String> = if device == "*" {
                account_repo::list_devices(&mut **tx, user).await?.into_iter().map(|d| d.device_id).collect()
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
        self.appservices.poke();
        if let Some(edus) = &self.edus {
            for (server, messages) in remote {
                let edu = json!({ "edu_type": "m.direct_to_device", "content": {
                    "sender": sender, "type": event_type, "message_id": format!("{sender_device}:{txn_id}"), "messages": messages,
                } });
                edus.to_servers(&[server], &edu).await?;
            }
        }
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
