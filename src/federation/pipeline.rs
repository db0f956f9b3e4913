//! Checks on receipt of a PDU from another server (spec: "Checks performed on receipt of a
//! PDU"): format, event id, signatures and hashes, auth events fetched when missing, prev
//! events fetched (or the state at the event asked for) when missing, then the rooms'
//! persistence path (auth against auth events, state before and current state).

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{
    api::federation::event::{get_event, get_missing_events, get_room_state_ids},
    canonical_json::redact,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    serde::Base64,
    signatures::{self, PublicKeyMap, Verified},
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UInt,
};
use serde_json::value::RawValue;

use super::Federation;
use crate::{
    error::{MatrixError, Result},
    rooms::{rules_for, Pdu, Persisted},
    storage::{events as event_repo, federation as federation_repo, state::StateMap},
};

/// How far back missing history is fetched before asking for the state instead.
const MAX_MISSING_EVENTS: u32 = 20;
/// How many auth events may be fetched for one PDU.
const MAX_FETCHED_AUTH_EVENTS: usize = 200;

/// Parses a PDU of a room version and computes its event id.
pub fn parse_pdu(json: &RawValue, version: &RoomVersionId) -> Result<(Pdu, RoomVersionRules)> {
    let rules = rules_for(version)?;
    let object: CanonicalJsonObject =
        serde_json::from_str(json.get()).map_err(|e| MatrixError::bad_json(format!("PDU is not canonical JSON: {e}")))?;
    let event_id = match rules.event_id_format {
        EventIdFormatVersion::V1 => match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => EventId::parse(id.as_str())?,
            _ => return Err(MatrixError::bad_json("PDU of this room version needs an event_id")),
        },
        _ => EventId::parse(format!("${}", signatures::reference_hash(&object, &rules).map_err(|e| MatrixError::bad_json(e.to_string()))?))?,
    };
    let room_id = match object.get("room_id") {
        Some(CanonicalJsonValue::String(room)) => RoomId::parse(room.as_str())?,
        _ if rules.authorization.room_create_event_id_as_room_id => RoomId::parse(format!("!{}", &event_id.as_str()[1..]))?,
        _ => return Err(MatrixError::bad_json("PDU without room_id")),
    };
    let pdu = Pdu::from_json(event_id, room_id, object).map_err(MatrixError::bad_json)?;
    Ok((pdu, rules))
}

/// The auth events an event relies on: those it lists, and the create event for room
/// versions whose room id names it.
fn cited_auth_events(event: &Pdu, rules: &RoomVersionRules) -> Vec<OwnedEventId> {
    let mut cited = event.auth_events.clone();
    if rules.authorization.room_create_event_id_as_room_id && *event.kind() != TimelineEventType::RoomCreate {
        if let Ok(create) = EventId::parse(format!("${}", &event.room_id.as_str()[1..])) {
            cited.push(create);
        }
    }
    cited
}

