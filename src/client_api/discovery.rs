//! /versions, /.well-known/matrix/client, /capabilities.

use std::sync::Arc;

use axum::{extract::State, Json};
use serde_json::{json, Value};
use ruma::api::client::discovery::{
    discover_homeserver, get_capabilities,
    get_capabilities::v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    get_supported_versions,
};

use super::extract::{Ruma, RumaResponse};
use crate::{
    config::Config,
    error::{MatrixError, Result},
    rooms::supported_room_versions,
};

/// Spec versions whose client features weft implements: contiguous (versions are cumulative
/// and clients test for exact strings). docs/versions.md lists, per version, what is there.
pub const SPEC_VERSIONS: &[&str] =
    &["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"];

/// Unstable features weft implements (or, `false`, says it does not do), each named by its
/// MSC flag as clients check for it. docs/versions.md says what stands behind each.
pub const UNSTABLE_FEATURES: &[(&str, bool)] = &[
    // Simplified sliding sync (MSC4186): Element X and matrix-rust-sdk need it.
    ("org.matrix.simplified_msc3575", true),
    ("org.matrix.e2e_cross_signing", true),
    // /rooms/{roomId}/aliases.
    ("org.matrix.msc2432", true),
    // Private read receipts, room types in the directory, threads, threaded receipts and
    // notifications, recursive relations.
    ("org.matrix.msc2285.stable", true),
    ("org.matrix.msc3827.stable", true),
    ("org.matrix.msc3440.stable", true),
    ("org.matrix.msc3771", true),
    ("org.matrix.msc3773", true),
    ("org.matrix.msc3981", true),
    // Authenticated media (also part of v1.11), for clients that check the flag.
    ("org.matrix.msc3916.stable", true),
    // weft never forces encryption on new rooms.
    ("io.element.e2ee_forced.public", false),
    ("io.element.e2ee_forced.private", false),
    ("io.element.e2ee_forced.trusted_private", false),
];

pub async fn versions(_: Ruma<get_supported_versions::Request>) -> Result<RumaResponse<get_supported_versions::Response>> {
    let mut response = get_supported_versions::Response::new(SPEC_VERSIONS.iter().map(|v| v.to_string()).collect());
    response.unstable_features = UNSTABLE_FEATURES.iter().map(|(name, on)| (name.to_string(), *on)).collect();
    Ok(RumaResponse(response))
}

pub async fn well_known(
    State(config): State<Arc<Config>>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<RumaResponse<discover_homeserver::Response>> {
    let base_url = config.public_base_url();
    Ok(RumaResponse(discover_homeserver::Response::new(discover_homeserver::HomeserverInfo::new(base_url))))
}

/// Who to contact about this server (spec: server support discovery); 404 when nothing is
/// configured. Contacts without a usable address are left out.
pub async fn support(
    State(config): State<Arc<Config>>,
    _: Ruma<ruma::api::client::discovery::discover_support::Request>,
) -> Result<RumaResponse<ruma::api::client::discovery::discover_support::Response>> {
    use ruma::api::client::discovery::discover_support::{Contact, ContactRole, Response};
    let contacts: Vec<Contact> = config
        .support
        .contacts
        .iter()
        .filter_map(|c| {
            let role = ContactRole::from(c.role.as_str());
            let matrix_id = ruma::UserId::parse(c.matrix_id.as_str()).ok();
            let mut contact = match (matrix_id, c.email_address.is_empty()) {
                (Some(id), _) => Contact::with_matrix_id(role, id),
                (None, false) => Contact::with_email_address(role, c.email_address.clone()),
                (None, true) => return None,
            };
            if !c.email_address.is_empty() {
                contact.email_address = Some(c.email_address.clone());
            }
            Some(contact)
        })
        .collect();
    let page = Some(config.support.page.clone()).filter(|p| !p.is_empty());
    if contacts.is_empty() && page.is_none() {
        return Err(MatrixError::not_found("No support information is configured"));
    }
    let mut response = Response::with_contacts(contacts);
    response.support_page = page;
    Ok(RumaResponse(response))
}

pub async fn capabilities(
    State(config): State<Arc<Config>>,
    request: Ruma<get_capabilities::v3::Request>,
) -> Result<Json<Value>> {
    let available = supported_room_versions().into_iter().map(|v| (v, RoomVersionStability::Stable)).collect();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(config.default_room_version.clone(), available);
    // No third-party identifiers can be added or removed (clients assume they can when the
    // capability is absent).
    capabilities.set("m.3pid_changes", json!({ "enabled": false }))?;
    // ruma leaves out capabilities at their default; Synapse (and SyTest) state
    // m.change_password explicitly, and clients show the option from it.
    let mut body = serde_json::to_value(&capabilities)?;
    body["m.change_password"] = json!({ "enabled": true });
    // Server admins may lock and suspend other accounts (/admin/lock, /admin/suspend).
    let admin = request.requester.as_ref().is_some_and(|r| r.is_admin);
    body["m.account_moderation"] = json!({ "lock": admin, "suspend": admin });
    Ok(Json(json!({ "capabilities": body })))
}
