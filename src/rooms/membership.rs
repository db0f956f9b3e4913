//! Membership changes: join, invite, leave, kick, ban, unban, knock, forget.

use std::{future::Future, pin::Pin};
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{EventTemplate, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{accounts as account_repo, rooms as room_repo},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Join,
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
    Knock,
}

/// Keys of a client's own added to member content; what the server sets (membership, the
/// profile, the reason) and what only servers may set stay the server's.
pub fn merge_client_content(content: &mut Map<String, Value>, extra: &Map<String, Value>) {
    const SERVER_SET: [&str; 6] = ["membership", "displayname", "avatar_url", "reason", "join_authorised_via_users_server", "third_party_signed"];
    for (key, value) in extra {
        if !SERVER_SET.contains(&key.as_str()) && !content.contains_key(key) {
            content.insert(key.clone(), value.clone());
        }
    }
}

impl Rooms {
    /// Member-event content carrying the user's profile.
    pub async fn member_content(&self, user: &UserId, membership: &str, reason: Option<&str>) -> Result<Map<String, Value>> {
        let mut content = Map::new();
        content.insert("membership".into(), membership.into());
        if let Some(profile) = account_repo::get_user(self.db.pool(), user.as_str()).await? {
            if let Some(name) = profile.displayname {
                content.insert("displayname".into(), name.into());
            }
            if let Some(avatar) = profile.avatar_url {
                content.insert("avatar_url".into(), avatar.into());
            }
        }
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        Ok(content)
    }

