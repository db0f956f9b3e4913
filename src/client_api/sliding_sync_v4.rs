//! `POST /_matrix/client/v4/sync`: simplified sliding sync in the form merged into the spec
//! (MSC4186 as merged): `pos` and `timeout` in the body, one `range` per list, an object
//! `required_state` (`include` / `exclude` / `lazy_members`), `is_invited`; answered with
//! `stripped_state` and each room's `membership`. The request is translated into the unstable
//! form (what matrix-rust-sdk 0.18 speaks, `sliding_sync.rs`) and served by the same code.

use std::{collections::BTreeMap, time::Duration};

use axum::extract::State;
use ruma::{
    api::{auth_scheme::AccessToken, client::sync::sync_events::v5, request, response, OutgoingResponseExt},
    directory::RoomTypeFilter,
    events::StateEventType,
    metadata,
    presence::PresenceState,
    OwnedRoomId, UInt,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    rooms::Rooms,
    sync::{sliding::SlidingRequest, Sync},
};

metadata! {
    method: POST,
    rate_limited: false,
    authentication: AccessToken,
    history: {
        unstable("org.matrix.msc4186") => "/_matrix/client/v4/sync",
    }
}

/// The merged form's request body.
#[request]
pub struct Request {
    #[ruma_api(body)]
    pub body: MergedRequest,
}

#[response]
pub struct Response {
    #[ruma_api(body)]
    pub body: Value,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MergedRequest {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<PresenceState>,
    conn_id: Option<String>,
    txn_id: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, MergedList>,
    #[serde(default)]
    room_subscriptions: BTreeMap<OwnedRoomId, MergedRoomConfig>,
    #[serde(default)]
    extensions: v5::request::Extensions,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct MergedRoomConfig {
    #[serde(default)]
    timeline_limit: UInt,
    #[serde(default)]
    required_state: MergedRequiredState,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct MergedList {
    range: Option<(UInt, UInt)>,
    #[serde(flatten)]
    room: MergedRoomConfig,
    filters: Option<MergedFilters>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct MergedRequiredState {
    #[serde(default)]
    include: Vec<StateElement>,
    #[serde(default)]
    lazy_members: bool,
}

/// `{}` matches everything; a missing field matches any value of it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct StateElement {
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct MergedFilters {
    is_dm: Option<bool>,
    is_encrypted: Option<bool>,
    is_invited: Option<bool>,
    #[serde(default)]
    room_types: Vec<RoomTypeFilter>,
    #[serde(default)]
    not_room_types: Vec<RoomTypeFilter>,
}

/// The merged `required_state` as `[type, key]` pairs with wildcards.
fn required_state_pairs(required: &MergedRequiredState) -> Vec<(StateEventType, String)> {
    let mut pairs: Vec<(StateEventType, String)> = required
        .include
        .iter()
        .map(|element| {
            let kind = element.kind.as_deref().unwrap_or("*");
            (StateEventType::from(kind), element.state_key.clone().unwrap_or_else(|| "*".to_owned()))
        })
        .collect();
    if required.lazy_members {
        pairs.push((StateEventType::RoomMember, "$LAZY".to_owned()));
    }
    pairs
}

fn translate(merged: MergedRequest) -> v5::Request {
    let mut request = v5::Request::new();
    request.pos = merged.pos;
    request.timeout = merged.timeout.map(Duration::from_millis);
    request.set_presence = merged.set_presence.unwrap_or_default();
    request.conn_id = merged.conn_id;
    request.txn_id = merged.txn_id;
    for (name, list) in merged.lists {
        let mut unstable = v5::request::List::default();
        // No range: the whole filtered list.
        unstable.ranges = vec![list.range.unwrap_or((UInt::MIN, UInt::MAX))];
        unstable.room_details.timeline_limit = list.room.timeline_limit;
        unstable.room_details.required_state = required_state_pairs(&list.room.required_state);
        if let Some(filters) = list.filters {
            let mut unstable_filters = v5::request::ListFilters::default();
            unstable_filters.is_dm = filters.is_dm;
            unstable_filters.is_encrypted = filters.is_encrypted;
            unstable_filters.is_invite = filters.is_invited;
            unstable_filters.room_types = filters.room_types;
            unstable_filters.not_room_types = filters.not_room_types;
            unstable.filters = Some(unstable_filters);
        }
        request.lists.insert(name, unstable);
    }
    for (room_id, config) in merged.room_subscriptions {
        let mut subscription = v5::request::RoomSubscription::default();
        subscription.timeline_limit = config.timeline_limit;
        subscription.required_state = required_state_pairs(&config.required_state);
        request.room_subscriptions.insert(room_id, subscription);
    }
    request.extensions = merged.extensions;
    request
}

pub async fn sliding_sync(State(sync): State<Sync>, State(rooms): State<Rooms>, request: Ruma<Request>) -> Result<RumaResponse<Response>> {
    let user = request.user().clone();
    let body = translate(request.body.body);
    let response = sync
        .sliding_sync(SlidingRequest { user: &user.user_id, device: &user.device_id, body: &body, spaces: Default::default() })
        .await?;
    let http = response.try_into_http_response::<Vec<u8>>().map_err(|e| MatrixError::internal(e.to_string()))?;
    let mut json: Value = serde_json::from_slice(http.body())?;
    // The merged form names invite and knock state `stripped_state`, and says each room's
    // membership.
    if let Some(rooms_json) = json.get_mut("rooms").and_then(Value::as_object_mut) {
        for (room_id, room) in rooms_json.iter_mut() {
            let Some(room) = room.as_object_mut() else { continue };
            if let Some(stripped) = room.remove("invite_state") {
                room.insert("stripped_state".into(), stripped);
            }
            let room_id = ruma::RoomId::parse(room_id.as_str())?;
            if let Some(membership) = rooms.membership_of(&room_id, &user.user_id).await? {
                room.insert("membership".into(), membership.into());
            }
        }
    }
    Ok(RumaResponse(Response { body: json }))
}
