//! Presence: online / unavailable / offline, driven by syncs and activity.
//!
//! The live view is in memory; state changes are persisted (and numbered on the presence
//! stream) so syncs see them. Activity bumps `last_active` in memory and only writes when the
//! state changes or the stored value is more than a minute stale.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::UserId;
use serde_json::{json, Value};

use crate::{
    appservice::ephemeral::{EphemeralItem, EphemeralOutbox},
    error::{MatrixError, Result},
    outbox::EduQueue,
    storage::{now_ms, presence as repo, rooms as room_repo, Db},
    sync::notifier::Notifier,
};

/// No activity for this long: online becomes unavailable.
pub const IDLE_AFTER_MS: i64 = 5 * 60 * 1000;
/// No sync for this long (and none in progress): offline.
pub const OFFLINE_AFTER_MS: i64 = 30 * 1000;
/// A user active within this window is "currently_active".
const CURRENTLY_ACTIVE_MS: i64 = 60 * 1000;

#[derive(Clone)]
pub struct Presence {
    db: Db,
    notifier: Notifier,
    edus: Option<EduQueue>,
    enabled: bool,
    users: Arc<Mutex<HashMap<String, Entry>>>,
    appservices: EphemeralOutbox,
}

#[derive(Debug, Clone)]
struct Entry {
    state: String,
    status_msg: Option<String>,
    last_active_ts: i64,
    /// Last time this value was written to the database.
    persisted_active_ts: i64,
    last_sync_ts: i64,
    syncs_in_progress: u32,
}

pub fn valid_state(state: &str) -> bool {
    matches!(state, "online" | "unavailable" | "offline")
}

impl Presence {
    pub async fn new(db: Db, notifier: Notifier, enabled: bool) -> Result<Self> {
        let mut users = HashMap::new();
        let now = now_ms();
        for row in repo::all_not_offline(db.pool()).await? {
            users.insert(
                row.user_id,
                Entry {
                    state: row.state,
                    status_msg: row.status_msg,
                    last_active_ts: row.last_active_ts,
                    persisted_active_ts: row.last_active_ts,
                    last_sync_ts: now,
                    syncs_in_progress: 0,
                },
            );
        }
        Ok(Self { db, notifier, edus: None, enabled, users: Arc::new(Mutex::new(users)), appservices: EphemeralOutbox::default() })
    }

    /// Presence changes also go to the application services that receive ephemeral data.
    pub fn with_appservices(mut self, outbox: EphemeralOutbox) -> Self {
        self.appservices = outbox;
        self
    }

    fn tell_appservices(&self, user: &str, state: &str, status_msg: Option<&str>, last_active: i64) {
        if !self.appservices.wanted() {
            return;
        }
        let mut content = json!({ "presence": state, "last_active_ago": (now_ms() - last_active).max(0) });
        if let Some(status) = status_msg {
            content["status_msg"] = status.into();
        }
        let edu = json!({ "type": "m.presence", "sender": user, "content": content });
        self.appservices.push(EphemeralItem { room_id: None, user_id: Some(user.to_owned()), edu });
    }

    /// Sends local users' presence changes to the servers they share rooms with.
    pub fn with_federation(mut self, edus: EduQueue) -> Self {
        self.edus = Some(edus);
        self
    }

