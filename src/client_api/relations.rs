//! Redaction, /context, timestamp_to_event, /relations and /threads.

use axum::extract::State;
use ruma::{
    api::{
        client::{
            context::get_context,
            redact::redact_event,
            relations::{get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type},
            room::get_event_by_timestamp,
            threads::{get_threads, get_threads::v1::IncludeThreads},
        },
        Direction as RumaDirection,
    },
    serde::Raw,
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, UInt,
};
use serde_json::{value::to_raw_value, Value};

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    rooms::{
        read::{parse_token, Viewer},
        relations::RelationsPage,
        Rooms,
    },
    storage::events::{Boundary, Direction},
};

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(to_raw_value(value).map_err(|e| MatrixError::internal(e.to_string()))?))
}

pub async fn redact(
    State(rooms): State<Rooms>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<RumaResponse<redact_event::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    // A suspended account may redact its own events only (spec: "Account suspension").
    if user.is_suspended {
        let (_, target) = rooms.visible_event(&body.room_id, &body.event_id, &user.user_id).await?;
        if target.fields.sender != user.user_id {
            return Err(MatrixError::user_suspended("You cannot redact others' events while suspended."));
        }
    }
    let event_id = rooms
        .redact(
            &body.room_id,
            &user.user_id,
            &body.event_id,
            body.reason.as_deref(),
            (user.device_id.as_str(), body.txn_id.as_str()),
        )
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

pub async fn context(
    State(rooms): State<Rooms>,
    request: Ruma<get_context::v3::Request>,
) -> Result<RumaResponse<get_context::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let limit = (u64::from(body.limit) as usize).min(100);
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let context = rooms.context(&body.room_id, &body.event_id, viewer, limit, &body.filter).await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(context.start);
    response.end = Some(context.end);
    response.event = Some(raw(&context.event)?);
    response.events_before = context.before.iter().map(raw).collect::<Result<_>>()?;
    response.events_after = context.after.iter().map(raw).collect::<Result<_>>()?;
    response.state = context.state.iter().map(raw).collect::<Result<_>>()?;
    Ok(RumaResponse(response))
}

pub async fn timestamp_to_event(
    State(rooms): State<Rooms>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let dir = match body.dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    };
    let ts = i64::try_from(u64::from(body.ts.0)).unwrap_or(i64::MAX);
    let (event_id, event_ts) = rooms.event_near_ts(&body.room_id, &user.user_id, ts, dir).await?;
    let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(event_ts.max(0) as u64).unwrap_or_default());
    Ok(RumaResponse(get_event_by_timestamp::v1::Response::new(EventId::parse(event_id)?, ts)))
}

/// Relation tokens are stream orderings; /messages and sync tokens are accepted too.
fn relation_token(token: Option<&str>) -> Result<Option<i64>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(None) };
    if let Ok(position) = token.parse::<i64>() {
        return Ok(Some(position));
    }
    Ok(Some(match parse_token(token)? {
        Boundary::Topological { stream, .. } => stream,
        Boundary::Stream(stream) => stream,
    }))
}

struct RelationsQuery<'a> {
    room_id: &'a RoomId,
    event_id: &'a OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: RumaDirection,
    limit: Option<UInt>,
    recurse: bool,
}

async fn relations_page(rooms: &Rooms, viewer: Viewer<'_>, q: RelationsQuery<'_>) -> Result<RelationsPage> {
    let limit = q.limit.map(|l| u64::from(l) as usize).unwrap_or(50).clamp(1, 1000);
    rooms
        .relations(
            q.room_id,
            q.event_id,
            viewer,
            q.rel_type.as_deref(),
            q.event_type.as_deref(),
            relation_token(q.from)?,
            relation_token(q.to)?,
            q.dir == RumaDirection::Forward,
            limit,
            q.recurse,
        )
        .await
}

macro_rules! relations_response {
    ($module:ident, $page:expr) => {{
        let page = $page;
        let mut response = $module::v1::Response::new(page.events.iter().map(raw).collect::<Result<_>>()?);
        response.next_batch = page.next_batch;
        response.recursion_depth = page.recursion_depth.and_then(|d| UInt::try_from(d).ok());
        Ok(RumaResponse(response))
    }};
}

pub async fn relations(
    State(rooms): State<Rooms>,
    request: Ruma<get_relating_events::v1::Request>,
) -> Result<RumaResponse<get_relating_events::v1::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: None,
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir.clone(),
        limit: b.limit,
        recurse: b.recurse,
    };
    relations_response!(get_relating_events, relations_page(&rooms, viewer, query).await?)
}

pub async fn relations_with_type(
    State(rooms): State<Rooms>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type::v1::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir.clone(),
        limit: b.limit,
        recurse: b.recurse,
    };
    relations_response!(get_relating_events_with_rel_type, relations_page(&rooms, viewer, query).await?)
}

pub async fn relations_with_type_and_event_type(
    State(rooms): State<Rooms>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: Some(b.event_type.to_string()),
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir.clone(),
        limit: b.limit,
        recurse: b.recurse,
    };
    relations_response!(get_relating_events_with_rel_type_and_event_type, relations_page(&rooms, viewer, query).await?)
}

pub async fn threads(
    State(rooms): State<Rooms>,
    request: Ruma<get_threads::v1::Request>,
) -> Result<RumaResponse<get_threads::v1::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let limit = b.limit.map(|l| u64::from(l) as usize).unwrap_or(50).clamp(1, 500);
    let participated = match &b.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        other => return Err(MatrixError::invalid_param(format!("Unknown include value {other:?}"))),
    };
    let from = relation_token(b.from.as_deref())?;
    let (events, next_batch) = rooms.threads(&b.room_id, viewer, participated, from, limit).await?;
    let mut response = get_threads::v1::Response::new(events.iter().map(raw).collect::<Result<_>>()?);
    response.next_batch = next_batch;
    Ok(RumaResponse(response))
}
