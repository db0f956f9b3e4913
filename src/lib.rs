//! weft: a federated Matrix homeserver.

pub mod accounts;
pub mod appservice;
pub mod bench;
pub mod client_api;
pub mod config;
pub mod crypto;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod media;
pub mod migrate_db;
pub mod outbound;
pub mod outbox;
pub mod push;
pub mod rooms;
pub mod server;
pub mod storage;
pub mod sync;
pub mod text;
