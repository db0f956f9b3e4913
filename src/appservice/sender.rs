//! Transactions to application services: one task per service reads the event stream from
//! its persisted position, keeps the events it is interested in, and sends them in order,
//! at most 100 a transaction.
//!
//! A transaction is written (body and id) in the same database transaction that moves the
//! service's position past its events, and deleted only when the service answers 200: a
//! service that is down is retried with backoff, after a restart too, with the same id and
//! body, so it can drop a repeat. Each service has its own task: a slow or dead one delays
//! no one else, clients included.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{
    api::appservice::event::push_events,
    events::TimelineEventType,
    serde::Raw,
    OwnedTransactionId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    client::AppServiceClient,
    ephemeral::{EphemeralItem, EphemeralOutbox},
    AppService, AppServices,
};
use crate::{
    rooms::{pdu_from_row, Rooms},
    storage::{aliases as alias_repo, appservice as repo, events as event_repo, rooms as room_repo, Db},
};

/// Events per transaction (Synapse's and the limit).
const MAX_EVENTS: usize = 100;
/// Stream rows read per pass while looking for events of interest.
const SCAN_ROWS: i64 = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A transaction as stored until acknowledged.
#[derive(Serialize, Deserialize, Default)]
struct TxnBody {
    events: Vec<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ephemeral: Vec<Box<RawValue>>,
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
                    tokio::select! {
                        _ = persisted.changed() => {}
                        _ = ephemeral.changed() => {}
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
        let start = event_repo::max_stream_ordering(self.db.pool()).await?;
        let (position, last_txn_id) = {
            let mut tx = self.db.begin_write().await?;
            let found = repo::position(&mut tx, service.id(), start).await?;
            tx.commit().await?;
            found
        };
        let (events, scanned_to) = self.interesting_events(service, position).await?;
        // Ephemeral data rides along; taken only when a transaction will be written.
        let ephemeral = if service.receive_ephemeral { self.ephemeral_of_interest(service, self.ephemeral.take(service.id())).await? } else { Vec::new() };
        if events.is_empty() && ephemeral.is_empty() {
            if scanned_to > position {
                let mut tx = self.db.begin_write().await?;
                repo::set_position(&mut tx, service.id(), scanned_to, last_txn_id).await?;
                tx.commit().await?;
                return Ok(Step::Queued);
            }
            return Ok(Step::Idle);
        }
        let body = TxnBody { events, ephemeral };
        let txn_id = last_txn_id + 1;
        let mut tx = self.db.begin_write().await?;
        repo::insert_txn(&mut tx, service.id(), txn_id, &serde_json::to_string(&body)?).await?;
        repo::set_position(&mut tx, service.id(), scanned_to, txn_id).await?;
        tx.commit().await?;
        Ok(Step::Queued)
    }

    async fn send(&self, service: &AppService, txn_id: i64, body: &str) -> anyhow::Result<()> {
        let body: TxnBody = serde_json::from_str(body)?;
        let events = body.events.into_iter().map(Raw::from_json).collect();
        let mut request = push_events::v1::Request::new(OwnedTransactionId::from(txn_id.to_string()), events);
        request.ephemeral = body.ephemeral.into_iter().map(Raw::from_json).collect();
        self.client.call(service, request, TRANSACTION_TIMEOUT).await?;
        tracing::debug!(appservice = service.id(), txn_id, "application service acknowledged a transaction");
        Ok(())
    }

    /// The service's events after `position` (client format, oldest first, at most
    /// `MAX_EVENTS`), and the stream position they reach.
    async fn interesting_events(&self, service: &AppService, position: i64) -> anyhow::Result<(Vec<Box<RawValue>>, i64)> {
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
