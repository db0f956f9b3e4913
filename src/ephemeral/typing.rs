//! Typing notifications, held in memory and expiring on their own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use crate::{
    appservice::ephemeral::{EphemeralItem, EphemeralOutbox},
    error::Result,
    outbox::EduQueue,
    storage::{now_ms, rooms as room_repo, Db},
    sync::notifier::Notifier,
};

/// Longest typing timeout honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Typing {
    db: Db,
    notifier: Notifier,
    edus: EduQueue,
    state: Arc<Mutex<TypingState>>,
    appservices: EphemeralOutbox,
}

#[derive(Default)]
struct TypingState {
    /// Serial of the last change; starts at the clock's milliseconds so tokens stay ordered
    /// across restarts.
    serial: i64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    serial: i64,
    users: HashMap<OwnedUserId, Instant>,
}

impl Typing {
    pub fn new(db: Db, notifier: Notifier, edus: EduQueue) -> Self {
        let state = TypingState { serial: now_ms(), rooms: HashMap::new() };
        Self { db, notifier, edus, state: Arc::new(Mutex::new(state)), appservices: EphemeralOutbox::default() }
    }

    /// Typing changes also go to the application services that receive ephemeral data.
    pub fn with_appservices(mut self, outbox: EphemeralOutbox) -> Self {
        self.appservices = outbox;
        self
    }

    /// The room's typing list as a client (or an application service) sees it.
    fn typing_event(&self, room_id: &RoomId) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let users: Vec<&str> = state.rooms.get(room_id).map(|room| room.users.keys().map(|u| u.as_str()).collect()).unwrap_or_default();
        serde_json::json!({ "type": "m.typing", "room_id": room_id, "content": { "user_ids": users } })
    }

    fn tell_appservices(&self, room_id: &RoomId) {
        if self.appservices.wanted() {
            let edu = self.typing_event(room_id);
            self.appservices.push(EphemeralItem { room_id: Some(room_id.to_string()), user_id: None, edu });
        }
    }

    pub fn current_serial(&self) -> i64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).serial
    }

    /// Starts or stops `user` typing in the room; a start expires after `timeout`.
    pub async fn set(&self, room_id: &RoomId, user: &UserId, typing: bool, timeout: Duration) -> Result<()> {
        let expires = Instant::now() + timeout.min(MAX_TIMEOUT);
        let changed = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let next = (state.serial + 1).max(now_ms());
            let room = state.rooms.entry(room_id.to_owned()).or_default();
            let changed = if typing {
                room.users.insert(user.to_owned(), expires).is_none()
            } else {
                room.users.remove(user).is_some()
            };
            if changed {
                room.serial = next;
                state.serial = next;
            }
            changed
        };
        if typing {
            let this = self.clone();
            let (room_id, user) = (room_id.to_owned(), user.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep_until(expires).await;
                this.expire(&room_id, &user, expires).await;
            });
        }
        if changed {
            self.tell_appservices(room_id);
            self.wake_room(room_id).await?;
            if user.server_name() == self.edus_server() {
                let edu = serde_json::json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": user, "typing": typing } });
                self.edus.to_room(room_id.as_str(), &edu).await?;
            }
        }
        Ok(())
    }

    fn edus_server(&self) -> &ruma::ServerName {
        self.edus.server_name()
    }

    async fn expire(&self, room_id: &RoomId, user: &UserId, expected: Instant) {
        let expired = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let next = (state.serial + 1).max(now_ms());
            let Some(room) = state.rooms.get_mut(room_id) else { return };
            // A later PUT extended the timeout: that one's own timer handles it.
            if room.users.get(user) != Some(&expected) {
                return;
            }
            room.users.remove(user);
            room.serial = next;
            state.serial = next;
            true
        };
        if expired {
            self.tell_appservices(room_id);
            if let Err(error) = self.wake_room(room_id).await {
                tracing::warn!(%room_id, %error, "could not wake syncs after typing expired");
            }
        }
    }

    async fn wake_room(&self, room_id: &RoomId) -> Result<()> {
        let users = room_repo::members_with_membership(self.db.pool(), room_id.as_str(), "join").await?;
        self.notifier.wake(&users);
        Ok(())
    }

    /// Who is typing in the room, if that changed after `since`.
    pub fn changed_since(&self, room_id: &RoomId, since: i64) -> Option<Vec<OwnedUserId>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let room = state.rooms.get(room_id)?;
        if room.serial <= since {
            return None;
        }
        let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
        users.sort();
        Some(users)
    }
}
