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
use http::request::Parts;
use ruma::api::{
    auth_scheme::{AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication},
    federation::authentication::ServerSignatures,
    error::{DeserializationError, FromHttpRequestError},
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
};

use super::rate_limit::RateLimiter;
use crate::{
    accounts::{Accounts, Requester},
    appservice::{AppService, AppServices},
    error::MatrixError,
    federation::Federation,
};
use ruma::OwnedServerName;
use std::future::Future;

/// Who made a request, as its endpoint's ruma auth scheme establishes it.
pub enum Caller {
    Nobody,
    User(Requester),
    Server(OwnedServerName),
}

/// Authentication for one ruma auth scheme: access tokens (required or optional) for the
/// client API, X-Matrix signatures for the federation API.
pub trait Authenticate<S>: Sized {
    /// Whether the scheme requires a user's access token, so guest accounts are held to the
    /// endpoints open to guests.
    const USER_REQUIRED: bool = false;

    fn authenticate(parts: &Parts, body: &[u8], state: &S) -> impl Future<Output = Result<Caller, MatrixError>> + Send;
}

/// A request made with an application service's `as_token`: the service acts as its own
/// user, or as the `user_id` of the query (one in its namespaces), with the query's
/// `device_id` if given (spec: identity assertion).
/// Registration and login (the `AppserviceTokenOptional` endpoints) take the service
/// itself, whatever `user_id` says: the user may not exist yet (mautrix names the new
/// user there), and Synapse reads only the token on them.
async fn as_appservice(parts: &Parts, accounts: &Accounts, service: &AppService, masquerade: bool) -> Result<Requester, MatrixError> {
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|_| masquerade);
    let user_id = match param("user_id") {
        Some(user_id) => ruma::UserId::parse(user_id).map_err(|e| MatrixError::invalid_param(format!("user_id: {e}")))?,
        None => service.sender.clone(),
    };
    if !service.is_interested_in_user(user_id.as_str()) {
        return Err(MatrixError::forbidden(format!("Application service cannot masquerade as this user ({user_id})")));
    }
    let device_id = param("device_id").or_else(|| param("org.matrix.msc3202.device_id"));
    accounts.masquerade(service.id(), &user_id, device_id, user_id == service.sender).await
}

async fn by_token<S>(parts: &Parts, state: &S, required: bool, masquerade: bool) -> Result<Caller, MatrixError>
where
    Accounts: FromRef<S>,
    AppServices: FromRef<S>,
{
    let token = access_token(parts);
    let service = token.as_deref().and_then(|token| AppServices::from_ref(state).by_token(token).cloned());
    if let Some(service) = service {
        return Ok(Caller::User(as_appservice(parts, &Accounts::from_ref(state), &service, masquerade).await?));
    }
    match token {
        Some(token) => {
            let accounts = Accounts::from_ref(state);
            let requester = accounts.authenticate(&token).await?;
            let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
            accounts.note_seen(&requester, ip);
            Ok(Caller::User(requester))
        }
        None if required => Err(MatrixError::missing_token("Missing access token")),
        None => Ok(Caller::Nobody),
    }
}

macro_rules! token_scheme {
    ($($scheme:ty => $required:literal, $masquerade:literal;)*) => {
        $(impl<S: Send + Sync> Authenticate<S> for $scheme
        where
            Accounts: FromRef<S>,
            AppServices: FromRef<S>,
        {
            const USER_REQUIRED: bool = $required;

            fn authenticate(parts: &Parts, _body: &[u8], state: &S) -> impl Future<Output = Result<Caller, MatrixError>> + Send {
                by_token(parts, state, $required, $masquerade)
            }
        })*
    };
}

token_scheme! {
    NoAccessToken => false, true;
    AccessToken => true, true;
    AccessTokenOptional => false, true;
    AppserviceToken => true, true;
    AppserviceTokenOptional => false, false;
}

impl<S: Send + Sync> Authenticate<S> for NoAuthentication {
    async fn authenticate(_: &Parts, _: &[u8], _: &S) -> Result<Caller, MatrixError> {
        Ok(Caller::Nobody)
    }
}

impl<S: Send + Sync> Authenticate<S> for ServerSignatures
where
    Federation: FromRef<S>,
{
    async fn authenticate(parts: &Parts, body: &[u8], state: &S) -> Result<Caller, MatrixError> {
        Ok(Caller::Server(Federation::from_ref(state).verify_request(parts, body).await?))
    }
}

/// A path parameter added after the route matched, as if the path had ended with it (the
/// transaction id of the POST forms without one: `router::ruma_post_without_txn_id`).
#[derive(Clone)]
pub struct TrailingPathArg(pub String);

