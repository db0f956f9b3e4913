//! Outbound federation requests: ruma request types, signed with X-Matrix, sent over HTTPS.

use ruma::{
    api::{
        federation::authentication::XMatrixSigningInput, IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
    },
    ServerName,
};

use super::Federation;
use crate::error::{MatrixError, Result};

/// Largest response accepted from another server.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Request types whose authentication input is X-Matrix signing, or nothing at all.
pub trait FederationAuth: OutgoingRequest {
    fn build(self, federation: &Federation, base_url: &str, destination: &ServerName) -> Result<http::Request<Vec<u8>>>;
}

macro_rules! auth_input {
    (signed: $($t:ty),* $(,)?) => {$(
        impl FederationAuth for $t {
            fn build(self, federation: &Federation, base_url: &str, destination: &ServerName) -> Result<http::Request<Vec<u8>>> {
                let input = XMatrixSigningInput::new(federation.server_name().to_owned(), destination.to_owned(), &*federation.keys.keypair);
                self.try_into_http_request(base_url, input, ()).map_err(|e| MatrixError::internal(e.to_string()))
            }
        }
    )*};
    (unsigned: $($t:ty),* $(,)?) => {$(
        impl FederationAuth for $t {
            fn build(self, _: &Federation, base_url: &str, _: &ServerName) -> Result<http::Request<Vec<u8>>> {
                self.try_into_http_request(base_url, (), ()).map_err(|e| MatrixError::internal(e.to_string()))
            }
        }
    )*};
}

auth_input!(unsigned:
    ruma::api::federation::discovery::get_server_keys::v2::Request,
    ruma::api::federation::discovery::get_remote_server_keys::v2::Request,
    ruma::api::federation::discovery::get_server_version::v1::Request,
);
auth_input!(signed:
    ruma::api::federation::query::get_profile_information::v1::Request,
    ruma::api::federation::query::get_room_information::v1::Request,
    ruma::api::federation::event::get_event::v1::Request,
    ruma::api::federation::event::get_missing_events::v1::Request,
    ruma::api::federation::event::get_room_state_ids::v1::Request,
    ruma::api::federation::membership::prepare_join_event::v1::Request,
    ruma::api::federation::membership::create_join_event::v2::Request,
    ruma::api::federation::transactions::send_transaction_message::v1::Request,
    ruma::api::federation::backfill::get_backfill::v1::Request,
    ruma::api::federation::membership::create_invite::v2::Request,
    ruma::api::federation::membership::prepare_leave_event::v1::Request,
    ruma::api::federation::membership::create_leave_event::v2::Request,
    crate::federation::v1_membership::invite::Request,
    crate::federation::v1_membership::send_join::Request,
    ruma::api::federation::event::get_room_state::v1::Request,
    ruma::api::federation::keys::get_keys::v1::Request,
    ruma::api::federation::keys::claim_keys::v1::Request,
    ruma::api::federation::membership::prepare_knock_event::v1::Request,
    ruma::api::federation::membership::create_knock_event::v1::Request,
    ruma::api::federation::directory::get_public_rooms_filtered::v1::Request,
    ruma::api::federation::authorization::get_event_authorization::v1::Request,
    ruma::api::federation::space::get_hierarchy::v1::Request,
    ruma::api::federation::authenticated_media::get_content::v1::Request,
    ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Request,
);

impl Federation {
    /// Sends a request to another server and parses its answer.
    pub async fn send<T: FederationAuth>(&self, destination: &ServerName, request: T) -> Result<T::IncomingResponse> {
        let (parts, body) = self.send_http(destination, request).await?.into_parts();
        let status = parts.status;
        T::IncomingResponse::try_from_http_response(http::Response::from_parts(parts, &body[..])).map_err(|error| {
            // A refusal the remote explained (400, 403, 404 with a Matrix error) reaches the
            // caller as sent, as Synapse passes e.g. a remote make_join's refusal to the
            // client; anything else is the remote failing us: 502.
            if matches!(status.as_u16(), 400 | 403 | 404) {
                if let Ok(remote) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let (Some(errcode), Some(message)) = (remote["errcode"].as_str(), remote["error"].as_str()) {
                        return MatrixError::new(status, errcode.to_owned(), message);
                    }
                }
            }
            let message = format!("{destination}: {error}");
            // Older servers answer an endpoint they lack with a bare 404 / 405 (empty, or Go's
            // "404 page not found"): that is M_UNRECOGNIZED, as Synapse reads it.
            if matches!(status.as_u16(), 404 | 405) && (body.is_empty() || &body[..] == b"404 page not found") {
                return MatrixError::new(status, "M_UNRECOGNIZED", message);
            }
            if status == http::StatusCode::NOT_FOUND {
                MatrixError::not_found(message)
            } else {
                MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
            }
        })
    }

    /// Sends a request to another server and returns its answer unparsed, whatever its status.
    pub async fn send_http<T: FederationAuth>(&self, destination: &ServerName, request: T) -> Result<http::Response<Vec<u8>>> {
        if self.is_local(destination) {
            return Err(MatrixError::internal("refusing to federate with ourselves"));
        }
        let target = self.resolve(destination).await?;
        self.check_destination(&target.base_url).await?;
        let mut http_request = request.build(self, &target.base_url, destination)?;
        let host = http::HeaderValue::from_str(&target.host_header).map_err(|e| MatrixError::internal(e.to_string()))?;
        http_request.headers_mut().insert(http::header::HOST, host);
        let request = reqwest::Request::try_from(http_request).map_err(|e| MatrixError::internal(e.to_string()))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("{destination} unreachable: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("{destination}: {e}")))?;
        let mut builder = http::Response::builder().status(status);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        builder.body(bytes).map_err(|e| MatrixError::internal(e.to_string()))
    }
}

/// Reads a response body, giving up as soon as it passes `cap` bytes.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> std::result::Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return Err(format!("response larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(format!("response larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
