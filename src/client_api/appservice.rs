//! Application-service endpoints of the Client-Server API.
//!
//! weft has no application services registered yet (no registration files are read), so
//! every token is a user's: the spec's answer to a ping made with one is 403 M_FORBIDDEN.

use ruma::api::client::appservice::request_ping;

use super::extract::{Ruma, RumaResponse};
use crate::error::{MatrixError, Result};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`.
pub async fn ping(_: Ruma<request_ping::v1::Request>) -> Result<RumaResponse<request_ping::v1::Response>> {
    Err(MatrixError::forbidden("This access token does not belong to an application service"))
}
