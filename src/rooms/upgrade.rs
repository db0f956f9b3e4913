//! Room upgrades (the spec's "Room Upgrades" module, done the way Synapse's
//! `RoomCreationHandler.upgrade_room` does them): a replacement room in the new version with
//! the old room's transferable state, bans and power levels; a tombstone in the old room,
//! whose power levels then keep ordinary members from speaking or inviting; the local
//! aliases, the canonical alias, the directory listing and the members' tags moved along.

use ruma::{events::StateEventType, EventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{
    create::{CreateRoom, Preset},
    rules_for, EventTemplate, Pdu, Rooms,
};
use crate::{
    error::{MatrixError, Result},
    storage::{account_data as account_data_repo, aliases as alias_repo, rooms as room_repo, state as state_repo},
};

/// State the new room gets a copy of: Synapse's list, the spec's recommended one. Power
/// levels are copied on their own; a space also takes its `m.space.child` events.
const COPIED_STATE: [&str; 8] = [
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
];

impl Rooms {
    /// Replaces `old_room` with a new room of `new_version`, created by `user`; returns the
    /// new room's id. `additional_creators` only count where the new version has them (v12).
    ///
    /// Errors: `M_UNSUPPORTED_ROOM_VERSION`; `M_NOT_FOUND` for a room this server does not
    /// know; `M_FORBIDDEN` unless the user is joined and may send `m.room.tombstone`.
    pub async fn upgrade_room(
        &self,
        user: &UserId,
        old_room: &RoomId,
        new_version: &RoomVersionId,
        additional_creators: &[OwnedUserId],
    ) -> Result<OwnedRoomId> {
        let new_rules = rules_for(new_version)?.authorization;
        let old_version = self.room_version(old_room).await?;
        self.require_joined(old_room, user).await?;
        let old_power = self.power_levels(old_room).await?;
        if old_power.user_level(user) < old_power.event_level("m.room.tombstone", true) {
            return Err(MatrixError::forbidden("You need the power level to send m.room.tombstone to upgrade this room"));
        }
        let _upgrading = Upgrading::start(self, old_room)?;

        let old_create = self
            .current_state_event(old_room, "m.room.create", "")
            .await?
            .ok_or_else(|| MatrixError::internal("room without a create event"))?
            .content_value();
        let old_power_content = self.current_state_content(old_room, "m.room.power_levels", "").await?;
        // Ignored where the new version has no additional creators, as the spec says.
        let mut additional: Vec<OwnedUserId> = Vec::new();
        if new_rules.additional_room_creators {
            for extra in additional_creators.iter().filter(|u| *u != user) {
                if !additional.contains(extra) {
                    additional.push(extra.clone());
                }
            }
        }

        // Before v12 the new room's id is chosen first, so the tombstone (built now, stored
        // once the new room exists) can name it and the new room's predecessor can name the
        // tombstone. A v12 room's id comes from its create event, so there the tombstone
        // follows the new room and the predecessor has no event id (the spec allows that).
        let (new_room_id, tombstone) = if new_rules.room_create_event_id_as_room_id {
            // The tombstone's content does not matter to the auth rules: try one now, before
            // anything is created, as Synapse does.
            let probe = self.build_local(old_room, &old_version, user, tombstone_event(old_room), None).await?;
            self.check_tombstone(&probe, &old_version).await?;
            (None, None)
        } else {
            let new_room_id = RoomId::parse(format!("!{}:{}", crate::accounts::random_string(18), self.server_name()))?;
            let pdu = self.build_local(old_room, &old_version, user, tombstone_event(&new_room_id), None).await?;
            self.check_tombstone(&pdu, &old_version).await?;
            (Some(new_room_id), Some(pdu))
        };

        let mut creation_content = Map::new();
        let mut predecessor = json!({ "room_id": old_room });
        if let Some(pdu) = &tombstone {
            predecessor["event_id"] = pdu.event_id.as_str().into();
        }
        creation_content.insert("predecessor".into(), predecessor);
        if old_create.get("m.federate") == Some(&Value::Bool(false)) {
            creation_content.insert("m.federate".into(), false.into());
        }
        if let Some(room_type) = old_create.get("type") {
            creation_content.insert("type".into(), room_type.clone());
        }
        if !additional.is_empty() {
            creation_content.insert("additional_creators".into(), json!(additional));
        }

        let mut initial_state = Vec::new();
        for kind in COPIED_STATE {
            if let Some(content) = self.current_state_content(old_room, kind, "").await? {
                initial_state.push((kind.to_owned(), String::new(), content));
            }
        }
        if old_create.get("type").and_then(Value::as_str) == Some("m.space") {
            let mut children: Vec<(String, String)> = state_repo::current_state(self.db.pool(), old_room.as_str())
                .await?
                .into_iter()
                .filter(|((kind, _), _)| kind == "m.space.child")
                .map(|((_, state_key), event_id)| (state_key, event_id))
                .collect();
            children.sort();
            for (state_key, event_id) in children {
                let Some(child) = self.pdu(&EventId::parse(event_id)?).await? else { continue };
                let content = child.content_value();
                // Empty content: the child was taken out of the space.
                if content.as_object().is_some_and(|c| !c.is_empty()) {
                    initial_state.push(("m.space.child".to_owned(), state_key, content));
                }
            }
        }

        // The power levels the new room ends with, and those it starts with: while the old
        // room's state is copied the upgrading user needs the level for all of it.
        let final_power = old_power_content.as_ref().map(|content| {
            let mut content = integer_power_levels(content);
            if new_rules.explicitly_privilege_room_creators {
                // Creators have no entry in a v12 room: they outrank everyone.
                let users = users_mut(&mut content);
                users.remove(user.as_str());
                for extra in &additional {
                    users.remove(extra.as_str());
                }
            } else if !old_power.creators.is_empty() {
                // Out of a v12 room, whose creators had no entry: they keep the top level.
                let top = top_level(&content);
                let users = users_mut(&mut content);
                for creator in &old_power.creators {
                    users.insert(creator.to_string(), top.into());
                }
            }
            content
        });
        let initial_power = final_power.clone().map(|mut content| {
            if !new_rules.explicitly_privilege_room_creators {
                let needed = needed_to_copy(&content);
                let users_default = level(content.get("users_default")).unwrap_or(0);
                let users = users_mut(&mut content);
                if level(users.get(user.as_str())).unwrap_or(users_default) < needed {
                    users.insert(user.to_string(), needed.into());
                }
            }
            content
        });

        let new_room = self
            .create_room(
                user,
                CreateRoom {
                    room_version: Some(new_version.clone()),
                    // Every preset event is replaced by the copied state anyway.
                    preset: Some(Preset::PrivateChat),
                    creation_content,
                    initial_state,
                    power_levels: initial_power.clone(),
                    room_id: new_room_id,
                    ..CreateRoom::default()
                },
            )
            .await?;

        // Bans carry over (other memberships cannot: the server cannot join people).
        for banned in room_repo::members_with_membership(self.db.pool(), old_room.as_str(), "ban").await? {
            let Some(ban) = self.current_state_event(old_room, "m.room.member", &banned).await? else { continue };
            let template = EventTemplate::state(StateEventType::RoomMember, banned.as_str(), ban.content_value());
            if let Err(error) = self.send(&new_room, user, template, None).await {
                tracing::warn!(%new_room, %banned, %error, "could not copy a ban into the upgraded room");
            }
        }

        match tombstone {
            Some(pdu) => self.persist_built(pdu, &old_version).await?,
            None => {
                self.send(old_room, user, tombstone_event(&new_room), None).await?;
            }
        }

        self.move_aliases(user, old_room, &new_room).await?;
        if room_repo::is_published(self.db.pool(), old_room.as_str()).await? {
            room_repo::set_published(self.db.pool(), new_room.as_str(), true).await?;
            room_repo::set_published(self.db.pool(), old_room.as_str(), false).await?;
        }
        self.transfer_account_data(old_room, &new_room).await?;

        // Shut the old room: only moderators may still speak or invite.
        if let Some(content) = &old_power_content {
            let mut restricted = integer_power_levels(content);
            let needed = (level(restricted.get("users_default")).unwrap_or(0) + 1).max(50);
            let mut changed = false;
            for key in ["invite", "events_default"] {
                if level(restricted.get(key)).unwrap_or(0) < needed {
                    restricted.insert(key.into(), needed.into());
                    changed = true;
                }
            }
            if changed {
                let template = EventTemplate::state(StateEventType::RoomPowerLevels, "", Value::Object(restricted));
                if let Err(error) = self.send(old_room, user, template, None).await {
                    tracing::warn!(%old_room, %error, "could not restrict the power levels of the upgraded room");
                }
            }
        }
        // And give the new room its real power levels.
        if let Some(content) = final_power.filter(|content| Some(content) != initial_power.as_ref()) {
            let template = EventTemplate::state(StateEventType::RoomPowerLevels, "", Value::Object(content));
            self.send(&new_room, user, template, None).await?;
        }
        Ok(new_room)
    }

    /// The old room's auth rules decide whether the user may upgrade: the tombstone must pass.
    async fn check_tombstone(&self, pdu: &Pdu, version: &RoomVersionId) -> Result<()> {
        match self.prepare(pdu.clone(), version, None, None, false, None).await {
            Ok(_) => Ok(()),
            Err(error) if error.errcode == "M_FORBIDDEN" => {
                Err(MatrixError::forbidden(format!("You cannot upgrade this room: {}", error.message)))
            }
            Err(error) => Err(error),
        }
    }

    /// Every local alias now points at the new room; the local ones named in the old room's
    /// `m.room.canonical_alias` move into the new room's, out of the old room's.
    async fn move_aliases(&self, user: &UserId, old_room: &RoomId, new_room: &RoomId) -> Result<()> {
        let canonical = self.current_state_content(old_room, "m.room.canonical_alias", "").await?;
        alias_repo::move_to_room(self.db.pool(), old_room.as_str(), new_room.as_str()).await?;
        let Some(Value::Object(old_content)) = canonical else { return Ok(()) };
        let is_local = |alias: &Value| {
            alias.as_str().and_then(|a| RoomAliasId::parse(a).ok()).is_some_and(|a| a.server_name() == self.server_name())
        };
        let mut kept = old_content.clone();
        let mut moved = Map::new();
        if let Some(alias) = old_content.get("alias").filter(|a| is_local(a)) {
            moved.insert("alias".into(), alias.clone());
            kept.remove("alias");
        }
        if let Some(alt) = old_content.get("alt_aliases").and_then(Value::as_array).filter(|alt| !alt.is_empty()) {
            let (local, remote): (Vec<Value>, Vec<Value>) = alt.iter().cloned().partition(|a| is_local(a));
            moved.insert("alt_aliases".into(), local.into());
            if remote.is_empty() {
                kept.remove("alt_aliases");
            } else {
                kept.insert("alt_aliases".into(), remote.into());
            }
        }
        if kept != old_content {
            let template = EventTemplate::state(StateEventType::RoomCanonicalAlias, "", Value::Object(kept));
            if let Err(error) = self.send(old_room, user, template, None).await {
                tracing::warn!(%old_room, %error, "could not take the moved aliases out of the old room's canonical alias");
            }
        }
        if !moved.is_empty() {
            let template = EventTemplate::state(StateEventType::RoomCanonicalAlias, "", Value::Object(moved));
            if let Err(error) = self.send(new_room, user, template, None).await {
                tracing::warn!(%new_room, %error, "could not set the upgraded room's canonical alias");
            }
        }
        Ok(())
    }

    /// This server joined `room_id` through another server: when it replaces a room this
    /// server knows (its create event's `predecessor`), local aliases, the directory listing
    /// and the local members' tags and DMs follow, as the upgrading server moved its own
    /// (Synapse's `transfer_room_state_on_room_upgrade`, on a remote join).
    pub async fn follow_upgrade_on_join(&self, room_id: &RoomId) -> Result<()> {
        let Some(create) = self.current_state_event(room_id, "m.room.create", "").await? else { return Ok(()) };
        let content = create.content_value();
        let Some(old_room) = content["predecessor"]["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()) else { return Ok(()) };
        if room_repo::room_version(self.db.pool(), old_room.as_str()).await?.is_none() {
            return Ok(());
        }
        tracing::info!(%old_room, new_room = %room_id, "moving local aliases and listing to an upgraded room");
        alias_repo::move_to_room(self.db.pool(), old_room.as_str(), room_id.as_str()).await?;
        if room_repo::is_published(self.db.pool(), old_room.as_str()).await? {
            room_repo::set_published(self.db.pool(), room_id.as_str(), true).await?;
            room_repo::set_published(self.db.pool(), old_room.as_str(), false).await?;
        }
        self.transfer_account_data(&old_room, room_id).await
    }

    /// The old room's local members keep their tags and room push rules for the new room, and a DM stays a DM
    /// (`m.direct` lists the new room where it listed the old), as Synapse does.
    async fn transfer_account_data(&self, old_room: &RoomId, new_room: &RoomId) -> Result<()> {
        for member in self.joined_members(old_room).await? {
            let Ok(member) = UserId::parse(member.as_str()) else { continue };
            if member.server_name() != self.server_name() {
                continue;
            }
            let rules_copied = self.push.copy_room_rules(&member, old_room, new_room).await?;
            let pool = self.db.pool();
            let tags = account_data_repo::get(pool, member.as_str(), old_room.as_str(), "m.tag").await?;
            let mut direct = account_data_repo::get(pool, member.as_str(), "", "m.direct")
                .await?
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            let mut direct_changed = false;
            if let Some(Value::Object(dms)) = &mut direct {
                for rooms in dms.values_mut().filter_map(Value::as_array_mut) {
                    if rooms.iter().any(|r| r == old_room.as_str()) && !rooms.iter().any(|r| r == new_room.as_str()) {
                        rooms.push(new_room.as_str().into());
                        direct_changed = true;
                        break;
                    }
                }
            }
            if tags.is_none() && !direct_changed {
                if rules_copied {
                    self.notifier.wake([member.as_str()]);
                }
                continue;
            }
            let mut tx = self.db.begin_write().await?;
            if let Some(tags) = &tags {
                account_data_repo::put(&mut tx, member.as_str(), new_room.as_str(), "m.tag", tags).await?;
            }
            if let (true, Some(direct)) = (direct_changed, &direct) {
                account_data_repo::put(&mut tx, member.as_str(), "", "m.direct", &direct.to_string()).await?;
            }
            tx.commit().await?;
            self.notifier.wake([member.as_str()]);
        }
        Ok(())
    }
}

fn tombstone_event(replacement: &RoomId) -> EventTemplate {
    EventTemplate::state(
        StateEventType::RoomTombstone,
        "",
        json!({ "body": "This room has been replaced", "replacement_room": replacement }),
    )
}

/// A power level: an integer, or (before room v10) a string of one.
fn level(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Power levels content with every level an integer, as room v10 and later require (older
/// rooms allowed strings), like Synapse's `copy_and_fixup_power_levels_contents`. Values
/// that are no level at all (the auth rules never let them in) are left out.
fn integer_power_levels(content: &Value) -> Map<String, Value> {
    let mut fixed = Map::new();
    for (key, value) in content.as_object().into_iter().flatten() {
        match value {
            Value::Object(inner) => {
                let levels: Map<String, Value> =
                    inner.iter().filter_map(|(k, v)| level(Some(v)).map(|l| (k.clone(), l.into()))).collect();
                fixed.insert(key.clone(), levels.into());
            }
            other => {
                if let Some(l) = level(Some(other)) {
                    fixed.insert(key.clone(), l.into());
                }
            }
        }
    }
    fixed
}

fn users_mut(content: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let users = content.entry("users").or_insert_with(|| Value::Object(Map::new()));
    if !users.is_object() {
        *users = Value::Object(Map::new());
    }
    users.as_object_mut().expect("an object")
}

/// The level that may send every state event and ban: what copying the old room takes
/// (Synapse's `needed_power_level`).
fn needed_to_copy(content: &Map<String, Value>) -> i64 {
    let events = content.get("events").and_then(Value::as_object);
    let highest_event = events.into_iter().flatten().filter_map(|(_, v)| level(Some(v))).max().unwrap_or(0);
    level(content.get("state_default")).unwrap_or(50).max(level(content.get("ban")).unwrap_or(50)).max(highest_event)
}

/// At least 100, and no lower than any user or anything the room asks for.
fn top_level(content: &Map<String, Value>) -> i64 {
    let users = content.get("users").and_then(Value::as_object);
    let highest_user = users.into_iter().flatten().filter_map(|(_, v)| level(Some(v))).max().unwrap_or(0);
    highest_user.max(needed_to_copy(content)).max(100)
}

/// Marks a room as being upgraded until dropped; another upgrade of it meanwhile is refused
/// (as Synapse refuses one while another is in progress) rather than making a second room.
struct Upgrading<'a> {
    rooms: &'a Rooms,
    room_id: OwnedRoomId,
}

impl<'a> Upgrading<'a> {
    fn start(rooms: &'a Rooms, room_id: &RoomId) -> Result<Self> {
        let mut upgrading = rooms.upgrading.lock().unwrap_or_else(|p| p.into_inner());
        if !upgrading.insert(room_id.to_owned()) {
            return Err(MatrixError::unknown("An upgrade for this room is currently in progress"));
        }
        Ok(Self { rooms, room_id: room_id.to_owned() })
    }
}

impl Drop for Upgrading<'_> {
    fn drop(&mut self) {
        self.rooms.upgrading.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.room_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_levels_become_integers() {
        let fixed = integer_power_levels(&json!({ "ban": "50", "users": { "@a:x": "100", "@b:x": 5 }, "events": { "m.room.name": "20" }, "bogus": "high" }));
        assert_eq!(Value::Object(fixed), json!({ "ban": 50, "users": { "@a:x": 100, "@b:x": 5 }, "events": { "m.room.name": 20 } }));
    }

    #[test]
    fn levels_needed_and_top() {
        let content = integer_power_levels(&json!({ "state_default": 50, "ban": 60, "events": { "m.room.tombstone": 150 }, "users": { "@a:x": 120 } }));
        assert_eq!(needed_to_copy(&content), 150);
        assert_eq!(top_level(&content), 150);
        assert_eq!(top_level(&integer_power_levels(&json!({ "users": { "@a:x": 20 } }))), 100);
    }
}
