//! `POST /rooms/{roomId}/upgrade`: the room's replacement, made by `Rooms::upgrade_room`.

use axum::extract::State;
use ruma::api::client::room::upgrade_room;

use super::{
    extract::{Ruma, RumaResponse},
    rate_limit::RateLimiter,
};
use crate::{error::Result, rooms::Rooms};

pub async fn upgrade(
    State(rooms): State<Rooms>,
    State(limiter): State<RateLimiter>,
    request: Ruma<upgrade_room::v3::Request>,
) -> Result<RumaResponse<upgrade_room::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    // An upgrade creates a room: it takes from createRoom's limit (Synapse's room-creation limiter).
    limiter.check("create_room", user.as_str())?;
    let new_room = rooms.upgrade_room(&user, &body.room_id, &body.new_version, &body.additional_creators).await?;
    tracing::info!(old_room = %body.room_id, %new_room, upgrader = %user, "room upgraded");
    Ok(RumaResponse(upgrade_room::v3::Response::new(new_room)))
}
