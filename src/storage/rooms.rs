//! Rooms and the current-membership index.

use sqlx::{Any, Executor, Row};

use super::{now_ms, Tx};

pub async fn insert_room(tx: &mut Tx, room_id: &str, room_version: &str, creator: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(room_id)
        .bind(room_version)
        .bind(creator)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn room_version<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT room_version FROM rooms WHERE room_id = $1").bind(room_id).fetch_optional(db).await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn set_published<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, published: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE rooms SET published = $2 WHERE room_id = $1")
        .bind(room_id)
        .bind(published as i64)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn is_published<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<bool> {
    let row = sqlx::query("SELECT published FROM rooms WHERE room_id = $1").bind(room_id).fetch_optional(db).await?;
    Ok(row.map(|row| row.get::<i64, _>(0) != 0).unwrap_or(false))
}

/// Published rooms with their joined-member count, largest first.
pub async fn published_rooms<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT r.room_id, (SELECT COUNT(*) FROM room_memberships m WHERE m.room_id = r.room_id \
         AND m.membership = 'join') AS members FROM rooms r WHERE r.published = 1 \
         ORDER BY members DESC, r.room_id ASC",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn set_membership(
    tx: &mut Tx,
    room_id: &str,
    user_id: &str,
    membership: &str,
    event_id: &str,
    stream_ordering: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, forgotten) \
         VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (room_id, user_id) DO UPDATE SET \
         membership = excluded.membership, event_id = excluded.event_id, \
         stream_ordering = excluded.stream_ordering, forgotten = 0",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(event_id)
    .bind(stream_ordering)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A user's current membership in a room: (membership, event id).
pub async fn membership<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query("SELECT membership, event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Rooms where the user's membership is `membership`.
pub async fn rooms_with_membership<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    membership: &str,
) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT room_id FROM room_memberships WHERE user_id = $1 AND membership = $2 ORDER BY room_id",
    )
    .bind(user_id)
    .bind(membership)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Members of a room with the given membership.
pub async fn members_with_membership<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    membership: &str,
) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = $2 ORDER BY user_id",
    )
    .bind(room_id)
    .bind(membership)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// This server's guest accounts joined to or invited into a room.
pub async fn local_guests_in_room<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT m.user_id FROM room_memberships m JOIN users u ON u.user_id = m.user_id \
         WHERE m.room_id = $1 AND m.membership IN ('join', 'invite') AND u.is_guest = 1 ORDER BY m.user_id",
    )
    .bind(room_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Marks a left room as forgotten; false if the user is still in it (or never was).
pub async fn forget<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, user_id: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE room_memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2 \
         AND membership IN ('leave', 'ban')",
    )
    .bind(room_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Users a new event in the room concerns: joined, invited or knocking.
pub async fn interested_users<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership IN ('join', 'invite', 'knock')",
    )
    .bind(room_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Users sharing a joined room with `user_id` (including the user).
pub async fn users_sharing_rooms<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT other.user_id FROM room_memberships mine JOIN room_memberships other \
         ON other.room_id = mine.room_id WHERE mine.user_id = $1 AND mine.membership = 'join' \
         AND other.membership = 'join'",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Every room the user has a membership in, with it: (room_id, membership, event_id, stream_ordering).
pub async fn memberships_of<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> sqlx::Result<Vec<(String, String, String, i64, bool)>> {
    let rows = sqlx::query(
        "SELECT room_id, membership, event_id, stream_ordering, forgotten FROM room_memberships WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get::<i64, _>(4) != 0))
        .collect())
}

/// The user's membership in the room as of a stream position: that of their last member
/// event at or before it (None if they had none).
pub async fn membership_at<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, user_id: &str, stream: i64) -> sqlx::Result<Option<String>> {
    let row = sqlx::query(
        "SELECT json FROM events WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2 \
         AND stream_ordering <= $3 ORDER BY stream_ordering DESC LIMIT 1",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(stream)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|row| {
        let json: String = row.get(0);
        let event: serde_json::Value = serde_json::from_str(&json).ok()?;
        event["content"]["membership"].as_str().map(str::to_owned)
    }))
}

/// Whether the user joined the room between two stream positions (after, up_to].
pub async fn joined_between<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, user_id: &str, after: i64, up_to: i64) -> sqlx::Result<bool> {
    let rows = sqlx::query(
        "SELECT json FROM events WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2 \
         AND stream_ordering > $3 AND stream_ordering <= $4",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().any(|row| {
        serde_json::from_str::<serde_json::Value>(&row.get::<String, _>(0)).is_ok_and(|event| event["content"]["membership"] == "join")
    }))
}

