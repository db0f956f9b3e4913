//! Events and their indexes: DAG edges, auth edges, forward extremities, relations,
//! transaction ids.

use sqlx::{any::AnyRow, Any, Executor, Row};

use super::Tx;

/// One stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub json: String,
    pub state_group: i64,
    pub redacted_by: Option<String>,
    pub txn_device_id: Option<String>,
    pub txn_id: Option<String>,
}

pub(super) const EVENT_COLUMNS: &str =
    "stream_ordering, event_id, room_id, depth, json, state_group, redacted_by, txn_device_id, txn_id";

pub(super) fn event_from_row(row: AnyRow) -> EventRow {
    EventRow {
        stream_ordering: row.get(0),
        event_id: row.get(1),
        room_id: row.get(2),
        depth: row.get(3),
        json: row.get(4),
        state_group: row.get(5),
        redacted_by: row.get(6),
        txn_device_id: row.get(7),
        txn_id: row.get(8),
    }
}

/// What is written for a new event (its indexes are written by the other functions here,
/// in the same transaction).
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub json: &'a str,
    pub state_group: i64,
    pub txn: Option<(&'a str, &'a str)>,
}

/// Inserts the event row; returns its stream ordering.
pub async fn insert(tx: &mut Tx, event: &NewEvent<'_>) -> sqlx::Result<i64> {
    let row = sqlx::query(
        "INSERT INTO events (event_id, room_id, event_type, state_key, sender, origin_server_ts, depth, json, \
         state_group, txn_device_id, txn_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         RETURNING stream_ordering",
    )
    .bind(event.event_id)
    .bind(event.room_id)
    .bind(event.event_type)
    .bind(event.state_key)
    .bind(event.sender)
    .bind(event.origin_server_ts)
    .bind(event.depth)
    .bind(event.json)
    .bind(event.state_group)
    .bind(event.txn.map(|(device, _)| device))
    .bind(event.txn.map(|(_, txn)| txn))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.get(0))
}

pub async fn insert_edges(tx: &mut Tx, event_id: &str, prev_events: &[String], auth_events: &[String]) -> sqlx::Result<()> {
    for (table, column, targets) in [("event_edges", "prev_event_id", prev_events), ("event_auth", "auth_event_id", auth_events)] {
        if targets.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO {table} (event_id, {column}) VALUES {} ON CONFLICT DO NOTHING",
            super::values_list(targets.len(), 2, 1)
        );
        let mut query = sqlx::query(&sql);
        for target in targets {
            query = query.bind(event_id).bind(target);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The new event replaces its prev events as a forward extremity of the room.
pub async fn advance_extremities(tx: &mut Tx, room_id: &str, event_id: &str, prev_events: &[String]) -> sqlx::Result<()> {
    if !prev_events.is_empty() {
        let sql = format!("DELETE FROM room_forward_extremities WHERE room_id = $1 AND event_id IN ({})", super::in_list(prev_events.len(), 2));
        let mut query = sqlx::query(&sql).bind(room_id);
        for prev in prev_events {
            query = query.bind(prev);
        }
        query.execute(&mut **tx).await?;
    }
    sqlx::query("INSERT INTO room_forward_extremities (room_id, event_id) VALUES ($1, $2)")
        .bind(room_id)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Forward extremities of a room with their depth and state group.
pub async fn forward_extremities<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    let rows = sqlx::query(
        "SELECT e.event_id, e.depth, e.state_group FROM room_forward_extremities f \
         JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.depth DESC",
    )
    .bind(room_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// An event of the timeline, or else an outlier (state and auth events known from other
/// servers, which have no timeline position: stream ordering 0, state group -1).
pub async fn get<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<Option<EventRow>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1 UNION ALL \
         SELECT 0, event_id, room_id, 0, json, -1, NULL, NULL, NULL FROM outlier_events WHERE event_id = $1 AND rejected = 0 LIMIT 1"
    ))
    .bind(event_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(event_from_row))
}

/// Several events (timeline or outlier) by id, in no particular order; unknown ids are skipped.
pub async fn get_many<'c>(db: impl Executor<'c, Database = Any>, event_ids: &[String]) -> sqlx::Result<Vec<EventRow>> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = super::in_list(event_ids.len(), 1);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({list}) UNION ALL \
         SELECT 0, event_id, room_id, 0, json, -1, NULL, NULL, NULL FROM outlier_events WHERE rejected = 0 AND event_id IN ({list}) \
         AND event_id NOT IN (SELECT event_id FROM events WHERE event_id IN ({list}))"
    );
    let mut query = sqlx::query(&sql);
    for id in event_ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(db).await?.into_iter().map(event_from_row).collect())
}

/// An event of the timeline only.
pub async fn get_timeline<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<Option<EventRow>> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"))
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(event_from_row))
}

