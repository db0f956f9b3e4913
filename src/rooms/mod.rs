//! Rooms: building, authorizing and persisting events — the one path every event takes —
//! and reading them back with history visibility applied.

pub(crate) mod auth;
pub mod batch;
pub mod cache;
pub mod create;
pub mod deletion;
pub mod directory;
pub mod hierarchy;
pub mod membership;
pub mod pdu;
pub mod persist;
pub mod read;
pub mod relations;
pub mod remote;
pub mod resolve;
pub mod search;
pub mod upgrade;
pub mod user_directory;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    canonical_json::redact,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures, CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, RoomId, RoomVersionId, UserId,
};
use serde_json::Value;

pub use self::pdu::Pdu;
use crate::{
    crypto::ServerKeys,
    error::{MatrixError, Result},
    push::Push,
    storage::{
        events as event_repo, federation as federation_repo, rooms as room_repo,
        state::{self as state_repo, StateMap},
        Db,
    },
    sync::notifier::Notifier,
};

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// An event a local user wants to send; the server fills in the DAG fields.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    pub kind: TimelineEventType,
    pub content: Value,
    pub state_key: Option<String>,
    /// The event's `origin_server_ts` when not now: an application service's `ts`
    /// (timestamp massaging; it does not change the event's place in the room).
    pub origin_server_ts: Option<MilliSecondsSinceUnixEpoch>,
}

impl EventTemplate {
    pub fn state(kind: StateEventType, state_key: impl Into<String>, content: Value) -> Self {
        Self { kind: kind.to_string().into(), content, state_key: Some(state_key.into()), origin_server_ts: None }
    }

    pub fn message(kind: TimelineEventType, content: Value) -> Self {
        Self { kind, content, state_key: None, origin_server_ts: None }
    }

    pub fn at(mut self, origin_server_ts: Option<MilliSecondsSinceUnixEpoch>) -> Self {
        self.origin_server_ts = origin_server_ts;
        self
    }
}

/// What became of a persisted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// In the timeline at this stream position (0: it was already there).
    Stored(i64),
    /// Kept as an outlier: it fails the auth rules against the room's current state.
    SoftFailed,
    /// Kept as rejected: it fails the auth rules against its auth events or the state before
    /// it (see `Federation::persist_or_reject`).
    Rejected,
}

/// The state before an event, as the persistence path finds it.
enum StateBefore {
    /// The room's first event.
    Empty,
    /// The state group of its (single-state) prev events.
    Group(i64),
    /// A resolved or explicitly given state.
    Resolved(StateMap),
    /// The room's current state (for soft-failure checks).
    Current,
}

/// A client's transaction: (device id, txn id), for idempotent sends.
pub type ClientTxn<'a> = Option<(&'a str, &'a str)>;

/// Tells the federation sender that something was queued for other servers.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<tokio::sync::Notify>);

impl OutboxSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub async fn wait(&self) {
        self.0.notified().await;
    }
}

#[derive(Clone)]
pub struct Rooms {
    db: Db,
    keys: ServerKeys,
    notifier: Notifier,
    push: Push,
    outbound: OutboxSignal,
    default_version: RoomVersionId,
    /// One writer per room at a time; rooms never wait on each other.
    room_locks: Arc<Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>>,
    caches: Arc<cache::RoomCaches>,
    pending_sends: Arc<batch::PendingSends>,
    /// Rooms whose initial events are still being written (see `create::Creating`).
    creating: Arc<Mutex<std::collections::HashSet<OwnedRoomId>>>,
    /// Rooms being upgraded (see `upgrade::Upgrading`).
    upgrading: Arc<Mutex<std::collections::HashSet<OwnedRoomId>>>,
    /// Counts commits of new events, for readers of the whole stream (application services).
    persisted: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Event types that move a room up a recency-sorted room list (sliding sync's `bump_stamp`),
/// as Synapse's defaults: what people see as activity, not every state change or reaction.
pub const BUMP_EVENT_TYPES: [&str; 7] =
    ["m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"];

/// Room versions this server creates and accepts.
pub fn supported_room_versions() -> Vec<RoomVersionId> {
    use RoomVersionId::*;
    vec![V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12]
}

pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    if !supported_room_versions().contains(version) {
        return Err(MatrixError::unsupported_room_version(format!("Room version {version} is not supported")));
    }
    version.rules().ok_or_else(|| MatrixError::unsupported_room_version(format!("Room version {version} is not supported")))
}

impl Rooms {
    pub fn new(
        db: Db,
        keys: ServerKeys,
        notifier: Notifier,
        push: Push,
        outbound: OutboxSignal,
        default_version: RoomVersionId,
    ) -> Self {
        Self { db, keys, notifier, push, outbound, default_version, room_locks: Arc::default(), caches: Arc::default(), pending_sends: Arc::default(), creating: Arc::default(), upgrading: Arc::default(), persisted: Arc::new(tokio::sync::watch::Sender::new(0)) }
    }

