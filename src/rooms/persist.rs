//! The one persistence path for events, local or remote, in three steps: `prepare` (format,
//! auth against the auth events and the state before, soft failure against the current
//! state, the room's next current state, push rules), `write` (the event with all its
//! indexes, inside the caller's transaction: one event, or a batch of a room's events under
//! one commit), and `announce` (wake syncs, the federation sender and push gateways).

use std::{collections::HashMap, sync::Arc};

use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    EventId, OwnedEventId, RoomVersionId,
};
use serde_json::Value;

use super::{auth_error_message, relation_of, rules_for, Pdu, Rooms, StateBefore, MAX_PDU_BYTES};
use crate::{
    error::{MatrixError, Result},
    push::RecipientActions,
    storage::{
        events as event_repo, federation as federation_repo, rooms as room_repo,
        state::{self as state_repo, StateMap},
        Tx,
    },
};

/// Where an event of a batch goes: on top of the previous event of the batch, which is not
/// committed yet (so this cannot be read back from the database).
#[derive(Debug, Clone)]
pub struct Head {
    pub prev: OwnedEventId,
    pub depth: i64,
    pub state_group: i64,
    /// What a batch of messages reads once for all its events (messages change no membership).
    pub facts: Arc<RoomFacts>,
}

/// Memberships of a room, read once per batch.
#[derive(Debug)]
pub struct RoomFacts {
    /// Joined members with the JSON of their member events (display names for push rules).
    pub joined: Vec<(String, Option<String>)>,
    /// Users a new event concerns (joined, invited, knocking): whose syncs wake.
    pub interested: Vec<String>,
    /// Other servers with joined members: where the events go.
    pub remote_servers: Vec<String>,
}

/// An event that passed every check, with what its write and announcement need.
pub struct Prepared {
    pub pdu: Pdu,
    version: RoomVersionId,
    rules: RoomVersionRules,
    json_text: String,
    /// (user, device, txn id) of a client send.
    txn: Option<(String, String, String)>,
    before: StateBefore,
    state_before: HashMap<(String, String), Pdu>,
    new_current: Option<StateMap>,
    client_event: Value,
    push_actions: Vec<RecipientActions>,
    remote: bool,
    facts: Option<Arc<RoomFacts>>,
}

