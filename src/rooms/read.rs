//! Reading events back for clients: the client format with `unsigned`, visibility-checked
//! single events, and paginated history.

use ruma::{api::client::filter::RoomEventFilter, api::client::filter::UrlFilter, DeviceId, EventId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{pdu_from_row, visibility::VisibilityChecker, Pdu, Rooms};
use crate::{
    error::{MatrixError, Result},
    storage::{
        events::{self as event_repo, Boundary, Direction, EventRow},
        now_ms,
        rooms as room_repo,
        state::{self as state_repo, StateMap},
    },
};

/// Who is reading: used for `transaction_id` echo and visibility.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: Option<&'a DeviceId>,
}

/// The events around one event, for /context.
pub struct Context {
    pub before: Vec<Value>,
    pub event: Value,
    pub after: Vec<Value>,
    pub state: Vec<Value>,
    pub start: String,
    pub end: String,
}

/// A page of history.
pub struct Page {
    pub events: Vec<Value>,
    /// Token after the last returned event; None when the end was reached.
    pub end: Option<String>,
    /// The raw rows, for callers that need state (e.g. lazy-loaded members).
    pub senders: Vec<String>,
}

pub fn encode_token(row: &EventRow) -> String {
    format!("t{}_{}", row.depth, row.stream_ordering)
}

/// Parses a pagination token: `t<depth>_<stream>` (topological) or `s<stream>` (sync).
pub fn parse_token(token: &str) -> Result<Boundary> {
    let invalid = || MatrixError::invalid_param(format!("Invalid pagination token {token:?}"));
    if let Some(rest) = token.strip_prefix('t') {
        let (depth, stream) = rest.split_once('_').ok_or_else(invalid)?;
        Ok(Boundary::Topological { depth: depth.parse().map_err(|_| invalid())?, stream: stream.parse().map_err(|_| invalid())? })
    } else if let Some(rest) = token.strip_prefix('s') {
        let stream: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Ok(Boundary::Stream(stream.parse().map_err(|_| invalid())?))
    } else {
        Err(invalid())
    }
}

/// Matches an event type against a filter pattern with `*` wildcards.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == kind,
        Some((prefix, rest)) => {
            kind.starts_with(prefix) && {
                let remainder = &kind[prefix.len()..];
                if rest.is_empty() {
                    true
                } else {
                    (0..=remainder.len()).any(|i| remainder.is_char_boundary(i) && type_matches(rest, &remainder[i..]))
                }
            }
        }
    }
}

pub fn filter_allows(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind().to_string();
    let sender = &pdu.fields.sender;
    if filter.not_types.iter().any(|t| type_matches(t, &kind)) {
        return false;
    }
    if let Some(types) = &filter.types {
        if !types.iter().any(|t| type_matches(t, &kind)) {
            return false;
        }
    }
    if filter.not_senders.iter().any(|s| s == sender) {
        return false;
    }
    if let Some(senders) = &filter.senders {
        if !senders.iter().any(|s| s == sender) {
            return false;
        }
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = pdu.content_value().get("url").is_some();
        match url_filter {
            UrlFilter::EventsWithUrl if !has_url => return false,
            UrlFilter::EventsWithoutUrl if has_url => return false,
            _ => {}
        }
    }
    true
}

impl Rooms {
    /// The client format of a stored event, with `unsigned` (age, transaction_id for the
    /// sending device, redacted_because) and bundled relations (`m.relations`).
    pub async fn client_event(&self, row: &EventRow, pdu: &Pdu, viewer: Option<Viewer<'_>>) -> Result<Value> {
        let mut event = self.client_event_plain(row, pdu, viewer).await?;
        if row.redacted_by.is_none() {
            if let Some(bundle) = self.bundled_relations(pdu, viewer).await? {
                event["unsigned"]["m.relations"] = bundle;
            }
        }
        Ok(event)
    }

