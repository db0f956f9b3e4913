//! Batched sends: messages sent to a room at the same moment share one transaction (one
//! commit, one fsync) instead of queueing for the room's lock one commit at a time.
//!
//! Each send joins the room's queue, then takes the room's lock; whoever holds it takes the
//! whole queue, builds each event on top of the previous one, checks each (a failing event
//! is answered with its error and left out), writes them all in one transaction and answers
//! every sender after the commit. A send whose event was taken by an earlier holder finds
//! its answer waiting. The batch runs in its own task so a disconnecting client cannot cut
//! it short for everyone else.

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::oneshot;

use super::{persist::Head, ClientTxn, EventTemplate, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{events as event_repo, rooms as room_repo},
};

/// Most events in one transaction.
const MAX_BATCH: usize = 256;

/// A send waiting for its room's batch.
pub struct PendingSend {
    sender: OwnedUserId,
    template: EventTemplate,
    /// (device id, txn id)
    txn: Option<(String, String)>,
    reply: oneshot::Sender<Result<OwnedEventId>>,
}

impl Rooms {
    pub(super) async fn send_batched(&self, room_id: &RoomId, sender: &UserId, template: EventTemplate, txn: ClientTxn<'_>) -> Result<OwnedEventId> {
        let (reply, mut answer) = oneshot::channel();
        let pending = PendingSend { sender: sender.to_owned(), template, txn: txn.map(|(d, t)| (d.to_owned(), t.to_owned())), reply };
        self.pending_sends.lock().unwrap_or_else(|p| p.into_inner()).entry(room_id.to_owned()).or_default().push(pending);
        // Either a batch run by someone else answers first, or this send gets the lock and
        // runs the batch (with everything queued meanwhile) itself.
        let guard = tokio::select! {
            answered = &mut answer => return answered.map_err(|_| MatrixError::internal("the send was dropped"))?,
            guard = self.room_lock(room_id).lock_owned() => guard,
        };
        let batch = self.take_pending(room_id);
        if batch.is_empty() {
            // A batch that ended just now took (and answered) this send.
            drop(guard);
        } else {
            let (this, room_id) = (self.clone(), room_id.to_owned());
            let run = tokio::spawn(async move {
                this.run_batch(&room_id, batch).await;
                drop(guard);
            });
            run.await.map_err(|e| MatrixError::internal(format!("batch failed: {e}")))?;
        }
        answer.await.map_err(|_| MatrixError::internal("the send was dropped"))?
    }

    fn take_pending(&self, room_id: &RoomId) -> Vec<PendingSend> {
        let mut pending = self.pending_sends.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = pending.get_mut(room_id) else { return Vec::new() };
        let rest = queue.split_off(queue.len().min(MAX_BATCH));
        let batch = std::mem::replace(queue, rest);
        if queue.is_empty() {
            pending.remove(room_id);
        }
        batch
    }

    /// Builds, checks and writes a batch under the room's lock; answers every send.
    async fn run_batch(&self, room_id: &RoomId, batch: Vec<PendingSend>) {
        let started = std::time::Instant::now();
        let size = batch.len();
        let mut replies = Vec::new();
        self.write_batch(room_id, batch, &mut replies).await;
        for (reply, answer) in replies {
            let _ = reply.send(answer);
        }
        tracing::debug!(%room_id, size, took = ?started.elapsed(), "batch of sends");
    }

