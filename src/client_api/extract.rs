//! The one axum extractor that turns an HTTP request into a ruma request type (with the
//! authenticated requester), and the response wrapper that turns a ruma response back.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Body,
    extract::{rejection::RawPathParamsRejection, ConnectInfo, FromRef, FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use http_body_util::BodyExt;
use ruma::api::{
    auth_scheme::{AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication},
    error::{DeserializationError, FromHttpRequestError},
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
};

use super::rate_limit::RateLimiter;
use crate::{
    accounts::{Accounts, Requester},
    error::MatrixError,
};

/// How an endpoint's ruma auth scheme maps to access-token checking.
pub trait TokenRequirement {
    const REQUIRED: bool;
    const ACCEPTED: bool;
}

macro_rules! token_requirement {
    ($($scheme:ty => $required:literal, $accepted:literal;)*) => {
        $(impl TokenRequirement for $scheme {
            const REQUIRED: bool = $required;
            const ACCEPTED: bool = $accepted;
        })*
    };
}

token_requirement! {
    NoAuthentication => false, false;
    NoAccessToken => false, true;
    AccessToken => true, true;
    AccessTokenOptional => false, true;
    AppserviceToken => true, true;
    AppserviceTokenOptional => false, true;
}

/// A parsed ruma request plus who sent it.
pub struct Ruma<T> {
    pub body: T,
    /// Present when the request carried a valid access token.
    pub requester: Option<Requester>,
    pub client_ip: Option<IpAddr>,
}

impl<T> Ruma<T> {
    /// The requester of an endpoint that requires authentication.
    pub fn user(&self) -> &Requester {
        self.requester.as_ref().expect("authenticated endpoint has a requester")
    }
}

fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = header.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "access_token").map(|(_, value)| value.into_owned())
}

/// The endpoint's name, from its ruma module: `ruma_client_api::session::login::v3::Request`
/// is `login`. Rate limits are configured by these names.
fn action_name<T>() -> &'static str {
    std::any::type_name::<T>()
        .rsplit("::")
        .find(|segment| {
            *segment != "Request"
                && !(segment.starts_with('v') && segment[1..].chars().all(|c| c.is_ascii_digit()))
        })
        .unwrap_or("")
}

fn map_parse_error(error: FromHttpRequestError) -> MatrixError {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            let message = e.to_string();
            if message.starts_with("missing field") {
                MatrixError::missing_param(message)
            } else {
                MatrixError::bad_json(message)
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            let message = e.to_string();
            if message.starts_with("missing field") {
                MatrixError::missing_param(message)
            } else {
                MatrixError::invalid_param(message)
            }
        }
        FromHttpRequestError::Deserialization(e) => MatrixError::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => MatrixError::method_not_allowed(),
        other => MatrixError::bad_json(other.to_string()),
    }
}

impl<S, T> FromRequest<S> for Ruma<T>
where
    S: Send + Sync,
    T: IncomingRequest + Send,
    T::Authentication: TokenRequirement,
    Accounts: FromRef<S>,
    RateLimiter: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        // Percent-decoded path parameters, in path order (routes without any have none).
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
            Err(RawPathParamsRejection::MissingPathParams(_)) => Vec::new(),
            Err(rejection) => return Err(MatrixError::invalid_param(rejection.body_text())),
        };
        let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());

        let requester = if T::Authentication::ACCEPTED {
            match access_token(&parts) {
                Some(token) => Some(Accounts::from_ref(state).authenticate(&token).await?),
                None if T::Authentication::REQUIRED => {
                    return Err(MatrixError::missing_token("Missing access token"));
                }
                None => None,
            }
        } else {
            None
        };

        let limiter = RateLimiter::from_ref(state);
        let action = action_name::<T>();
        if T::RATE_LIMITED || limiter.limits(action) {
            let key = match (&requester, client_ip) {
                (Some(r), _) => r.user_id.to_string(),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => String::new(),
            };
            limiter.check(action, &key)?;
        }

        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let too_large = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
                return Err(if too_large || error.to_string().contains("length limit") {
                    MatrixError::too_large("Request body too large")
                } else {
                    MatrixError::bad_json(format!("Failed to read body: {error}"))
                });
            }
        };
        let is_json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json") || v.is_empty());
        if !bytes.is_empty() && is_json && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            return Err(MatrixError::not_json("Content not JSON."));
        }

        // Clients (matrix-nio's join, for one) POST with no body where all fields are
        // optional; read that as an empty JSON object, as Synapse does.
        let body: &[u8] = if bytes.is_empty() && matches!(parts.method, http::Method::POST | http::Method::PUT) {
            b"{}"
        } else {
            &bytes
        };
        let http_request = http::Request::from_parts(parts, body);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(http_request, &args).map_err(map_parse_error)?;
        Ok(Ruma { body, requester, client_ip })
    }
}

/// A ruma response as an axum response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|body| Body::from(body.freeze())),
            Err(error) => MatrixError::internal(format!("failed to serialize response: {error}")).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn action_names_come_from_ruma_modules() {
        use ruma::api::client::{discovery::get_supported_versions, message::send_message_event, session::login};
        assert_eq!(super::action_name::<login::v3::Request>(), "login");
        assert_eq!(super::action_name::<send_message_event::v3::Request>(), "send_message_event");
        assert_eq!(super::action_name::<get_supported_versions::Request>(), "get_supported_versions");
    }
}