    /// `client_event` for a list (a page, a timeline): one query finds which events have
    /// relations at all, so the others skip the bundle lookup.
    pub async fn client_events(&self, items: &[(EventRow, Pdu)], viewer: Option<Viewer<'_>>) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(items.len());
        for (row, pdu) in items {
            events.push(self.client_event_plain(row, pdu, viewer).await?);
        }
        self.attach_bundles(items.iter().map(|(row, pdu)| (row, pdu)), &mut events, viewer).await?;
        Ok(events)
    }

    /// Adds `unsigned.m.relations` to events built by `client_event_plain` (same order as
    /// `items`), with one query for the whole list.
    pub async fn attach_bundles<'e>(
        &self,
        items: impl Iterator<Item = (&'e EventRow, &'e Pdu)> + Clone,
        events: &mut [Value],
        viewer: Option<Viewer<'_>>,
    ) -> Result<()> {
        let unredacted: Vec<&str> =
            items.clone().filter(|(row, _)| row.redacted_by.is_none()).map(|(_, pdu)| pdu.event_id.as_str()).collect();
        let related = event_repo::with_relations(self.db.pool(), &unredacted).await?;
        if related.is_empty() {
            return Ok(());
        }
        for ((row, pdu), event) in items.zip(events.iter_mut()) {
            if row.redacted_by.is_none() && related.contains(pdu.event_id.as_str()) {
                if let Some(bundle) = self.bundled_relations(pdu, viewer).await? {
                    event["unsigned"]["m.relations"] = bundle;
                }
            }
        }
        Ok(())
    }

    /// The client format without bundled relations.
    pub async fn client_event_plain(&self, row: &EventRow, pdu: &Pdu, viewer: Option<Viewer<'_>>) -> Result<Value> {
        let erased_copy = if self.is_erased(pdu.fields.sender.as_str()).await? { Some(self.redacted_copy(pdu).await?) } else { None };
        let pdu = erased_copy.as_ref().unwrap_or(pdu);
        let mut event = pdu.to_client_event();
        let mut unsigned = Map::new();
        let ts = u64::from(pdu.fields.origin_server_ts.0) as i64;
        unsigned.insert("age".into(), (now_ms() - ts).max(0).into());
        if let (Some(viewer), Some(device), Some(txn_id)) = (viewer, &row.txn_device_id, &row.txn_id) {
            if viewer.user_id == pdu.fields.sender && viewer.device_id.is_some_and(|d| d.as_str() == device) {
                unsigned.insert("transaction_id".into(), txn_id.as_str().into());
            }
        }
        if let Some(redacted_by) = &row.redacted_by {
            // Synapse gives the redaction's id too, and clients (and SyTest) read it.
            unsigned.insert("redacted_by".into(), redacted_by.as_str().into());
            if let Some(redaction_row) = event_repo::get(self.db.pool(), redacted_by).await? {
                let redaction = pdu_from_row(&redaction_row.event_id, &redaction_row.room_id, &redaction_row.json)?;
                unsigned.insert("redacted_because".into(), Value::Object(redaction.to_client_event()));
            }
        }
        event.insert("unsigned".into(), Value::Object(unsigned));
        Ok(Value::Object(event))
    }

    /// Whether the user deactivated their account with erasure (then their events are
    /// served redacted, as Synapse does, to everyone).
    pub async fn is_erased(&self, user: &str) -> Result<bool> {
        if let Some(erased) = self.caches.is_erased(user) {
            return Ok(erased);
        }
        self.caches.set_erased(crate::storage::accounts::erased_users(self.db.pool()).await?);
        Ok(self.caches.is_erased(user).unwrap_or(false))
    }

    /// Records an erasure: from now on the user's events are served redacted.
    pub async fn erase_user(&self, user: &UserId) -> Result<()> {
        crate::storage::accounts::mark_erased(self.db.pool(), user.as_str()).await?;
        self.is_erased(user.as_str()).await?;
        self.caches.set_erased([user.to_string()]);
        Ok(())
    }

    /// The event as its room version's redaction algorithm leaves it.
    async fn redacted_copy(&self, pdu: &Pdu) -> Result<Pdu> {
        let rules = super::rules_for(&self.room_version(&pdu.room_id).await?)?;
        let redacted = ruma::canonical_json::redact(pdu.json().clone(), &rules.redaction, None)
            .map_err(|e| MatrixError::internal(e.to_string()))?;
        let text = serde_json::to_string(&redacted)?;
        Pdu::from_text(pdu.event_id.clone(), pdu.room_id.clone(), &text).map_err(|e| MatrixError::internal(e.to_string()))
    }

    /// Whether the user is joined now, and may read the room's history at all
    /// (joined, or was in it, or it is world readable).
    pub async fn check_can_read(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        self.room_version(room_id).await?;
        let membership = room_repo::membership(self.db.pool(), room_id.as_str(), user.as_str()).await?;
        match membership.as_ref().map(|(m, _)| m.as_str()) {
            Some("join") => Ok(true),
            Some("leave") | Some("ban") => Ok(false),
            _ => {
                let world_readable = self
                    .current_state_content(room_id, "m.room.history_visibility", "")
                    .await?
                    .and_then(|c| c.get("history_visibility").and_then(Value::as_str).map(|v| v == "world_readable"))
                    .unwrap_or(false);
                if world_readable {
                    Ok(false)
                } else {
                    Err(MatrixError::forbidden("You are not allowed to view this room"))
                }
            }
        }
    }

    /// The state a user may read: current state while joined (or for world-readable rooms),
    /// the state at their leave otherwise.
    pub async fn readable_state(&self, room_id: &RoomId, user: &UserId, joined: bool) -> Result<StateMap> {
        if !joined {
            if let Some((_, event_id)) = room_repo::membership(self.db.pool(), room_id.as_str(), user.as_str()).await? {
                if let Some(row) = event_repo::get(self.db.pool(), &event_id).await? {
                    return Ok(state_repo::load_group(self.db.pool(), row.state_group).await?);
                }
            }
        }
        Ok(state_repo::current_state(self.db.pool(), room_id.as_str()).await?)
    }

    /// The room state at a pagination token: after the last event at or before it.
    pub async fn state_at_token(&self, room_id: &RoomId, token: &str) -> Result<Option<StateMap>> {
        let boundary = match parse_token(token)? {
            Boundary::Topological { depth, stream } => Boundary::Topological { depth, stream: stream.saturating_add(1) },
            stream => stream,
        };
        let rows = event_repo::page(self.db.pool(), room_id.as_str(), boundary, None, Direction::Backward, 1).await?;
        match rows.first() {
            Some(row) => Ok(Some(state_repo::load_group(self.db.pool(), row.state_group).await?)),
            None => Ok(None),
        }
    }

    /// Whether a user may see a room state snapshot: joined in it, or it is world readable.
    pub async fn may_see_state(&self, state: &StateMap, user: &UserId) -> Result<bool> {
        let content_field = |kind: &str, key: &str, field: &'static str| {
            let id = state.get(&(kind.to_owned(), key.to_owned())).cloned();
            let db = self.db.clone();
            async move {
                let Some(id) = id else { return Ok::<_, MatrixError>(None) };
                let Some(json) = event_repo::get_json(db.pool(), &id).await? else { return Ok(None) };
                let value: Value = serde_json::from_str(&json)?;
                Ok(value["content"][field].as_str().map(str::to_owned))
            }
        };
        if content_field("m.room.member", user.as_str(), "membership").await?.as_deref() == Some("join") {
            return Ok(true);
        }
        Ok(content_field("m.room.history_visibility", "", "history_visibility").await?.as_deref() == Some("world_readable"))
    }

    /// An `m.room.canonical_alias` may only name aliases that point to this room.
    pub async fn check_canonical_alias(&self, room_id: &RoomId, content: &Value) -> Result<()> {
        let mut aliases: Vec<&str> = Vec::new();
        if let Some(alias) = content.get("alias") {
            aliases.push(alias.as_str().ok_or_else(|| MatrixError::bad_json("alias must be a string"))?);
        }
        if let Some(alt) = content.get("alt_aliases") {
            let alt = alt.as_array().ok_or_else(|| MatrixError::bad_json("alt_aliases must be an array"))?;
            for alias in alt {
                aliases.push(alias.as_str().ok_or_else(|| MatrixError::bad_json("alt_aliases must be strings"))?);
            }
        }
        for alias in aliases {
            let parsed = ruma::RoomAliasId::parse(alias).map_err(|e| MatrixError::invalid_param(format!("Invalid alias {alias}: {e}")))?;
            if parsed.server_name() != self.server_name() {
                continue;
            }
            match crate::storage::aliases::resolve(self.db.pool(), alias).await? {
                Some((target, _)) if target == room_id.as_str() => {}
                _ => {
                    return Err(MatrixError::new(
                        http::StatusCode::BAD_REQUEST,
                        "M_BAD_ALIAS",
                        format!("Alias {alias} does not point to this room"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// One event, if the user may see it; `M_NOT_FOUND` otherwise (the spec does not reveal
    /// existence of events the user cannot see).
    pub async fn visible_event(&self, room_id: &RoomId, event_id: &EventId, user: &UserId) -> Result<(EventRow, Pdu)> {
        let joined = self.check_can_read(room_id, user).await?;
        let row = event_repo::get(self.db.pool(), event_id.as_str())
            .await?
            .filter(|row| row.room_id == room_id.as_str())
            .ok_or_else(|| MatrixError::not_found("Event not found"))?;
        let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
        let mut checker = VisibilityChecker::new(self, user, joined);
        if !checker.can_see(&row, &pdu).await? {
            return Err(MatrixError::not_found("Event not found"));
        }
        Ok((row, pdu))
    }

    /// An event with up to `limit` visible events around it (half before, half after) and
    /// the room state at the last of them (only the senders' members when lazy-loading).
    pub async fn context(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        viewer: Viewer<'_>,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<Context> {
        let (row, pdu) = self.visible_event(room_id, event_id, viewer.user_id).await?;
        let event = self.client_event(&row, &pdu, Some(viewer)).await?;
        let here = Boundary::Topological { depth: row.depth, stream: row.stream_ordering };
        let before_limit = limit / 2;
        let after_limit = limit - before_limit;
        let before = if before_limit > 0 {
            self.history(room_id, viewer, here, None, Direction::Backward, before_limit, filter).await?
        } else {
            Page { events: Vec::new(), end: Some(encode_token(&row)), senders: Vec::new() }
        };
        let after = if after_limit > 0 {
            self.history(room_id, viewer, here, None, Direction::Forward, after_limit, filter).await?
        } else {
            Page { events: Vec::new(), end: Some(encode_token(&row)), senders: Vec::new() }
        };
        // Tokens at the outermost events returned (or at the event itself).
        let token_of = |events: &[Value]| {
            let id = events.last().and_then(|e| e["event_id"].as_str()).map(str::to_owned);
            let db = self.db.clone();
            let fallback = encode_token(&row);
            async move {
                match id {
                    Some(id) => Ok::<_, MatrixError>(event_repo::get(db.pool(), &id).await?.map(|r| encode_token(&r)).unwrap_or(fallback)),
                    None => Ok(fallback),
                }
            }
        };
        let start = token_of(&before.events).await?;
        let end = token_of(&after.events).await?;

        // State at the last event returned.
        let last_id = after.events.last().and_then(|e| e["event_id"].as_str()).unwrap_or(row.event_id.as_str()).to_owned();
        let last_group = event_repo::get(self.db.pool(), &last_id).await?.map(|r| r.state_group).unwrap_or(row.state_group);
        let full_state = state_repo::load_group(self.db.pool(), last_group).await?;
        let lazy = !filter.lazy_load_options.is_disabled();
        let mut wanted_members: std::collections::HashSet<String> = before.senders.iter().chain(after.senders.iter()).cloned().collect();
        wanted_members.insert(pdu.fields.sender.to_string());
        let mut state = Vec::new();
        for ((kind, key), id) in full_state {
            if lazy && kind == "m.room.member" && !wanted_members.contains(&key) {
                continue;
            }
            if let Some(state_row) = event_repo::get(self.db.pool(), &id).await? {
                let state_pdu = pdu_from_row(&state_row.event_id, &state_row.room_id, &state_row.json)?;
                state.push(self.client_event_plain(&state_row, &state_pdu, Some(viewer)).await?);
            }
        }
        Ok(Context { before: before.events, event, after: after.events, state, start, end })
    }

    /// The event closest to a timestamp that the user may see.
    pub async fn event_near_ts(&self, room_id: &RoomId, user: &UserId, ts: i64, dir: Direction) -> Result<(String, i64)> {
        let joined = self.check_can_read(room_id, user).await?;
        let mut checker = VisibilityChecker::new(self, user, joined);
        let mut cursor = ts;
        // Walk past events the user cannot see, a bounded number of steps.
        for _ in 0..100 {
            let Some((event_id, event_ts)) = event_repo::closest_to_ts(self.db.pool(), room_id.as_str(), cursor, dir).await? else {
                break;
            };
            let row = event_repo::get(self.db.pool(), &event_id).await?.ok_or_else(|| MatrixError::internal("event vanished"))?;
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            if checker.can_see(&row, &pdu).await? {
                return Ok((event_id, event_ts));
            }
            cursor = match dir {
                Direction::Forward => event_ts + 1,
                Direction::Backward => event_ts - 1,
            };
        }
        Err(MatrixError::not_found("No event found near that timestamp"))
    }

    /// A page of the room's history for a user, filtered and visibility-checked.
    #[allow(clippy::too_many_arguments)]
    pub async fn history(
        &self,
        room_id: &RoomId,
        viewer: Viewer<'_>,
        from: Boundary,
        to: Option<Boundary>,
        dir: Direction,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<Page> {
        let joined = self.check_can_read(room_id, viewer.user_id).await?;
        let mut checker = VisibilityChecker::new(self, viewer.user_id, joined);
        let mut picked = Vec::new();
        let mut cursor = from;
        let mut exhausted = false;
        // Most pages are fully visible: fetch about one page, and more only if some were hidden.
        let batch = limit.clamp(20, 500) as i64;
        while picked.len() < limit {
            let rows = event_repo::page(self.db.pool(), room_id.as_str(), cursor, to, dir, batch).await?;
            if (rows.len() as i64) < batch {
                exhausted = true;
            }
            for row in rows {
                cursor = Boundary::Topological { depth: row.depth, stream: row.stream_ordering };
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                if filter_allows(filter, &pdu) && checker.can_see(&row, &pdu).await? {
                    picked.push((row, pdu));
                    if picked.len() >= limit {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let senders = picked.iter().map(|(_, pdu)| pdu.fields.sender.to_string()).collect();
        let events = self.client_events(&picked, Some(viewer)).await?;
        let end = if exhausted && events.len() < limit {
            None
        } else {
            match cursor {
                Boundary::Topological { depth, stream } => Some(format!("t{depth}_{stream}")),
                Boundary::Stream(s) => Some(format!("s{s}")),
            }
        };
        Ok(Page { events, end, senders })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_types() {
        assert!(type_matches("m.*", "m.room.message"));
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room.name", "m.room.message"));
        assert!(type_matches("*.message", "m.room.message"));
        assert!(!type_matches("org.*", "m.room.message"));
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(parse_token("t5_17").unwrap(), Boundary::Topological { depth: 5, stream: 17 });
        assert_eq!(parse_token("s42").unwrap(), Boundary::Stream(42));
        assert_eq!(parse_token("garbage").unwrap_err().errcode, "M_INVALID_PARAM");
        assert_eq!(parse_token("t5").unwrap_err().errcode, "M_INVALID_PARAM");
    }
}