impl Federation {
    /// Checks the PDU's signatures (and content hash: a mismatch means the event is stored
    /// redacted). Returns the PDU as it must be kept.
    pub async fn verify_pdu(&self, pdu: Pdu, rules: &RoomVersionRules) -> Result<Pdu> {
        let servers = signatures::required_server_signatures_to_verify_event(&pdu.json(), &rules.signatures)
            .map_err(|e| MatrixError::forbidden(format!("cannot verify {}: {e}", pdu.event_id)))?;
        let ts = u64::from(pdu.fields.origin_server_ts.0) as i64;
        let mut keys: PublicKeyMap = BTreeMap::new();
        for server in servers {
            let key_ids: Vec<String> = match pdu.json().get("signatures") {
                Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str()) {
                    Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let mut server_keys = BTreeMap::new();
            for key_id in key_ids {
                if let Ok(public) = self.verify_key(&server, &key_id, ts).await {
                    if let Ok(public) = Base64::parse(&public) {
                        server_keys.insert(key_id, public);
                    }
                }
            }
            keys.insert(server.to_string(), server_keys);
        }
        match signatures::verify_event(&keys, &pdu.json(), rules) {
            Ok(Verified::All) => Ok(pdu),
            Ok(Verified::Signatures) => {
                tracing::info!(event_id = %pdu.event_id, "content hash mismatch: keeping the event redacted");
                let redacted = redact(pdu.json().clone(), &rules.redaction, None).map_err(|e| MatrixError::bad_json(e.to_string()))?;
                Pdu::from_json(pdu.event_id, pdu.room_id, redacted).map_err(MatrixError::bad_json)
            }
            Err(error) => Err(MatrixError::forbidden(format!("bad signatures on {}: {error}", pdu.event_id))),
        }
    }

    /// Fetches one event from a server, checked.
    async fn fetch_event(&self, origin: &ServerName, event_id: &EventId, version: &RoomVersionId) -> Result<Pdu> {
        let response = self.send(origin, get_event::v1::Request::new(event_id.to_owned())).await?;
        let (pdu, rules) = parse_pdu(&response.pdu, version)?;
        if pdu.event_id != event_id {
            return Err(MatrixError::forbidden(format!("{origin} answered {} for {event_id}", pdu.event_id)));
        }
        self.verify_pdu(pdu, &rules).await
    }

    /// Makes sure the auth events (recursively) of the PDUs are known, fetching missing ones
    /// and keeping them as outliers once each passed the auth rules against its own auth
    /// events. A fetched event that fails them is kept as rejected, and the PDUs that rely on
    /// it are refused.
    async fn fetch_missing_auth(&self, origin: &ServerName, pdus: &[&Pdu], version: &RoomVersionId) -> Result<()> {
        let mut wanted: Vec<OwnedEventId> = pdus.iter().flat_map(|p| p.auth_events.iter().cloned()).collect();
        let mut seen = HashSet::new();
        let mut fetched = Vec::new();
        while let Some(id) = wanted.pop() {
            if !seen.insert(id.clone()) || self.rooms.pdu(&id).await?.is_some() {
                continue;
            }
            if federation_repo::is_rejected_outlier(self.db.pool(), id.as_str()).await? {
                return Err(MatrixError::forbidden(format!("auth event {id} was rejected")));
            }
            if seen.len() > MAX_FETCHED_AUTH_EVENTS {
                return Err(MatrixError::forbidden("auth chain too long to fetch"));
            }
            let event = self.fetch_event(origin, &id, version).await?;
            wanted.extend(event.auth_events.iter().cloned());
            fetched.push(event);
        }
        self.keep_checked_outliers(fetched, version).await
    }

    /// Keeps fetched events as outliers, each checked against its own auth events first (so
    /// in auth-chain order: an event after the events it cites). Events that fail, cite a
    /// failed one, or cite one that is nowhere, are kept as rejected; the error names one.
    pub(crate) async fn keep_checked_outliers(&self, events: Vec<Pdu>, version: &RoomVersionId) -> Result<()> {
        let rules = rules_for(version)?;
        let mut pending: HashMap<OwnedEventId, Pdu> = events.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        let mut first_rejection: Option<String> = None;
        // Accepted in this call: their dependants find them here, not with a read each.
        let mut accepted: HashMap<OwnedEventId, Pdu> = HashMap::new();
        while !pending.is_empty() {
            // The events none of whose auth events are still waiting for their own check.
            let ready: Vec<OwnedEventId> =
                pending.values().filter(|e| cited_auth_events(e, &rules).iter().all(|a| !pending.contains_key(a))).map(|e| e.event_id.clone()).collect();
            // An auth cycle (impossible with honest hashes): nothing can be checked; refuse all.
            let cycle = ready.is_empty();
            let ids = if cycle { pending.keys().cloned().collect() } else { ready };
            for id in ids {
                let Some(event) = pending.remove(&id) else { continue };
                let verdict = if cycle { Err("its auth events form a cycle".to_owned()) } else { self.check_outlier(&event, &rules, &accepted).await? };
                match verdict {
                    Ok(()) => {
                        self.keep_outlier(&event).await?;
                        accepted.insert(event.event_id.clone(), event);
                    }
                    Err(reason) => {
                        tracing::info!(event_id = %event.event_id, %reason, "rejected a fetched auth event");
                        let json = serde_json::to_string(&event.json())?;
                        federation_repo::insert_rejected_outlier(self.db.pool(), event.event_id.as_str(), event.room_id.as_str(), &json).await?;
                        first_rejection.get_or_insert(format!("auth event {} was rejected: {reason}", event.event_id));
                    }
                }
            }
        }
        match first_rejection {
            Some(reason) => Err(MatrixError::forbidden(reason)),
            None => Ok(()),
        }
    }

    /// An outlier's verdict: the auth rules against its own auth events (which must all be
    /// known and not rejected: rejected ones are never read back).
    async fn check_outlier(&self, event: &Pdu, rules: &RoomVersionRules, accepted: &HashMap<OwnedEventId, Pdu>) -> Result<std::result::Result<(), String>> {
        let mut auth_events = HashMap::new();
        for id in cited_auth_events(event, rules) {
            let known = match accepted.get(&id) {
                Some(event) => Some(event.clone()),
                None => self.rooms.pdu(&id).await?,
            };
            match known {
                Some(auth_event) => {
                    auth_events.insert(id, auth_event);
                }
                None => return Ok(Err(format!("auth event {id} is unknown or rejected"))),
            }
        }
        Ok(crate::rooms::auth::check_against_auth_events(rules, event, &auth_events))
    }

    pub(crate) async fn keep_outlier(&self, pdu: &Pdu) -> Result<()> {
        let json = serde_json::to_string(&pdu.json())?;
        federation_repo::insert_outlier(self.db.pool(), pdu.event_id.as_str(), pdu.room_id.as_str(), &json, false).await?;
        Ok(())
    }

    /// The whole inbound path for one PDU of a room we are in.
    pub async fn receive_pdu(&self, origin: &ServerName, json: &RawValue, version: &RoomVersionId) -> Result<(OwnedEventId, Persisted)> {
        let (pdu, rules) = parse_pdu(json, version)?;
        let event_id = pdu.event_id.clone();
        if event_repo::get_timeline(self.db.pool(), event_id.as_str()).await?.is_some() {
            return Ok((event_id, Persisted::Stored(0)));
        }
        if federation_repo::is_rejected_outlier(self.db.pool(), event_id.as_str()).await? {
            return Ok((event_id, Persisted::Rejected));
        }
        let pdu = self.verify_pdu(pdu, &rules).await?;
        Box::pin(self.accept(origin, pdu, version, 0)).await.map(|p| (event_id, p))
    }

    /// Accepts a verified PDU: fills gaps in its history, then persists it.
    async fn accept(&self, origin: &ServerName, pdu: Pdu, version: &RoomVersionId, depth: u32) -> Result<Persisted> {
        self.fetch_missing_auth(origin, &[&pdu], version).await?;
        let (missing, after_rejected) = self.missing_prevs(&pdu).await?;
        if missing.is_empty() {
            return self.persist_after_known_prevs(origin, pdu, version, after_rejected).await;
        }
        if depth == 0 {
            // Ask the origin once for what lies between what we have and this event (as
            // Synapse does); events it gives that still have a gap take the state across it.
            let extremities: Vec<OwnedEventId> = event_repo::forward_extremities(self.db.pool(), pdu.room_id.as_str())
                .await?
                .into_iter()
                .filter_map(|(id, _, _)| EventId::parse(id).ok())
                .collect();
            let mut request = get_missing_events::v1::Request::new(pdu.room_id.clone(), extremities, vec![pdu.event_id.clone()]);
            request.limit = UInt::from(MAX_MISSING_EVENTS);
            if let Ok(response) = self.send(origin, request).await {
                let mut fetched = Vec::new();
                for raw in &response.events {
                    if let Ok((event, rules)) = parse_pdu(raw, version) {
                        if let Ok(event) = self.verify_pdu(event, &rules).await {
                            fetched.push(event);
                        }
                    }
                }
                fetched.sort_by_key(|e| e.fields.depth);
                for event in fetched {
                    if event_repo::get_timeline(self.db.pool(), event.event_id.as_str()).await?.is_none() {
                        if let Err(error) = Box::pin(self.accept(origin, event, version, depth + 1)).await {
                            tracing::info!(%error, "a missing event could not be accepted");
                        }
                    }
                }
                let (still_missing, after_rejected) = self.missing_prevs(&pdu).await?;
                if still_missing.is_empty() {
                    return self.persist_after_known_prevs(origin, pdu, version, after_rejected).await;
                }
            }
            // Pushed to us with history its server will not give: trusting the state it
            // claims could make it the room's only extremity. Refused, as Synapse does.
            return Err(MatrixError::forbidden("Your server isn't divulging details about prev_events referenced in this event."));
        }
        // Pulled (from /get_missing_events) with a gap still before it: the state across it.
        let state = self.state_across_gap(origin, &pdu, version).await?;
        self.persist_or_reject(pdu, version, Some(state)).await
    }

    /// The prev events we do not have, and whether any we have is a rejected event.
    async fn missing_prevs(&self, pdu: &Pdu) -> Result<(Vec<OwnedEventId>, bool)> {
        let mut missing = Vec::new();
        let mut after_rejected = false;
        for prev in &pdu.prev_events {
            if event_repo::get_timeline(self.db.pool(), prev.as_str()).await?.is_some() {
                continue;
            }
            if federation_repo::is_rejected_outlier(self.db.pool(), prev.as_str()).await? {
                after_rejected = true;
            } else {
                missing.push(prev.clone());
            }
        }
        Ok((missing, after_rejected))
    }

    /// Persists an event all of whose prev events we have. A rejected prev event is in the
    /// room's graph but changed nothing: the state after it is the state before it.
    async fn persist_after_known_prevs(&self, origin: &ServerName, pdu: Pdu, version: &RoomVersionId, after_rejected: bool) -> Result<Persisted> {
        if !after_rejected {
            return self.persist_or_reject(pdu, version, None).await;
        }
        let state = self.state_across_gap(origin, &pdu, version).await?;
        self.persist_or_reject(pdu, version, Some(state)).await
    }

    /// Persists a remote event; one the auth rules reject is kept as rejected and counts as
    /// received (no error in /send's answer, as Synapse does: its sender must not retry it).
    async fn persist_or_reject(&self, pdu: Pdu, version: &RoomVersionId, state: Option<StateMap>) -> Result<Persisted> {
        let (event_id, room_id, json) = (pdu.event_id.clone(), pdu.room_id.clone(), serde_json::to_string(&pdu.json())?);
        match self.rooms.persist_remote(pdu, version, state).await {
            // The persistence path refuses only auth-rule failures with M_FORBIDDEN.
            Err(error) if error.errcode == "M_FORBIDDEN" => {
                tracing::info!(%event_id, reason = %error.message, "rejected a PDU by the auth rules");
                federation_repo::insert_rejected_outlier(self.db.pool(), event_id.as_str(), room_id.as_str(), &json).await?;
                Ok(Persisted::Rejected)
            }
            other => other,
        }
    }

    /// The state before an event some of whose prev events are missing: for each prev event,
    /// the state after it — ours when we have it, else the origin's state at it (/state_ids)
    /// plus the prev event itself (fetched and kept as an outlier) — resolved together.
    async fn state_across_gap(&self, origin: &ServerName, pdu: &Pdu, version: &RoomVersionId) -> Result<StateMap> {
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            if let Some(state) = self.rooms.state_after(prev).await? {
                states.push(state);
                continue;
            }
            if let Some((room_id, json)) = federation_repo::rejected_outlier(self.db.pool(), prev.as_str()).await? {
                // Rejected: the state after it is the state before it.
                let rejected = crate::rooms::pdu_from_row(prev.as_str(), &room_id, &json)?;
                states.push(Box::pin(self.state_across_gap(origin, &rejected, version)).await?);
                continue;
            }
            let mut state = self.state_at(origin, &pdu.room_id, prev, version).await?;
            let prev_event = match self.rooms.pdu(prev).await? {
                Some(event) => event,
                None => {
                    let event = self.fetch_event(origin, prev, version).await?;
                    self.fetch_missing_auth(origin, &[&event], version).await?;
                    self.keep_checked_outliers(vec![event.clone()], version).await?;
                    event
                }
            };
            if let Some(key) = prev_event.state_key() {
                state.insert((prev_event.kind().to_string(), key.to_owned()), prev_event.event_id.to_string());
            }
            states.push(state);
        }
        match states.len() {
            0 => Ok(StateMap::new()),
            1 => Ok(states.remove(0)),
            _ => self.rooms.resolve_state_maps(&pdu.room_id, states).await,
        }
    }

