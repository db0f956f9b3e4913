//! `GET /rooms/{roomId}/hierarchy`: the rooms of a space, depth first, with rooms this
//! server is not in summarised by the servers in their `via` lists.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use ruma::{
    api::{client::space::get_hierarchy, federation::space::get_hierarchy as federation_hierarchy},
    OwnedRoomId, OwnedServerName, RoomId, UInt, UserId,
};
use serde_json::Value;

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    federation::Federation,
    rooms::{
        directory::typed_summary,
        hierarchy::{children_from_events, SpaceChild},
        Rooms,
    },
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// Rooms looked at per request, so one huge or cyclic space cannot pin the server.
const MAX_ROOMS_VISITED: usize = 1000;

/// Where a page starts, and the options it was asked with (which pages may not change).
struct PageToken {
    skip: usize,
    max_depth: Option<u64>,
    suggested_only: bool,
}

impl PageToken {
    fn encode(&self) -> String {
        let depth = self.max_depth.map(|d| d.to_string()).unwrap_or_default();
        format!("{}_{}_{}", self.skip, depth, u8::from(self.suggested_only))
    }

    fn decode(token: &str) -> Option<Self> {
        let mut parts = token.split('_');
        let skip = parts.next()?.parse().ok()?;
        let max_depth = match parts.next()? {
            "" => None,
            depth => Some(depth.parse().ok()?),
        };
        let suggested_only = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        parts.next().is_none().then_some(Self { skip, max_depth, suggested_only })
    }
}

/// A room reached in the walk and what is known about it.
struct Node {
    summary: Value,
    children: Vec<SpaceChild>,
}

/// Per-request memory of what other servers said, so each remote space is asked once.
#[derive(Default)]
struct RemoteCache {
    /// Summaries of children that came with their parent's answer (without their own links).
    child_summaries: HashMap<OwnedRoomId, Value>,
    /// Rooms another server said the requesting server cannot see.
    inaccessible: HashSet<OwnedRoomId>,
}

struct Walk<'a> {
    rooms: &'a Rooms,
    federation: &'a Federation,
    user: &'a UserId,
    suggested_only: bool,
    cache: RemoteCache,
}

