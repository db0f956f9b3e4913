//! Pushers: delivery of notifications to push gateways (the Push Gateway API), with retries,
//! and removal of pushkeys a gateway rejects.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
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
    rooms::Pdu,
    storage::{push as repo, state as state_repo, Db},
};

const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Gateway {
    db: Db,
    http: reqwest::Client,
    blocklist: Vec<IpNet>,
}

impl Gateway {
    pub fn new(db: Db, blocklist: Vec<IpNet>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds");
        Self { db, http, blocklist }
    }

    /// Queues notifications for the recipients' pushers (in the background).
    pub fn notify(&self, pdu: Pdu, event: Value, recipients: Vec<RecipientActions>) {
        let this = self.clone();
        tokio::spawn(async move {
            for recipient in recipients {
                if let Err(error) = this.notify_user(&pdu, &event, &recipient).await {
                    tracing::warn!(user = %recipient.user_id, %error, "push delivery failed");
                }
            }
        });
    }

    async fn notify_user(&self, pdu: &Pdu, event: &Value, recipient: &RecipientActions) -> anyhow::Result<()> {
        let pushers = repo::pushers(self.db.pool(), recipient.user_id.as_str()).await?;
        if pushers.is_empty() {
            return Ok(());
        }
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
            let rejected = self.post(&http_data.url, notification).await?;
            if rejected.iter().any(|key| key == &pusher.ids.pushkey) {
                tracing::info!(user = %recipient.user_id, app_id = %pusher.ids.app_id, "gateway rejected pushkey: pusher removed");
                repo::delete_pusher(self.db.pool(), recipient.user_id.as_str(), &pusher.ids.app_id, &pusher.ids.pushkey).await?;
            }
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
        let mut data = PusherData::new();
        data.format = http_data.format.clone();
        data.data = http_data.data.clone();
        let mut device = Device::new(pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
        device.pushkey_ts = Some(SecondsSinceUnixEpoch(UInt::try_from(pushkey_ts.max(0) as u64).unwrap_or_default()));
        device.data = data;
        device.tweaks = tweaks;
        let mut notification = Notification::new(vec![device]);
        notification.event_id = Some(pdu.event_id.clone());
        notification.room_id = Some(pdu.room_id.clone());
        notification.counts = NotificationCounts::new(UInt::try_from(unread.max(0) as u64).unwrap_or_default(), UInt::MIN);
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
            notification.room_name = state_field(&self.db, room, "m.room.name", "", "name").await?;
            notification.room_alias = state_field(&self.db, room, "m.room.canonical_alias", "", "alias")
                .await?
                .and_then(|a| ruma::RoomAliasId::parse(a).ok());
        }
        Ok(notification)
    }

    /// POSTs to the gateway with retries; returns the pushkeys it rejected.
    async fn post(&self, url: &str, notification: Notification) -> anyhow::Result<Vec<String>> {
        self.check_destination(url).await?;
        let body = Request::new(notification)
            .try_into_http_request::<Vec<u8>>("http://gateway.invalid", (), ())?
            .into_body();
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

    /// Refuses destinations in the blocklisted address ranges.
    pub async fn check_destination(&self, url: &str) -> anyhow::Result<()> {
        let parsed = reqwest::Url::parse(url)?;
        let host = parsed.host_str().ok_or_else(|| anyhow::anyhow!("push gateway URL has no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port)).await?.map(|a| a.ip()).collect(),
        };
        if let Some(blocked) = addresses.iter().find(|ip| self.blocklist.iter().any(|net| net.contains(*ip))) {
            anyhow::bail!("push gateway address {blocked} is in a blocked range");
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocked_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("g.db").display())).await.unwrap();
        let gateway = Gateway::new(db, crate::config::FederationConfig::default().ip_range_blocklist);
        for url in [
            "http://127.0.0.1:8000/_matrix/push/v1/notify",
            "http://[::1]:8000/_matrix/push/v1/notify",
            "http://10.1.2.3/_matrix/push/v1/notify",
            "http://192.168.0.10/_matrix/push/v1/notify",
            "http://169.254.169.254/_matrix/push/v1/notify",
        ] {
            assert!(gateway.check_destination(url).await.is_err(), "{url} should be refused");
        }
        assert!(gateway.check_destination("http://93.184.216.34/_matrix/push/v1/notify").await.is_ok());
    }
}
