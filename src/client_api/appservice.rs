//! Application-service endpoints of the Client-Server API: ping, the services' room
//! directories per network, and third-party protocol lookups forwarded to the services.

use std::{collections::BTreeMap, time::Instant};

use axum::extract::State;
use ruma::{
    api::{
        appservice::thirdparty as as_thirdparty,
        client::{
            appservice::{request_ping, set_room_visibility},
            thirdparty::{get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol, get_user_for_user_id},
        },
    },
    thirdparty::Protocol,
};

use super::extract::{Ruma, RumaResponse};
use crate::{
    appservice::{
        client::{AppServiceClient, CallError},
        AppService, AppServices,
    },
    error::{MatrixError, Result},
    rooms::Rooms,
    storage::appservice as repo,
};

/// The service that made the request, which must be the one the path names.
fn own_service<'a>(appservices: &'a AppServices, requester: &crate::accounts::Requester, id: &str) -> Result<&'a AppService> {
    match requester.appservice_id.as_deref().and_then(|own| appservices.by_id(own)) {
        Some(service) if service.id() == id => Ok(service),
        Some(_) => Err(MatrixError::forbidden("The access token belongs to a different application service")),
        None => Err(MatrixError::forbidden("This access token does not belong to an application service")),
    }
}

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the homeserver pings the
/// service (`POST /_matrix/app/v1/ping`) and says how long the round trip took.
pub async fn ping(
    State(appservices): State<AppServices>,
    State(client): State<AppServiceClient>,
    request: Ruma<request_ping::v1::Request>,
) -> Result<RumaResponse<request_ping::v1::Response>> {
    let service = own_service(&appservices, request.user(), &request.body.appservice_id)?;
    let started = Instant::now();
    match client.ping(service, request.body.transaction_id.clone()).await {
        Ok(()) => Ok(RumaResponse(request_ping::v1::Response::new(started.elapsed()))),
        Err(CallError::NoUrl) => Err(MatrixError::new(http::StatusCode::BAD_REQUEST, "M_URL_NOT_SET", "The application service has no url")),
        Err(CallError::Timeout) => {
            Err(MatrixError::new(http::StatusCode::GATEWAY_TIMEOUT, "M_CONNECTION_TIMEOUT", "The application service did not answer in time"))
        }
        Err(CallError::Status { status, body }) => Err(MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_BAD_STATUS", "The application service answered with an error")
            .with("status", status.as_u16().into())
            .with("body", body.into())),
        Err(error) => Err(MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED", error.to_string())),
    }
}

/// `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: a service
/// lists (or unlists) a room in its network's directory, seen in `/publicRooms` with
/// `third_party_instance_id` "{service id}|{network id}".
pub async fn set_network_visibility(
    State(appservices): State<AppServices>,
    State(rooms): State<Rooms>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<RumaResponse<set_room_visibility::v3::Response>> {
    let requester = request.user();
    let service = requester
        .appservice_id
        .as_deref()
        .and_then(|id| appservices.by_id(id))
        .ok_or_else(|| MatrixError::forbidden("Only application services can list rooms in a network's directory"))?;
    let body = &request.body;
    if rooms.room_version(&body.room_id).await.is_err() {
        return Err(MatrixError::not_found("Room not found"));
    }
    let listed = body.visibility == ruma::api::client::room::Visibility::Public;
    repo::set_listed(rooms.db().pool(), service.id(), &body.network_id, body.room_id.as_str(), listed).await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

/// What every service providing `protocol` answered (the others' failures are logged and
/// skipped: one broken bridge does not hide the rest).
async fn from_providers<R, T>(
    client: &AppServiceClient,
    services: impl Iterator<Item = &std::sync::Arc<AppService>>,
    request: impl Fn() -> R,
    items: impl Fn(R::IncomingResponse) -> Vec<T>,
) -> Vec<T>
where
    R: ruma::api::OutgoingRequest<Authentication = ruma::api::appservice::HomeserverToken, PathBuilder = ruma::api::path_builder::SinglePath>,
{
    let mut all = Vec::new();
    for service in services {
        match client.call(service, request(), THIRD_PARTY_TIMEOUT).await {
            Ok(response) => all.extend(items(response)),
            Err(error) => tracing::debug!(appservice = service.id(), %error, "third-party lookup failed"),
        }
    }
    all
}

const THIRD_PARTY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A protocol as the services providing it describe it, merged, with each instance's
/// `instance_id` ("{service}|{network}", what `/publicRooms` takes). None: no service has it.
async fn protocol(client: &AppServiceClient, name: &str) -> Option<Protocol> {
    let mut merged: Option<Protocol> = None;
    for service in client.services().providing_protocol(name) {
        let request = as_thirdparty::get_protocol::v1::Request::new(name.to_owned());
        let answer = match client.call(service, request, THIRD_PARTY_TIMEOUT).await {
            Ok(answer) => answer.protocol,
            Err(error) => {
                tracing::debug!(appservice = service.id(), protocol = name, %error, "protocol query failed");
                continue;
            }
        };
        let mut protocol: Protocol = answer.into();
        for instance in &mut protocol.instances {
            instance.instance_id = Some(format!("{}|{}", service.id(), instance.network_id));
        }
        match &mut merged {
            Some(existing) => existing.instances.extend(protocol.instances),
            None => merged = Some(protocol),
        }
    }
    merged
}

/// `GET /thirdparty/protocols`.
pub async fn protocols(
    State(client): State<AppServiceClient>,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<RumaResponse<get_protocols::v3::Response>> {
    let mut names: Vec<&str> =
        client.services().all().iter().flat_map(|s| s.registration.protocols.iter().flatten().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    let mut protocols = BTreeMap::new();
    for name in names {
        if let Some(found) = protocol(&client, name).await {
            protocols.insert(name.to_owned(), found);
        }
    }
    Ok(RumaResponse(get_protocols::v3::Response::new(protocols)))
}

/// `GET /thirdparty/protocol/{protocol}`.
pub async fn protocol_metadata(
    State(client): State<AppServiceClient>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<RumaResponse<get_protocol::v3::Response>> {
    let found = protocol(&client, &request.body.protocol).await.ok_or_else(|| MatrixError::not_found("No such protocol"))?;
    Ok(RumaResponse(get_protocol::v3::Response::new(found)))
}

fn require_protocol(client: &AppServiceClient, protocol: &str) -> Result<()> {
    if client.services().providing_protocol(protocol).next().is_none() {
        return Err(MatrixError::not_found("No such protocol"));
    }
    Ok(())
}

/// `GET /thirdparty/location/{protocol}`.
pub async fn locations_for_protocol(
    State(client): State<AppServiceClient>,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<RumaResponse<get_location_for_protocol::v3::Response>> {
    let body = &request.body;
    require_protocol(&client, &body.protocol)?;
    let locations = from_providers(
        &client,
        client.services().providing_protocol(&body.protocol),
        || {
            let mut request = as_thirdparty::get_location_for_protocol::v1::Request::new(body.protocol.clone());
            request.fields = body.fields.clone();
            request
        },
        |response| response.locations,
    )
    .await;
    Ok(RumaResponse(get_location_for_protocol::v3::Response::new(locations)))
}

/// `GET /thirdparty/user/{protocol}`.
pub async fn users_for_protocol(
    State(client): State<AppServiceClient>,
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<RumaResponse<get_user_for_protocol::v3::Response>> {
    let body = &request.body;
    require_protocol(&client, &body.protocol)?;
    let users = from_providers(
        &client,
        client.services().providing_protocol(&body.protocol),
        || {
            let mut request = as_thirdparty::get_user_for_protocol::v1::Request::new(body.protocol.clone());
            request.fields = body.fields.clone();
            request
        },
        |response| response.users,
    )
    .await;
    Ok(RumaResponse(get_user_for_protocol::v3::Response::new(users)))
}

/// `GET /thirdparty/location?alias=`: asked of every service that provides a protocol.
pub async fn locations_for_alias(
    State(client): State<AppServiceClient>,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<RumaResponse<get_location_for_room_alias::v3::Response>> {
    let alias = &request.body.alias;
    let providers = client.services().all().iter().filter(|s| s.registration.protocols.as_ref().is_some_and(|p| !p.is_empty()));
    let locations = from_providers(
        &client,
        providers,
        || as_thirdparty::get_location_for_room_alias::v1::Request::new(alias.clone()),
        |response| response.locations,
    )
    .await;
    Ok(RumaResponse(get_location_for_room_alias::v3::Response::new(locations)))
}

/// `GET /thirdparty/user?userid=`.
pub async fn users_for_user_id(
    State(client): State<AppServiceClient>,
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<RumaResponse<get_user_for_user_id::v3::Response>> {
    let user_id = &request.body.userid;
    let providers = client.services().all().iter().filter(|s| s.registration.protocols.as_ref().is_some_and(|p| !p.is_empty()));
    let users = from_providers(
        &client,
        providers,
        || as_thirdparty::get_user_for_user_id::v1::Request::new(user_id.clone()),
        |response| response.users,
    )
    .await;
    Ok(RumaResponse(get_user_for_user_id::v3::Response::new(users)))
}
