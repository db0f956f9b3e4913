//! What other servers ask of the rooms this server is in: join templates, the state and auth
//! chain before an event, events for /event and /get_missing_events.

use std::collections::HashSet;

use ruma::{
    events::{StateEventType, TimelineEventType},
    EventId, OwnedEventId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Map, Value};

use super::{rules_for, Pdu, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{events as event_repo, now_ms, state as state_repo},
};

impl Rooms {
    /// make_join: an unsigned join event for a remote user, on top of the room as it is.
    pub async fn join_template(&self, room_id: &RoomId, user: &UserId, accepted_versions: &[RoomVersionId]) -> Result<(RoomVersionId, Value)> {
        self.membership_template(room_id, user, "join", accepted_versions).await
    }

    /// make_join / make_knock / make_leave: an unsigned membership event for a remote user.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        accepted_versions: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Value)> {
        let version = self.room_version(room_id).await?;
        if !accepted_versions.contains(&version) {
            return Err(MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                "M_INCOMPATIBLE_ROOM_VERSION",
                format!("The room has version {version}, which your server does not support"),
            )
            .with("room_version", version.as_str().into()));
        }
        if self.remote_servers(self.db().pool(), room_id.as_str()).await?.is_empty()
            && self.joined_members(room_id).await?.is_empty()
        {
            return Err(MatrixError::not_found("This server is not in the room"));
        }
        let rules = rules_for(&version)?;
        let mut content = Map::new();
        content.insert("membership".into(), membership.into());
        if membership == "join" {
            if let Ok(Some(authoriser)) = self.restricted_join_authoriser_for(room_id, user).await {
                content.insert("join_authorised_via_users_server".into(), authoriser.into());
            }
        }
        let content = Value::Object(content);
        let extremities = event_repo::forward_extremities(self.db().pool(), room_id.as_str()).await?;
        let depth = extremities.iter().map(|(_, d, _)| *d).max().unwrap_or(0) + 1;
        let prev_events: Vec<String> = extremities.iter().take(20).map(|(id, _, _)| id.clone()).collect();
        let raw_content = serde_json::value::to_raw_value(&content).map_err(|e| MatrixError::internal(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &TimelineEventType::RoomMember,
            user,
            Some(user.as_str()),
            &raw_content,
            &rules.authorization,
        )
        .map_err(MatrixError::bad_json)?;
        let mut auth_events = Vec::new();
        for (kind, key) in auth_types {
            if rules.authorization.room_create_event_id_as_room_id && kind == StateEventType::RoomCreate {
                continue;
            }
            if let Some(id) = state_repo::current_entries(self.db().pool(), room_id.as_str(), &kind.to_string(), &key).await? {
                auth_events.push(id);
            }
        }
        let mut template = json!({
            "room_id": room_id,
            "type": "m.room.member",
            "sender": user,
            "state_key": user,
            "content": content,
            "prev_events": prev_events,
            "auth_events": auth_events,
            "depth": depth,
            "origin_server_ts": now_ms(),
        });
        if !matches!(version, RoomVersionId::V11 | RoomVersionId::V12) {
            template["origin"] = user.server_name().as_str().into();
        }
        if matches!(rules.event_id_format, ruma::room_version_rules::EventIdFormatVersion::V1) {
            let refs: Vec<Value> = template["prev_events"].as_array().cloned().unwrap_or_default().into_iter().map(|id| json!([id, {}])).collect();
            template["prev_events"] = Value::Array(refs);
            let refs: Vec<Value> = template["auth_events"].as_array().cloned().unwrap_or_default().into_iter().map(|id| json!([id, {}])).collect();
            template["auth_events"] = Value::Array(refs);
        }
        Ok((version, template))
    }

    /// The state before an event (the state after its prev events) and the auth chain of
    /// that state, as stored PDUs.
    pub async fn state_and_auth_chain_before(&self, event: &Pdu) -> Result<(Vec<Value>, Vec<Value>)> {
        let state_ids: Vec<String> = self.state_map_before(event).await?.into_values().collect();
        let mut state = Vec::new();
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        for id in &state_ids {
            if let Some(pdu) = self.pdu(&EventId::parse(id.as_str())?).await? {
                wanted.extend(pdu.auth_events.iter().cloned());
                state.push(serde_json::to_value(&pdu.json())?);
            }
        }
        wanted.extend(event.auth_events.iter().cloned());
        Ok((state, self.auth_chain_pdus(wanted).await?))
    }

    /// The room's state before an event of its timeline (what /state and /state_ids answer):
    /// the states after its prev events, resolved when they are several. An event whose prev
    /// events are not all known (it came after a gap, with the state its sender gave) has its
    /// own state group less itself.
    pub(crate) async fn state_map_before(&self, event: &Pdu) -> Result<state_repo::StateMap> {
        let rules = rules_for(&self.room_version(&event.room_id).await?)?;
        let mut prevs_known = true;
        for prev in &event.prev_events {
            prevs_known &= event_repo::get_timeline(self.db().pool(), prev.as_str()).await?.is_some();
        }
        if prevs_known {
            let before = self.state_before(event, &rules).await?;
            return self.full_state(&before).await;
        }
        let Some(row) = event_repo::get_timeline(self.db().pool(), event.event_id.as_str()).await? else {
            return Ok(state_repo::StateMap::new());
        };
        let mut state = state_repo::load_group(self.db().pool(), row.state_group).await?;
        if let Some(key) = event.state_key() {
            if state.get(&(event.kind().to_string(), key.to_owned())).is_some_and(|id| id == event.event_id.as_str()) {
                state.remove(&(event.kind().to_string(), key.to_owned()));
            }
        }
        Ok(state)
    }

    /// The state after an event of the timeline; None for events we do not have there.
    pub(crate) async fn state_after(&self, event_id: &EventId) -> Result<Option<state_repo::StateMap>> {
        match event_repo::get_timeline(self.db().pool(), event_id.as_str()).await? {
            Some(row) => Ok(Some(state_repo::load_group(self.db().pool(), row.state_group).await?)),
            None => Ok(None),
        }
    }

    /// Several states of a room resolved by its version's state resolution.
    pub(crate) async fn resolve_state_maps(&self, room_id: &RoomId, states: Vec<state_repo::StateMap>) -> Result<state_repo::StateMap> {
        let rules = rules_for(&self.room_version(room_id).await?)?;
        self.resolve_states(states, &rules, None).await
    }

    /// Every stored event reachable from `start` through auth_events (start included).
    pub async fn auth_chain_pdus(&self, mut wanted: Vec<OwnedEventId>) -> Result<Vec<Value>> {
        let mut seen = HashSet::new();
        let mut auth_chain = Vec::new();
        while let Some(id) = wanted.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(pdu) = self.pdu(&id).await? {
                wanted.extend(pdu.auth_events.iter().cloned());
                auth_chain.push(serde_json::to_value(&pdu.json())?);
            }
        }
        Ok(auth_chain)
    }

    /// The state ids before an event, and their auth chain ids (/state_ids).
    pub async fn state_ids_before(&self, event: &Pdu) -> Result<(Vec<String>, Vec<String>)> {
        let (state, chain) = self.state_and_auth_chain_before(event).await?;
        let id_of = |value: &Value, rules: &ruma::room_version_rules::RoomVersionRules| -> Option<String> {
            let object: ruma::CanonicalJsonObject = serde_json::from_value(value.clone()).ok()?;
            match value.get("event_id").and_then(Value::as_str) {
                Some(id) => Some(id.to_owned()),
                None => ruma::signatures::reference_hash(&object, rules).ok().map(|h| format!("${h}")),
            }
        };
        let rules = rules_for(&self.room_version(&event.room_id).await?)?;
        Ok((state.iter().filter_map(|v| id_of(v, &rules)).collect(), chain.iter().filter_map(|v| id_of(v, &rules)).collect()))
    }
}