    /// Presence of another server's user (m.presence EDU).
    pub async fn set_remote(&self, user: &UserId, state: &str, status_msg: Option<&str>, last_active_ago: Option<i64>) -> Result<()> {
        if !self.enabled || !valid_state(state) {
            return Ok(());
        }
        let last_active = now_ms() - last_active_ago.unwrap_or(0).max(0);
        let mut tx = self.db.begin_write().await?;
        repo::upsert(&mut tx, user.as_str(), state, status_msg, last_active).await?;
        tx.commit().await?;
        self.tell_appservices(user.as_str(), state, status_msg, last_active);
        let watchers = room_repo::users_sharing_rooms(self.db.pool(), user.as_str()).await?;
        self.notifier.wake(watchers.iter().map(String::as_str));
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Runs the idle and offline timeouts until the process ends.
    pub fn spawn_timeouts(&self) {
        if !self.enabled {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticker.tick().await;
                if let Err(error) = this.apply_timeouts(now_ms()).await {
                    tracing::warn!(%error, "presence timeouts failed");
                }
            }
        });
    }

    /// Moves idle users to unavailable and users who stopped syncing to offline.
    pub async fn apply_timeouts(&self, now: i64) -> Result<()> {
        let changes: Vec<(String, String, Option<String>, i64)> = {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            users
                .iter()
                .filter_map(|(user, e)| {
                    let next = if e.state != "offline" && e.syncs_in_progress == 0 && now - e.last_sync_ts > OFFLINE_AFTER_MS {
                        "offline"
                    } else if e.state == "online" && now - e.last_active_ts > IDLE_AFTER_MS {
                        "unavailable"
                    } else {
                        return None;
                    };
                    Some((user.clone(), next.to_owned(), e.status_msg.clone(), e.last_active_ts))
                })
                .collect()
        };
        for (user, state, status_msg, last_active) in changes {
            self.store(&user, &state, status_msg.as_deref(), last_active).await?;
        }
        Ok(())
    }

    async fn store(&self, user: &str, state: &str, status_msg: Option<&str>, last_active: i64) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        repo::upsert(&mut tx, user, state, status_msg, last_active).await?;
        tx.commit().await?;
        {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let entry = users.entry(user.to_owned()).or_insert_with(|| Entry {
                state: state.to_owned(),
                status_msg: None,
                last_active_ts: last_active,
                persisted_active_ts: last_active,
                last_sync_ts: now_ms(),
                syncs_in_progress: 0,
            });
            entry.state = state.to_owned();
            entry.status_msg = status_msg.map(str::to_owned);
            entry.persisted_active_ts = last_active;
        }
        self.tell_appservices(user, state, status_msg, last_active);
        let watchers = room_repo::users_sharing_rooms(self.db.pool(), user).await?;
        self.notifier.wake(watchers.iter().map(String::as_str).chain([user]));
        if let (Some(edus), Ok(user_id)) = (&self.edus, UserId::parse(user)) {
            if user_id.server_name() == edus.server_name() {
                let mut entry = json!({ "user_id": user, "presence": state, "last_active_ago": (now_ms() - last_active).max(0) });
                if state == "online" {
                    entry["currently_active"] = (now_ms() - last_active < CURRENTLY_ACTIVE_MS).into();
                }
                if let Some(status) = status_msg {
                    entry["status_msg"] = status.into();
                }
                let edu = json!({ "edu_type": "m.presence", "content": { "push": [entry] } });
                edus.to_user_peers(&user_id, &edu).await?;
            }
        }
        Ok(())
    }

    /// PUT /presence/{userId}/status.
    pub async fn set(&self, user: &UserId, state: &str, status_msg: Option<&str>) -> Result<()> {
        if !self.enabled {
            return Err(MatrixError::forbidden("Presence is disabled on this server"));
        }
        if !valid_state(state) {
            return Err(MatrixError::invalid_param(format!("Unknown presence state {state}")));
        }
        let now = now_ms();
        if let Some(entry) = self.users.lock().unwrap_or_else(|p| p.into_inner()).get_mut(user.as_str()) {
            entry.last_active_ts = now;
        }
        self.store(user.as_str(), state, status_msg, now).await
    }

    /// A request that shows the user is there (a send, typing, a receipt).
    pub async fn activity(&self, user: &UserId) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = now_ms();
        let write = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            match users.get_mut(user.as_str()) {
                Some(e) => {
                    e.last_active_ts = now;
                    (e.state != "online" || now - e.persisted_active_ts > CURRENTLY_ACTIVE_MS).then(|| e.status_msg.clone())
                }
                None => Some(None),
            }
        };
        match write {
            Some(status_msg) => self.store(user.as_str(), "online", status_msg.as_deref(), now).await,
            None => Ok(()),
        }
    }

    /// A sync started: `set_presence` online/unavailable marks the user so (offline leaves the
    /// state alone). Returns a guard that records the sync's end.
    pub async fn sync_started(&self, user: &UserId, set_presence: &str) -> Result<SyncGuard> {
        let guard = SyncGuard { presence: self.clone(), user: user.to_string() };
        if !self.enabled {
            return Ok(guard);
        }
        let now = now_ms();
        let change = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let entry = users.entry(user.to_string()).or_insert_with(|| Entry {
                state: "offline".into(),
                status_msg: None,
                last_active_ts: 0,
                persisted_active_ts: 0,
                last_sync_ts: now,
                syncs_in_progress: 0,
            });
            entry.syncs_in_progress += 1;
            entry.last_sync_ts = now;
            match set_presence {
                "online" if entry.state != "online" => {
                    entry.last_active_ts = now;
                    Some(("online", entry.status_msg.clone()))
                }
                "unavailable" if entry.state != "unavailable" => Some(("unavailable", entry.status_msg.clone())),
                _ => None,
            }
        };
        if let Some((state, status_msg)) = change {
            self.store(user.as_str(), state, status_msg.as_deref(), now).await?;
        }
        Ok(guard)
    }

    /// The presence event content of a user.
    pub async fn content(&self, user: &UserId) -> Result<Value> {
        let now = now_ms();
        let live = self.users.lock().unwrap_or_else(|p| p.into_inner()).get(user.as_str()).cloned();
        let (state, status_msg, last_active) = match live {
            Some(e) => (e.state, e.status_msg, e.last_active_ts),
            None => match repo::get(self.db.pool(), user.as_str()).await? {
                Some(row) => (row.state, row.status_msg, row.last_active_ts),
                None => ("offline".to_owned(), None, 0),
            },
        };
        Ok(render(&state, status_msg.as_deref(), last_active, now))
    }

    /// Presence events of users sharing a room with `user`, changed after `since`.
    pub async fn changes_for(&self, user: &UserId, since: i64) -> Result<Vec<Value>> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let rows = repo::visible_changes(self.db.pool(), user.as_str(), since).await?;
        let live = self.users.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(rows
            .into_iter()
            .map(|row| {
                let last_active = live.get(&row.user_id).map(|e| e.last_active_ts).unwrap_or(row.last_active_ts);
                json!({
                    "type": "m.presence",
                    "sender": row.user_id,
                    "content": render(&row.state, row.status_msg.as_deref(), last_active, now),
                })
            })
            .collect())
    }
}

