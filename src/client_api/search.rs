//! `POST /search`: full-text search of the rooms the user is in (`room_events`).

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    api::client::search::search_events::v3::{
        self as search_events, EventContextResult, GroupingKey, OrderBy, ResultCategories, ResultGroup, ResultGroupMap,
        ResultRoomEvents, SearchKeys, SearchResult, UserProfile,
    },
    serde::Raw,
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt,
};
use serde_json::Value;

use super::extract::{RumaResponse, WithRawBody};
use crate::{
    error::{MatrixError, Result},
    rooms::{
        read::Viewer,
        search::{SearchKey, SearchOrder, SearchPage, SearchRequest},
        Rooms,
    },
};

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value)?))
}

pub async fn search(
    State(rooms): State<Rooms>,
    WithRawBody(request, body): WithRawBody<search_events::Request>,
) -> Result<RumaResponse<search_events::Response>> {
    let requester = request.user();
    let viewer = Viewer { user_id: &requester.user_id, device_id: Some(&requester.device_id) };
    let Some(criteria) = &request.body.search_categories.room_events else {
        return Ok(RumaResponse(search_events::Response::new(ResultCategories::new())));
    };
    let keys = match &criteria.keys {
        None => Vec::new(),
        Some(keys) => keys
            .iter()
            .map(|key| match key {
                SearchKeys::ContentBody => Ok(SearchKey::Body),
                SearchKeys::ContentName => Ok(SearchKey::Name),
                SearchKeys::ContentTopic => Ok(SearchKey::Topic),
                other => Err(MatrixError::invalid_param(format!("Unknown search key {}", other.as_str()))),
            })
            .collect::<Result<_>>()?,
    };
    let order = match &criteria.order_by {
        None | Some(OrderBy::Rank) => SearchOrder::Rank,
        Some(OrderBy::Recent) => SearchOrder::Recent,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown order_by {}", other.as_str()))),
    };
    // ruma fills in a default `event_context`; the spec returns context only when asked.
    let asked_for_context = serde_json::from_slice::<Value>(&body)
        .ok()
        .is_some_and(|b| b["search_categories"]["room_events"].get("event_context").is_some());
    let context = asked_for_context.then(|| {
        let limit = |n: UInt| usize::try_from(u64::from(n)).unwrap_or(usize::MAX).min(100);
        let ctx = &criteria.event_context;
        (limit(ctx.before_limit), limit(ctx.after_limit), ctx.include_profile)
    });
    let page = rooms
        .search_events(
            viewer,
            SearchRequest {
                term: &criteria.search_term,
                keys,
                filter: &criteria.filter,
                order,
                context,
                include_state: criteria.include_state.unwrap_or(false),
                next_batch: request.body.next_batch.as_deref(),
            },
        )
        .await?;
    let groupings: Vec<GroupingKey> = criteria.groupings.group_by.iter().filter_map(|g| g.key.clone()).collect();
    let mut categories = ResultCategories::new();
    categories.room_events = room_events(page, &groupings)?;
    Ok(RumaResponse(search_events::Response::new(categories)))
}

fn room_events(page: SearchPage, groupings: &[GroupingKey]) -> Result<ResultRoomEvents> {
    let mut out = ResultRoomEvents::new();
    out.count = UInt::new(page.count.max(0) as u64);
    out.highlights = page.highlights;
    out.next_batch = page.next_batch;
    for (room_id, events) in page.state {
        let events = events.iter().map(raw).collect::<Result<Vec<_>>>()?;
        out.state.insert(OwnedRoomId::try_from(room_id)?, events);
    }
    let mut by_room: BTreeMap<OwnedRoomId, ResultGroup> = BTreeMap::new();
    let mut by_sender: BTreeMap<OwnedUserId, ResultGroup> = BTreeMap::new();
    for (position, hit) in page.hits.into_iter().enumerate() {
        let event_id = OwnedEventId::try_from(hit.event_id)?;
        // Groups are ordered by their best result.
        let order = UInt::new(position as u64);
        let room_group = by_room.entry(OwnedRoomId::try_from(hit.room_id)?).or_insert_with(|| {
            let mut group = ResultGroup::new();
            group.order = order;
            group
        });
        room_group.results.push(event_id.clone());
        let sender_group = by_sender.entry(OwnedUserId::try_from(hit.sender)?).or_insert_with(|| {
            let mut group = ResultGroup::new();
            group.order = order;
            group
        });
        sender_group.results.push(event_id);

        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        result.result = Some(raw(&hit.event)?);
        if let Some(context) = hit.context {
            let mut ctx = EventContextResult::new();
            ctx.events_before = context.before.iter().map(raw).collect::<Result<_>>()?;
            ctx.events_after = context.after.iter().map(raw).collect::<Result<_>>()?;
            ctx.start = Some(context.start);
            ctx.end = Some(context.end);
            for (user, (displayname, avatar_url)) in context.profiles {
                let mut profile = UserProfile::new();
                profile.displayname = displayname;
                profile.avatar_url = avatar_url.map(Into::into);
                ctx.profile_info.insert(OwnedUserId::try_from(user)?, profile);
            }
            result.context = ctx;
        }
        out.results.push(result);
    }
    for key in groupings {
        match key {
            GroupingKey::RoomId => {
                out.groups.insert(ResultGroupMap::RoomId(std::mem::take(&mut by_room)));
            }
            GroupingKey::Sender => {
                out.groups.insert(ResultGroupMap::Sender(std::mem::take(&mut by_sender)));
            }
            _ => {}
        }
    }
    Ok(out)
}
