//! /versions, /.well-known/matrix/client, /capabilities.

use std::{collections::BTreeMap, sync::Arc};

use axum::extract::State;
use ruma::api::client::discovery::{
    discover_homeserver, get_capabilities,
    get_capabilities::v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    get_supported_versions,
};

use super::extract::{Ruma, RumaResponse};
use crate::{config::Config, error::Result, rooms::supported_room_versions};

/// Spec versions whose client features weft implements.
pub const SPEC_VERSIONS: &[&str] = &["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6"];

pub async fn versions(_: Ruma<get_supported_versions::Request>) -> Result<RumaResponse<get_supported_versions::Response>> {
    let mut response = get_supported_versions::Response::new(SPEC_VERSIONS.iter().map(|v| v.to_string()).collect());
    response.unstable_features = BTreeMap::new();
    Ok(RumaResponse(response))
}

pub async fn well_known(
    State(config): State<Arc<Config>>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<RumaResponse<discover_homeserver::Response>> {
    let base_url = config.public_base_url();
    Ok(RumaResponse(discover_homeserver::Response::new(discover_homeserver::HomeserverInfo::new(base_url))))
}

pub async fn capabilities(
    State(config): State<Arc<Config>>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<RumaResponse<get_capabilities::v3::Response>> {
    let available = supported_room_versions().into_iter().map(|v| (v, RoomVersionStability::Stable)).collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(config.default_room_version.clone(), available);
    Ok(RumaResponse(get_capabilities::v3::Response::new(capabilities)))
}