fn render(state: &str, status_msg: Option<&str>, last_active: i64, now: i64) -> Value {
    let mut content = json!({ "presence": state });
    if last_active > 0 {
        content["last_active_ago"] = (now - last_active).max(0).into();
    }
    if state == "online" {
        content["currently_active"] = (now - last_active < CURRENTLY_ACTIVE_MS).into();
    }
    if let Some(status) = status_msg {
        content["status_msg"] = status.into();
    }
    content
}

/// Marks the end of a sync request, so a user with a long-poll open is never timed out.
pub struct SyncGuard {
    presence: Presence,
    user: String,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let mut users = self.presence.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = users.get_mut(&self.user) {
            entry.syncs_in_progress = entry.syncs_in_progress.saturating_sub(1);
            entry.last_sync_ts = now_ms();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn presence() -> (Presence, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.unwrap();
        (Presence::new(db, Notifier::new(), true).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn idle_users_become_unavailable_then_offline_when_they_stop_syncing() {
        let (presence, _dir) = presence().await;
        let user = ruma::user_id!("@a:x");
        let guard = presence.sync_started(user, "online").await.unwrap();
        assert_eq!(presence.content(user).await.unwrap()["presence"], "online");
        let start = now_ms();
        // A long-poll in progress keeps the user from going offline, not from going idle.
        presence.apply_timeouts(start + IDLE_AFTER_MS + 1000).await.unwrap();
        assert_eq!(presence.content(user).await.unwrap()["presence"], "unavailable");
        drop(guard);
        presence.apply_timeouts(now_ms() + OFFLINE_AFTER_MS + 1000).await.unwrap();
        assert_eq!(presence.content(user).await.unwrap()["presence"], "offline");
        // Activity brings them back.
        presence.activity(user).await.unwrap();
        assert_eq!(presence.content(user).await.unwrap()["presence"], "online");
    }

    #[tokio::test]
    async fn set_presence_offline_on_sync_does_not_mark_online() {
        let (presence, _dir) = presence().await;
        let user = ruma::user_id!("@b:x");
        let _guard = presence.sync_started(user, "offline").await.unwrap();
        assert_eq!(presence.content(user).await.unwrap()["presence"], "offline");
    }
}
