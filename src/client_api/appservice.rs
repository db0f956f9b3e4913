//! Application-service endpoints of the Client-Server API: ping, the services' room
//! directories per network, and third-party protocol lookups forwarded to the services.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{extract::State, Json};
use serde_json::{json, Value};
use ruma::{
    api::{
        appservice::thirdparty as as_thirdparty,
        client::{
            appservice::{request_ping, set_room_visibility},
            thirdparty::{get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol, get_user_for_user_id},
        },
    },
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
    match appservices.of_requester(requester) {
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
    let service = appservices
        .of_requester(request.user())
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

/// A protocol as the services providing it describe it, merged (the first answer's fields,
/// every answer's instances), each instance with its `instance_id` ("{service}|{network}",
/// what `/publicRooms` takes). Passed on as the services wrote it, as Synapse does: they
/// fill the metadata loosely. None: no service has it.
async fn protocol(client: &AppServiceClient, metadata: &ProtocolCache, name: &str) -> Option<Value> {
    let mut merged: Option<Value> = None;
    for service in client.services().providing_protocol(name) {
        let Some(mut answer) = metadata.get_or_fetch(client, service, name).await else { continue };
        let instances = answer.get_mut("instances").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
        let merged = merged.get_or_insert_with(|| {
            answer["instances"] = json!([]);
            answer
        });
        if let Some(all) = merged["instances"].as_array_mut() {
            all.extend(instances);
        }
    }
    merged
}

/// Protocol metadata per (service, protocol), kept a while: clients ask for it whenever
/// they open a room directory, and a service's networks rarely change. An answer that is
/// not metadata (no `instances` list) keeps the last good one.
#[derive(Clone, Default)]
pub struct ProtocolCache(Arc<Mutex<HashMap<(String, String), (Instant, Value)>>>);

const PROTOCOL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl ProtocolCache {
    async fn get_or_fetch(&self, client: &AppServiceClient, service: &AppService, protocol: &str) -> Option<Value> {
        let key = (service.id().to_owned(), protocol.to_owned());
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        if let Some((fetched, value)) = &cached {
            if fetched.elapsed() < PROTOCOL_CACHE_TTL {
                return Some(value.clone());
            }
        }
        let request = as_thirdparty::get_protocol::v1::Request::new(protocol.to_owned());
        let fresh = match client.call_json(service, request, THIRD_PARTY_TIMEOUT).await {
            Ok(mut answer) if answer.get("instances").is_some_and(Value::is_array) => {
                for instance in answer["instances"].as_array_mut().into_iter().flatten() {
                    if let Some(network) = instance.get("network_id").and_then(Value::as_str) {
                        instance["instance_id"] = format!("{}|{network}", service.id()).into();
                    }
                }
                Some(answer)
            }
            Ok(answer) => {
                tracing::debug!(appservice = service.id(), protocol, %answer, "protocol metadata without instances ignored");
                None
            }
            Err(error) => {
                tracing::debug!(appservice = service.id(), protocol, %error, "protocol query failed");
                None
            }
        };
        match fresh {
            Some(value) => {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (Instant::now(), value.clone()));
                Some(value)
            }
            None => cached.map(|(_, value)| value),
        }
    }
}

/// `GET /thirdparty/protocols`.
pub async fn protocols(
    State(client): State<AppServiceClient>,
    State(metadata): State<ProtocolCache>,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<Json<Value>> {
    let mut names: Vec<&str> =
        client.services().all().iter().flat_map(|s| s.registration.protocols.iter().flatten().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    let mut protocols = serde_json::Map::new();
    for name in names {
        if let Some(found) = protocol(&client, &metadata, name).await {
            protocols.insert(name.to_owned(), found);
        }
    }
    Ok(Json(Value::Object(protocols)))
}

/// `GET /thirdparty/protocol/{protocol}`.
pub async fn protocol_metadata(
    State(client): State<AppServiceClient>,
    State(metadata): State<ProtocolCache>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<Json<Value>> {
    let found = protocol(&client, &metadata, &request.body.protocol).await.ok_or_else(|| MatrixError::not_found("No such protocol"))?;
    Ok(Json(found))
}

/// The lookup's fields are the query's parameters, but the access token's (as Synapse).
fn lookup_fields(query: &std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<String, String> {
    query.iter().filter(|(key, _)| *key != "access_token").map(|(k, v)| (k.clone(), v.clone())).collect()
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
            request.fields = lookup_fields(&body.fields);
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
            request.fields = lookup_fields(&body.fields);
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
    let providers = client.services().with_protocols();
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
    let providers = client.services().with_protocols();
    let users = from_providers(
        &client,
        providers,
        || as_thirdparty::get_user_for_user_id::v1::Request::new(user_id.clone()),
        |response| response.users,
    )
    .await;
    Ok(RumaResponse(get_user_for_user_id::v3::Response::new(users)))
}

/// `DELETE /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: Synapse's
/// way to unlist a room (the spec has the PUT with `visibility: private`), which bridges
/// and SyTest use.
pub mod unlist_room {
    use ruma::{
        api::{auth_scheme::AppserviceToken, request, response},
        metadata, OwnedRoomId,
    };

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AppserviceToken,
        path: "/_matrix/client/v3/directory/list/appservice/{network_id}/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub network_id: String,
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

pub async fn unlist_from_network(
    State(appservices): State<AppServices>,
    State(rooms): State<Rooms>,
    request: Ruma<unlist_room::Request>,
) -> Result<RumaResponse<unlist_room::Response>> {
    let service = appservices
        .of_requester(request.user())
        .ok_or_else(|| MatrixError::forbidden("Only application services can list rooms in a network's directory"))?;
    repo::set_listed(rooms.db().pool(), service.id(), &request.body.network_id, request.body.room_id.as_str(), false).await?;
    Ok(RumaResponse(unlist_room::Response {}))
}