impl Rooms {
    /// Prev events of the room's earliest known event that this server does not have: where
    /// backfill continues. Empty when the history is complete (it starts at the create event).
    pub async fn backfill_frontier(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        let Some((earliest, _)) = event_repo::earliest(self.db().pool(), room_id.as_str()).await? else {
            return Ok(Vec::new());
        };
        let Some(pdu) = self.pdu(&EventId::parse(earliest)?).await? else { return Ok(Vec::new()) };
        let mut missing = Vec::new();
        for prev in pdu.prev_events {
            if event_repo::get_timeline(self.db().pool(), prev.as_str()).await?.is_none() {
                missing.push(prev);
            }
        }
        Ok(missing)
    }

    /// Stores an event from before the known history (backfill): checked against its auth
    /// events, placed in the timeline before everything else, without touching the current
    /// state, the forward extremities or anyone's sync.
    pub async fn persist_backfilled(&self, pdu: Pdu, version: &RoomVersionId) -> Result<()> {
        let rules = rules_for(version)?;
        if event_repo::get_timeline(self.db().pool(), pdu.event_id.as_str()).await?.is_some() {
            return Ok(());
        }
        let mut auth_events = std::collections::HashMap::new();
        let mut wanted = pdu.auth_events.clone();
        if rules.authorization.room_create_event_id_as_room_id && pdu.kind().to_string() != "m.room.create" {
            // v12: the create event is referenced by the room id.
            wanted.push(EventId::parse(format!("${}", &pdu.room_id.as_str()[1..]))?);
        }
        for id in &wanted {
            if let Some(event) = self.pdu(id).await? {
                auth_events.insert(id.clone(), event);
            }
        }
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id: &EventId| auth_events.get(id).cloned())
            .map_err(|e| MatrixError::forbidden(format!("Backfilled event not allowed: {e}")))?;
        // Its state: that of the earliest event we had (an approximation good for reading).
        let state_group = event_repo::earliest(self.db().pool(), pdu.room_id.as_str()).await?.map(|(_, g)| g).unwrap_or(-1);
        let json = serde_json::to_string(&pdu.json())?;
        let mut tx = self.db().begin_write().await?;
        let stream = event_repo::insert_backfilled(
            &mut tx,
            &event_repo::NewEvent {
                event_id: pdu.event_id.as_str(),
                room_id: pdu.room_id.as_str(),
                event_type: &pdu.kind().to_string(),
                state_key: pdu.state_key(),
                sender: pdu.fields.sender.as_str(),
                origin_server_ts: u64::from(pdu.fields.origin_server_ts.0) as i64,
                depth: pdu.fields.depth as i64,
                json: &json,
                state_group,
                txn: None,
            },
        )
        .await?;
        if let Some(document) = super::search::document(&pdu) {
            crate::storage::search::insert(&mut tx, stream, &document).await?;
        }
        let prevs: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
        let auths: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
        event_repo::insert_edges(&mut tx, pdu.event_id.as_str(), &prevs, &auths).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events before `from` (inclusive), walking prev events, newest first, at most `limit`.
    pub async fn events_before(&self, room_id: &RoomId, from: &[OwnedEventId], limit: usize) -> Result<Vec<Pdu>> {
        let mut queue: Vec<OwnedEventId> = from.to_vec();
        let mut seen = HashSet::new();
        let mut found: Vec<Pdu> = Vec::new();
        while let Some(id) = queue.pop() {
            if found.len() >= limit || !seen.insert(id.clone()) {
                continue;
            }
            let Some(pdu) = self.pdu(&id).await? else { continue };
            if pdu.room_id != room_id {
                continue;
            }
            queue.extend(pdu.prev_events.iter().cloned());
            found.push(pdu);
        }
        found.sort_by(|a, b| b.fields.depth.cmp(&a.fields.depth));
        Ok(found)
    }
}

