//! Shutting a room down on this server (admin room deletion): local members leave, local
//! aliases go, the room leaves the directory, optionally the room is blocked from being
//! joined again and purged from the database.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::{membership::Change, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{aliases as alias_repo, purge as purge_repo, rooms as room_repo},
};

/// What a shutdown did (the admin API's `shutdown_room`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shutdown {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<String>,
}

/// How to shut a room down.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownOptions {
    /// Refuse future joins, knocks and invites of local users.
    pub block: bool,
    /// Remove the room from the database.
    pub purge: bool,
    /// Purge even when some local user could not be made to leave.
    pub force_purge: bool,
}

impl Rooms {
    /// Whether an admin blocked the room: `M_FORBIDDEN` for joins, knocks and invites.
    pub async fn require_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if purge_repo::blocked_by(self.db.pool(), room_id.as_str()).await?.is_some() {
            return Err(MatrixError::forbidden("This room has been blocked on this server"));
        }
        Ok(())
    }

    pub async fn blocked_by(&self, room_id: &RoomId) -> Result<Option<String>> {
        Ok(purge_repo::blocked_by(self.db.pool(), room_id.as_str()).await?)
    }

    pub async fn set_blocked(&self, room_id: &RoomId, admin: &UserId, block: bool) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if block {
            purge_repo::block_room(&mut tx, room_id.as_str(), admin.as_str()).await?;
        } else {
            purge_repo::unblock_room(&mut tx, room_id.as_str()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Shuts the room down as `admin` asked. Local members (joined, invited, knocking)
    /// leave by their own leave event, so other servers and clients see them go.
    pub async fn shut_down(&self, room_id: &RoomId, admin: &UserId, options: ShutdownOptions) -> Result<Shutdown> {
        let known = room_repo::room_version(self.db.pool(), room_id.as_str()).await?.is_some();
        if !known && !options.block {
            return Err(MatrixError::not_found("Room not found"));
        }
        if options.block {
            self.set_blocked(room_id, admin, true).await?;
        }
        let mut shutdown = Shutdown::default();
        if !known {
            return Ok(shutdown);
        }
        let local_suffix = format!(":{}", self.server_name());
        for membership in ["join", "invite", "knock"] {
            let members = room_repo::members_with_membership(self.db.pool(), room_id.as_str(), membership).await?;
            for user in members.into_iter().filter(|u| u.ends_with(&local_suffix)) {
                let left = match UserId::parse(user.as_str()) {
                    Ok(user_id) => self.change_membership(room_id, &user_id, &user_id, Change::Leave, None, false).await.is_ok(),
                    Err(_) => false,
                };
                if left {
                    shutdown.kicked_users.push(user);
                } else {
                    shutdown.failed_to_kick_users.push(user);
                }
            }
        }
        shutdown.local_aliases = alias_repo::for_room(self.db.pool(), room_id.as_str()).await?;
        let mut tx = self.db.begin_write().await?;
        for alias in &shutdown.local_aliases {
            alias_repo::delete(&mut **tx, alias).await?;
        }
        room_repo::set_published(&mut **tx, room_id.as_str(), false).await?;
        tx.commit().await?;
        if options.purge {
            if !shutdown.failed_to_kick_users.is_empty() && !options.force_purge {
                return Err(MatrixError::unknown(format!(
                    "Some local users could not be made to leave ({}); not purging (force_purge purges anyway)",
                    shutdown.failed_to_kick_users.join(", ")
                )));
            }
            self.purge(room_id).await?;
        }
        Ok(shutdown)
    }

    /// Removes the room from the database and from this process's caches.
    pub async fn purge(&self, room_id: &RoomId) -> Result<u64> {
        let mut tx = self.db.begin_write().await?;
        let deleted = purge_repo::purge_room(&mut tx, room_id.as_str()).await?;
        tx.commit().await?;
        self.caches.forget_room(&OwnedRoomId::from(room_id));
        tracing::info!(%room_id, rows = deleted, "room purged");
        Ok(deleted)
    }
}
