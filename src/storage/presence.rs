//! Presence as last persisted: state, status message, last activity.

use sqlx::{Any, Executor, Row};

use super::Tx;

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_ordering: i64,
}

fn from_row(row: sqlx::any::AnyRow) -> PresenceRow {
    PresenceRow { user_id: row.get(0), state: row.get(1), status_msg: row.get(2), last_active_ts: row.get(3), stream_ordering: row.get(4) }
}

/// Stores a user's presence at a new presence-stream position, which it returns.
pub async fn upsert(tx: &mut Tx, user_id: &str, state: &str, status_msg: Option<&str>, last_active_ts: i64) -> sqlx::Result<i64> {
    let position = super::next_position(tx, "presence").await?;
    sqlx::query(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_ordering) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg, \
         last_active_ts = excluded.last_active_ts, stream_ordering = excluded.stream_ordering",
    )
    .bind(user_id)
    .bind(state)
    .bind(status_msg)
    .bind(last_active_ts)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(position)
}

pub async fn get<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Option<PresenceRow>> {
    let row = sqlx::query("SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(from_row))
}

/// Everyone not offline, for restoring the in-memory view at start-up.
pub async fn all_not_offline<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<Vec<PresenceRow>> {
    let rows = sqlx::query("SELECT user_id, state, status_msg, last_active_ts, stream_ordering FROM presence WHERE state <> 'offline'")
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Presence of users sharing a joined room with `user_id` (themselves included), changed after `since`.
pub async fn visible_changes<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, since: i64) -> sqlx::Result<Vec<PresenceRow>> {
    let rows = sqlx::query(
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.stream_ordering FROM presence p \
         WHERE p.stream_ordering > $2 AND (p.user_id = $1 OR p.user_id IN ( \
           SELECT other.user_id FROM room_memberships mine JOIN room_memberships other ON other.room_id = mine.room_id \
           WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.membership = 'join')) \
         ORDER BY p.stream_ordering",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