    pub fn keys(&self) -> &ServerKeys {
        &self.keys
    }

    /// Changes whenever new events (local or from other servers) have been committed.
    pub fn subscribe_persisted(&self) -> tokio::sync::watch::Receiver<u64> {
        self.persisted.subscribe()
    }

    /// Other servers with users joined to the room.
    pub async fn remote_servers<'c>(&self, db: impl sqlx::Executor<'c, Database = sqlx::Any>, room_id: &str) -> Result<Vec<String>> {
        let members = room_repo::members_with_membership(db, room_id, "join").await?;
        let mut servers: Vec<String> = members
            .iter()
            .filter_map(|user| UserId::parse(user.as_str()).ok())
            .map(|user| user.server_name().to_string())
            .filter(|server| server != self.keys.server_name.as_str())
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    /// Queues a local event for every other server in the room (and the server of a remote
    /// user whose membership it changes), in the event's own transaction. An invite is not
    /// queued for the invitee's server: that server had it through /invite, and is not in the
    /// room (as Synapse, which sends room events only to servers in the room).
    async fn queue_for_other_servers(&self, tx: &mut crate::storage::Tx, pdu: &Pdu, json: &str, known: Option<&[String]>) -> Result<()> {
        let mut servers = match known {
            Some(servers) => servers.to_vec(),
            None => self.remote_servers(&mut **tx, pdu.room_id.as_str()).await?,
        };
        if *pdu.kind() == TimelineEventType::RoomMember && pdu.content_value()["membership"] != "invite" {
            if let Some(target) = pdu.state_key().and_then(|k| UserId::parse(k).ok()) {
                let server = target.server_name().to_string();
                if server != self.keys.server_name.as_str() && !servers.contains(&server) {
                    servers.push(server);
                }
            }
        }
        for server in servers {
            federation_repo::enqueue(tx, &server, "pdu", json).await?;
        }
        Ok(())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.keys.server_name
    }

    pub fn default_version(&self) -> &RoomVersionId {
        &self.default_version
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    /// The room's version; `M_NOT_FOUND` for rooms this server does not know.
    pub async fn room_version(&self, room_id: &RoomId) -> Result<RoomVersionId> {
        let room_id = room_id.to_owned();
        if let Some(version) = self.caches.version(&room_id) {
            return Ok(version);
        }
        let version = room_repo::room_version(self.db.pool(), room_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
        let version = RoomVersionId::try_from(version).map_err(|e| MatrixError::internal(e.to_string()))?;
        self.caches.remember_version(room_id, version.clone());
        Ok(version)
    }

    /// Loads a stored event (from the timeline, or an outlier).
    pub async fn pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        let event_id = event_id.to_owned();
        if let Some(pdu) = self.caches.event(&event_id) {
            return Ok(Some(pdu));
        }
        let generation = self.caches.event_generation();
        match event_repo::get(self.db.pool(), event_id.as_str()).await? {
            Some(row) => {
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                self.caches.remember_event(&pdu, generation);
                Ok(Some(pdu))
            }
            None => Ok(None),
        }
    }

    /// An event of the room's timeline (not an outlier, nor a soft-failed or rejected event).
    pub async fn timeline_pdu(&self, room_id: &RoomId, event_id: &EventId) -> Result<Option<Pdu>> {
        match event_repo::get_timeline(self.db.pool(), event_id.as_str()).await? {
            Some(row) if row.room_id == room_id.as_str() => Ok(Some(pdu_from_row(&row.event_id, &row.room_id, &row.json)?)),
            _ => Ok(None),
        }
    }

    /// (type, state_key) in a state group; state groups never change, so answers are cached.
    pub(crate) async fn lookup_in_group(&self, group: i64, kind: &str, state_key: &str) -> Result<Option<String>> {
        if let Some(answer) = self.caches.state_lookup(group, kind, state_key) {
            return Ok(answer);
        }
        let answer = state_repo::lookup_in_group(self.db.pool(), group, kind, state_key).await?;
        self.caches.remember_state_lookup(group, kind, state_key, answer.clone());
        Ok(answer)
    }

    /// The current state event for (type, state_key).
    pub async fn current_state_event(&self, room_id: &RoomId, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        match state_repo::current_entries(self.db.pool(), room_id.as_str(), kind, state_key).await? {
            Some(event_id) => self.pdu(&EventId::parse(event_id)?).await,
            None => Ok(None),
        }
    }

    /// Content of a current state event, if any.
    pub async fn current_state_content(&self, room_id: &RoomId, kind: &str, state_key: &str) -> Result<Option<Value>> {
        Ok(self.current_state_event(room_id, kind, state_key).await?.map(|pdu| pdu.content_value()))
    }

    /// Builds, signs, authorizes and persists a local user's event. Returns the event id.
    /// Messages (not state, not redactions) go through the room's batch, sharing a commit
    /// with whatever else is being sent to the room at the same moment.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: ClientTxn<'_>,
    ) -> Result<OwnedEventId> {
        if template.state_key.is_none() && template.kind != TimelineEventType::RoomRedaction {
            return self.send_batched(room_id, sender, template, txn).await;
        }
        self.send_alone(room_id, sender, template, txn).await
    }

    /// One event, persisted in its own transaction under the room's lock.
    async fn send_alone(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: ClientTxn<'_>,
    ) -> Result<OwnedEventId> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        let version = self.room_version(room_id).await?;
        self.send_locked(room_id, &version, sender, template, txn).await
    }

