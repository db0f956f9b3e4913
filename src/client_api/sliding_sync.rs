//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding sync.

use std::collections::HashMap;

use axum::extract::State;
use ruma::{api::client::sync::sync_events::v5, OwnedRoomId};
use serde_json::Value;

use super::extract::{RumaResponse, WithRawBody};
use crate::{
    error::Result,
    sync::{sliding::SlidingRequest, Sync},
};

pub async fn sliding_sync(
    State(sync): State<Sync>,
    WithRawBody(request, raw_body): WithRawBody<v5::Request>,
) -> Result<RumaResponse<v5::Response>> {
    let user = request.user().clone();
    let response = sync
        .sliding_sync(SlidingRequest {
            user: &user.user_id,
            device: &user.device_id,
            body: &request.body,
            spaces: list_spaces(&raw_body),
        })
        .await?;
    Ok(RumaResponse(response))
}

/// `lists.<name>.filters.spaces` of the request body, which ruma's `ListFilters` lacks.
fn list_spaces(raw_body: &[u8]) -> HashMap<String, Vec<OwnedRoomId>> {
    let Ok(body) = serde_json::from_slice::<Value>(raw_body) else { return HashMap::new() };
    let mut spaces = HashMap::new();
    for (name, list) in body["lists"].as_object().into_iter().flatten() {
        let ids: Vec<OwnedRoomId> = list["filters"]["spaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().and_then(|id| OwnedRoomId::try_from(id).ok()))
            .collect();
        if !ids.is_empty() {
            spaces.insert(name.clone(), ids);
        }
    }
    spaces
}
