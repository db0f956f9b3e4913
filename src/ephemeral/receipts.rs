//! Read receipts (public, private, threaded) and read markers.

use std::collections::HashMap;

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Map, Value};

use crate::{
    appservice::ephemeral::{EphemeralItem, EphemeralOutbox},
    error::{MatrixError, Result},
    outbox::EduQueue,
    push::Push,
    rooms::Rooms,
    storage::{account_data, now_ms, receipts as repo, rooms as room_repo},
    sync::notifier::Notifier,
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";
pub const FULLY_READ: &str = "m.fully_read";

#[derive(Clone)]
pub struct Receipts {
    rooms: Rooms,
    notifier: Notifier,
    edus: EduQueue,
    /// Read receipts change a user's badge on their phones.
    push: Push,
    appservices: EphemeralOutbox,
}

impl Receipts {
    pub fn new(rooms: Rooms, notifier: Notifier, edus: EduQueue, push: Push) -> Self {
        Self { rooms, notifier, edus, push, appservices: EphemeralOutbox::default() }
    }

    /// Public receipts also go to the application services that receive ephemeral data.
    pub fn with_appservices(mut self, outbox: EphemeralOutbox) -> Self {
        self.appservices = outbox;
        self
    }

    fn tell_appservices(&self, room_id: &RoomId, user: &UserId, event_id: &EventId, ts: i64, thread_id: Option<&str>) {
        if !self.appservices.wanted() {
            return;
        }
        let mut receipt = json!({ "ts": ts });
        if let Some(thread) = thread_id {
            receipt["thread_id"] = thread.into();
        }
        let edu = json!({ "type": "m.receipt", "room_id": room_id, "content": { event_id.as_str(): { READ: { user.as_str(): receipt } } } });
        self.appservices.push(EphemeralItem { room_id: Some(room_id.to_string()), user_id: None, edu });
    }

    /// A receipt from another server's user (m.receipt EDU): stored if they are joined.
    pub async fn set_remote(&self, room_id: &RoomId, user: &UserId, event_id: &EventId, ts: i64, thread_id: Option<&str>) -> Result<()> {
        if self.rooms.membership_of(room_id, user).await?.as_deref() != Some("join") {
            return Err(MatrixError::forbidden("The user is not in the room"));
        }
        let mut tx = self.rooms.db().begin_write().await?;
        repo::upsert(&mut tx, room_id.as_str(), READ, user.as_str(), thread_id.unwrap_or(""), event_id.as_str(), ts).await?;
        tx.commit().await?;
        self.tell_appservices(room_id, user, event_id, ts, thread_id);
        let members = room_repo::members_with_membership(self.rooms.db().pool(), room_id.as_str(), "join").await?;
        self.notifier.wake(&members);
        Ok(())
    }

    /// Records a receipt for an event the user can see. `thread_id` is "main", a thread
    /// root's id, or None (unthreaded).
    pub async fn set(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        self.rooms.require_joined(room_id, user).await?;
        self.rooms.visible_event(room_id, event_id, user).await?;
        if let Some(thread) = thread_id {
            if thread != "main" && EventId::parse(thread).is_err() {
                return Err(MatrixError::invalid_param("thread_id must be \"main\" or an event id"));
            }
        }
        let badge_before = self.push.badge_before_receipt(user).await?;
        let mut tx = self.rooms.db().begin_write().await?;
        let thread = thread_id.unwrap_or("");
        if repo::would_move_back(&mut tx, room_id.as_str(), receipt_type, user.as_str(), thread, event_id.as_str()).await? {
            // A receipt only ever moves forward; an older one is accepted and changes nothing.
            return Ok(());
        }
        repo::upsert(&mut tx, room_id.as_str(), receipt_type, user.as_str(), thread, event_id.as_str(), now_ms()).await?;
        tx.commit().await?;
        self.push.receipt_stored(user, badge_before);
        if receipt_type == READ_PRIVATE {
            self.notifier.wake([user.as_str()]);
        } else {
            let members = room_repo::members_with_membership(self.rooms.db().pool(), room_id.as_str(), "join").await?;
            self.notifier.wake(&members);
            if receipt_type == READ {
                self.tell_appservices(room_id, user, event_id, now_ms(), thread_id);
            }
            // Public receipts go to the other servers in the room.
            let mut data = json!({ "ts": now_ms() });
            if let Some(thread) = thread_id {
                data["thread_id"] = thread.into();
            }
            let edu = json!({ "edu_type": "m.receipt", "content": {
                room_id.as_str(): { READ: { user.as_str(): { "event_ids": [event_id], "data": data } } }
            } });
            self.edus.to_room(room_id.as_str(), &edu).await?;
        }
        Ok(())
    }

    /// Sets `m.fully_read` (room account data) to an event the user can see.
    pub async fn set_fully_read(&self, room_id: &RoomId, user: &UserId, event_id: &EventId) -> Result<()> {
        self.rooms.require_joined(room_id, user).await?;
        self.rooms.visible_event(room_id, event_id, user).await?;
        let content = json!({ "event_id": event_id }).to_string();
        let mut tx = self.rooms.db().begin_write().await?;
        account_data::put(&mut tx, user.as_str(), room_id.as_str(), FULLY_READ, &content).await?;
        tx.commit().await?;
        self.notifier.wake([user.as_str()]);
        Ok(())
    }

    /// The room's `m.receipt` ephemeral event with receipts changed after `since`, as `viewer`
    /// may see them (private receipts only their own).
    pub async fn event_since(&self, room_id: &RoomId, viewer: &UserId, since: i64) -> Result<Option<Value>> {
        let rows = repo::changed_since(self.rooms.db().pool(), room_id.as_str(), since).await?;
        Ok(receipt_event(rows, viewer))
    }

    /// `event_since` for several rooms in one read: the rooms with receipts, each with its event.
    pub async fn events_since(&self, room_ids: &[&RoomId], viewer: &UserId, since: i64) -> Result<HashMap<OwnedRoomId, Value>> {
        let ids: Vec<&str> = room_ids.iter().map(|r| r.as_str()).collect();
        let mut by_room: HashMap<String, Vec<repo::ReceiptRow>> = HashMap::new();
        for (room_id, row) in repo::changed_since_in_rooms(self.rooms.db().pool(), &ids, since).await? {
            by_room.entry(room_id).or_default().push(row);
        }
        Ok(by_room
            .into_iter()
            .filter_map(|(room_id, rows)| Some((OwnedRoomId::try_from(room_id).ok()?, receipt_event(rows, viewer)?)))
            .collect())
    }
}

/// The `m.receipt` event of a room's receipt rows (in stream order), as `viewer` may see them.
fn receipt_event(rows: Vec<repo::ReceiptRow>, viewer: &UserId) -> Option<Value> {
    let mut content: Map<String, Value> = Map::new();
    for row in rows {
        if row.receipt_type == READ_PRIVATE && row.user_id != viewer.as_str() {
            continue;
        }
        let mut receipt = json!({ "ts": row.ts });
        if !row.thread_id.is_empty() {
            receipt["thread_id"] = row.thread_id.clone().into();
        }
        let by_type = content.entry(row.event_id).or_insert_with(|| json!({}));
        let by_user = by_type
            .as_object_mut()
            .expect("object")
            .entry(row.receipt_type)
            .or_insert_with(|| json!({}));
        by_user[row.user_id] = receipt;
    }
    (!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content }))
}
