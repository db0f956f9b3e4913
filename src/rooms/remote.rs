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
        content.insert("membership".into(), "join".into());
        if let Ok(Some(authoriser)) = self.restricted_join_authoriser_for(room_id, user).await {
            content.insert("join_authorised_via_users_server".into(), authoriser.into());
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
        let mut state_ids: Vec<String> = Vec::new();
        if let Some(prev) = event.prev_events.first() {
            if let Some(row) = event_repo::get(self.db().pool(), prev.as_str()).await? {
                state_ids = state_repo::load_group(self.db().pool(), row.state_group).await?.into_values().collect();
            }
        }
        let mut state = Vec::new();
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        for id in &state_ids {
            if let Some(pdu) = self.pdu(&EventId::parse(id.as_str())?).await? {
                wanted.extend(pdu.auth_events.iter().cloned());
                state.push(serde_json::to_value(&pdu.json)?);
            }
        }
        wanted.extend(event.auth_events.iter().cloned());
        let mut seen = HashSet::new();
        let mut auth_chain = Vec::new();
        while let Some(id) = wanted.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(pdu) = self.pdu(&id).await? {
                wanted.extend(pdu.auth_events.iter().cloned());
                auth_chain.push(serde_json::to_value(&pdu.json)?);
            }
        }
        Ok((state, auth_chain))
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
