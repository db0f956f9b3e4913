//! The Client-Server API: HTTP edges that parse ruma requests, call the domain and respond.

pub mod account;
pub mod admin;
pub mod account_data;
pub mod appservice;
pub mod directory;
pub mod discovery;
pub mod extract;
pub mod keys;
pub mod legacy_sync;
pub mod media;
pub mod membership;
pub mod push;
pub mod rate_limit;
pub mod relations;
pub mod room_events;
pub mod room_upgrade;
pub mod router;
pub mod search;
pub mod session;
pub mod sliding_sync;
pub mod sliding_sync_v4;
pub mod spaces;
pub mod sync;
pub mod synapse_admin;
pub mod user_directory;
pub mod voip;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    accounts::Accounts,
    config::Config,
    e2ee::E2ee,
    ephemeral::{presence::Presence, receipts::Receipts, to_device::ToDevice, typing::Typing},
    push::Push,
    rooms::Rooms,
    sync::Sync,
};
use rate_limit::RateLimiter;

/// What the client API handlers may depend on; each handler extracts only the parts it uses.
/// Shared behind one `Arc`: axum clones the state into every request.
#[derive(Clone)]
pub struct ClientApiState(Arc<Services>);

pub struct Services {
    pub config: Arc<Config>,
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub rate_limiter: RateLimiter,
    pub shared_secret: session::SharedSecretNonces,
    pub sync: Sync,
    pub typing: Typing,
    pub receipts: Receipts,
    pub presence: Presence,
    pub to_device: ToDevice,
    pub push: Push,
    pub e2ee: E2ee,
    pub media: crate::media::Media,
    pub url_previews: crate::media::preview::UrlPreviews,
    pub federation: crate::federation::Federation,
    pub appservices: crate::appservice::AppServices,
    pub appservice_client: crate::appservice::client::AppServiceClient,
    pub protocol_cache: appservice::ProtocolCache,
}

impl ClientApiState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

/// `State<T>` extraction for each part of the state.
macro_rules! parts {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        impl FromRef<ClientApiState> for $ty {
            fn from_ref(state: &ClientApiState) -> Self {
                state.0.$field.clone()
            }
        }
    )*};
}

parts!(
    config: Arc<Config>,
    accounts: Accounts,
    rooms: Rooms,
    rate_limiter: RateLimiter,
    shared_secret: session::SharedSecretNonces,
    sync: Sync,
    typing: Typing,
    receipts: Receipts,
    presence: Presence,
    to_device: ToDevice,
    push: Push,
    e2ee: E2ee,
    media: crate::media::Media,
    url_previews: crate::media::preview::UrlPreviews,
    federation: crate::federation::Federation,
    appservices: crate::appservice::AppServices,
    appservice_client: crate::appservice::client::AppServiceClient,
    protocol_cache: appservice::ProtocolCache,
);
