//! Server-Server API: signing keys (and the key notary), server name resolution, X-Matrix
//! signed requests out and verified requests in, and the queries other servers make.

pub mod acl;
pub mod client;
pub mod keys;
pub mod media;
pub mod membership;
pub mod pipeline;
pub mod resolve;
pub mod server;
pub mod tls;
pub mod transactions;
pub mod v1_membership;

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{OwnedServerName, ServerName};
use tokio::sync::Mutex;

use crate::{
    config::FederationConfig,
    crypto::ServerKeys,
    outbound::GuardedDns,
    rooms::{OutboxSignal, Rooms},
    storage::Db,
};

/// The ephemeral services other servers' EDUs feed.
#[derive(Clone)]
pub struct Ephemeral {
    pub typing: crate::ephemeral::typing::Typing,
    pub receipts: crate::ephemeral::receipts::Receipts,
    pub presence: crate::ephemeral::presence::Presence,
    pub to_device: crate::ephemeral::to_device::ToDevice,
    pub e2ee: crate::e2ee::E2ee,
}

/// Everything federation needs: our identity, the database (key cache), an HTTPS client.
#[derive(Clone)]
pub struct Federation {
    db: Db,
    keys: ServerKeys,
    http: reqwest::Client,
    dns: GuardedDns,
    notaries: Vec<OwnedServerName>,
    rooms: Rooms,
    outbox: OutboxSignal,
    ephemeral: Ephemeral,
    allow_public_rooms: bool,
    /// Resolved destinations (well-known lookups are cached).
    destinations: Arc<Mutex<HashMap<OwnedServerName, (resolve::Destination, tokio::time::Instant)>>>,
}

impl Federation {
    pub fn new(
        db: Db,
        keys: ServerKeys,
        config: &FederationConfig,
        dns: GuardedDns,
        rooms: Rooms,
        outbox: OutboxSignal,
        ephemeral: Ephemeral,
    ) -> anyhow::Result<Self> {
        let mut builder = dns
            .client_builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")));
        if !config.verify_tls {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(Self {
            db,
            keys,
            http: builder.build()?,
            dns,
            notaries: config.trusted_key_servers.clone(),
            rooms,
            outbox,
            ephemeral,
            allow_public_rooms: config.allow_public_rooms_over_federation,
            destinations: Arc::default(),
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.keys.server_name
    }

    pub fn is_local(&self, server: &ServerName) -> bool {
        server == self.keys.server_name
    }
}
