//! The v1 membership endpoints the spec keeps for older servers: `/v1/send_join`,
//! `/v1/send_leave` and `/v1/invite`. They are the v2 exchanges with the answer wrapped as
//! `[200, body]`, and for `/v1/invite` the invite event itself as the request body (its room
//! version is not sent: v1 servers know rooms of versions 1 and 2 only). ruma has no types
//! for v1 send_join / send_leave, and its v1 invite type keeps only some of the event's
//! fields (not its hashes and signatures), so these three are ours.

use ruma::{
    api::{federation::authentication::ServerSignatures, request, response},
    metadata, OwnedEventId, OwnedRoomId,
};
use serde_json::{value::RawValue, Value};

use crate::error::{MatrixError, Result};

/// The body of a v1 answer, `[200, body]`.
pub fn unwrap_v1(answer: Value) -> Result<Value> {
    match answer {
        Value::Array(mut items) if items.len() == 2 && items[0] == 200 => Ok(items.remove(1)),
        other => Err(MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("not a v1 answer ([200, body]): {other}"))),
    }
}

pub mod send_join {
    use super::*;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId, event_id: OwnedEventId, pdu: Box<RawValue>) -> Self {
            Self { room_id, event_id, pdu }
        }
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

pub mod send_leave {
    use super::*;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId, event_id: OwnedEventId, pdu: Box<RawValue>) -> Self {
            Self { room_id, event_id, pdu }
        }
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}

pub mod invite {
    use super::*;

    metadata! {
        method: PUT,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/invite/{room_id}/{event_id}",
    }

    /// The body is the invite event, the room's stripped state in its
    /// `unsigned.invite_room_state`.
    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub event: Box<RawValue>,
    }

    impl Request {
        pub fn new(room_id: OwnedRoomId, event_id: OwnedEventId, event: Box<RawValue>) -> Self {
            Self { room_id, event_id, event }
        }
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Value,
    }
}