    /// Sends one event; the caller holds the room's lock.
    async fn send_locked(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        sender: &UserId,
        template: EventTemplate,
        txn: ClientTxn<'_>,
    ) -> Result<OwnedEventId> {
        if let Some((device, txn_id)) = txn {
            if let Some(existing) = event_repo::txn_event(self.db.pool(), sender.as_str(), device, room_id.as_str(), txn_id).await? {
                return Ok(EventId::parse(existing)?);
            }
        }
        let pdu = self.build_local(room_id, version, sender, template, None).await?;
        let event_id = pdu.event_id.clone();
        self.persist(pdu, version, txn.map(|(d, t)| (sender.as_str(), d, t))).await?;
        Ok(event_id)
    }

    /// Builds and signs a local event on top of the room's forward extremities, or of `head`
    /// (the previous event of a batch).
    async fn build_local(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        sender: &UserId,
        template: EventTemplate,
        head: Option<&persist::Head>,
    ) -> Result<Pdu> {
        let rules = rules_for(version)?;
        let extremities = match head {
            Some(head) => vec![(head.prev.to_string(), head.depth, head.state_group)],
            None => event_repo::forward_extremities(self.db.pool(), room_id.as_str()).await?,
        };
        let depth = extremities.iter().map(|(_, depth, _)| *depth).max().unwrap_or(0) + 1;
        let prev_events: Vec<String> = extremities.iter().take(20).map(|(id, _, _)| id.clone()).collect();
        let state_group = extremities.first().map(|(_, _, group)| *group);

        let content_raw = serde_json::value::to_raw_value(&template.content).map_err(|e| MatrixError::bad_json(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &template.kind,
            sender,
            template.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(MatrixError::bad_json)?;
        let mut auth_events = Vec::new();
        if let Some(group) = state_group {
            for (kind, state_key) in &auth_types {
                if let Some(id) = self.lookup_in_group(group, &kind.to_string(), state_key).await? {
                    // v12: the create event is referenced by the room id, not in auth_events.
                    if rules.authorization.room_create_event_id_as_room_id && *kind == StateEventType::RoomCreate {
                        continue;
                    }
                    auth_events.push(id);
                }
            }
        }

        let mut object = CanonicalJsonObject::new();
        let refs = |ids: &[String]| -> Result<CanonicalJsonValue> {
            let values: Result<Vec<CanonicalJsonValue>> = ids
                .iter()
                .map(|id| {
                    if matches!(rules.event_id_format, EventIdFormatVersion::V1) {
                        // v1/v2 reference [event_id, {sha256: hash}]; the hash is not checked by anyone.
                        Ok(CanonicalJsonValue::Array(vec![
                            CanonicalJsonValue::String(id.clone()),
                            CanonicalJsonValue::Object(CanonicalJsonObject::new()),
                        ]))
                    } else {
                        Ok(CanonicalJsonValue::String(id.clone()))
                    }
                })
                .collect();
            Ok(CanonicalJsonValue::Array(values?))
        };
        let is_create = template.kind == TimelineEventType::RoomCreate;
        if !(is_create && rules.authorization.room_create_event_id_as_room_id) {
            object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
        }
        object.insert("auth_events".into(), refs(&auth_events)?);
        object.insert("prev_events".into(), refs(&prev_events)?);
        object.insert("depth".into(), CanonicalJsonValue::Integer(depth.try_into().unwrap_or_default()));
        object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        object.insert("type".into(), CanonicalJsonValue::String(template.kind.to_string()));
        object.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(template.origin_server_ts.unwrap_or_else(MilliSecondsSinceUnixEpoch::now).0.into()),
        );
        let content = crate::crypto::to_canonical(&template.content)
            .map_err(|e| MatrixError::bad_json(format!("content is not canonical JSON: {e}")))?;
        if template.kind == TimelineEventType::RoomRedaction && !rules.redaction.content_field_redacts {
            // Before v11 the redacted event id is a top-level field.
            if let Some(redacts) = template.content.get("redacts") {
                object.insert("redacts".into(), ruma::canonical_json::to_canonical_value(redacts).map_err(|e| MatrixError::bad_json(e.to_string()))?);
            }
        }
        let mut content = content;
        if template.kind == TimelineEventType::RoomRedaction && !rules.redaction.content_field_redacts {
            if let CanonicalJsonValue::Object(map) = &mut content {
                map.remove("redacts");
            }
        }
        object.insert("content".into(), content);
        if let Some(state_key) = &template.state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
        }
        if !matches!(version, RoomVersionId::V11 | RoomVersionId::V12) {
            // `origin` is part of the PDU format up to v10.
            object.insert("origin".into(), CanonicalJsonValue::String(self.keys.server_name.to_string()));
        }
        if matches!(rules.event_id_format, EventIdFormatVersion::V1) {
            let event_id = format!("${}:{}", crate::accounts::random_string(18), self.keys.server_name);
            object.insert("event_id".into(), CanonicalJsonValue::String(event_id));
        }

        signatures::hash_and_sign_event(self.keys.server_name.as_str(), &*self.keys.keypair, &mut object, &rules.redaction)
            .map_err(|e| match e {
                ruma::signatures::JsonError::PduTooLarge => MatrixError::too_large("Event is larger than 65536 bytes"),
                other => MatrixError::internal(format!("signing failed: {other}")),
            })?;

        let event_id = match rules.event_id_format {
            EventIdFormatVersion::V1 => match object.get("event_id") {
                Some(CanonicalJsonValue::String(id)) => EventId::parse(id.as_str())?,
                _ => return Err(MatrixError::internal("v1 event without event_id")),
            },
            _ => {
                let hash = signatures::reference_hash(&object, &rules).map_err(|e| match e {
                    ruma::signatures::JsonError::PduTooLarge => MatrixError::too_large("Event is larger than 65536 bytes"),
                    other => MatrixError::internal(other.to_string()),
                })?;
                EventId::parse(format!("${hash}"))?
            }
        };
        let room_id = if is_create && rules.authorization.room_create_event_id_as_room_id {
            RoomId::parse(format!("!{}", &event_id.as_str()[1..]))?
        } else {
            room_id.to_owned()
        };
        Pdu::from_json(event_id, room_id, object).map_err(MatrixError::internal)
    }

