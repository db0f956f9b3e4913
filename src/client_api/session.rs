//! Registration, login, logout, whoami, and Synapse-compatible shared-secret registration.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::State, Json};
use hmac::{Hmac, Mac};
use ruma::api::client::{
    account::{get_username_availability, register, register::RegistrationKind, whoami},
    session::{
        get_login_types::{self, v3::LoginType},
        login::{self, v3::LoginInfo},
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Ruma, RumaResponse};
use crate::{
    accounts::{
        random_string, Requester, Session,
        uia::{UiaContext, DUMMY, REGISTRATION_TOKEN},
        Accounts,
    },
    appservice::{AppService, AppServices},
    config::Config,
    error::{MatrixError, Result},
};

pub async fn login_types(
    State(appservices): State<AppServices>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<RumaResponse<get_login_types::v3::Response>> {
    let mut types = vec![LoginType::Password(Default::default())];
    if !appservices.is_empty() {
        types.push(LoginType::ApplicationService(Default::default()));
    }
    Ok(RumaResponse(get_login_types::v3::Response::new(types)))
}

/// Who a login names: an `m.id.user` identifier, or the legacy `user` field.
fn identified_user(identifier: Option<&UserIdentifier>, legacy_user: Option<&String>) -> Result<String> {
    match (identifier, legacy_user) {
        (Some(UserIdentifier::Matrix(id)), _) => Ok(id.user.clone()),
        (None, Some(user)) => Ok(user.clone()),
        (Some(_), _) => Err(MatrixError::forbidden("Only m.id.user identifiers are supported")),
        (None, None) => Err(MatrixError::missing_param("Missing identifier")),
    }
}

/// A login's answer: the session's token, device and refresh token.
fn login_answer(session: Session) -> login::v3::Response {
    let mut response = login::v3::Response::new(session.user_id, session.access_token, session.device_id);
    if let Some((refresh_token, lifetime)) = session.refresh {
        response.refresh_token = Some(refresh_token);
        response.expires_in = Some(lifetime);
    }
    response
}

/// A registration that also logged in: the session goes in its answer.
fn log_in_answer(response: &mut register::v3::Response, session: Session) {
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    if let Some((refresh_token, lifetime)) = session.refresh {
        response.refresh_token = Some(refresh_token);
        response.expires_in = Some(lifetime);
    }
}

/// The application service a `m.login.application_service` request comes from: it must
/// carry the service's `as_token` (401 otherwise, as for any missing or unknown token).
fn calling_appservice<'a>(appservices: &'a AppServices, requester: Option<&Requester>) -> Result<&'a Arc<AppService>> {
    let requester = requester.ok_or_else(|| MatrixError::missing_token("Missing the application service's access token"))?;
    appservices
        .of_requester(requester)
        .ok_or_else(|| MatrixError::unknown_token("The access token is not an application service's").with("soft_logout", false.into()))
}

pub async fn login(
    State(accounts): State<Accounts>,
    State(appservices): State<AppServices>,
    request: Ruma<login::v3::Request>,
) -> Result<RumaResponse<login::v3::Response>> {
    let requester = request.requester.clone();
    let body = request.body;
    if let LoginInfo::ApplicationService(info) = &body.login_info {
        let service = calling_appservice(&appservices, requester.as_ref())?;
        #[allow(deprecated)]
        let user = identified_user(info.identifier.as_ref(), info.user.as_ref())?;
        let user_id = accounts.parse_login_user(&user).map_err(|_| MatrixError::invalid_param("Invalid user id"))?;
        if !service.is_interested_in_user(user_id.as_str()) {
            return Err(MatrixError::exclusive("This user is not in the application service's namespaces"));
        }
        if accounts.is_available(&user_id).await? {
            return Err(MatrixError::forbidden("No such user"));
        }
        let session = accounts
            .login(&user_id, body.device_id, body.initial_device_display_name.as_deref(), body.refresh_token)
            .await?;
        tracing::info!(user = %user_id, device = %session.device_id, appservice = service.id(), "logged in by an application service");
        return Ok(RumaResponse(login_answer(session)));
    }
    let LoginInfo::Password(password) = &body.login_info else {
        return Err(MatrixError::unknown("Unsupported login type"));
    };
    #[allow(deprecated)] // `user` is the pre-r0.4 field some clients still send.
    let user = identified_user(password.identifier.as_ref(), password.user.as_ref())?;
    let user_id = accounts.parse_login_user(&user).map_err(|_| MatrixError::forbidden("Invalid username or password"))?;
    accounts.check_password(&user_id, &password.password).await?;
    let session = accounts
        .login(&user_id, body.device_id, body.initial_device_display_name.as_deref(), body.refresh_token)
        .await?;
    tracing::info!(user = %user_id, device = %session.device_id, "logged in");
    Ok(RumaResponse(login_answer(session)))
}

