//! Pushers: delivery of notifications to push gateways (the Push Gateway API), with retries,
//! and removal of pushkeys a gateway rejects.

use std::time::Duration;

use ruma::{
    api::{
        client::push::{Pusher, PusherKind},
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, PusherData, Request, Response,
        },
        IncomingResponseExt, OutgoingRequestExt,
    },
    push::{Action, HttpPusherData, PushFormat},
    serde::Raw,
    SecondsSinceUnixEpoch, UInt,
};
use serde_json::Value;

use super::RecipientActions;
use crate::{
    outbound::GuardedDns,
    rooms::Pdu,
    storage::{push as repo, state as state_repo, Db},
};

const ATTEMPTS: u32 = 5;

/// The pusher as the gateway is told of it: its ids, when it was set, its data (the url is
/// the gateway's address, not sent).
fn device_of(pusher: &Pusher, http_data: &HttpPusherData, pushkey_ts: i64) -> Device {
    let mut data = PusherData::new();
    data.format = http_data.format.clone();
    data.data = http_data.data.clone();
    let mut device = Device::new(pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
    device.pushkey_ts = Some(SecondsSinceUnixEpoch(UInt::try_from(pushkey_ts.max(0) as u64).unwrap_or_default()));
    device.data = data;
    device
}

/// The badge: rooms with unread notifications.
fn counts(unread: i64) -> NotificationCounts {
    NotificationCounts::new(UInt::try_from(unread.max(0) as u64).unwrap_or_default(), UInt::MIN)
}

#[derive(Clone)]
pub struct Gateway {
    db: Db,
    http: reqwest::Client,
    dns: GuardedDns,
}

impl Gateway {
    pub fn new(db: Db, dns: GuardedDns) -> Self {
        let http = dns
            .client_builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds");
        Self { db, http, dns }
    }

    /// Queues notifications for the recipients' pushers (in the background).
    pub fn notify(&self, pdu: Pdu, event: Value, recipients: Vec<RecipientActions>) {
        let this = self.clone();
        tokio::spawn(async move {
            // One query for every recipient's pushers: most recipients have none.
            let users: Vec<&str> = recipients.iter().map(|r| r.user_id.as_str()).collect();
            let all = match repo::pushers_of_users(this.db.pool(), &users).await {
                Ok(all) => all,
                Err(error) => {
                    tracing::warn!(%error, "reading pushers failed");
                    return;
                }
            };
            for recipient in &recipients {
                let pushers: Vec<(String, i64)> = all
                    .iter()
                    .filter(|(user, _, _)| user == recipient.user_id.as_str())
                    .map(|(_, pusher, ts)| (pusher.clone(), *ts))
                    .collect();
                if pushers.is_empty() {
                    continue;
                }
                if let Err(error) = this.notify_user(&pdu, &event, recipient, pushers).await {
                    tracing::warn!(user = %recipient.user_id, %error, "push delivery failed");
                }
            }
        });
    }

    /// Sends the user's pushers their badge (rooms with unread notifications) when it is no
    /// longer `before` (in the background).
    pub fn update_badge(&self, user: ruma::OwnedUserId, before: i64) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.send_badge(&user, before).await {
                tracing::warn!(%user, %error, "badge push failed");
            }
        });
    }

    async fn send_badge(&self, user: &ruma::UserId, before: i64) -> anyhow::Result<()> {
        let badge = repo::rooms_with_unread(self.db.pool(), user.as_str()).await?;
        if badge == before {
            return Ok(());
        }
        for (_, pusher_json, pushkey_ts) in repo::pushers_of_users(self.db.pool(), &[user.as_str()]).await? {
            let pusher: Pusher = serde_json::from_str(&pusher_json)?;
            let PusherKind::Http(http_data) = &pusher.kind else { continue };
            let mut notification = Notification::new(vec![device_of(&pusher, http_data, pushkey_ts)]);
            notification.counts = counts(badge);
            self.deliver(user, &pusher, http_data, notification).await?;
        }
        Ok(())
    }

    async fn notify_user(&self, pdu: &Pdu, event: &Value, recipient: &RecipientActions, pushers: Vec<(String, i64)>) -> anyhow::Result<()> {
        let unread = repo::rooms_with_unread(self.db.pool(), recipient.user_id.as_str()).await?;
        let tweaks: Vec<_> = recipient
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::SetTweak(tweak) => Some(tweak.clone()),
                _ => None,
            })
            .collect();
        for (pusher_json, pushkey_ts) in pushers {
            let pusher: Pusher = serde_json::from_str(&pusher_json)?;
            let PusherKind::Http(http_data) = &pusher.kind else { continue };
            let notification = self
                .notification(pdu, event, recipient, &pusher, http_data, pushkey_ts, unread, tweaks.clone())
                .await?;
            self.deliver(&recipient.user_id, &pusher, http_data, notification).await?;
        }
        Ok(())
    }

    /// Posts to the pusher's gateway; a pushkey the gateway rejects loses its pusher.
    async fn deliver(&self, user: &ruma::UserId, pusher: &Pusher, http_data: &HttpPusherData, notification: Notification) -> anyhow::Result<()> {
        let rejected = self.post(&http_data.url, notification).await?;
        if rejected.iter().any(|key| key == &pusher.ids.pushkey) {
            tracing::info!(%user, app_id = %pusher.ids.app_id, "gateway rejected pushkey: pusher removed");
            repo::delete_pusher(self.db.pool(), user.as_str(), &pusher.ids.app_id, &pusher.ids.pushkey).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn notification(
        &self,
        pdu: &Pdu,
        event: &Value,
        recipient: &RecipientActions,
        pusher: &Pusher,
        http_data: &HttpPusherData,
        pushkey_ts: i64,
        unread: i64,
        tweaks: Vec<ruma::push::Tweak>,
    ) -> anyhow::Result<Notification> {
        let mut device = device_of(pusher, http_data, pushkey_ts);
        device.tweaks = tweaks;
        let mut notification = Notification::new(vec![device]);
        notification.event_id = Some(pdu.event_id.clone());
        notification.room_id = Some(pdu.room_id.clone());
        notification.counts = counts(unread);
        let kind = pdu.kind().to_string();
        notification.prio = if recipient.highlight || kind == "m.room.message" || kind == "m.room.encrypted" {
            NotificationPriority::High
        } else {
            NotificationPriority::Low
        };
        if http_data.format != Some(PushFormat::EventIdOnly) {
            notification.event_type = Some(pdu.kind().clone());
            notification.sender = Some(pdu.fields.sender.clone());
            notification.user_is_target = pdu.state_key() == Some(recipient.user_id.as_str());
            notification.content = Some(serde_json::value::to_raw_value(&event["content"])?);
            let room = pdu.room_id.as_str();
            notification.sender_display_name = state_field(&self.db, room, "m.room.member", pdu.fields.sender.as_str(), "displayname").await?;
            let alias = state_field(&self.db, room, "m.room.canonical_alias", "", "alias").await?;
            // The room's name, else its alias, as Synapse names rooms in pushes.
            notification.room_name = state_field(&self.db, room, "m.room.name", "", "name").await?.or_else(|| alias.clone());
            notification.room_alias = alias.and_then(|a| ruma::RoomAliasId::parse(a).ok());
        }
        Ok(notification)
    }

    /// POSTs to the gateway with retries; returns the pushkeys it rejected.
    async fn post(&self, url: &str, notification: Notification) -> anyhow::Result<Vec<String>> {
        self.dns.check_url(url).await.map_err(|e| anyhow::anyhow!("push gateway refused: {e}"))?;
        let event_id = notification.event_id.clone();
        let mut body = Request::new(notification)
            .try_into_http_request::<Vec<u8>>("http://gateway.invalid", (), ())?
            .into_body();
        // What Synapse sends beyond ruma's form, which gateways (and SyTest) read: the event id
        // also as `id` (the field's name before `event_id`), `membership` for member events,
        // every device's `data` even when empty, and `counts` even when zero (ruma leaves
        // empty ones out; a badge update to 0 is all counts).
        let mut json: serde_json::Value = serde_json::from_slice(&body)?;
        let notification_json = &mut json["notification"];
        if notification_json.get("counts").is_none() {
            notification_json["counts"] = serde_json::json!({ "unread": 0 });
        }
        if let Some(event_id) = event_id {
            notification_json["id"] = event_id.as_str().into();
        }
        if notification_json["type"] == "m.room.member" {
            if let Some(membership) = notification_json["content"]["membership"].as_str().map(str::to_owned) {
                notification_json["membership"] = membership.into();
            }
        }
        for device in notification_json["devices"].as_array_mut().into_iter().flatten() {
            if device.get("data").is_none() {
                device["data"] = serde_json::json!({});
            }
        }
        body = serde_json::to_vec(&json)?;
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let result = self
                .http
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    let status = response.status();
                    let bytes = response.bytes().await?;
                    let parsed = Response::try_from_http_response(http::Response::builder().status(status).body(&bytes[..])?);
                    return Ok(parsed.map(|r| r.rejected).unwrap_or_default());
                }
                Ok(response) if response.status().is_client_error() => {
                    anyhow::bail!("push gateway {url} refused the notification: {}", response.status());
                }
                Ok(response) => tracing::debug!(url, attempt, status = %response.status(), "push gateway error, retrying"),
                Err(error) => tracing::debug!(url, attempt, %error, "push gateway unreachable, retrying"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        anyhow::bail!("push gateway {url} failed {ATTEMPTS} times")
    }
}

/// A string field of a current state event's content.
async fn state_field(db: &Db, room: &str, kind: &str, key: &str, field: &str) -> anyhow::Result<Option<String>> {
    let Some(id) = state_repo::current_entries(db.pool(), room, kind, key).await? else {
        return Ok(None);
    };
    let json = crate::storage::events::get_json(db.pool(), &id).await?;
    Ok(json.and_then(|j| serde_json::from_str::<Value>(&j).ok()).and_then(|v| v["content"][field].as_str().map(str::to_owned)))
}

/// A client-format event as ruma's raw sync event, for /notifications.
pub fn raw_event<T>(event: &Value) -> Option<Raw<T>> {
    serde_json::value::to_raw_value(event).ok().map(Raw::from_json)
}