/// Users with any membership in the room (joined, left, invited, ...).
pub async fn memberships_in_room<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT user_id FROM room_memberships WHERE room_id = $1").bind(room_id).fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Joined members of a room with the JSON of their member events (for display names).
pub async fn joined_members_with_events<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT m.user_id, COALESCE(e.json, o.json) FROM room_memberships m \
         LEFT JOIN events e ON e.event_id = m.event_id LEFT JOIN outlier_events o ON o.event_id = m.event_id \
         WHERE m.room_id = $1 AND m.membership = 'join'",
    )
    .bind(room_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// What the admin API shows of a room: its row, the contents of the current state events
/// a listing shows (by type, state key ""), and its counts.
#[derive(Debug, Clone, Default)]
pub struct RoomSummaryRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub published: bool,
    pub state: std::collections::HashMap<String, serde_json::Value>,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub state_events: i64,
}

/// The state types a room summary reads.
const SUMMARY_STATE_TYPES: &str = "'m.room.name', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.join_rules', \
     'm.room.guest_access', 'm.room.history_visibility', 'm.room.create', 'm.room.topic', 'm.room.avatar'";

/// Summaries of every room this server knows (`room_id`: just that one), in no order.
/// `local_suffix` is `:server_name`, to count local members. Four statements whatever the
/// number of rooms.
pub async fn room_summaries(db: &sqlx::AnyPool, room_id: Option<&str>, local_suffix: &str) -> sqlx::Result<Vec<RoomSummaryRow>> {
    let only = |column: &str| room_id.map(|_| format!("WHERE {column} = $1")).unwrap_or_default();
    let and_only = |column: &str| room_id.map(|_| format!("AND {column} = $1")).unwrap_or_default();
    fn bind_room<'q>(sql: &'q str, room_id: Option<&str>) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let query = sqlx::query(sql);
        match room_id {
            Some(room) => query.bind(room.to_owned()),
            None => query,
        }
    }
    let rooms_sql = format!("SELECT room_id, room_version, creator, published FROM rooms {}", only("room_id"));
    let mut summaries: std::collections::HashMap<String, RoomSummaryRow> = bind_room(&rooms_sql, room_id)
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|row| {
            let room_id: String = row.get(0);
            let summary = RoomSummaryRow {
                room_id: room_id.clone(),
                room_version: row.get(1),
                creator: row.get(2),
                published: row.get::<i64, _>(3) != 0,
                ..Default::default()
            };
            (room_id, summary)
        })
        .collect();
    let state_sql = format!(
        "SELECT cs.room_id, cs.event_type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id \
         WHERE cs.state_key = '' AND cs.event_type IN ({SUMMARY_STATE_TYPES}) {}",
        and_only("cs.room_id")
    );
    for row in bind_room(&state_sql, room_id).fetch_all(db).await? {
        let (room, kind, json): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        if let (Some(summary), Ok(event)) = (summaries.get_mut(&room), serde_json::from_str::<serde_json::Value>(&json)) {
            summary.state.insert(kind, event["content"].clone());
        }
    }
    // Room ids and user ids hold no LIKE wildcards but `_`: the suffix is escaped.
    let local = format!("%{}", local_suffix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let members_sql = format!(
        "SELECT room_id, COUNT(*), COALESCE(SUM(CASE WHEN user_id LIKE ${} ESCAPE '\\' THEN 1 ELSE 0 END), 0) FROM room_memberships \
         WHERE membership = 'join' {} GROUP BY room_id",
        if room_id.is_some() { 2 } else { 1 },
        and_only("room_id")
    );
    let mut members = sqlx::query(&members_sql);
    if let Some(room) = room_id {
        members = members.bind(room.to_owned());
    }
    for row in members.bind(local).fetch_all(db).await? {
        let room: String = row.get(0);
        if let Some(summary) = summaries.get_mut(&room) {
            summary.joined_members = row.get(1);
            summary.joined_local_members = row.get(2);
        }
    }
    let counts_sql = format!("SELECT room_id, COUNT(*) FROM current_state {} GROUP BY room_id", only("room_id"));
    for row in bind_room(&counts_sql, room_id).fetch_all(db).await? {
        let room: String = row.get(0);
        if let Some(summary) = summaries.get_mut(&room) {
            summary.state_events = row.get(1);
        }
    }
    Ok(summaries.into_values().collect())
}

/// The room's joined members (local and remote), sorted.
pub async fn joined_members<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = 'join' ORDER BY user_id")
        .bind(room_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