    /// The room state before an event as `origin` has it (/state_ids), missing events fetched.
    async fn state_at(&self, origin: &ServerName, room_id: &RoomId, event_id: &EventId, version: &RoomVersionId) -> Result<StateMap> {
        let response = self.send(origin, get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned())).await?;
        let mut state = StateMap::new();
        let mut fetched = Vec::new();
        let mut seen = HashSet::new();
        for id in response.auth_chain_ids.iter().chain(response.pdu_ids.iter()) {
            if seen.insert(id.clone()) && self.rooms.pdu(id).await?.is_none() && !federation_repo::is_rejected_outlier(self.db.pool(), id.as_str()).await? {
                fetched.push(self.fetch_event(origin, id, version).await?);
            }
        }
        if let Err(error) = self.keep_checked_outliers(fetched, version).await {
            // The origin's state holds an event its own auth chain forbids: it is left out.
            tracing::info!(%origin, %error, "state from /state_ids with a rejected event");
        }
        for id in &response.pdu_ids {
            let Some(event) = self.rooms.pdu(id).await? else { continue };
            if let Some(key) = event.state_key() {
                state.insert((event.kind().to_string(), key.to_owned()), id.to_string());
            }
        }
        Ok(state)
    }
}

impl Federation {
    /// Fetches history from before the room's earliest known event from a server in the
    /// room (/backfill). Returns how many events were added.
    pub async fn backfill(&self, room_id: &RoomId, limit: usize) -> Result<usize> {
        let frontier = self.rooms.backfill_frontier(room_id).await?;
        if frontier.is_empty() {
            return Ok(0);
        }
        let version = self.rooms.room_version(room_id).await?;
        let mut servers = self.rooms.remote_servers(self.db.pool(), room_id.as_str()).await?;
        if let Some(server) = room_id.server_name() {
            if !self.is_local(server) && !servers.iter().any(|s| s == server.as_str()) {
                servers.push(server.to_string());
            }
        }
        for server in servers {
            let Ok(server) = ServerName::parse(server.as_str()) else { continue };
            let request = ruma::api::federation::backfill::get_backfill::v1::Request::new(
                room_id.to_owned(),
                frontier.clone(),
                UInt::try_from(limit as u64).unwrap_or_default(),
            );
            let Ok(response) = self.send(&server, request).await else { continue };
            let mut events = Vec::new();
            for raw in &response.pdus {
                let Ok((pdu, rules)) = parse_pdu(raw, &version) else { continue };
                if pdu.room_id != room_id {
                    continue;
                }
                if let Ok(pdu) = self.verify_pdu(pdu, &rules).await {
                    events.push(pdu);
                }
            }
            // Oldest first, so each event's auth events are in place before it.
            events.sort_by_key(|e| e.fields.depth);
            let mut added = 0;
            for event in events {
                if self.fetch_missing_auth(&server, &[&event], &version).await.is_err() {
                    continue;
                }
                match self.rooms.persist_backfilled(event, &version).await {
                    Ok(()) => added += 1,
                    Err(error) => tracing::info!(%error, "a backfilled event was refused"),
                }
            }
            if added > 0 {
                return Ok(added);
            }
        }
        Ok(0)
    }
}