    /// The one persistence path: format check, auth checks against the auth events and the
    /// state before the event (and, for remote events, against the current state: soft
    /// failure), then one transaction writing the event with all its indexes, and the room's
    /// new current state (resolved when the room's DAG has forks).
    async fn persist(&self, pdu: Pdu, version: &RoomVersionId, txn: Option<(&str, &str, &str)>) -> Result<i64> {
        match self.persist_with(pdu, version, txn, None, false).await? {
            Persisted::Stored(stream) => Ok(stream),
            Persisted::SoftFailed | Persisted::Rejected => Err(MatrixError::internal("a local event cannot soft-fail or be rejected")),
        }
    }

    /// A remote event: persisted like a local one, with the state before it given explicitly
    /// when it came with one (send_join, /state_ids), and soft-failed when it does not pass
    /// the auth rules against the current state.
    pub async fn persist_remote(
        &self,
        pdu: Pdu,
        version: &RoomVersionId,
        explicit_state: Option<StateMap>,
    ) -> Result<Persisted> {
        let lock = self.room_lock(&pdu.room_id);
        let _guard = lock.lock().await;
        if event_repo::get_timeline(self.db.pool(), pdu.event_id.as_str()).await?.is_some() {
            return Ok(Persisted::Stored(0));
        }
        self.persist_with(pdu, version, None, explicit_state, true).await
    }