/// A parsed ruma request plus who sent it.
pub struct Ruma<T> {
    pub body: T,
    /// Present when the request carried a valid access token.
    pub requester: Option<Requester>,
    /// Present for federation requests with a valid X-Matrix signature.
    pub origin: Option<OwnedServerName>,
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

/// Endpoints (by `action_name`) a guest account may call among those that need a token: the
/// spec's list (guest access module), and the few more Synapse opens to guests (typing,
/// receipts, read markers, logout, key changes, filters).
const GUEST_ENDPOINTS: &[&str] = &[
    "get_state_events",
    "get_state_event_for_key",
    "get_context",
    "get_room_event",
    "get_message_events",
    "get_member_events",
    "room_initial_sync",
    "sync_events",
    "events",
    "get_content",
    "get_content_as_filename",
    "get_content_thumbnail",
    "join_room_by_id",
    "join_room_by_id_or_alias",
    "leave_room",
    "send_message_event",
    "send_state_event",
    "send_event_to_device",
    "set_display_name",
    "get_devices",
    "get_device",
    "update_device",
    "whoami",
    "upload_keys",
    "get_keys",
    "claim_keys",
    "get_key_changes",
    "create_typing_event",
    "create_receipt",
    "set_read_marker",
    "logout",
    "create_filter",
    "get_filter",
];

/// What a suspended account may not do (the spec's recommended list: join, knock, invite,
/// send, change its profile; and, as Synapse, create rooms, upgrade them, upload media or
/// create aliases). Leaving, redacting, reading, keys, backups and logging out stay open.
const FORBIDDEN_WHEN_SUSPENDED: &[&str] = &[
    "join_room_by_id",
    "join_room_by_id_or_alias",
    "knock_room",
    "invite_user",
    "send_message_event",
    "send_state_event",
    "set_display_name",
    "set_avatar_url",
    "set_profile_field",
    "create_room",
    "upgrade_room",
    "create_content",
    "create_mxc_uri",
    "create_content_async",
    "create_alias",
];

/// What a request needs a device for: its keys (spec: identity assertion names uploading
/// one-time keys).
const NEEDS_A_DEVICE: &[&str] = &["upload_keys"];

/// A locked account may only log out (spec: "Account locking").
const OPEN_WHEN_LOCKED: &[&str] = &["logout", "logout_all"];

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

/// A room version the client asks for (createRoom's `room_version`, upgrade's `new_version`)
/// that is not even a valid version id is an unsupported version, as in Synapse, not bad JSON.
fn malformed_room_version(body: &[u8]) -> Option<MatrixError> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let version = ["room_version", "new_version"].iter().find_map(|key| json.get(*key)?.as_str())?;
    ruma::RoomVersionId::try_from(version)
        .is_err()
        .then(|| MatrixError::unsupported_room_version(format!("Room version {version:?} is not supported")))
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
    T::Authentication: Authenticate<S>,
    RateLimiter: FromRef<S>,
    AppServices: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Boxed: extraction's state (body reading, token lookup) is freed before the handler
        // runs, instead of sizing every handler future, parked long-polls included.
        Ok(Box::pin(Self::extract_with_body(request, state)).await?.0)
    }
}

/// A parsed ruma request with its JSON body as sent, for the fields ruma's types drop
/// (sliding sync's `filters.spaces`).
pub struct WithRawBody<T>(pub Ruma<T>, pub bytes::Bytes);

impl<S, T> FromRequest<S> for WithRawBody<T>
where
    S: Send + Sync,
    T: IncomingRequest + Send,
    T::Authentication: Authenticate<S>,
    RateLimiter: FromRef<S>,
    AppServices: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (ruma, bytes) = Box::pin(Ruma::<T>::extract_with_body(request, state)).await?;
        Ok(WithRawBody(ruma, bytes))
    }
}