pub async fn get_json<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query(
        "SELECT json FROM events WHERE event_id = $1 UNION ALL SELECT json FROM outlier_events WHERE event_id = $1 AND rejected = 0 LIMIT 1",
    )
    .bind(event_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Replaces an event's JSON with its redacted form.
pub async fn mark_redacted(tx: &mut Tx, event_id: &str, redacted_json: &str, redacted_by: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1")
        .bind(event_id)
        .bind(redacted_json)
        .bind(redacted_by)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A position in a room's topological order: (depth, stream_ordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Topological { depth: i64, stream: i64 },
    /// A sync position: everything up to and including this stream ordering.
    Stream(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// Up to `limit` events of a room strictly beyond `from` in `dir`, ordered in that direction,
/// stopping at `to` when given.
pub async fn page<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    from: Boundary,
    to: Option<Boundary>,
    dir: Direction,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    let bound = |b: Boundary, op: &str, first: usize| match b {
        Boundary::Topological { .. } => {
            format!("(depth {op} ${first} OR (depth = ${first} AND stream_ordering {op} ${}))", first + 1)
        }
        Boundary::Stream(_) => {
            // A stream position includes the event at it when paging backwards.
            let op = if op == "<" { "<=" } else { ">" };
            format!("stream_ordering {op} ${first}")
        }
    };
    let (op, order) = match dir {
        Direction::Backward => ("<", "DESC"),
        Direction::Forward => (">", "ASC"),
    };
    // `from` and `to` are both exclusive: a token names the last event a page returned.
    let mut conditions = vec![bound(from, op, 3)];
    if let Some(to) = to {
        let reverse = if op == "<" { ">" } else { "<" };
        conditions.push(bound(to, reverse, 5));
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND $2 = $2 AND {} \
         ORDER BY depth {order}, stream_ordering {order} LIMIT $7",
        conditions.join(" AND ")
    );
    let values = |b: Option<Boundary>| match b {
        Some(Boundary::Topological { depth, stream }) => (depth, stream),
        Some(Boundary::Stream(s)) => (s, s),
        None => (0, 0),
    };
    let (f1, f2) = values(Some(from));
    let (t1, t2) = values(to);
    let rows = sqlx::query(&sql)
        .bind(room_id)
        .bind(0i64)
        .bind(f1)
        .bind(f2)
        .bind(t1)
        .bind(t2)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// The event closest to `ts` in the given direction (at or after for forward, at or before for backward).
pub async fn closest_to_ts<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    ts: i64,
    dir: Direction,
) -> sqlx::Result<Option<(String, i64)>> {
    let sql = match dir {
        Direction::Forward => {
            "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts >= $2 \
             ORDER BY origin_server_ts ASC, stream_ordering ASC LIMIT 1"
        }
        Direction::Backward => {
            "SELECT event_id, origin_server_ts FROM events WHERE room_id = $1 AND origin_server_ts <= $2 \
             ORDER BY origin_server_ts DESC, stream_ordering DESC LIMIT 1"
        }
    };
    let row = sqlx::query(sql).bind(room_id).bind(ts).fetch_optional(db).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn insert_relation(tx: &mut Tx, event_id: &str, relates_to: &str, rel_type: &str, room_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(relates_to)
    .bind(rel_type)
    .bind(room_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Events relating to `target`, newest first (or oldest first when `forward`), below/above
/// stream ordering `from`.
pub async fn relations<'c>(
    db: impl Executor<'c, Database = Any>,
    target: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    from: Option<i64>,
    forward: bool,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    let (cmp, order) = if forward { (">", "ASC") } else { ("<", "DESC") };
    let sql = format!(
        "SELECT e.stream_ordering, e.event_id, e.room_id, e.depth, e.json, e.state_group, e.redacted_by, \
         e.txn_device_id, e.txn_id FROM event_relations r JOIN events e ON e.event_id = r.event_id \
         WHERE r.relates_to_id = $1 AND ($2 IS NULL OR r.rel_type = $2) AND ($3 IS NULL OR e.event_type = $3) \
         AND e.stream_ordering {cmp} $4 ORDER BY e.stream_ordering {order} LIMIT $5"
    );
    let from = from.unwrap_or(if forward { 0 } else { i64::MAX });
    let rows = sqlx::query(&sql)
        .bind(target)
        .bind(rel_type)
        .bind(event_type)
        .bind(from)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// Which of these events are the target of at least one relation: one query for a whole
/// page, so only those events pay for building their bundled relations.
pub async fn with_relations<'c>(
    db: impl Executor<'c, Database = Any>,
    targets: &[&str],
) -> sqlx::Result<std::collections::HashSet<String>> {
    if targets.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!("SELECT DISTINCT relates_to_id FROM event_relations WHERE relates_to_id IN ({})", super::in_list(targets.len(), 1));
    let mut query = sqlx::query(&sql);
    for target in targets {
        query = query.bind(*target);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| row.get::<String, _>(0)).collect())
}

/// Thread roots of a room (events with at least one m.thread relation), newest activity first.
pub async fn thread_roots<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    from: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT relates_to_id, MAX(e.stream_ordering) AS latest FROM event_relations r \
         JOIN events e ON e.event_id = r.event_id WHERE r.room_id = $1 AND r.rel_type = 'm.thread' \
         GROUP BY relates_to_id HAVING MAX(e.stream_ordering) < $2 ORDER BY latest DESC LIMIT $3",
    )
    .bind(room_id)
    .bind(from.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn txn_event<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
    room_id: &str,
    txn_id: &str,
) -> sqlx::Result<Option<String>> {
    let row = sqlx::query(
        "SELECT event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND room_id = $3 AND txn_id = $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(room_id)
    .bind(txn_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Of several (user, device, txn id) in a room, the ones already sent, with their events:
/// one query for a whole batch of sends.
pub async fn txn_events<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    txns: &[(&str, &str, &str)],
) -> sqlx::Result<Vec<(String, String, String, String)>> {
    if txns.is_empty() {
        return Ok(Vec::new());
    }
    let terms: Vec<String> = (0..txns.len())
        .map(|i| {
            let first = 2 + i * 3;
            format!("(user_id = ${first} AND device_id = ${} AND room_id = $1 AND txn_id = ${})", first + 1, first + 2)
        })
        .collect();
    let sql = format!("SELECT user_id, device_id, txn_id, event_id FROM event_txn_ids WHERE {}", terms.join(" OR "));
    let mut query = sqlx::query(&sql).bind(room_id);
    for (user, device, txn_id) in txns {
        query = query.bind(*user).bind(*device).bind(*txn_id);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))).collect())
}

pub async fn insert_txn(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
    room_id: &str,
    txn_id: &str,
    event_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO event_txn_ids (user_id, device_id, room_id, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)")
        .bind(user_id)
        .bind(device_id)
        .bind(room_id)
        .bind(txn_id)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The highest stream ordering persisted so far.
pub async fn max_stream_ordering<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetch_one(db).await?;
    Ok(row.get(0))
}

/// Up to `limit` of the newest events of a room with stream ordering in `(after, up_to]`,
/// newest first.
pub async fn newest_in_range<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    after: i64,
    up_to: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
         ORDER BY stream_ordering DESC LIMIT $4"
    ))
    .bind(room_id)
    .bind(after)
    .bind(up_to)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// The newest event of a room at or before a stream position.