    async fn persist_with(
        &self,
        pdu: Pdu,
        version: &RoomVersionId,
        txn: Option<(&str, &str, &str)>,
        explicit_state: Option<StateMap>,
        remote: bool,
    ) -> Result<Persisted> {
        let Some(prepared) = self.prepare(pdu, version, txn, explicit_state, remote, None).await? else {
            return Ok(Persisted::SoftFailed);
        };
        let mut tx = self.db.begin_write().await?;
        let stream = self.write(&mut tx, &prepared).await?;
        tx.commit().await?;
        self.announce(prepared, stream).await?;
        Ok(Persisted::Stored(stream))
    }

    /// Rewrites the current-state and membership indexes to `target`.
    async fn replace_current_state(
        &self,
        tx: &mut crate::storage::Tx,
        room_id: &str,
        target: &StateMap,
        pdu: &Pdu,
        pdu_json: &str,
        stream: i64,
    ) -> Result<()> {
        let current = state_repo::current_state(&mut **tx, room_id).await?;
        for ((kind, key), event_id) in target {
            if current.get(&(kind.clone(), key.clone())) == Some(event_id) {
                continue;
            }
            state_repo::set_current(tx, room_id, kind, key, event_id).await?;
            if matches!(kind.as_str(), "m.room.member" | "m.room.join_rules" | "m.room.history_visibility") {
                let json = if event_id == pdu.event_id.as_str() {
                    Some(pdu_json.to_owned())
                } else {
                    self.event_json(event_id).await?
                };
                let content = json
                    .and_then(|j| serde_json::from_str::<Value>(&j).ok())
                    .map(|mut v| v["content"].take())
                    .unwrap_or(Value::Null);
                if kind == "m.room.member" {
                    let membership = content["membership"].as_str().unwrap_or("leave");
                    room_repo::set_membership(tx, room_id, key, membership, event_id, stream).await?;
                }
                self.index_directory_state(tx, room_id, kind, key, &content).await?;
            }
        }
        Ok(())
    }

    /// The JSON of a timeline event or an outlier.
    async fn event_json(&self, event_id: &str) -> Result<Option<String>> {
        Ok(event_repo::get_json(self.db.pool(), event_id).await?)
    }

    /// The state before an event: that of its prev events, resolved when they differ.
    async fn state_before(&self, pdu: &Pdu, rules: &RoomVersionRules) -> Result<StateBefore> {
        let mut groups = Vec::new();
        for prev in &pdu.prev_events {
            let row = event_repo::get_timeline(self.db.pool(), prev.as_str())
                .await?
                .ok_or_else(|| MatrixError::invalid_param(format!("Unknown prev event {prev}")))?;
            if !groups.contains(&row.state_group) {
                groups.push(row.state_group);
            }
        }
        match groups.as_slice() {
            [] => Ok(StateBefore::Empty),
            [group] => Ok(StateBefore::Group(*group)),
            _ => {
                let mut states = Vec::new();
                for group in &groups {
                    states.push(state_repo::load_group(self.db.pool(), *group).await?);
                }
                Ok(StateBefore::Resolved(self.resolve_states(states, rules, None).await?))
            }
        }
    }

    /// The whole state a `StateBefore` stands for.
    async fn full_state(&self, before: &StateBefore) -> Result<StateMap> {
        Ok(match before {
            StateBefore::Empty => StateMap::new(),
            StateBefore::Group(group) => state_repo::load_group(self.db.pool(), *group).await?,
            StateBefore::Resolved(map) => map.clone(),
            StateBefore::Current => StateMap::new(),
        })
    }

    /// Resolves states (state resolution v2 / v2.1), prefetching their events and auth chains
    /// and running the algorithm off the async executor.
    async fn resolve_states(&self, states: Vec<StateMap>, rules: &RoomVersionRules, extra: Option<&Pdu>) -> Result<StateMap> {
        let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        if let Some(extra) = extra {
            events.insert(extra.event_id.clone(), extra.clone());
        }
        let mut stack: Vec<OwnedEventId> = Vec::new();
        for state in &states {
            for id in state.values() {
                stack.push(EventId::parse(id.as_str())?);
            }
        }
        stack.extend(extra.iter().flat_map(|e| e.auth_events.iter().cloned()));
        while let Some(id) = stack.pop() {
            if events.contains_key(&id) {
                continue;
            }
            if let Some(event) = self.pdu(&id).await? {
                stack.extend(event.auth_events.iter().cloned());
                events.insert(id, event);
            }
        }
        let resolver_states: Vec<resolve::ResolverState> =
            states.iter().map(resolve::to_resolver).collect::<std::result::Result<_, _>>().map_err(MatrixError::internal)?;
        let rules = rules.clone();
        let resolved = tokio::task::spawn_blocking(move || resolve::resolve(&rules, &resolver_states, &events))
            .await
            .map_err(|e| MatrixError::internal(e.to_string()))?
            .map_err(|e| MatrixError::internal(format!("state resolution failed: {e}")))?;
        Ok(resolve::from_resolver(&resolved))
    }