impl Walk<'_> {
    /// The room's summary and links when the user may see them; None otherwise.
    async fn visit(&mut self, room_id: &RoomId, via: &[OwnedServerName]) -> Result<Option<Node>> {
        if self.rooms.participating(room_id).await? {
            if !self.rooms.summary_visible_to_user(room_id, self.user).await? {
                return Ok(None);
            }
            let children = self.rooms.space_children(room_id, self.suggested_only).await?;
            let mut summary = self.rooms.room_summary(room_id).await?;
            summary["children_state"] = children.iter().map(|c| c.event.clone()).collect::<Vec<_>>().into();
            return Ok(Some(Node { summary, children }));
        }
        if self.cache.inaccessible.contains(room_id) {
            return Ok(None);
        }
        // A room that is not a space needs no walk below it: its parent's answer suffices.
        if let Some(summary) = self.cache.child_summaries.get(room_id) {
            if summary["room_type"] != "m.space" {
                let mut summary = summary.clone();
                summary["children_state"] = Value::Array(Vec::new());
                return Ok(self.user_may_see_remote(room_id, &summary).await?.then_some(Node { summary, children: Vec::new() }));
            }
        }
        let Some(answer) = self.ask_remote(room_id, via).await else { return Ok(None) };
        let summary = serde_json::to_value(&answer.room)?;
        for child in &answer.children {
            self.cache.child_summaries.insert(child.room_id.clone(), serde_json::to_value(child)?);
        }
        self.cache.inaccessible.extend(answer.inaccessible_children);
        if !self.user_may_see_remote(room_id, &summary).await? {
            return Ok(None);
        }
        let events = summary["children_state"].as_array().cloned().unwrap_or_default();
        let children = children_from_events(events, self.suggested_only);
        Ok(Some(Node { summary, children }))
    }

    /// Asks the `via` servers in turn; the first answer wins.
    async fn ask_remote(&self, room_id: &RoomId, via: &[OwnedServerName]) -> Option<federation_hierarchy::v1::Response> {
        for server in via.iter().filter(|s| !self.federation.is_local(s)) {
            let mut request = federation_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = self.suggested_only;
            match self.federation.send(server, request).await {
                Ok(answer) if answer.room.summary.room_id == room_id => return Some(answer),
                Ok(_) => tracing::debug!(%server, %room_id, "hierarchy answer for another room"),
                Err(error) => tracing::debug!(%server, %room_id, %error, "hierarchy request failed"),
            }
        }
        None
    }

    /// The remote server filtered for our server; this filters for the user, as Synapse does.
    async fn user_may_see_remote(&self, room_id: &RoomId, summary: &Value) -> Result<bool> {
        let join_rule = summary["join_rule"].as_str().unwrap_or("public");
        if matches!(join_rule, "public" | "knock" | "knock_restricted") || summary["world_readable"] == true {
            return Ok(true);
        }
        if matches!(self.rooms.membership_of(room_id, self.user).await?.as_deref(), Some("join" | "invite")) {
            return Ok(true);
        }
        let allowed = summary["allowed_room_ids"].as_array().into_iter().flatten().filter_map(Value::as_str);
        for allowed_room in allowed {
            let Ok(allowed_room) = RoomId::parse(allowed_room) else { continue };
            if self.rooms.membership_of(&allowed_room, self.user).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub async fn hierarchy(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<RumaResponse<get_hierarchy::v1::Response>> {
    let user = &request.user().user_id;
    let b = &request.body;
    if b.limit == Some(UInt::MIN) {
        return Err(MatrixError::invalid_param("limit must be greater than zero"));
    }
    let limit = b.limit.map(|l| u64::from(l) as usize).unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let max_depth = b.max_depth.map(u64::from);
    let skip = match b.from.as_deref() {
        None => 0,
        Some(token) => {
            let token = PageToken::decode(token).ok_or_else(|| MatrixError::invalid_param("Unknown pagination token"))?;
            if token.max_depth != max_depth || token.suggested_only != b.suggested_only {
                return Err(MatrixError::invalid_param("max_depth and suggested_only cannot change during pagination"));
            }
            token.skip
        }
    };

    let mut walk = Walk { rooms: &rooms, federation: &federation, user, suggested_only: b.suggested_only, cache: RemoteCache::default() };
    // The root's via: its server (room ids before v12 name one) and whoever invited the user.
    let mut root_via: Vec<OwnedServerName> = b.room_id.server_name().map(|s| vec![s.to_owned()]).unwrap_or_default();
    if let Some(invite) = crate::storage::rooms::membership(rooms.db().pool(), b.room_id.as_str(), user.as_str()).await? {
        if let Some(pdu) = rooms.pdu(&ruma::EventId::parse(invite.1)?).await? {
            root_via.push(pdu.fields.sender.server_name().to_owned());
        }
    }
    let mut stack: Vec<(OwnedRoomId, Vec<OwnedServerName>, u64)> = vec![(b.room_id.clone(), root_via, 0)];
    let mut seen = HashSet::new();
    let mut visible = 0usize;
    let mut page = Vec::new();
    let mut more = false;
    while let Some((room_id, via, depth)) = stack.pop() {
        if !seen.insert(room_id.clone()) {
            continue;
        }
        if seen.len() > MAX_ROOMS_VISITED {
            break;
        }
        let Some(node) = walk.visit(&room_id, &via).await? else {
            if depth == 0 {
                return Err(MatrixError::forbidden("You cannot see this room, or it is unknown"));
            }
            continue;
        };
        visible += 1;
        if visible > skip {
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(typed_summary(node.summary)?);
        }
        if max_depth.is_none_or(|max| depth < max) {
            for child in node.children.into_iter().rev() {
                stack.push((child.room_id, child.via, depth + 1));
            }
        }
    }
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = page;
    response.next_batch = more.then(|| PageToken { skip: skip + limit, max_depth, suggested_only: b.suggested_only }.encode());
    Ok(RumaResponse(response))
}
