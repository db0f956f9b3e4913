//! The queue of what goes to other servers: EDUs queued here (PDUs are queued by the rooms'
//! persistence path, in the event's own transaction), delivered by the federation sender.

use ruma::{ServerName, UserId};
use serde_json::Value;

use crate::{
    error::Result,
    rooms::OutboxSignal,
    storage::{federation as repo, rooms as room_repo, Db},
};

#[derive(Clone)]
pub struct EduQueue {
    db: Db,
    signal: OutboxSignal,
    server_name: ruma::OwnedServerName,
}

impl EduQueue {
    pub fn new(db: Db, signal: OutboxSignal, server_name: ruma::OwnedServerName) -> Self {
        Self { db, signal, server_name }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    fn remote_servers_of(&self, users: &[String]) -> Vec<String> {
        let mut servers: Vec<String> = users
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_string())
            .filter(|s| s != self.server_name.as_str())
            .collect();
        servers.sort();
        servers.dedup();
        servers
    }

    /// Queues an EDU for every other server with users joined to the room.
    pub async fn to_room(&self, room_id: &str, edu: &Value) -> Result<()> {
        let members = room_repo::members_with_membership(self.db.pool(), room_id, "join").await?;
        self.to_servers(&self.remote_servers_of(&members), edu).await
    }

    /// Queues an EDU for every other server sharing a room with the user.
    pub async fn to_user_peers(&self, user: &UserId, edu: &Value) -> Result<()> {
        let peers = room_repo::users_sharing_rooms(self.db.pool(), user.as_str()).await?;
        self.to_servers(&self.remote_servers_of(&peers), edu).await
    }

    pub async fn to_servers(&self, servers: &[String], edu: &Value) -> Result<()> {
        if servers.is_empty() {
            return Ok(());
        }
        let payload = edu.to_string();
        let mut tx = self.db.begin_write().await?;
        for server in servers {
            if ServerName::parse(server.as_str()).is_ok() {
                repo::enqueue(&mut tx, server, "edu", &payload).await?;
            }
        }
        tx.commit().await?;
        self.signal.wake();
        Ok(())
    }
}
