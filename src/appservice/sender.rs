//! Transactions to application services: one task per service reads the event stream from
//! its persisted position, keeps the events it is interested in, and sends them in order,
//! at most 100 a transaction.
//!
//! A transaction is written (body and id) in the same database transaction that moves the
//! service's position past its events, and deleted only when the service answers 200: a
//! service that is down is retried with backoff, after a restart too, with the same id and
//! body, so it can drop a repeat. Each service has its own task: a slow or dead one delays
//! no one else, clients included.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use ruma::{
    api::appservice::event::push_events,
    events::TimelineEventType,
    serde::Raw,
    OwnedTransactionId, UInt, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Value};

use super::{
    client::AppServiceClient,
    ephemeral::{EphemeralItem, EphemeralOutbox},
    AppService, AppServices,
};
use crate::{
    rooms::{pdu_from_row, Rooms},
    storage::{
        accounts as account_repo, aliases as alias_repo, appservice as repo, e2ee as e2ee_repo, events as event_repo, rooms as room_repo,
        to_device as to_device_repo, Db,
    },
};

/// Events per transaction (Synapse's and the limit).
const MAX_EVENTS: usize = 100;
/// Stream rows read per pass while looking for events of interest.
const SCAN_ROWS: i64 = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
const DEVICE_LIST_POLL: Duration = Duration::from_secs(2);

/// A transaction as stored until acknowledged.
#[derive(Serialize, Deserialize, Default)]
struct TxnBody {
    events: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ephemeral: Vec<Box<RawValue>>,
    /// MSC2409: to-device messages for the service's users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    to_device: Vec<Box<RawValue>>,
    /// MSC3202: users whose device lists changed, and the service's users' key counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    device_lists_changed: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    one_time_key_counts: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    unused_fallback_key_types: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl TxnBody {
    /// Whether it carries anything a service must be sent (key counts alone are not news).
    fn has_news(&self) -> bool {
        !(self.events.is_empty() && self.ephemeral.is_empty() && self.to_device.is_empty() && self.device_lists_changed.is_empty())
    }
}

#[derive(Clone)]
pub struct TransactionSender {
    db: Db,
    rooms: Rooms,
    services: AppServices,
    client: AppServiceClient,
    ephemeral: EphemeralOutbox,
}

impl TransactionSender {
    pub fn new(db: Db, rooms: Rooms, services: AppServices, client: AppServiceClient, ephemeral: EphemeralOutbox) -> Self {
        Self { db, rooms, services, client, ephemeral }
    }

