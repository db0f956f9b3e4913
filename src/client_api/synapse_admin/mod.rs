//! Synapse's admin API (`/_synapse/admin/...`), the interface admin tools speak (synadm,
//! synapse-admin, Ketesa): the server version here, accounts in `users`, rooms in `rooms`, event reports in
//! `reports`.
//! Server admins only; Synapse's paths, JSON and errors.
//!
//! ruma has no types for these paths; they are declared with its macros, so they go
//! through the one extractor like every other endpoint.

pub mod reports;
pub mod rooms;
pub mod users;

use ruma::{
    api::{auth_scheme::NoAuthentication, request, response},
    metadata, UserId,
};

use super::extract::{Ruma, RumaResponse};
use crate::{
    accounts::{Accounts, Requester},
    error::{MatrixError, Result},
};

pub(super) fn require_admin(requester: &Requester) -> Result<()> {
    if requester.is_admin {
        Ok(())
    } else {
        Err(MatrixError::forbidden("You are not a server admin"))
    }
}

pub(super) fn require_local(accounts: &Accounts, user_id: &UserId) -> Result<()> {
    if user_id.server_name() == accounts.server_name() {
        Ok(())
    } else {
        Err(MatrixError::invalid_param("This endpoint can only be used with local users"))
    }
}

pub mod server_version {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: NoAuthentication,
        path: "/_synapse/admin/v1/server_version",
    }

    #[request]
    #[derive(Default)]
    pub struct Request {}

    #[response]
    pub struct Response {
        pub server_version: String,
    }
}

pub async fn get_server_version(_: Ruma<server_version::Request>) -> Result<RumaResponse<server_version::Response>> {
    Ok(RumaResponse(server_version::Response { server_version: format!("weft {}", env!("CARGO_PKG_VERSION")) }))
}