    /// The state entries the auth rules may look at for this event.
    async fn auth_state(&self, before: &StateBefore, pdu: &Pdu, rules: &RoomVersionRules) -> Result<HashMap<(String, String), Pdu>> {
        let mut keys = ruma::state_res::auth_types_for_event(
            pdu.kind(),
            &pdu.fields.sender,
            pdu.state_key(),
            &pdu.fields.content,
            &rules.authorization,
        )
        .map_err(MatrixError::bad_json)?;
        keys.push((StateEventType::RoomCreate, String::new()));
        let mut state = HashMap::new();
        for (kind, key) in keys {
            let kind = kind.to_string();
            let id = match before {
                StateBefore::Empty => None,
                StateBefore::Group(group) => self.lookup_in_group(*group, &kind, &key).await?,
                StateBefore::Resolved(map) => map.get(&(kind.clone(), key.clone())).cloned(),
                StateBefore::Current => state_repo::current_entries(self.db.pool(), pdu.room_id.as_str(), &kind, &key).await?,
            };
            if let Some(id) = id {
                if let Some(event) = self.pdu(&EventId::parse(id)?).await? {
                    state.insert((kind, key), event);
                }
            }
        }
        Ok(state)
    }

    /// Replaces the target's stored JSON with its redacted form, if the redaction may apply:
    /// the redacter sent the original or holds the `redact` power level.
    async fn apply_redaction(
        &self,
        tx: &mut crate::storage::Tx,
        redaction: &Pdu,
        target: &EventId,
        rules: &RoomVersionRules,
        state_before: &HashMap<(String, String), Pdu>,
    ) -> Result<()> {
        let Some(row) = event_repo::get(&mut **tx, target.as_str()).await? else {
            return Ok(());
        };
        if row.room_id != redaction.room_id.as_str() || row.redacted_by.is_some() {
            return Ok(());
        }
        let original = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
        let power = visibility::PowerLevels::from_state(state_before);
        let allowed = original.fields.sender == redaction.fields.sender
            || power.user_level(&redaction.fields.sender) >= power.redact;
        if !allowed {
            return Ok(());
        }
        let redacted = redact(original.json().clone(), &rules.redaction, None).map_err(|e| MatrixError::internal(e.to_string()))?;
        let text = serde_json::to_string(&redacted).map_err(|e| MatrixError::internal(e.to_string()))?;
        event_repo::mark_redacted(tx, target.as_str(), &text, redaction.event_id.as_str()).await?;
        // A redacted event is no longer found by search (outliers were never indexed).
        if let Some(timeline_row) = event_repo::get_timeline(&mut **tx, target.as_str()).await? {
            crate::storage::search::remove(tx, timeline_row.stream_ordering).await?;
        }
        Ok(())
    }
}

/// The `m.relates_to` of an event's content as (rel_type, target event id).
fn relation_of(pdu: &Pdu) -> Option<(String, String)> {
    let content = pdu.content_value();
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let target = relates_to.get("event_id")?.as_str()?;
    Some((rel_type.to_owned(), target.to_owned()))
}

pub fn pdu_from_row(event_id: &str, room_id: &str, json: &str) -> Result<Pdu> {
    let corrupt = |e: String| MatrixError::internal(format!("stored event {event_id} unreadable: {e}"));
    let event_id_parsed = EventId::parse(event_id).map_err(|e| corrupt(e.to_string()))?;
    let room_id_parsed = RoomId::parse(room_id).map_err(|e| corrupt(e.to_string()))?;
    Pdu::from_text(event_id_parsed, room_id_parsed, json).map_err(corrupt)
}

/// Auth failures say what rule failed, in terms a client can act on.
fn auth_error_message(error: &str) -> String {
    format!("Event not allowed by the room's authorization rules: {error}")
}