pub async fn latest_at<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, position: i64) -> sqlx::Result<Option<EventRow>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering <= $2 ORDER BY stream_ordering DESC LIMIT 1"
    ))
    .bind(room_id)
    .bind(position)
    .fetch_optional(db)
    .await?;
    Ok(row.map(event_from_row))
}

/// The room's first event after a stream position.
pub async fn first_after<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, position: i64) -> sqlx::Result<Option<EventRow>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering ASC LIMIT 1"
    ))
    .bind(room_id)
    .bind(position)
    .fetch_optional(db)
    .await?;
    Ok(row.map(event_from_row))
}

/// Rooms (among all) with events in `(after, up_to]`.
pub async fn rooms_with_events_between<'c>(db: impl Executor<'c, Database = Any>, after: i64, up_to: i64) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2")
        .bind(after)
        .bind(up_to)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Membership events in `(after, up_to]` of rooms the user is or was in:
/// (room_id, member user id, membership).
pub async fn membership_changes_between<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT e.room_id, e.state_key, e.json FROM events e WHERE e.event_type = 'm.room.member' \
         AND e.stream_ordering > $2 AND e.stream_ordering <= $3 \
         AND e.room_id IN (SELECT room_id FROM room_memberships WHERE user_id = $1) ORDER BY e.stream_ordering",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let json: String = row.get(2);
            let membership = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v["content"]["membership"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (row.get(0), row.get(1), membership)
        })
        .collect())
}

/// Inserts an event from before the room's known history (backfill): it takes a stream
/// position below every other, so syncs never see it as new.
pub async fn insert_backfilled(tx: &mut Tx, event: &NewEvent<'_>) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MIN(stream_ordering), 1) - 1 FROM events").fetch_one(&mut **tx).await?;
    let position: i64 = row.get(0);
    let position = position.min(0);
    sqlx::query(
        "INSERT INTO events (stream_ordering, event_id, room_id, event_type, state_key, sender, origin_server_ts, depth, json, \
         state_group) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(position)
    .bind(event.event_id)
    .bind(event.room_id)
    .bind(event.event_type)
    .bind(event.state_key)
    .bind(event.sender)
    .bind(event.origin_server_ts)
    .bind(event.depth)
    .bind(event.json)
    .bind(event.state_group)
    .execute(&mut **tx)
    .await?;
    Ok(position)
}

/// The room's earliest timeline event (lowest depth): (event id, state group).
pub async fn earliest<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Option<(String, i64)>> {
    let row = sqlx::query(
        "SELECT event_id, state_group FROM events WHERE room_id = $1 ORDER BY depth ASC, stream_ordering ASC LIMIT 1",
    )
    .bind(room_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}