/// State types shown to invitees and knockers (stripped state).
pub const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

pub fn stripped(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.kind().to_string(),
        "state_key": pdu.state_key().unwrap_or(""),
        "sender": pdu.fields.sender,
        "content": pdu.content_value(),
    })
}

impl Rooms {
    /// The stripped state of a room for an invite: from the room's current state when this
    /// server is in it, else what the inviting server sent.
    pub async fn stripped_room_state(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<Value>> {
        let mut events = Vec::new();
        for kind in STRIPPED_STATE {
            if let Some(pdu) = self.current_state_event(room_id, kind, "").await? {
                events.push(stripped(&pdu));
            }
        }
        if events.is_empty() {
            if let Some(text) = crate::storage::federation::invite_state(self.db().pool(), room_id.as_str(), user.as_str()).await? {
                events = serde_json::from_str(&text).unwrap_or_default();
            }
        }
        Ok(events)
    }

    /// Builds and signs a local user's event without persisting it (for invites, which
    /// need the invitee's server's signature first).
    pub async fn build_event(&self, room_id: &RoomId, sender: &UserId, template: super::EventTemplate) -> Result<(Pdu, RoomVersionId)> {
        let version = self.room_version(room_id).await?;
        let pdu = self.build_local(room_id, &version, sender, template, None).await?;
        Ok((pdu, version))
    }

    /// Persists a local event built earlier (and countersigned by another server).
    pub async fn persist_built(&self, pdu: Pdu, version: &RoomVersionId) -> Result<()> {
        let lock = self.room_lock(&pdu.room_id);
        let _guard = lock.lock().await;
        self.persist(pdu, version, None).await.map(|_| ())
    }

    /// An invite (or a leave) of a local user in a room this server is not in: the event is
    /// kept outside any state, the user's membership recorded, their sync woken.
    pub async fn record_out_of_room_membership(&self, pdu: &Pdu, stripped_state: Option<&[Value]>) -> Result<()> {
        let user = pdu.state_key().ok_or_else(|| MatrixError::bad_json("Not a membership event"))?.to_owned();
        let membership = pdu.content_value()["membership"].as_str().unwrap_or("leave").to_owned();
        let json = serde_json::to_string(&pdu.json())?;
        let mut tx = self.db().begin_write().await?;
        let stream = match event_repo::get_timeline(&mut **tx, pdu.event_id.as_str()).await? {
            Some(row) => row.stream_ordering,
            None => {
                event_repo::insert(
                    &mut tx,
                    &event_repo::NewEvent {
                        event_id: pdu.event_id.as_str(),
                        room_id: pdu.room_id.as_str(),
                        event_type: &pdu.kind().to_string(),
                        state_key: pdu.state_key(),
                        sender: pdu.fields.sender.as_str(),
                        origin_server_ts: u64::from(pdu.fields.origin_server_ts.0) as i64,
                        depth: pdu.fields.depth as i64,
                        json: &json,
                        state_group: -1,
                        txn: None,
                    },
                )
                .await?
            }
        };
        crate::storage::rooms::set_membership(&mut tx, pdu.room_id.as_str(), &user, &membership, pdu.event_id.as_str(), stream).await?;
        if let Some(state) = stripped_state {
            crate::storage::federation::save_invite_state(&mut tx, pdu.room_id.as_str(), &user, &serde_json::to_string(state)?).await?;
        }
        tx.commit().await?;
        self.notifier().wake([user.as_str()]);
        Ok(())
    }

    /// make_leave: an unsigned leave event for a remote user, on top of the room as it is.
    pub async fn leave_template(&self, room_id: &RoomId, user: &UserId) -> Result<(RoomVersionId, Value)> {
        let version = self.room_version(room_id).await?;
        self.membership_template(room_id, user, "leave", &[version]).await
    }
}
