//! Reads for sliding sync: a user's rooms with their recency, and the room facts its list
//! filters need, each for all of the user's rooms in one query.

use std::collections::{HashMap, HashSet};

use sqlx::{Any, Executor, Row};

use super::Tx;

/// Records a room's newest "bump" event (see `rooms::BUMP_EVENT_TYPES`).
pub async fn set_bump_stamp(tx: &mut Tx, room_id: &str, stream_ordering: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_bump_stamps (room_id, stream_ordering) VALUES ($1, $2) \
         ON CONFLICT (room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering \
         WHERE excluded.stream_ordering > room_bump_stamps.stream_ordering",
    )
    .bind(room_id)
    .bind(stream_ordering)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One of the user's rooms, as its current membership says.
#[derive(Debug, Clone)]
pub struct UserRoom {
    pub room_id: String,
    pub membership: String,
    pub membership_event_id: String,
    pub membership_stream: i64,
    /// The room's newest bump event, if it has one.
    pub bump_stamp: Option<i64>,
}

/// Every room the user has a membership in (not forgotten), with its bump stamp.
pub async fn user_rooms<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Vec<UserRoom>> {
    let rows = sqlx::query(
        "SELECT m.room_id, m.membership, m.event_id, m.stream_ordering, b.stream_ordering FROM room_memberships m \
         LEFT JOIN room_bump_stamps b ON b.room_id = m.room_id WHERE m.user_id = $1 AND m.forgotten = 0",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(user_room_from_row).collect())
}

/// Rooms with events in `(after, up_to]`, each with the user's membership in it (None when
/// the user has none, or forgot the room): what an incremental sliding sync refreshes.
pub async fn rooms_with_events_for<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> sqlx::Result<Vec<(String, Option<UserRoom>)>> {
    let rows = sqlx::query(
        "SELECT r.room_id, m.membership, m.event_id, m.stream_ordering, b.stream_ordering, m.forgotten \
         FROM (SELECT DISTINCT room_id FROM events WHERE stream_ordering > $2 AND stream_ordering <= $3) r \
         LEFT JOIN room_memberships m ON m.room_id = r.room_id AND m.user_id = $1 \
         LEFT JOIN room_bump_stamps b ON b.room_id = r.room_id",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let room_id: String = row.get(0);
            let membership: Option<String> = row.get(1);
            let forgotten = row.get::<Option<i64>, _>(5).unwrap_or(0) != 0;
            let user_room = membership.filter(|_| !forgotten).map(|membership| UserRoom {
                room_id: room_id.clone(),
                membership,
                membership_event_id: row.get(2),
                membership_stream: row.get(3),
                bump_stamp: row.get(4),
            });
            (room_id, user_room)
        })
        .collect())
}

fn user_room_from_row(row: sqlx::any::AnyRow) -> UserRoom {
    UserRoom {
        room_id: row.get(0),
        membership: row.get(1),
        membership_event_id: row.get(2),
        membership_stream: row.get(3),
        bump_stamp: row.get(4),
    }
}

/// The user's rooms whose current state has an `m.room.encryption` event.
pub async fn encrypted_rooms<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<HashSet<String>> {
    let rows = sqlx::query(
        "SELECT c.room_id FROM current_state c JOIN room_memberships m ON m.room_id = c.room_id \
         WHERE m.user_id = $1 AND c.event_type = 'm.room.encryption' AND c.state_key = ''",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// The create events (JSON) of the user's rooms, for their room types.
pub async fn create_events<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<HashMap<String, String>> {
    let rows = sqlx::query(
        "SELECT c.room_id, e.json FROM current_state c JOIN room_memberships m ON m.room_id = c.room_id \
         JOIN events e ON e.event_id = c.event_id \
         WHERE m.user_id = $1 AND c.event_type = 'm.room.create' AND c.state_key = ''",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Children (`m.space.child` state keys) of the given spaces.
pub async fn space_children<'c>(db: impl Executor<'c, Database = Any>, space_id: &str) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT c.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id \
         WHERE c.room_id = $1 AND c.event_type = 'm.space.child'",
    )
    .bind(space_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Current state events (type, state key, event id) of a room changed in `(after, up_to]`.
pub async fn state_changes_between<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    after: i64,
    up_to: i64,
) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT event_type, state_key, event_id FROM events WHERE room_id = $1 AND stream_ordering > $2 \
         AND stream_ordering <= $3 AND state_key IS NOT NULL ORDER BY stream_ordering",
    )
    .bind(room_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// Current state entries (type, state key, event id) of a room: every key of `whole_types`,
/// plus the `exact` (type, key) pairs. One statement, however many pairs.
pub async fn current_state_subset<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    whole_types: &[String],
    exact: &[(String, String)],
) -> sqlx::Result<Vec<(String, String, String)>> {
    if whole_types.is_empty() && exact.is_empty() {
        return Ok(Vec::new());
    }
    let mut conditions = Vec::new();
    if !whole_types.is_empty() {
        conditions.push(format!("event_type IN ({})", super::in_list(whole_types.len(), 2)));
    }
    let mut next = 2 + whole_types.len();
    for _ in exact {
        conditions.push(format!("(event_type = ${next} AND state_key = ${})", next + 1));
        next += 2;
    }
    let sql = format!(
        "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1 AND ({})",
        conditions.join(" OR ")
    );
    let mut query = sqlx::query(&sql).bind(room_id);
    for kind in whole_types {
        query = query.bind(kind);
    }
    for (kind, key) in exact {
        query = query.bind(kind).bind(key);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// Member counts of a room: (joined, invited).
pub async fn member_counts<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END), 0) FROM room_memberships WHERE room_id = $1",
    )
    .bind(room_id)
    .fetch_one(db)
    .await?;
    Ok((row.get(0), row.get(1)))
}

/// Up to `limit` members of a room other than `except`, joined and invited first (then those
/// who left), each with its member event's JSON: a room's heroes.
pub async fn heroes<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    except: &str,
    limit: i64,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT m.user_id, e.json FROM room_memberships m LEFT JOIN events e ON e.event_id = m.event_id \
         WHERE m.room_id = $1 AND m.user_id <> $2 \
         ORDER BY CASE m.membership WHEN 'join' THEN 0 WHEN 'invite' THEN 1 ELSE 2 END, m.stream_ordering LIMIT $3",
    )
    .bind(room_id)
    .bind(except)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}