    /// Applies a membership change by `sender` to `target` (the sender for join/leave/knock).
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: Change,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        self.change_membership_with(room_id, sender, target, change, reason, is_direct, &Map::new()).await
    }

    /// A join carrying keys of the client's own beside those the server sets (`/join`'s
    /// extra body keys, which Synapse keeps in the member event).
    pub async fn join_with_content(&self, room_id: &RoomId, user: &UserId, reason: Option<&str>, extra: &Map<String, Value>) -> Result<OwnedEventId> {
        self.change_membership_with(room_id, user, user, Change::Join, reason, false, extra).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn change_membership_with(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: Change,
        reason: Option<&str>,
        is_direct: bool,
        extra: &Map<String, Value>,
    ) -> Result<OwnedEventId> {
        self.room_version(room_id).await?;
        if change == Change::Invite && target.server_name() != self.server_name() {
            return Err(MatrixError::forbidden("Inviting users of other servers is not supported yet"));
        }
        if change == Change::Invite
            && target.server_name() == self.server_name()
            && !account_repo::user_exists(self.db.pool(), target.as_str()).await?
        {
            return Err(MatrixError::not_found("Unknown user"));
        }
        let current = room_repo::membership(self.db.pool(), room_id.as_str(), target.as_str())
            .await?
            .map(|(m, _)| m);
        let membership = match change {
            Change::Join => "join",
            Change::Invite => "invite",
            Change::Knock => "knock",
            Change::Ban => "ban",
            Change::Leave | Change::Kick => {
                if current.is_none() || current.as_deref() == Some("leave") {
                    return Err(MatrixError::forbidden(format!("{target} is not a member of the room")));
                }
                "leave"
            }
            Change::Unban => {
                if current.as_deref() != Some("ban") {
                    return Err(MatrixError::forbidden(format!("{target} is not banned")));
                }
                "leave"
            }
        };
        if change == Change::Invite && current.as_deref() == Some("join") {
            return Err(MatrixError::forbidden(format!("{target} is already in the room")));
        }
        let mut content = if matches!(change, Change::Join | Change::Knock) {
            self.member_content(target, membership, reason).await?
        } else {
            let mut content = Map::new();
            content.insert("membership".into(), membership.into());
            if let Some(reason) = reason {
                content.insert("reason".into(), reason.into());
            }
            if change == Change::Invite {
                // Invites carry the invitee's profile so clients can show who was invited.
                let profile = self.member_content(target, membership, None).await?;
                for key in ["displayname", "avatar_url"] {
                    if let Some(v) = profile.get(key) {
                        content.insert(key.into(), v.clone());
                    }
                }
            }
            content
        };
        if is_direct {
            content.insert("is_direct".into(), true.into());
        }
        merge_client_content(&mut content, extra);
        if change == Change::Join && !matches!(current.as_deref(), Some("join") | Some("invite")) {
            if let Some(authoriser) = self.restricted_join_authoriser(room_id, target).await? {
                content.insert("join_authorised_via_users_server".into(), authoriser.into());
            }
        }
        if change == Change::Join && current.as_deref() == Some("join") {
            // Joining again with nothing changed is no new event (Synapse's idempotent join).
            if let Some(existing) = self.current_state_event(room_id, "m.room.member", target.as_str()).await? {
                if existing.content_value() == Value::Object(content.clone()) {
                    return Ok(existing.event_id.clone());
                }
            }
        }
        let template = EventTemplate::state(
            ruma::events::StateEventType::RoomMember,
            target.as_str(),
            Value::Object(content),
        );
        self.send(room_id, sender, template, None).await
    }

    /// Guest access was withdrawn: this server's guests leave the room, each by their own
    /// leave event (as Synapse does: no power level is needed and the decision stays with the
    /// guests' server, also when another server changed `m.room.guest_access`).
    /// Boxed with its type spelled out: it sends events, and sending (`announce`) starts it,
    /// so the compiler cannot infer the future's `Send` through the cycle.
    pub fn remove_guests_unless_allowed(&self, room_id: OwnedRoomId) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> {
        let rooms = self.clone();
        Box::pin(async move {
            let room_id = room_id.as_ref();
            let access = rooms.current_state_content(room_id, "m.room.guest_access", "").await?;
            if access.as_ref().and_then(|c| c["guest_access"].as_str()) == Some("can_join") {
                return Ok(());
            }
            for guest in room_repo::local_guests_in_room(rooms.db.pool(), room_id.as_str()).await? {
                let guest = UserId::parse(guest)?;
                rooms.change_membership(room_id, &guest, &guest, Change::Leave, None, false).await?;
                tracing::info!(%room_id, %guest, "guest left a room that no longer allows guests");
            }
            Ok(())
        })
    }

    /// A user's profile change goes out as a new member event in every joined room.
    pub async fn propagate_profile(&self, user: &UserId) -> Result<()> {
        for room in room_repo::rooms_with_membership(self.db.pool(), user.as_str(), "join").await? {
            let room_id = RoomId::parse(room)?;
            let content = self.member_content(user, "join", None).await?;
            let template = EventTemplate::state(ruma::events::StateEventType::RoomMember, user.as_str(), Value::Object(content));
            if let Err(error) = self.send(&room_id, user, template, None).await {
                tracing::warn!(%room_id, %error, "could not update member event with new profile");
            }
        }
        Ok(())
    }

    /// The local member who can vouch for `user` joining a restricted room, if any.
    pub async fn restricted_join_authoriser_for(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        self.restricted_join_authoriser(room_id, user).await
    }

    /// For rooms with a `restricted` join rule: a local member who may invite, vouching for a
    /// user who belongs to one of the allowed rooms. `M_FORBIDDEN` when the user belongs to
    /// none; None when the room is not restricted.
    async fn restricted_join_authoriser(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        let Some(rules) = self.current_state_content(room_id, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let rule = rules.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
        if rule != "restricted" && rule != "knock_restricted" {
            return Ok(None);
        }
        let mut qualifies = false;
        for entry in rules.get("allow").and_then(Value::as_array).into_iter().flatten() {
            if entry.get("type").and_then(Value::as_str) != Some("m.room_membership") {
                continue;
            }
            let Some(allowed_room) = entry.get("room_id").and_then(Value::as_str) else { continue };
            if room_repo::membership(self.db.pool(), allowed_room, user.as_str()).await?.is_some_and(|(m, _)| m == "join") {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Err(MatrixError::forbidden("You are not a member of any room that grants access to this room"));
        }
        let power = self.power_levels(room_id).await?;
        let invite_level = self
            .current_state_content(room_id, "m.room.power_levels", "")
            .await?
            .and_then(|c| c.get("invite").and_then(Value::as_i64))
            .unwrap_or(0);
        for member in self.joined_members(room_id).await? {
            let Ok(member_id) = UserId::parse(member.as_str()) else { continue };
            if member_id.server_name() == self.server_name() && power.user_level(&member_id) >= invite_level {
                return Ok(Some(member));
            }
        }
        Err(MatrixError::forbidden("No member of this room on this server can authorise your join"))
    }

    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        match room_repo::membership(self.db.pool(), room_id.as_str(), user.as_str()).await? {
            None => Err(MatrixError::not_found("You have never been in this room")),
            Some((m, _)) if m == "join" || m == "invite" || m == "knock" => {
                Err(MatrixError::unknown("You must leave the room before forgetting it"))
            }
            Some(_) => {
                room_repo::forget(self.db.pool(), room_id.as_str(), user.as_str()).await?;
                Ok(())
            }
        }
    }

    /// Users whose current membership is `join`.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<String>> {
        Ok(room_repo::members_with_membership(self.db.pool(), room_id.as_str(), "join").await?)
    }

    pub async fn membership_of(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        Ok(room_repo::membership(self.db.pool(), room_id.as_str(), user.as_str()).await?.map(|(m, _)| m))
    }

    /// Whether this server takes part in the room: it knows it and a local user is joined.
    pub async fn participating(&self, room_id: &RoomId) -> Result<bool> {
        if self.room_version(room_id).await.is_err() {
            return Ok(false);
        }
        let joined = self.joined_members(room_id).await?;
        Ok(joined.iter().any(|u| UserId::parse(u.as_str()).is_ok_and(|u| u.server_name() == self.server_name())))
    }

    /// `M_FORBIDDEN` unless the user is joined.
    pub async fn require_joined(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        self.room_version(room_id).await?;
        match self.membership_of(room_id, user).await?.as_deref() {
            Some("join") => Ok(()),
            _ => Err(MatrixError::forbidden(format!("{user} is not in room {room_id}"))),
        }
    }
}

