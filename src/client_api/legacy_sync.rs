//! The v1 API's `GET /events`, `GET /events/{eventId}`, `GET /initialSync` and
//! `GET /rooms/{roomId}/initialSync`
//! (deprecated, still in the spec): typed here with ruma's macros, as ruma has no types for
//! the global event stream and the initial syncs. Served by `sync::legacy`.

use std::time::Duration;

use axum::extract::State;

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    rooms::{read::Viewer, Rooms},
    sync::{legacy::DEFAULT_INITIAL_LIMIT, token::SyncToken, Sync},
};

/// `GET /events`: with `room_id`, the peeking form of the spec; without, the global stream.
pub mod events {
    use ruma::{api::auth_scheme::AccessToken, api::request, api::response, metadata, OwnedRoomId};
    use serde_json::Value;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/events",
            1.1 => "/_matrix/client/v3/events",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub from: Option<String>,
        /// Milliseconds to wait for something new.
        #[ruma_api(query)]
        pub timeout: Option<u64>,
        #[ruma_api(query)]
        pub room_id: Option<OwnedRoomId>,
        /// Events per room at most (a negative or non-numeric value is refused).
        #[ruma_api(query)]
        pub limit: Option<ruma::UInt>,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

/// `GET /initialSync`.
pub mod initial_sync {
    use ruma::{api::auth_scheme::AccessToken, api::request, api::response, metadata, UInt};
    use serde_json::Value;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/initialSync",
            1.1 => "/_matrix/client/v3/initialSync",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub limit: Option<UInt>,
        #[ruma_api(query)]
        #[serde(default)]
        pub archived: bool,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

/// `GET /rooms/{roomId}/initialSync`.
pub mod room_initial_sync {
    use ruma::{api::auth_scheme::AccessToken, api::request, api::response, metadata, OwnedRoomId, UInt};
    use serde_json::Value;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/rooms/{room_id}/initialSync",
            1.1 => "/_matrix/client/v3/rooms/{room_id}/initialSync",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(query)]
        pub limit: Option<UInt>,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

/// `GET /events/{eventId}`: one event, by id alone.
pub mod event_by_id {
    use ruma::{api::auth_scheme::AccessToken, api::request, api::response, metadata, OwnedEventId};
    use serde_json::Value;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/events/{event_id}",
            1.1 => "/_matrix/client/v3/events/{event_id}",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

fn limit_of(limit: Option<ruma::UInt>) -> u32 {
    limit.map_or(DEFAULT_INITIAL_LIMIT, |l| u32::try_from(u64::from(l)).unwrap_or(u32::MAX))
}

pub async fn events(State(sync): State<Sync>, request: Ruma<events::Request>) -> Result<RumaResponse<events::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let from = body.from.as_deref().filter(|t| !t.is_empty()).map(SyncToken::parse).transpose()?;
    let timeout = Duration::from_millis(body.timeout.unwrap_or(0));
    let limit = body.limit.map(|l| u32::try_from(u64::from(l)).unwrap_or(u32::MAX));
    let body = sync.event_stream(&user.user_id, &user.device_id, from, body.room_id.as_deref(), limit, timeout).await?;
    Ok(RumaResponse(events::Response { body }))
}

pub async fn initial_sync(State(sync): State<Sync>, request: Ruma<initial_sync::Request>) -> Result<RumaResponse<initial_sync::Response>> {
    let user = request.user().clone();
    let limit = limit_of(request.body.limit);
    let body = sync.initial_sync(&user.user_id, &user.device_id, limit, request.body.archived).await?;
    Ok(RumaResponse(initial_sync::Response { body }))
}

pub async fn room_initial_sync(
    State(sync): State<Sync>,
    request: Ruma<room_initial_sync::Request>,
) -> Result<RumaResponse<room_initial_sync::Response>> {
    let user = request.user().clone();
    let limit = limit_of(request.body.limit);
    let body = sync.room_initial_sync(&user.user_id, &user.device_id, &request.body.room_id, limit).await?;
    Ok(RumaResponse(room_initial_sync::Response { body }))
}

pub async fn event_by_id(State(rooms): State<Rooms>, request: Ruma<event_by_id::Request>) -> Result<RumaResponse<event_by_id::Response>> {
    let user = request.user().clone();
    let event_id = &request.body.event_id;
    // One answer for "no such event" and "not yours to see", as the spec says.
    let not_found = || MatrixError::not_found("Event not found");
    let row = crate::storage::events::get(rooms.db().pool(), event_id.as_str()).await?.ok_or_else(not_found)?;
    let room_id = ruma::RoomId::parse(&row.room_id).map_err(|_| not_found())?;
    let (row, pdu) = rooms.visible_event(&room_id, event_id, &user.user_id).await.map_err(|_| not_found())?;
    let body = rooms.client_event(&row, &pdu, Some(Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) })).await?;
    Ok(RumaResponse(event_by_id::Response { body }))
}
