//! Transactions: PUT /send from other servers (PDUs through the pipeline, EDUs to their
//! services), and the sender that delivers this server's queue to each destination.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, Json};
use ruma::{
    api::federation::transactions::send_transaction_message, MilliSecondsSinceUnixEpoch, OwnedTransactionId, RoomId,
    ServerName, UserId,
};
use serde_json::{json, value::RawValue, Map, Value};

use super::Federation;
use crate::{
    client_api::extract::Ruma,
    error::{MatrixError, Result},
    storage::federation as repo,
};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// PUT /send/{txnId}.
pub async fn receive(
    State(federation): State<Federation>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<Json<Value>> {
    let origin = request.origin.clone().ok_or_else(|| MatrixError::forbidden("Unsigned transaction"))?;
    let b = &request.body;
    if b.origin != origin {
        return Err(MatrixError::forbidden("The transaction's origin is not the signing server"));
    }
    if b.pdus.len() > MAX_PDUS || b.edus.len() > MAX_EDUS {
        return Err(MatrixError::bad_json("Too many PDUs or EDUs in one transaction"));
    }
    if let Some(previous) = repo::txn_response(federation.db.pool(), origin.as_str(), b.transaction_id.as_str()).await? {
        return Ok(Json(serde_json::from_str(&previous)?));
    }
    let mut results = Map::new();
    for pdu in &b.pdus {
        // A PDU whose event id cannot be known (no room id, a room this server is not in,
        // unparseable) is left out of the results, as Synapse does: the map is keyed by id.
        let Some((event_id, outcome)) = federation.receive_from(&origin, pdu).await else { continue };
        let entry = match outcome {
            Ok(()) => json!({}),
            Err(error) => json!({ "error": error }),
        };
        results.insert(event_id, entry);
    }
    for edu in &b.edus {
        if let Ok(edu) = serde_json::from_str::<Value>(edu.json().get()) {
            if let Err(error) = federation.receive_edu(&origin, &edu).await {
                tracing::info!(%origin, %error, "ignored an EDU");
            }
        }
    }
    let response = json!({ "pdus": results });
    repo::save_txn_response(federation.db.pool(), origin.as_str(), b.transaction_id.as_str(), &response.to_string()).await?;
    Ok(Json(response))
}

impl Federation {
    /// One PDU of a transaction: its id and the outcome, or None when its id cannot be known.
    async fn receive_from(&self, origin: &ServerName, raw: &RawValue) -> Option<(String, std::result::Result<(), String>)> {
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        let Some(room_id) = value["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()) else {
            tracing::info!(%origin, "ignored a PDU without a room id");
            return None;
        };
        let Ok(version) = self.rooms.room_version(&room_id).await else {
            tracing::info!(%origin, %room_id, "ignored a PDU for a room this server is not in");
            return None;
        };
        let id_hint = match crate::federation::pipeline::parse_pdu(raw, &version) {
            Ok((pdu, _)) => pdu.event_id.to_string(),
            Err(error) => {
                tracing::info!(%origin, %room_id, error = %error.message, "ignored an unparseable PDU");
                return None;
            }
        };
        if let Err(message) = self.check_origin_in_room(origin, &room_id, &value).await {
            return Some((id_hint, Err(message)));
        }
        if let Err(error) = self.check_acl(&room_id, origin).await {
            return Some((id_hint, Err(error.message)));
        }
        match self.receive_pdu(origin, raw, &version).await {
            Ok(_) => Some((id_hint, Ok(()))),
            Err(error) => {
                tracing::info!(%origin, event_id = %id_hint, %error, "rejected PDU");
                Some((id_hint, Err(error.message)))
            }
        }
    }

    /// Events come only from servers in the room (or with their own user's join).
    async fn check_origin_in_room(&self, origin: &ServerName, room_id: &RoomId, event: &Value) -> std::result::Result<(), String> {
        let servers = self.rooms.remote_servers(self.db.pool(), room_id.as_str()).await.map_err(|e| e.message)?;
        if servers.iter().any(|s| s == origin.as_str()) {
            return Ok(());
        }
        let own_membership = event["type"] == "m.room.member"
            && event["state_key"].as_str().and_then(|k| UserId::parse(k).ok()).is_some_and(|u| u.server_name() == origin);
        if own_membership {
            return Ok(());
        }
        Err(format!("{origin} is not in {room_id}"))
    }

    /// Starts the sender: one delivery loop per destination with something queued, with
    /// exponential backoff per destination so no destination holds up another.
    pub fn spawn_sender(&self, max_retry_delay: Duration) {
        let this = self.clone();
        let state: Arc<Mutex<HashMap<String, Destination>>> = Arc::default();
        tokio::spawn(async move {
            loop {
                match repo::destinations_with_queue(this.db.pool()).await {
                    Ok(destinations) => {
                        for destination in destinations {
                            let due = {
                                let mut map = state.lock().unwrap_or_else(|p| p.into_inner());
                                let entry = map.entry(destination.clone()).or_default();
                                let due = !entry.busy && entry.retry_at.is_none_or(|at| at <= tokio::time::Instant::now());
                                if due {
                                    entry.busy = true;
                                }
                                due
                            };
                            if due {
                                let (this, state) = (this.clone(), state.clone());
                                tokio::spawn(async move {
                                    let ok = this.deliver(&destination).await;
                                    let mut map = state.lock().unwrap_or_else(|p| p.into_inner());
                                    let entry = map.entry(destination.clone()).or_default();
                                    entry.busy = false;
                                    if ok {
                                        entry.delay = Duration::ZERO;
                                        entry.retry_at = None;
                                    } else {
                                        entry.delay = (entry.delay * 2).clamp(Duration::from_millis(500), max_retry_delay);
                                        entry.retry_at = Some(tokio::time::Instant::now() + entry.delay);
                                        tracing::info!(%destination, delay = ?entry.delay, "destination unreachable, backing off");
                                    }
                                    drop(map);
                                    this.outbox.wake();
                                });
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "reading the federation queue failed"),
                }
                tokio::select! {
                    _ = this.outbox.wait() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }

    /// Sends everything queued for a destination, a transaction at a time. False on failure.
    async fn deliver(&self, destination: &str) -> bool {
        let Ok(server) = ServerName::parse(destination) else {
            let _ = repo::dequeue_up_to(self.db.pool(), destination, i64::MAX).await;
            return true;
        };
        loop {
            let items = match repo::queued(self.db.pool(), destination, (MAX_PDUS + MAX_EDUS) as i64).await {
                Ok(items) => items,
                Err(_) => return false,
            };
            if items.is_empty() {
                return true;
            }
            let mut pdus: Vec<Box<RawValue>> = Vec::new();
            let mut edus: Vec<ruma::serde::Raw<ruma::api::federation::transactions::edu::Edu>> = Vec::new();
            let mut last_id = 0;
            for (id, kind, payload) in items {
                // Keep the queue's order: stop at the first item over its kind's limit.
                let full = if kind == "pdu" { pdus.len() >= MAX_PDUS } else { edus.len() >= MAX_EDUS };
                if full {
                    break;
                }
                match RawValue::from_string(payload) {
                    Ok(raw) if kind == "pdu" => pdus.push(raw),
                    Ok(raw) => edus.push(ruma::serde::Raw::from_json(raw)),
                    Err(_) => tracing::warn!(%destination, id, "dropping an unreadable queued item"),
                }
                last_id = id;
            }
            let txn_id: OwnedTransactionId = crate::accounts::random_string(20).into();
            let mut request = send_transaction_message::v1::Request::new(txn_id, self.server_name().to_owned(), MilliSecondsSinceUnixEpoch::now());
            request.pdus = pdus;
            request.edus = edus;
            match self.send_http(&server, request).await {
                // A 2xx answer means the destination took the transaction, whatever its body
                // says: a malformed body is logged, never retried (that would wedge the queue).
                Ok(response) if response.status().is_success() => {
                    log_pdu_results(destination, response.body());
                    if repo::dequeue_up_to(self.db.pool(), destination, last_id).await.is_err() {
                        return false;
                    }
                }
                Ok(response) => {
                    tracing::debug!(%destination, status = %response.status(), "transaction refused");
                    return false;
                }
                Err(error) => {
                    tracing::debug!(%destination, %error, "transaction failed");
                    return false;
                }
            }
        }
    }
}

/// Logs the PDUs a destination rejected; a body that is not the spec's shape is logged too.
fn log_pdu_results(destination: &str, body: &[u8]) {
    let results = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("pdus").and_then(Value::as_object).cloned());
    let Some(results) = results else {
        tracing::info!(%destination, "destination accepted a transaction with a malformed response");
        return;
    };
    for (event_id, result) in results {
        if let Some(error) = result.get("error") {
            tracing::info!(%destination, %event_id, %error, "destination rejected a PDU");
        }
    }
}

#[derive(Default)]
struct Destination {
    busy: bool,
    delay: Duration,
    retry_at: Option<tokio::time::Instant>,
}

impl Federation {
    /// Applies an EDU: typing, receipts and presence of the origin's users.
    async fn receive_edu(&self, origin: &ServerName, edu: &Value) -> Result<()> {
        let content = &edu["content"];
        let user_of = |value: &Value| -> Option<ruma::OwnedUserId> {
            value.as_str().and_then(|u| UserId::parse(u).ok()).filter(|u| u.server_name() == origin)
        };
        match edu["edu_type"].as_str() {
            Some("m.typing") => {
                let (Some(room_id), Some(user)) = (content["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()), user_of(&content["user_id"])) else {
                    return Err(MatrixError::bad_json("m.typing without room or user of the origin"));
                };
                self.check_acl(&room_id, origin).await?;
                if self.rooms.membership_of(&room_id, &user).await?.as_deref() != Some("join") {
                    return Err(MatrixError::forbidden("typing user is not in the room"));
                }
                let typing = content["typing"].as_bool().unwrap_or(false);
                self.ephemeral.typing.set(&room_id, &user, typing, Duration::from_secs(30)).await
            }
            Some("m.receipt") => {
                let Some(rooms) = content.as_object() else { return Ok(()) };
                for (room, by_type) in rooms {
                    let Ok(room_id) = RoomId::parse(room.as_str()) else { continue };
                    if self.check_acl(&room_id, origin).await.is_err() {
                        continue;
                    }
                    let Some(users) = by_type["m.read"].as_object() else { continue };
                    for (user, receipt) in users {
                        let Some(user) = user_of(&Value::String(user.clone())) else { continue };
                        let ts = receipt["data"]["ts"].as_i64().unwrap_or_else(crate::storage::now_ms);
                        let thread = receipt["data"]["thread_id"].as_str();
                        for event_id in receipt["event_ids"].as_array().into_iter().flatten() {
                            if let Some(event_id) = event_id.as_str().and_then(|e| ruma::EventId::parse(e).ok()) {
                                self.ephemeral.receipts.set_remote(&room_id, &user, &event_id, ts, thread).await?;
                            }
                        }
                    }
                }
                Ok(())
            }
            Some("m.presence") => {
                for entry in content["push"].as_array().into_iter().flatten() {
                    let Some(user) = user_of(&entry["user_id"]) else { continue };
                    let state = entry["presence"].as_str().unwrap_or("offline");
                    self.ephemeral
                        .presence
                        .set_remote(&user, state, entry["status_msg"].as_str(), entry["last_active_ago"].as_i64())
                        .await?;
                }
                Ok(())
            }
            Some("m.direct_to_device") => {
                let Some(sender) = user_of(&content["sender"]) else {
                    return Err(MatrixError::bad_json("m.direct_to_device from a user of another server"));
                };
                let event_type = content["type"].as_str().unwrap_or_default();
                let mut messages = Vec::new();
                for (user, devices) in content["messages"].as_object().into_iter().flatten() {
                    let local = UserId::parse(user.as_str()).is_ok_and(|u| self.is_local(u.server_name()));
                    if !local {
                        continue;
                    }
                    for (device, message) in devices.as_object().into_iter().flatten() {
                        messages.push((user.clone(), device.clone(), message.to_string()));
                    }
                }
                self.ephemeral.to_device.deliver_from_remote(&sender, event_type, &messages).await
            }
            Some("m.device_list_update") | Some("m.signing_key_update") => {
                let Some(user) = user_of(&content["user_id"]) else {
                    return Err(MatrixError::bad_json("device update for a user of another server"));
                };
                self.ephemeral.e2ee.remote_device_change(&user).await
            }
            _ => Ok(()),
        }
    }
}