impl<T> Ruma<T>
where
    T: IncomingRequest + Send,
{
    async fn extract_with_body<S>(request: Request, state: &S) -> Result<(Self, bytes::Bytes), MatrixError>
    where
        S: Send + Sync,
        T::Authentication: Authenticate<S>,
        RateLimiter: FromRef<S>,
        AppServices: FromRef<S>,
    {
        let (mut parts, body) = request.into_parts();
        // Percent-decoded path parameters, in path order (routes without any have none).
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
            Err(RawPathParamsRejection::MissingPathParams(_)) => Vec::new(),
            Err(rejection) => return Err(MatrixError::invalid_param(rejection.body_text())),
        };
        let mut path_args = path_args;
        if let Some(TrailingPathArg(extra)) = parts.extensions.remove::<TrailingPathArg>() {
            path_args.push(extra);
        }
        let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());

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
        // JSON is UTF-8: serde_json does not check the strings it skips, so check first.
        if !bytes.is_empty() && is_json && (std::str::from_utf8(&bytes).is_err() || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err()) {
            return Err(MatrixError::not_json("Content not JSON."));
        }

        let (requester, origin) = match T::Authentication::authenticate(&parts, &bytes, state).await? {
            Caller::Nobody => (None, None),
            Caller::User(requester) => (Some(requester), None),
            Caller::Server(origin) => (None, Some(origin)),
        };
        let action = action_name::<T>();
        if <T::Authentication as Authenticate<S>>::USER_REQUIRED && requester.as_ref().is_some_and(|r| r.is_guest) && !GUEST_ENDPOINTS.contains(&action) {
            return Err(MatrixError::new(http::StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed"));
        }
        if let Some(requester) = &requester {
            if requester.is_locked && !OPEN_WHEN_LOCKED.contains(&action) {
                return Err(MatrixError::new(http::StatusCode::UNAUTHORIZED, "M_USER_LOCKED", "This account has been locked")
                    .with("soft_logout", true.into()));
            }
            if requester.is_suspended && FORBIDDEN_WHEN_SUSPENDED.contains(&action) {
                return Err(MatrixError::user_suspended("You cannot perform this action while suspended."));
            }
            // An application service acting without a device cannot do what needs one (spec:
            // identity assertion; Synapse's answer).
            if requester.appservice_id.is_some() && requester.device_id.as_str().is_empty() && NEEDS_A_DEVICE.contains(&action) {
                return Err(MatrixError::unknown("To do this, pass device_id when authenticating as an application service"));
            }
        }
        let limiter = RateLimiter::from_ref(state);
        // An application service's users are limited only if its registration says so;
        // its own user never is (spec: `rate_limited`).
        let appservices = AppServices::from_ref(state);
        let exempt = requester.as_ref().is_some_and(|r| {
            appservices.of_requester(r).is_some_and(|service| r.user_id == service.sender || !service.rate_limited())
        });
        if !exempt && (T::RATE_LIMITED || limiter.limits(action)) {
            let key = match (&requester, &origin, client_ip) {
                (Some(r), _, _) => r.user_id.to_string(),
                (None, Some(server), _) => server.to_string(),
                (None, None, Some(ip)) => ip.to_string(),
                (None, None, None) => String::new(),
            };
            limiter.check(action, &key)?;
        }
        // Clients (matrix-nio's join, for one) POST with no body where all fields are
        // optional; read that as an empty JSON object, as Synapse does.
        let legacy_auth = if is_json { legacy_password_auth(&bytes).or_else(|| typing_without_timeout(action, &bytes)) } else { None };
        let body: &[u8] = if bytes.is_empty() && matches!(parts.method, http::Method::POST | http::Method::PUT | http::Method::DELETE) {
            b"{}"
        } else if let Some(rewritten) = &legacy_auth {
            rewritten
        } else {
            &bytes
        };
        let http_request = http::Request::from_parts(parts, body);
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(http_request, &args)
            .map_err(|error| malformed_room_version(&bytes).unwrap_or_else(|| map_parse_error(error)))?;
        Ok((Ruma { body, requester, origin, client_ip }, bytes))
    }
}

/// A UIA password stage in its pre-r0.4 form (`"user": "..."` instead of an `identifier`),
/// which clients still send and Synapse still takes, rewritten into the current form; None
/// when the body has no such stage.
fn legacy_password_auth(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.windows(6).any(|w| w == b"\"auth\"") {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let auth = body.get_mut("auth")?.as_object_mut()?;
    if auth.get("type")?.as_str()? != "m.login.password" || auth.contains_key("identifier") {
        return None;
    }
    let user = auth.remove("user")?;
    auth.insert("identifier".into(), serde_json::json!({ "type": "m.id.user", "user": user }));
    serde_json::to_vec(&body).ok()
}

/// Typing started without a `timeout` (the spec does not require one; ruma does): Synapse's
/// 30 seconds.
fn typing_without_timeout(action: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    if action != "create_typing_event" {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = body.as_object_mut()?;
    if object.get("typing")? != &serde_json::Value::Bool(true) || object.contains_key("timeout") {
        return None;
    }
    object.insert("timeout".into(), 30_000.into());
    serde_json::to_vec(&body).ok()
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
