//! Relations: redactions sent by clients, /relations, /threads and the aggregations bundled
//! into events (thread summaries, latest edits, references).

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{json, Map, Value};

use super::{
    pdu_from_row,
    read::Viewer,
    visibility::{PowerLevels, VisibilityChecker},
    EventTemplate, Pdu, Rooms,
};
use crate::{
    error::{MatrixError, Result},
    storage::{events as event_repo, events::EventRow},
};

/// Relation types whose children are summarised in `unsigned.m.relations`.
const THREAD: &str = "m.thread";
const REPLACE: &str = "m.replace";
const REFERENCE: &str = "m.reference";

pub struct RelationsPage {
    pub events: Vec<Value>,
    pub next_batch: Option<String>,
    pub recursion_depth: Option<u64>,
}

impl Rooms {
    /// The room's current power levels.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels> {
        let power = self.current_state_content(room_id, "m.room.power_levels", "").await?;
        let create = self.current_state_event(room_id, "m.room.create", "").await?;
        Ok(PowerLevels::from_content(power.as_ref(), create.as_ref()))
    }

    /// Redacts an event on a user's behalf: they sent it, or hold the `redact` level.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        user: &UserId,
        target: &EventId,
        reason: Option<&str>,
        txn: (&str, &str),
    ) -> Result<OwnedEventId> {
        self.require_joined(room_id, user).await?;
        let original = event_repo::get(self.db.pool(), target.as_str()).await?;
        if original.as_ref().is_some_and(|row| row.room_id != room_id.as_str()) {
            // As Synapse: an event of another room is not this room's to redact.
            return Err(MatrixError::invalid_param("Cannot redact an event of a different room"));
        }
        let own = match &original {
            Some(row) => pdu_from_row(&row.event_id, &row.room_id, &row.json)?.fields.sender == user,
            None => false,
        };
        if !own {
            let power = self.power_levels(room_id).await?;
            if power.user_level(user) < power.redact {
                return Err(MatrixError::forbidden("You may only redact your own events"));
            }
        }
        let mut content = Map::new();
        content.insert("redacts".into(), target.as_str().into());
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        let template = EventTemplate::message("m.room.redaction".into(), Value::Object(content));
        let (device, txn_id) = txn;
        let txn_key = format!("redact/{txn_id}");
        self.send(room_id, user, template, Some((device, &txn_key))).await
    }

    /// Events relating to `target` that the user may see, newest first (or oldest first with
    /// `forward`). Tokens are stream orderings.
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        room_id: &RoomId,
        target: &EventId,
        viewer: Viewer<'_>,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        forward: bool,
        limit: usize,
        recurse: bool,
    ) -> Result<RelationsPage> {
        // The parent must be visible to the user.
        self.visible_event(room_id, target, viewer.user_id).await?;
        let joined = self.membership_of(room_id, viewer.user_id).await?.as_deref() == Some("join");
        let mut checker = VisibilityChecker::new(self, viewer.user_id, joined);
        let max_depth = if recurse { 3 } else { 1 };
        // Breadth-first over relation levels; each level sorted like the first.
        let mut rows: Vec<EventRow> = Vec::new();
        let mut parents = vec![target.to_string()];
        for _ in 0..max_depth {
            let mut next = Vec::new();
            for parent in &parents {
                let level_rel = if recurse && parent != target.as_str() { None } else { rel_type };
                let level_type = if recurse && parent != target.as_str() { None } else { event_type };
                for row in event_repo::relations(self.db.pool(), parent, level_rel, level_type, None, forward, 1000).await? {
                    next.push(row.event_id.clone());
                    rows.push(row);
                }
            }
            if next.is_empty() {
                break;
            }
            parents = next;
        }
        rows.sort_by_key(|row| row.stream_ordering);
        if !forward {
            rows.reverse();
        }
        let mut events = Vec::new();
        let mut last = None;
        let mut more = false;
        for row in rows {
            let position = row.stream_ordering;
            let beyond_from = match from {
                Some(from) if forward => position <= from,
                Some(from) => position >= from,
                None => false,
            };
            let beyond_to = match to {
                Some(to) if forward => position > to,
                Some(to) => position < to,
                None => false,
            };
            if beyond_from {
                continue;
            }
            if beyond_to {
                break;
            }
            if events.len() >= limit {
                more = true;
                break;
            }
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            if checker.can_see(&row, &pdu).await? {
                events.push(self.client_event(&row, &pdu, Some(viewer)).await?);
                last = Some(position);
            }
        }
        Ok(RelationsPage {
            events,
            next_batch: if more { last.map(|p| p.to_string()) } else { None },
            recursion_depth: recurse.then_some(max_depth),
        })
    }

    /// Thread roots of the room, most recently active first; `participated` keeps threads
    /// the user started or replied to.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        viewer: Viewer<'_>,
        participated: bool,
        from: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let joined = self.check_can_read(room_id, viewer.user_id).await?;
        let mut checker = VisibilityChecker::new(self, viewer.user_id, joined);
        let mut events = Vec::new();
        let mut cursor = from;
        loop {
            let roots = event_repo::thread_roots(self.db.pool(), room_id.as_str(), cursor, (limit * 2) as i64).await?;
            let exhausted = roots.len() < limit * 2;
            for (root_id, latest) in roots {
                cursor = Some(latest);
                let Some(row) = event_repo::get(self.db.pool(), &root_id).await? else { continue };
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                if !checker.can_see(&row, &pdu).await? {
                    continue;
                }
                if participated && !self.participated(&pdu, viewer.user_id).await? {
                    continue;
                }
                events.push(self.client_event(&row, &pdu, Some(viewer)).await?);
                if events.len() >= limit {
                    return Ok((events, cursor.map(|c| c.to_string())));
                }
            }
            if exhausted {
                return Ok((events, None));
            }
        }
    }

    async fn participated(&self, root: &Pdu, user: &UserId) -> Result<bool> {
        if root.fields.sender == user {
            return Ok(true);
        }
        let replies = event_repo::relations(self.db.pool(), root.event_id.as_str(), Some(THREAD), None, None, false, 1000).await?;
        for reply in replies {
            if pdu_from_row(&reply.event_id, &reply.room_id, &reply.json)?.fields.sender == user {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `unsigned.m.relations` for an event: thread summary, latest edit, references.
    pub async fn bundled_relations(&self, event: &Pdu, viewer: Option<Viewer<'_>>) -> Result<Option<Value>> {
        let children = event_repo::relations(self.db.pool(), event.event_id.as_str(), None, None, None, true, 500).await?;
        if children.is_empty() {
            return Ok(None);
        }
        let mut bundle = Map::new();
        let mut thread: Vec<(EventRow, Pdu)> = Vec::new();
        let mut latest_edit: Option<(EventRow, Pdu)> = None;
        let mut references = Vec::new();
        for row in children {
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            let rel_type = pdu
                .content_value()
                .get("m.relates_to")
                .and_then(|r| r.get("rel_type"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match rel_type.as_str() {
                THREAD => thread.push((row, pdu)),
                // Only edits by the original sender count.
                REPLACE if pdu.fields.sender == event.fields.sender && row.redacted_by.is_none() => latest_edit = Some((row, pdu)),
                REFERENCE => references.push(json!({ "event_id": pdu.event_id })),
                _ => {}
            }
        }
        if let Some((row, pdu)) = thread.last() {
            let participated = viewer.is_some_and(|v| {
                event.fields.sender == v.user_id || thread.iter().any(|(_, p)| p.fields.sender == v.user_id)
            });
            let latest = Box::pin(self.client_event_plain(row, pdu, viewer)).await?;
            bundle.insert(
                THREAD.into(),
                json!({ "latest_event": latest, "count": thread.len(), "current_user_participated": participated }),
            );
        }
        if let Some((row, pdu)) = latest_edit {
            bundle.insert(REPLACE.into(), Box::pin(self.client_event_plain(&row, &pdu, viewer)).await?);
        }
        if !references.is_empty() {
            bundle.insert(REFERENCE.into(), json!({ "chunk": references }));
        }
        Ok((!bundle.is_empty()).then_some(Value::Object(bundle)))
    }

}
