//! createRoom: the initial events of a new room, in the spec's order.

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{rules_for, EventTemplate, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{aliases as alias_repo, rooms as room_repo},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// What the client asked for, already parsed.
#[derive(Debug, Default)]
pub struct CreateRoom {
    pub room_version: Option<RoomVersionId>,
    pub preset: Option<Preset>,
    pub publish: bool,
    pub alias_localpart: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub creation_content: Map<String, Value>,
    /// (type, state_key, content)
    pub initial_state: Vec<(String, String, Value)>,
    pub power_level_override: Option<Map<String, Value>>,
    /// The whole m.room.power_levels content, instead of the preset's (and the override):
    /// an upgrade copies the old room's.
    pub power_levels: Option<Map<String, Value>>,
    /// The id of a v1–v11 room (otherwise random): an upgrade names the new room in the old
    /// room's tombstone before creating it. Room v12 ids come from the create event.
    pub room_id: Option<OwnedRoomId>,
}

impl Rooms {
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.room_version.clone().unwrap_or_else(|| self.default_version().clone());
        let rules = rules_for(&version)?;
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let preset = request.preset.unwrap_or(if request.publish { Preset::PublicChat } else { Preset::PrivateChat });

        let alias = match &request.alias_localpart {
            Some(localpart) => {
                let alias = ruma::RoomAliasId::parse(format!("#{localpart}:{}", self.server_name()))
                    .map_err(|e| MatrixError::invalid_param(format!("Invalid room_alias_name: {e}")))?;
                if localpart.contains(':') || localpart.contains(char::is_whitespace) {
                    return Err(MatrixError::invalid_param("Invalid characters in room_alias_name"));
                }
                if alias_repo::resolve(self.db.pool(), alias.as_str()).await?.is_some() {
                    return Err(MatrixError::room_in_use("Room alias already taken"));
                }
                Some(alias)
            }
            None => None,
        };
        // Remote invitees are invited by the caller through federation once the room exists.
        let request = CreateRoom { invite: request.invite.iter().filter(|u| u.server_name() == self.server_name()).cloned().collect(), ..request };

        // m.room.create
        let mut create = request.creation_content.clone();
        create.insert("room_version".into(), version.as_str().into());
        if !matches!(version, RoomVersionId::V11 | RoomVersionId::V12) {
            create.insert("creator".into(), creator.as_str().into());
        } else {
            create.remove("creator");
        }
        let trusted_creators: Vec<&OwnedUserId> = if v12 && preset == Preset::TrustedPrivateChat {
            request.invite.iter().collect()
        } else {
            Vec::new()
        };
        if !trusted_creators.is_empty() {
            create.insert("additional_creators".into(), json!(trusted_creators));
        }
        let placeholder_id = match (v12, request.room_id.clone()) {
            (true, _) => None,
            (false, Some(room_id)) => Some(room_id),
            (false, None) => Some(RoomId::parse(format!("!{}:{}", crate::accounts::random_string(18), self.server_name()))?),
        };
        let create_template = EventTemplate::state(StateEventType::RoomCreate, "", Value::Object(create));
        let room_id = self.create_first_event(placeholder_id, creator, &version, create_template).await?;
        let _creating = Creating { rooms: self, room_id: room_id.clone() };

        let send = |template: EventTemplate| {
            let room_id = room_id.clone();
            async move { self.send(&room_id, creator, template, None).await }
        };

        // The creator joins.
        let member = self.member_content(creator, "join", None).await?;
        send(EventTemplate::state(StateEventType::RoomMember, creator.as_str(), Value::Object(member))).await?;

        // Power levels.
        let mut users = Map::new();
        if !v12 {
            users.insert(creator.to_string(), 100.into());
            if preset == Preset::TrustedPrivateChat {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), 100.into());
                }
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == Preset::PublicChat { 50 } else { 0 },
            "notifications": { "room": 50 }
        });
        if let (Some(overrides), Some(power_map)) = (&request.power_level_override, power.as_object_mut()) {
            for (key, value) in overrides {
                power_map.insert(key.clone(), value.clone());
            }
        }
        if let Some(given) = &request.power_levels {
            power = Value::Object(given.clone());
        }
        send(EventTemplate::state(StateEventType::RoomPowerLevels, "", power)).await?;

        if let Some(alias) = &alias {
            send(EventTemplate::state(StateEventType::RoomCanonicalAlias, "", json!({ "alias": alias }))).await?;
        }

        let (join_rule, history, guests_can_join) = match preset {
            Preset::PublicChat => ("public", "shared", false),
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "shared", true),
        };
        // The preset's state, unless initial_state sets it (as Synapse: no event that the
        // next one replaces; an upgrade copies all three from the old room). Guest access is
        // an event only where guests may join: its absence forbids them (as Synapse).
        let mut preset_state = vec![
            (StateEventType::RoomJoinRules, json!({ "join_rule": join_rule })),
            (StateEventType::RoomHistoryVisibility, json!({ "history_visibility": history })),
        ];
        if guests_can_join {
            preset_state.push((StateEventType::RoomGuestAccess, json!({ "guest_access": "can_join" })));
        }
        for (kind, content) in preset_state {
            if !request.initial_state.iter().any(|(k, key, _)| *k == kind.to_string() && key.is_empty()) {
                send(EventTemplate::state(kind, "", content)).await?;
            }
        }

        for (kind, state_key, content) in request.initial_state {
            send(EventTemplate::state(kind.as_str().into(), state_key, content)).await?;
        }
        if let Some(name) = request.name {
            send(EventTemplate::state(StateEventType::RoomName, "", json!({ "name": name }))).await?;
        }
        if let Some(topic) = request.topic {
            send(EventTemplate::state(
                StateEventType::RoomTopic,
                "",
                json!({ "topic": topic, "m.topic": [{ "mimetype": "text/plain", "body": topic }] }),
            ))
            .await?;
        }
        for invitee in &request.invite {
            self.change_membership(&room_id, creator, invitee, super::membership::Change::Invite, None, request.is_direct)
                .await?;
        }
        if let Some(alias) = &alias {
            if !alias_repo::insert(self.db.pool(), alias.as_str(), room_id.as_str(), creator.as_str()).await? {
                return Err(MatrixError::room_in_use("Room alias already taken"));
            }
        }
        if request.publish {
            room_repo::set_published(self.db.pool(), room_id.as_str(), true).await?;
        }
        Ok(room_id)
    }

    /// Persists the m.room.create event; the room id is the placeholder (v1–v11) or derived
    /// from the event's reference hash (v12).
    async fn create_first_event(
        &self,
        room_id: Option<OwnedRoomId>,
        creator: &UserId,
        version: &RoomVersionId,
        template: EventTemplate,
    ) -> Result<OwnedRoomId> {
        // For v12 the id is unknown until the event is built; a dummy id is only used as a
        // lock key and is never stored.
        let lock_id = room_id.clone().unwrap_or_else(|| RoomId::parse(format!("!creating{}", crate::accounts::random_string(16))).expect("valid"));
        let lock = self.room_lock(&lock_id);
        let _guard = lock.lock().await;
        let pdu = self.build_local(&lock_id, version, creator, template, None).await?;
        let room_id = pdu.room_id.clone();
        self.creating_rooms().insert(room_id.clone());
        if let Err(error) = self.persist(pdu, version, None).await {
            self.creating_rooms().remove(&room_id);
            return Err(error);
        }
        Ok(room_id)
    }

    fn creating_rooms(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<OwnedRoomId>> {
        self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the room's initial events (create, the creator's join, power levels, join
    /// rules, initial state, invites) are still being written. Sliding sync shows a room only
    /// once they all are: a client that reads "not encrypted" from a half-made room would
    /// send in the clear (Synapse writes them in one batch for the same reason).
    pub fn is_being_created(&self, room_id: &RoomId) -> bool {
        self.creating_rooms().contains(room_id)
    }
}

/// Marks a room as being created until dropped, then wakes its users' syncs, which now see
/// the room whole.
struct Creating<'a> {
    rooms: &'a Rooms,
    room_id: OwnedRoomId,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.rooms.creating_rooms().remove(&self.room_id);
        let (db, notifier, room_id) = (self.rooms.db.clone(), self.rooms.notifier.clone(), self.room_id.clone());
        tokio::spawn(async move {
            if let Ok(users) = room_repo::interested_users(db.pool(), room_id.as_str()).await {
                notifier.wake(&users);
            }
        });
    }
}