/// `POST /refresh`: a new access token (and refresh token) for a refresh token.
pub async fn refresh(
    State(accounts): State<Accounts>,
    request: Ruma<refresh_token::v3::Request>,
) -> Result<RumaResponse<refresh_token::v3::Response>> {
    let session = accounts.refresh(&request.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    if let Some((refresh_token, lifetime)) = session.refresh {
        response.refresh_token = Some(refresh_token);
        response.expires_in_ms = Some(lifetime);
    }
    Ok(RumaResponse(response))
}

pub async fn logout(
    State(accounts): State<Accounts>,
    request: Ruma<logout::v3::Request>,
) -> Result<RumaResponse<logout::v3::Response>> {
    accounts.logout(request.user()).await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub async fn logout_all(
    State(accounts): State<Accounts>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<RumaResponse<logout_all::v3::Response>> {
    accounts.logout_all(&request.user().user_id, None).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

pub async fn whoami(request: Ruma<whoami::v3::Request>) -> Result<RumaResponse<whoami::v3::Response>> {
    let user = request.user();
    let mut response = whoami::v3::Response::new(user.user_id.clone(), false);
    // An application service acting without a device has none.
    response.device_id = (!user.device_id.as_str().is_empty()).then(|| user.device_id.clone());
    Ok(RumaResponse(response))
}

/// Whether a registration token would be accepted (spec v1.2), so clients can check it
/// before the user fills in the rest. Registration closed: every token is invalid, 403.
pub async fn registration_token_validity(
    State(config): State<Arc<Config>>,
    request: Ruma<ruma::api::client::account::check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<ruma::api::client::account::check_registration_token_validity::v1::Response>> {
    if !registration_open(&config) {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let valid = config.registration.tokens.iter().any(|token| token == &request.body.token);
    Ok(RumaResponse(ruma::api::client::account::check_registration_token_validity::v1::Response::new(valid)))
}

pub async fn username_available(
    State(accounts): State<Accounts>,
    State(appservices): State<AppServices>,
    State(config): State<Arc<Config>>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    if !registration_open(&config) {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    let user_id = accounts.local_user_id(&request.body.username)?;
    if appservices.exclusive_owner_of_user(user_id.as_str()).is_some() {
        return Err(MatrixError::exclusive("This user ID is reserved by an application service"));
    }
    if !accounts.is_available(&user_id).await? {
        return Err(MatrixError::user_in_use("User ID already taken"));
    }
    Ok(RumaResponse(get_username_availability::v3::Response::new(true)))
}

fn registration_open(config: &Config) -> bool {
    config.registration.enabled || !config.registration.tokens.is_empty()
}

/// `POST /register` with `m.login.application_service`: a service creates a user in its
/// namespace, with no password and no user-interactive auth, registration open or not.
async fn register_for_appservice(
    accounts: &Accounts,
    appservices: &AppServices,
    service: &AppService,
    body: register::v3::Request,
) -> Result<Registered> {
    let username = body.username.as_deref().ok_or_else(|| MatrixError::missing_param("Missing username"))?;
    let user_id = accounts.local_user_id(username)?;
    if !service.is_interested_in_user(user_id.as_str()) {
        return Err(MatrixError::exclusive("Invalid user localpart for this application service"));
    }
    if appservices.exclusive_owner_of_user(user_id.as_str()).is_some_and(|owner| owner.id() != service.id()) {
        return Err(MatrixError::exclusive("This user ID is reserved by another application service"));
    }
    accounts.create_user_with_hash(&user_id, None, false).await?;
    crate::storage::appservice::set_user_appservice(accounts.db().pool(), user_id.as_str(), service.id()).await?;
    tracing::info!(user = %user_id, appservice = service.id(), "registered by an application service");
    let mut response = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let session = accounts.login(&user_id, body.device_id, body.initial_device_display_name.as_deref(), body.refresh_token).await?;
        log_in_answer(&mut response, session);
    }
    Ok(Registered(response))
}

/// A registration's answer. Without a login (guest-free `inhibit_login`) it has no
/// `device_id` at all: ruma writes `null`, which clients (and SyTest) take for a device.
pub struct Registered(register::v3::Response);

impl axum::response::IntoResponse for Registered {
    fn into_response(self) -> axum::response::Response {
        if self.0.device_id.is_some() {
            return RumaResponse(self.0).into_response();
        }
        let mut body = json!({ "user_id": self.0.user_id });
        if let Some(token) = self.0.access_token {
            body["access_token"] = token.into();
        }
        Json(body).into_response()
    }
}

pub async fn register(
    State(accounts): State<Accounts>,
    State(config): State<Arc<Config>>,
    State(appservices): State<AppServices>,
    request: Ruma<register::v3::Request>,
) -> Result<Registered> {
    let requester = request.requester.clone();
    let body = request.body;
    if body.login_type == Some(register::LoginType::ApplicationService) {
        let service = calling_appservice(&appservices, requester.as_ref())?.clone();
        return register_for_appservice(&accounts, &appservices, &service, body).await;
    }
    if body.kind == RegistrationKind::Guest {
        // A guest account: no username, password or user-interactive auth.
        if !config.registration.allow_guests {
            return Err(MatrixError::new(http::StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled"));
        }
        let user_id = accounts.create_guest().await?;
        tracing::info!(user = %user_id, "guest registered");
        let session = accounts
            .login(&user_id, body.device_id, body.initial_device_display_name.as_deref(), body.refresh_token)
            .await?;
        let mut response = register::v3::Response::new(user_id);
        log_in_answer(&mut response, session);
        return Ok(Registered(response));
    }
    if !registration_open(&config) {
        return Err(MatrixError::forbidden("Registration is disabled"));
    }
    // The session's kept parameters stand in for those a later request leaves out (as
    // Synapse keeps them); once it has registered a user, a retry is answered for that user.
    let session_id = body.auth.as_ref().and_then(|auth| auth.session()).map(str::to_owned);
    let kept = match &session_id {
        Some(session) => accounts.session_params(session).await?,
        None => json!({}),
    };
    let username = body.username.clone().or_else(|| kept["username"].as_str().map(str::to_owned));
    let device_id = body.device_id.clone().or_else(|| kept["device_id"].as_str().map(Into::into));
    let device_name = body.initial_device_display_name.clone().or_else(|| kept["initial_device_display_name"].as_str().map(str::to_owned));
    let inhibit_login = body.inhibit_login || kept["inhibit_login"] == true;
    let refreshable = body.refresh_token || kept["refresh_token"] == true;
    let registered = kept["registered_user_id"].as_str().and_then(|id| ruma::UserId::parse(id).ok());

    let user_id = match registered.clone() {
        Some(user_id) => user_id,
        None => {
            // Upgrading a guest: the account keeps its id (the username, if given, must be it).
            let guest = match &body.guest_access_token {
                Some(token) => {
                    let guest = accounts.authenticate(token).await?;
                    let own_name = username.as_deref().is_none_or(|name| name.to_lowercase() == guest.user_id.localpart());
                    if !guest.is_guest || !own_name {
                        return Err(MatrixError::forbidden("The guest access token does not belong to this guest account"));
                    }
                    Some(guest.user_id)
                }
                None => None,
            };
            let user_id = match (&guest, &username) {
                (Some(guest), _) => guest.clone(),
                (None, Some(name)) => accounts.local_user_id(&name.to_lowercase())?,
                (None, None) => accounts.local_user_id(&random_string(12).to_lowercase())?,
            };
            if guest.is_none() && appservices.exclusive_owner_of_user(user_id.as_str()).is_some() {
                return Err(MatrixError::exclusive("This user ID is reserved by an application service"));
            }
            if guest.is_none() && !accounts.is_available(&user_id).await? {
                return Err(MatrixError::user_in_use("User ID already taken"));
            }
            let flows: &[&[&str]] = if config.registration.tokens.is_empty() { &[&[DUMMY]] } else { &[&[REGISTRATION_TOKEN]] };
            let context = UiaContext { user: None, registration_tokens: &config.registration.tokens, operation: "register", keep_completed: true };
            let password_hash = match (body.password.as_deref(), kept["password_hash"].as_str()) {
                (Some(password), _) => Some(accounts.hash_password(password).await?),
                (None, Some(hash)) => Some(hash.to_owned()),
                (None, None) => None,
            };
            if let Err(challenge) = accounts.user_interactive_auth(body.auth.as_ref(), flows, context).await {
                // The session the client is to continue keeps this request's parameters.
                if let Some(session) = challenge.extra.get("session").and_then(Value::as_str) {
                    let mut params = kept.clone();
                    let mut keep = |key: &str, value: Option<Value>| {
                        if let Some(value) = value {
                            params[key] = value;
                        }
                    };
                    keep("username", username.clone().map(Value::from));
                    keep("password_hash", password_hash.clone().map(Value::from));
                    keep("device_id", device_id.as_ref().map(|d| Value::from(d.as_str())));
                    keep("initial_device_display_name", device_name.clone().map(Value::from));
                    keep("inhibit_login", inhibit_login.then_some(Value::Bool(true)));
                    keep("refresh_token", refreshable.then_some(Value::Bool(true)));
                    accounts.keep_session_params(session, &params).await?;
                }
                return Err(challenge);
            }
            let Some(password_hash) = password_hash else {
                return Err(MatrixError::missing_param("Missing password"));
            };
            if guest.is_some() {
                accounts.upgrade_guest(&user_id, &password_hash).await?;
                tracing::info!(user = %user_id, "guest upgraded to a full account");
            } else {
                accounts.create_user_with_hash(&user_id, Some(&password_hash), false).await?;
                tracing::info!(user = %user_id, "registered");
            }
            if let Some(session) = &session_id {
                let mut params = kept.clone();
                params["registered_user_id"] = user_id.as_str().into();
                accounts.keep_session_params(session, &params).await?;
            }
            user_id
        }
    };
    let mut response = register::v3::Response::new(user_id.clone());
    if !inhibit_login {
        let session = accounts.login(&user_id, device_id, device_name.as_deref(), refreshable).await?;
        log_in_answer(&mut response, session);
    }
    Ok(Registered(response))
}

/// Nonces handed out by GET /_synapse/admin/v1/register, each usable once within a minute.
#[derive(Clone, Default)]
pub struct SharedSecretNonces(Arc<Mutex<HashMap<String, Instant>>>);

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

pub async fn shared_secret_nonce(State(nonces): State<SharedSecretNonces>) -> Json<Value> {
    let nonce = random_string(32);
    let mut map = nonces.0.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, issued| issued.elapsed() < NONCE_LIFETIME);
    map.insert(nonce.clone(), Instant::now());
    Json(json!({ "nonce": nonce }))
}

#[derive(Deserialize)]
pub struct SharedSecretRegistration {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
    mac: String,
}

pub async fn shared_secret_register(
    State(config): State<Arc<Config>>,
    State(accounts): State<Accounts>,
    State(rooms): State<crate::rooms::Rooms>,
    State(nonces): State<SharedSecretNonces>,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    let secret = &config.registration.shared_secret;
    if secret.is_empty() {
        return Err(MatrixError::bad_json("Shared secret registration is not enabled").with("errcode", "M_UNKNOWN".into()));
    }
    let request: SharedSecretRegistration =
        serde_json::from_slice(&body).map_err(|e| if serde_json::from_slice::<Value>(&body).is_err() { MatrixError::not_json(e.to_string()) } else { MatrixError::bad_json(e.to_string()) })?;
    let fresh = nonces
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&request.nonce)
        .is_some_and(|issued| issued.elapsed() < NONCE_LIFETIME);
    if !fresh {
        return Err(MatrixError::unknown("Unrecognised nonce"));
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| MatrixError::internal(e.to_string()))?;
    mac.update(request.nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(request.username.as_bytes());
    mac.update(b"\x00");
    mac.update(request.password.as_bytes());
    mac.update(b"\x00");
    mac.update(if request.admin { b"admin" as &[u8] } else { b"notadmin" });
    if let Some(user_type) = &request.user_type {
        mac.update(b"\x00");
        mac.update(user_type.as_bytes());
    }
    let expected = hex::decode(&request.mac).map_err(|_| MatrixError::forbidden("HMAC incorrect"))?;
    mac.verify_slice(&expected).map_err(|_| MatrixError::forbidden("HMAC incorrect"))?;

    let user_id = accounts.local_user_id(&request.username.to_lowercase())?;
    accounts.create_user(&user_id, Some(&request.password), request.admin).await?;
    if let Some(name) = &request.displayname {
        accounts.set_displayname(&user_id, Some(name)).await?;
        rooms.propagate_profile(&user_id).await?;
    }
    let session = accounts.login(&user_id, None, None, false).await?;
    Ok(Json(json!({
        "access_token": session.access_token,
        "user_id": session.user_id,
        "home_server": accounts.server_name(),
        "device_id": session.device_id,
    })))
}