    /// Everything but answering: `replies` gets every send's answer.
    async fn write_batch(
        &self,
        room_id: &RoomId,
        batch: Vec<PendingSend>,
        replies: &mut Vec<(oneshot::Sender<Result<OwnedEventId>>, Result<OwnedEventId>)>,
    ) {
        let version = match self.room_version(room_id).await {
            Ok(version) => version,
            Err(error) => {
                replies.extend(batch.into_iter().map(|p| (p.reply, Err(error.clone()))));
                return;
            }
        };
        // Retried transactions: already sent (answered with the first event), or twice in
        // this batch (answered with the first copy's event).
        let keys: Vec<(&str, &str, &str)> = batch
            .iter()
            .filter_map(|p| p.txn.as_ref().map(|(device, txn_id)| (p.sender.as_str(), device.as_str(), txn_id.as_str())))
            .collect();
        let sent: HashMap<(String, String, String), String> = match event_repo::txn_events(self.db.pool(), room_id.as_str(), &keys).await {
            Ok(rows) => rows.into_iter().map(|(user, device, txn_id, event_id)| ((user, device, txn_id), event_id)).collect(),
            Err(error) => {
                let error = MatrixError::from(error);
                replies.extend(batch.into_iter().map(|p| (p.reply, Err(error.clone()))));
                return;
            }
        };
        let mut first_of_txn: HashMap<(OwnedUserId, String, String), usize> = HashMap::new();
        let mut duplicates: Vec<(usize, oneshot::Sender<Result<OwnedEventId>>)> = Vec::new();
        let mut fresh = Vec::new();
        for pending in batch {
            if let Some((device, txn_id)) = &pending.txn {
                if let Some(event_id) = sent.get(&(pending.sender.to_string(), device.clone(), txn_id.clone())) {
                    replies.push((pending.reply, ruma::EventId::parse(event_id.as_str()).map_err(Into::into)));
                    continue;
                }
                let key = (pending.sender.clone(), device.clone(), txn_id.clone());
                if let Some(&index) = first_of_txn.get(&key) {
                    duplicates.push((index, pending.reply));
                    continue;
                }
                first_of_txn.insert(key, fresh.len());
            }
            fresh.push(pending);
        }

        let extremities = event_repo::forward_extremities(self.db.pool(), room_id.as_str()).await.map_err(MatrixError::from);
        let facts = match self.room_facts(room_id).await {
            Ok(facts) => std::sync::Arc::new(facts),
            Err(error) => {
                replies.extend(fresh.into_iter().map(|p| (p.reply, Err(error.clone()))));
                return;
            }
        };
        let mut head = match extremities.as_deref() {
            Ok([(id, depth, group)]) if ruma::EventId::parse(id.as_str()).is_ok() => Head {
                prev: ruma::EventId::parse(id.as_str()).expect("checked"),
                depth: *depth,
                state_group: *group,
                facts: facts.clone(),
            },
            Err(error) => {
                replies.extend(fresh.into_iter().map(|p| (p.reply, Err(error.clone()))));
                return;
            }
            _ => {
                // A forked room (or an empty one): its next event merges the forks and gets a
                // new state group on write, so these go one by one, the usual way.
                for pending in fresh {
                    let txn = pending.txn.as_ref().map(|(d, t)| (d.as_str(), t.as_str()));
                    let answer = self.send_locked(room_id, &version, &pending.sender, pending.template, txn).await;
                    replies.push((pending.reply, answer));
                }
                return;
            }
        };
        let mut prepared = Vec::new();
        let mut outcomes: Vec<Result<OwnedEventId>> = Vec::new();
        let mut senders = Vec::new();
        for pending in fresh {
            let txn = pending.txn.as_ref().map(|(d, t)| (pending.sender.as_str(), d.as_str(), t.as_str()));
            let built = match self.build_local(room_id, &version, &pending.sender, pending.template, Some(&head)).await {
                Ok(pdu) => self.prepare(pdu, &version, txn, None, false, Some(&head)).await,
                Err(error) => Err(error),
            };
            match built {
                Ok(Some(ready)) => {
                    // Messages keep the state of the event before them.
                    head = Head {
                        prev: ready.pdu.event_id.clone(),
                        depth: ready.pdu.fields.depth as i64,
                        state_group: head.state_group,
                        facts: facts.clone(),
                    };
                    outcomes.push(Ok(ready.pdu.event_id.clone()));
                    prepared.push(ready);
                }
                Ok(None) => outcomes.push(Err(MatrixError::internal("a local event cannot soft-fail"))),
                Err(error) => outcomes.push(Err(error)),
            }
            senders.push(pending.reply);
        }

        let mut answers: Vec<Result<OwnedEventId>> = outcomes;
        match self.write_all(&prepared).await {
            Ok(streams) => {
                for (event, stream) in prepared.into_iter().zip(streams) {
                    if let Err(error) = self.announce(event, stream).await {
                        tracing::warn!(error = %error.message, "announcing a stored event failed");
                    }
                }
            }
            // A failed transaction fails every send that was in it.
            Err(error) => {
                for answer in answers.iter_mut().filter(|a| a.is_ok()) {
                    *answer = Err(error.clone());
                }
            }
        }
        for (index, reply) in duplicates {
            replies.push((reply, answers[index].clone()));
        }
        replies.extend(senders.into_iter().zip(answers));
    }

    /// The room's memberships as a batch of messages needs them.
    async fn room_facts(&self, room_id: &RoomId) -> Result<super::persist::RoomFacts> {
        let joined = room_repo::joined_members_with_events(self.db.pool(), room_id.as_str()).await?;
        let interested = room_repo::interested_users(self.db.pool(), room_id.as_str()).await?;
        let mut remote_servers: Vec<String> = joined
            .iter()
            .filter_map(|(user, _)| UserId::parse(user.as_str()).ok())
            .map(|user| user.server_name().to_string())
            .filter(|server| server != self.server_name().as_str())
            .collect();
        remote_servers.sort();
        remote_servers.dedup();
        Ok(super::persist::RoomFacts { joined, interested, remote_servers })
    }

    /// One transaction for the whole batch; the stream position of each event.
    async fn write_all(&self, prepared: &[super::persist::Prepared]) -> Result<Vec<i64>> {
        let mut streams = Vec::with_capacity(prepared.len());
        if prepared.is_empty() {
            return Ok(streams);
        }
        let mut tx = self.db.begin_write().await?;
        for event in prepared {
            streams.push(self.write(&mut tx, event).await?);
        }
        tx.commit().await?;
        Ok(streams)
    }
}

/// The rooms' send queues.
pub type PendingSends = std::sync::Mutex<HashMap<OwnedRoomId, Vec<PendingSend>>>;