    /// One task per service that has a url, until `shutdown` turns true. Stopping midway
    /// loses nothing: what was not acknowledged is sent again by the next start.
    pub fn spawn(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        for service in self.services.all() {
            if service.url().is_none() {
                continue;
            }
            let (this, service, mut shutdown) = (self.clone(), service.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = this.run(service) => {}
                    _ = shutdown.wait_for(|stopping| *stopping) => {}
                }
            });
        }
    }

    async fn run(&self, service: Arc<AppService>) {
        let mut persisted = self.rooms.subscribe_persisted();
        let mut ephemeral = self.ephemeral.subscribe();
        let mut backoff = Duration::from_secs(1);
        loop {
            persisted.borrow_and_update();
            ephemeral.borrow_and_update();
            match self.step(&service).await {
                Ok(Step::Sent | Step::Queued) => backoff = Duration::from_secs(1),
                Ok(Step::Idle) => {
                    // Device-list changes wake nobody: a service that wants them looks again
                    // every couple of seconds.
                    let poll = if service.device_lists { DEVICE_LIST_POLL } else { Duration::from_secs(3600) };
                    tokio::select! {
                        _ = persisted.changed() => {}
                        _ = ephemeral.changed() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(appservice = service.id(), %error, retry_in = ?backoff, "application service transaction failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends the oldest unacknowledged transaction, or makes the next one.
    async fn step(&self, service: &AppService) -> anyhow::Result<Step> {
        if let Some((txn_id, body)) = repo::oldest_txn(self.db.pool(), service.id()).await? {
            self.send(service, txn_id, &body).await?;
            let mut tx = self.db.begin_write().await?;
            repo::delete_txn(&mut tx, service.id(), txn_id).await?;
            tx.commit().await?;
            return Ok(Step::Sent);
        }
        // Read without a write transaction: this runs on every wake.
        let positions = match repo::read_positions(self.db.pool(), service.id()).await? {
            Some(positions) => positions,
            None => {
                let start = repo::Positions {
                    events: event_repo::max_stream_ordering(self.db.pool()).await?,
                    to_device: to_device_repo::max_position(self.db.pool()).await?,
                    device_lists: e2ee_repo::max_device_list_position(self.db.pool()).await?,
                    last_txn_id: 0,
                };
                let mut tx = self.db.begin_write().await?;
                let found = repo::start_positions(&mut tx, service.id(), start).await?;
                tx.commit().await?;
                found
            }
        };
        let mut next = positions;
        // The service's local users this transaction concerns: their key counts go with it.
        let mut users = BTreeSet::new();
        let (events, scanned_to) = self.interesting_events(service, positions.events, &mut users).await?;
        next.events = scanned_to;
        let mut body = TxnBody { events, ..TxnBody::default() };
        // Ephemeral data rides along; taken only when a transaction will be written.
        if service.receive_ephemeral {
            body.ephemeral = self.ephemeral_of_interest(service, self.ephemeral.take(service.id())).await?;
            let (to_device, reached) = self.to_device_of_interest(service, positions.to_device, &mut users).await?;
            body.to_device = to_device;
            next.to_device = reached;
        }
        if service.device_lists {
            let (changed, reached) = self.device_list_changes(service, positions.device_lists, &mut users).await?;
            body.device_lists_changed = changed;
            next.device_lists = reached;
        }
        if !body.has_news() {
            if next != positions {
                let mut tx = self.db.begin_write().await?;
                repo::set_positions(&mut tx, service.id(), next).await?;
                tx.commit().await?;
                return Ok(Step::Queued);
            }
            return Ok(Step::Idle);
        }
        if service.device_lists {
            self.key_counts(&users, &mut body).await?;
        }
        next.last_txn_id = positions.last_txn_id + 1;
        let mut tx = self.db.begin_write().await?;
        repo::insert_txn(&mut tx, service.id(), next.last_txn_id, &serde_json::to_string(&body)?).await?;
        repo::set_positions(&mut tx, service.id(), next).await?;
        tx.commit().await?;
        Ok(Step::Queued)
    }

    /// To-device messages after `position` for the service's users (MSC2409 form, with
    /// `to_user_id` and `to_device_id`), and the position reached.
    async fn to_device_of_interest(&self, service: &AppService, position: i64, users: &mut BTreeSet<String>) -> anyhow::Result<(Vec<Box<RawValue>>, i64)> {
        let mut reached = position;
        let mut kept = Vec::new();
        for (stream, user_id, device_id, sender, kind, content) in repo::to_device_after(self.db.pool(), position, MAX_EVENTS as i64).await? {
            reached = stream;
            if !service.is_interested_in_user(&user_id) {
                continue;
            }
            let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
            let message = json!({ "type": kind, "sender": sender, "content": content, "to_user_id": user_id, "to_device_id": device_id });
            kept.push(serde_json::value::to_raw_value(&message)?);
            users.insert(user_id);
        }
        Ok((kept, reached))
    }

    /// Users whose device lists changed after `position` and who are the service's or share a
    /// room of interest with it (as Synapse decides; "left" is not computed, as in Synapse),
    /// and the position reached.
    async fn device_list_changes(&self, service: &AppService, position: i64, users: &mut BTreeSet<String>) -> anyhow::Result<(Vec<String>, i64)> {
        let mut reached = position;
        let mut changed: Vec<String> = Vec::new();
        let mut rooms: HashMap<String, bool> = HashMap::new();
        for (stream, user_id) in repo::device_list_changes_after(self.db.pool(), position, SCAN_ROWS).await? {
            reached = stream;
            if changed.contains(&user_id) {
                continue;
            }
            let mut interested = service.is_interested_in_user(&user_id);
            if interested && self.is_local(&user_id) {
                users.insert(user_id.clone());
            }
            if !interested {
                for room_id in room_repo::rooms_with_membership(self.db.pool(), &user_id, "join").await? {
                    if self.room_is_of_interest(service, &room_id, &mut rooms).await? {
                        interested = true;
                        break;
                    }
                }
            }
            if interested {
                changed.push(user_id);
            }
        }
        Ok((changed, reached))
    }

    /// One-time-key counts and unused fallback key types of every device of these users.
    async fn key_counts(&self, users: &BTreeSet<String>, body: &mut TxnBody) -> anyhow::Result<()> {
        for user_id in users {
            for device in account_repo::list_devices(self.db.pool(), user_id).await? {
                let (counts, fallback) = e2ee_repo::key_state(self.db.pool(), user_id, &device.device_id).await?;
                let counts: BTreeMap<String, u64> = counts.into_iter().map(|(algorithm, n)| (algorithm, n.max(0) as u64)).collect();
                body.one_time_key_counts.entry(user_id.clone()).or_default().insert(device.device_id.clone(), counts);
                body.unused_fallback_key_types.entry(user_id.clone()).or_default().insert(device.device_id, fallback);
            }
        }
        Ok(())
    }

    fn is_local(&self, user_id: &str) -> bool {
        user_id.rsplit_once(':').is_some_and(|(_, server)| server == self.rooms.server_name().as_str())
    }

    async fn send(&self, service: &AppService, txn_id: i64, body: &str) -> anyhow::Result<()> {
        let body: TxnBody = serde_json::from_str(body)?;
        let events = body.events.into_iter().map(Raw::from_json).collect();
        let mut request = push_events::v1::Request::new(OwnedTransactionId::from(txn_id.to_string()), events);
        request.ephemeral = body.ephemeral.into_iter().map(Raw::from_json).collect();
        request.to_device = body.to_device.into_iter().map(Raw::from_json).collect();
        request.device_lists.changed = body.device_lists_changed.iter().filter_map(|user| UserId::parse(user.as_str()).ok()).collect();
        for (user, devices) in body.one_time_key_counts {
            let Ok(user) = UserId::parse(user) else { continue };
            let devices = devices
                .into_iter()
                .map(|(device, counts)| {
                    let counts = counts.into_iter().map(|(algorithm, n)| (algorithm.as_str().into(), UInt::try_from(n).unwrap_or_default())).collect();
                    (device.into(), counts)
                })
                .collect();
            request.device_one_time_keys_count.insert(user, devices);
        }
        for (user, devices) in body.unused_fallback_key_types {
            let Ok(user) = UserId::parse(user) else { continue };
            let devices = devices
                .into_iter()
                .map(|(device, algorithms)| (device.into(), algorithms.iter().map(|a| a.as_str().into()).collect()))
                .collect();
            request.device_unused_fallback_key_types.insert(user, devices);
        }
        self.client.call(service, request, TRANSACTION_TIMEOUT).await?;
        tracing::debug!(appservice = service.id(), txn_id, "application service acknowledged a transaction");
        Ok(())
    }

    /// The service's events after `position` (client format, oldest first, at most
    /// `MAX_EVENTS`), and the stream position they reach.
    async fn interesting_events(&self, service: &AppService, position: i64, users: &mut BTreeSet<String>) -> anyhow::Result<(Vec<Box<RawValue>>, i64)> {
        let rows = repo::events_after(self.db.pool(), position, SCAN_ROWS).await?;
        let mut rooms: HashMap<String, bool> = HashMap::new();
        let mut events = Vec::new();
        let mut scanned_to = position;
        for (stream, event_id, room_id, json) in rows {
            if events.len() == MAX_EVENTS {
                break;
            }
            scanned_to = stream;
            let Ok(pdu) = pdu_from_row(&event_id, &room_id, &json) else { continue };
            let interested = service.is_interested_in_user(pdu.fields.sender.as_str())
                || pdu.state_key().is_some_and(|key| *pdu.kind() == TimelineEventType::RoomMember && service.is_interested_in_user(key))
                || self.room_is_of_interest(service, &room_id, &mut rooms).await?;
            if interested {
                events.push(serde_json::value::to_raw_value(&pdu.to_client_event())?);
                let member = pdu.state_key().filter(|_| *pdu.kind() == TimelineEventType::RoomMember);
                for user in [Some(pdu.fields.sender.as_str()), member].into_iter().flatten() {
                    if service.is_interested_in_user(user) && self.is_local(user) {
                        users.insert(user.to_owned());
                    }
                }
            }
        }
        Ok((events, scanned_to))
    }
}

impl TransactionSender {
    /// A room is of interest when its id or one of its aliases is in the service's
    /// namespaces, or one of its local members is (answers cached in `known` for a batch).
    async fn room_is_of_interest(&self, service: &AppService, room_id: &str, known: &mut HashMap<String, bool>) -> anyhow::Result<bool> {
        if let Some(answer) = known.get(room_id) {
            return Ok(*answer);
        }
        let answer = service.is_interested_in_room(room_id)
            || alias_repo::for_room(self.db.pool(), room_id).await?.iter().any(|alias| service.is_interested_in_alias(alias))
            || {
                let suffix = format!(":{}", self.rooms.server_name());
                room_repo::joined_members(self.db.pool(), room_id)
                    .await?
                    .iter()
                    .any(|member| member.ends_with(&suffix) && service.is_interested_in_user(member))
            };
        known.insert(room_id.to_owned(), answer);
        Ok(answer)
    }

    /// The held ephemeral data this service is interested in: typing and receipts in rooms
    /// of interest, presence of its users and of users sharing a room of interest.
    async fn ephemeral_of_interest(&self, service: &AppService, items: Vec<EphemeralItem>) -> anyhow::Result<Vec<Box<RawValue>>> {
        let mut rooms: HashMap<String, bool> = HashMap::new();
        let mut kept = Vec::new();
        for item in items {
            let interested = match (&item.room_id, &item.user_id) {
                (Some(room_id), _) => self.room_is_of_interest(service, room_id, &mut rooms).await?,
                (None, Some(user_id)) => {
                    let mut interested = service.is_interested_in_user(user_id);
                    if !interested {
                        for room_id in room_repo::rooms_with_membership(self.db.pool(), user_id, "join").await? {
                            if self.room_is_of_interest(service, &room_id, &mut rooms).await? {
                                interested = true;
                                break;
                            }
                        }
                    }
                    interested
                }
                (None, None) => false,
            };
            if interested {
                kept.push(serde_json::value::to_raw_value(&item.edu)?);
            }
        }
        Ok(kept)
    }
}

enum Step {
    /// A transaction was acknowledged.
    Sent,
    /// A transaction was written, or the position moved past events of no interest.
    Queued,
    /// Nothing new.
    Idle,
}