impl Rooms {
    /// Every check before an event may be written. None: a remote event that soft-failed
    /// (kept as an outlier). `head` places a batched event on top of its predecessor.
    pub(super) async fn prepare(
        &self,
        pdu: Pdu,
        version: &RoomVersionId,
        txn: Option<(&str, &str, &str)>,
        explicit_state: Option<StateMap>,
        remote: bool,
        head: Option<&Head>,
    ) -> Result<Option<Prepared>> {
        let rules = rules_for(version)?;
        ruma::state_res::check_pdu_format(&pdu.json(), &rules.event_format).map_err(|e| {
            if e.contains("bytes") || e.contains("too large") || e.contains("size") {
                MatrixError::too_large(e)
            } else {
                MatrixError::bad_json(e)
            }
        })?;
        let json_text = serde_json::to_string(&pdu.json()).map_err(|e| MatrixError::internal(e.to_string()))?;
        if json_text.len() > MAX_PDU_BYTES {
            return Err(MatrixError::too_large("Event is larger than 65536 bytes"));
        }

        // Auth events, and the state before the event (the state after its prev events).
        let mut auth_events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for id in &pdu.auth_events {
            if let Some(event) = self.pdu(id).await? {
                auth_events.insert(id.clone(), event);
            }
        }
        if rules.authorization.room_create_event_id_as_room_id && *pdu.kind() != TimelineEventType::RoomCreate {
            let create_id = EventId::parse(format!("${}", &pdu.room_id.as_str()[1..]))?;
            if let Some(event) = self.pdu(&create_id).await? {
                auth_events.insert(create_id, event);
            }
        }
        let before = match (explicit_state, head) {
            (Some(state), _) => StateBefore::Resolved(state),
            (None, Some(head)) => StateBefore::Group(head.state_group),
            (None, None) => self.state_before(&pdu, &rules).await?,
        };
        let state_before = self.auth_state(&before, &pdu, &rules).await?;

        if remote {
            // A remote event must be allowed by the auth events it cites, as well as by the
            // state before it (a local one's auth events are picked from that state).
            super::auth::check_against_auth_events(&rules, &pdu, &auth_events)
                .map_err(|e| MatrixError::forbidden(format!("Event not allowed by its auth events: {e}")))?;
        } else {
            ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id: &EventId| {
                auth_events.get(id).cloned()
            })
            .map_err(|e| MatrixError::forbidden(format!("Event not allowed: {e}")))?;
        }
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind: &StateEventType, key: &str| {
            state_before.get(&(kind.to_string(), key.to_owned())).cloned()
        })
        .map_err(|e| MatrixError::forbidden(auth_error_message(&e)))?;

        let room_id = pdu.room_id.as_str();
        let extremities = match head {
            Some(head) => vec![(head.prev.to_string(), head.depth, head.state_group)],
            None => event_repo::forward_extremities(self.db.pool(), room_id).await?,
        };
        if remote && !extremities.is_empty() {
            // Soft failure: allowed by its own history, but not by the room as it is now.
            let current = self.auth_state(&StateBefore::Current, &pdu, &rules).await?;
            let allowed_now = ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind: &StateEventType, key: &str| {
                current.get(&(kind.to_string(), key.to_owned())).cloned()
            });
            if let Err(reason) = allowed_now {
                tracing::info!(event_id = %pdu.event_id, %reason, "soft-failed remote event");
                federation_repo::insert_outlier(self.db.pool(), pdu.event_id.as_str(), room_id, &json_text, true).await?;
                return Ok(None);
            }
        }

        // The room's current state after this event: the state after it when it becomes the
        // only forward extremity on top of the current state (the common, local case, which
        // only touches the event's own key); otherwise resolved over all extremities.
        let extremity_ids: Vec<&str> = extremities.iter().map(|(id, _, _)| id.as_str()).collect();
        let on_top = matches!(before, StateBefore::Group(_) | StateBefore::Empty)
            && extremity_ids.len() <= 1
            && pdu.prev_events.iter().map(|p| p.as_str()).collect::<Vec<_>>() == extremity_ids;
        let new_current: Option<StateMap> = if on_top {
            None
        } else {
            let mut after = self.full_state(&before).await?;
            if let Some(key) = pdu.state_key() {
                after.insert((pdu.kind().to_string(), key.to_owned()), pdu.event_id.to_string());
            }
            let others: Vec<i64> = extremities
                .iter()
                .filter(|(id, _, _)| !pdu.prev_events.iter().any(|p| p.as_str() == id))
                .map(|(_, _, group)| *group)
                .collect();
            if others.is_empty() {
                Some(after)
            } else {
                let mut states = vec![after];
                for group in others {
                    states.push(state_repo::load_group(self.db.pool(), group).await?);
                }
                Some(self.resolve_states(states, &rules, Some(&pdu)).await?)
            }
        };

        // Push rules of every local recipient, decided before the write and stored with it.
        let client_event = Value::Object(pdu.to_client_event());
        let push_actions = self.push.evaluate(&pdu, &client_event, &rules, &state_before, head.map(|h| h.facts.joined.as_slice())).await?;
        Ok(Some(Prepared {
            pdu,
            version: version.clone(),
            rules,
            json_text,
            txn: txn.map(|(u, d, t)| (u.to_owned(), d.to_owned(), t.to_owned())),
            before,
            state_before,
            new_current,
            client_event,
            push_actions,
            remote,
            facts: head.map(|h| h.facts.clone()),
        }))
    }

    /// Writes a prepared event with all its indexes; returns its stream position.
    pub(super) async fn write(&self, tx: &mut Tx, prepared: &Prepared) -> Result<i64> {
        let Prepared { pdu, version, rules, json_text, txn, before, state_before, new_current, push_actions, remote, facts, .. } = prepared;
        let room_id = pdu.room_id.as_str();
        if *pdu.kind() == TimelineEventType::RoomCreate || (*remote && room_repo::room_version(&mut **tx, room_id).await?.is_none()) {
            room_repo::insert_room(tx, room_id, version.as_str(), pdu.fields.sender.as_str()).await?;
        }
        let state_group = match (&before, pdu.state_key()) {
            (StateBefore::Group(group), Some(state_key)) => {
                let change = [(pdu.kind().to_string(), state_key.to_owned(), pdu.event_id.to_string())];
                state_repo::create_group(tx, room_id, Some(*group), &change).await?
            }
            (StateBefore::Group(group), None) => *group,
            (StateBefore::Empty, _) | (StateBefore::Current, _) | (StateBefore::Resolved(_), _) => {
                let mut entries: Vec<(String, String, String)> = match &before {
                    StateBefore::Resolved(map) => map.iter().map(|((t, k), id)| (t.clone(), k.clone(), id.clone())).collect(),
                    _ => Vec::new(),
                };
                if let Some(state_key) = pdu.state_key() {
                    entries.retain(|(t, k, _)| !(t == &pdu.kind().to_string() && k == state_key));
                    entries.push((pdu.kind().to_string(), state_key.to_owned(), pdu.event_id.to_string()));
                }
                state_repo::create_group(tx, room_id, None, &entries).await?
            }
        };
        let stream = event_repo::insert(
            tx,
            &event_repo::NewEvent {
                event_id: pdu.event_id.as_str(),
                room_id,
                event_type: &pdu.kind().to_string(),
                state_key: pdu.state_key(),
                sender: pdu.fields.sender.as_str(),
                origin_server_ts: u64::from(pdu.fields.origin_server_ts.0) as i64,
                depth: pdu.fields.depth as i64,
                json: &json_text,
                state_group,
                txn: txn.as_ref().map(|(_, device, txn_id)| (device.as_str(), txn_id.as_str())),
            },
        )
        .await?;
        if let Some(document) = super::search::document(pdu) {
            crate::storage::search::insert(tx, stream, &document).await?;
        }
        if super::BUMP_EVENT_TYPES.contains(&pdu.kind().to_string().as_str()) {
            crate::storage::sliding::set_bump_stamp(tx, room_id, stream).await?;
        }
        let prevs: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
        let auths: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
        event_repo::insert_edges(tx, pdu.event_id.as_str(), &prevs, &auths).await?;
        event_repo::advance_extremities(tx, room_id, pdu.event_id.as_str(), &prevs).await?;
        match new_current {
            None => {
                if let Some(state_key) = pdu.state_key() {
                    state_repo::set_current(tx, room_id, &pdu.kind().to_string(), state_key, pdu.event_id.as_str()).await?;
                    if matches!(pdu.kind(), TimelineEventType::RoomMember | TimelineEventType::RoomJoinRules | TimelineEventType::RoomHistoryVisibility) {
                        let content = pdu.content_value();
                        if *pdu.kind() == TimelineEventType::RoomMember {
                            let membership = content.get("membership").and_then(Value::as_str).unwrap_or("leave");
                            room_repo::set_membership(tx, room_id, state_key, membership, pdu.event_id.as_str(), stream).await?;
                        }
                        self.index_directory_state(tx, room_id, &pdu.kind().to_string(), state_key, &content).await?;
                    }
                }
            }
            Some(target) => self.replace_current_state(tx, room_id, &target, &pdu, &json_text, stream).await?,
        }
        if let Some((rel_type, target)) = relation_of(&pdu) {
            event_repo::insert_relation(tx, pdu.event_id.as_str(), &target, &rel_type, room_id).await?;
        }
        if let Some((user, device, txn_id)) = txn {
            event_repo::insert_txn(tx, user, device, room_id, txn_id, pdu.event_id.as_str()).await?;
        }
        if let Some(target) = pdu.redacts_target() {
            self.apply_redaction(tx, &pdu, target, &rules, &state_before).await?;
        }
        self.push.store(tx, &pdu, stream, &push_actions).await?;
        if !*remote {
            self.queue_for_other_servers(tx, &pdu, &json_text, facts.as_deref().map(|f| f.remote_servers.as_slice())).await?;
        }
        Ok(stream)
    }

    /// After the commit: caches, syncs, the federation sender and push gateways learn of it.
    pub(super) async fn announce(&self, prepared: Prepared, stream: i64) -> Result<()> {
        let Prepared { pdu, client_event, push_actions, remote, facts, .. } = prepared;
        let room_id = pdu.room_id.as_str();
        if let Some(target) = pdu.redacts_target() {
            self.caches.forget_event(&target.to_owned());
        }
        tracing::debug!(event_id = %pdu.event_id, room_id, stream, "persisted event");
        let mut concerned = match &facts {
            Some(facts) => facts.interested.clone(),
            None => room_repo::interested_users(self.db.pool(), room_id).await?,
        };
        if *pdu.kind() == TimelineEventType::RoomMember {
            // A kicked, banned or leaving user sees their own leave.
            concerned.extend(pdu.state_key().map(str::to_owned));
        }
        self.notifier.wake(&concerned);
        self.persisted.send_modify(|count| *count = count.wrapping_add(1));
        if !remote {
            self.outbound.wake();
        }
        if *pdu.kind() == TimelineEventType::RoomGuestAccess && pdu.state_key() == Some("") {
            // Outside the room's turn: the guests' leave events are sends of their own.
            let room_id = pdu.room_id.clone();
            let removal = self.remove_guests_unless_allowed(room_id.clone());
            tokio::spawn(async move {
                if let Err(error) = removal.await {
                    tracing::warn!(%room_id, %error, "could not remove guests from a room closed to them");
                }
            });
        }
        self.push.deliver(&pdu, client_event, push_actions);
        Ok(())
    }
}
