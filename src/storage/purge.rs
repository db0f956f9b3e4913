//! Removing a room from the database (admin room deletion with `purge`), blocking rooms,
//! and the record of deletions.

use sqlx::{Any, Executor, Row};

use super::{now_ms, Engine, Tx};

/// Deletes every row that belongs to the room, in one transaction: events and their
/// edges, auth edges, relations, search index entries, transaction ids, state groups and
/// their entries, current state, memberships, aliases, room account data, receipts, push
/// actions, sliding sync stamps, invite states, outliers, join rules, extremities, the
/// room itself. Returns how many rows went. Event reports stay (they are the admins').
pub async fn purge_room(tx: &mut Tx, room_id: &str) -> sqlx::Result<u64> {
    let search = match Engine::of_connection(tx) {
        Engine::Sqlite => "DELETE FROM event_search WHERE rowid IN (SELECT stream_ordering FROM events WHERE room_id = $1)",
        Engine::Postgres => "DELETE FROM event_search WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1)",
    };
    let statements = [
        search,
        "DELETE FROM event_edges WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
        "DELETE FROM event_edges WHERE event_id IN (SELECT event_id FROM outlier_events WHERE room_id = $1)",
        "DELETE FROM event_auth WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)",
        "DELETE FROM event_auth WHERE event_id IN (SELECT event_id FROM outlier_events WHERE room_id = $1)",
        "DELETE FROM state_group_entries WHERE state_group IN (SELECT id FROM state_groups WHERE room_id = $1)",
        "DELETE FROM state_groups WHERE room_id = $1",
        "DELETE FROM event_relations WHERE room_id = $1",
        "DELETE FROM event_txn_ids WHERE room_id = $1",
        "DELETE FROM event_push_actions WHERE room_id = $1",
        "DELETE FROM receipts WHERE room_id = $1",
        "DELETE FROM events WHERE room_id = $1",
        "DELETE FROM outlier_events WHERE room_id = $1",
        "DELETE FROM current_state WHERE room_id = $1",
        "DELETE FROM room_memberships WHERE room_id = $1",
        "DELETE FROM room_forward_extremities WHERE room_id = $1",
        "DELETE FROM room_aliases WHERE room_id = $1",
        "DELETE FROM account_data WHERE room_id = $1",
        "DELETE FROM room_bump_stamps WHERE room_id = $1",
        "DELETE FROM invite_states WHERE room_id = $1",
        "DELETE FROM room_join_rules WHERE room_id = $1",
        "DELETE FROM rooms WHERE room_id = $1",
    ];
    let mut deleted = 0;
    for sql in statements {
        deleted += sqlx::query(sql).bind(room_id).execute(&mut **tx).await?.rows_affected();
    }
    Ok(deleted)
}

pub async fn block_room(tx: &mut Tx, room_id: &str, admin: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3) ON CONFLICT (room_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(admin)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn unblock_room(tx: &mut Tx, room_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM blocked_rooms WHERE room_id = $1").bind(room_id).execute(&mut **tx).await?;
    Ok(())
}

/// The admin who blocked the room, None when it is not blocked.
pub async fn blocked_by<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT user_id FROM blocked_rooms WHERE room_id = $1").bind(room_id).fetch_optional(db).await?;
    Ok(row.map(|row| row.get(0)))
}

/// One room deletion's record.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub delete_id: String,
    pub room_id: String,
    pub status: String,
    pub result: String,
    pub error: Option<String>,
}

pub async fn record_deletion(tx: &mut Tx, deletion: &Deletion) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO room_deletions (delete_id, room_id, status, result, error, created_ts) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&deletion.delete_id)
        .bind(&deletion.room_id)
        .bind(&deletion.status)
        .bind(&deletion.result)
        .bind(deletion.error.as_deref())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn deletion_from_row(row: sqlx::any::AnyRow) -> Deletion {
    Deletion { delete_id: row.get(0), room_id: row.get(1), status: row.get(2), result: row.get(3), error: row.get(4) }
}

pub async fn deletion<'c>(db: impl Executor<'c, Database = Any>, delete_id: &str) -> sqlx::Result<Option<Deletion>> {
    let row = sqlx::query("SELECT delete_id, room_id, status, result, error FROM room_deletions WHERE delete_id = $1")
        .bind(delete_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(deletion_from_row))
}

pub async fn deletions_of_room<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<Deletion>> {
    let rows = sqlx::query("SELECT delete_id, room_id, status, result, error FROM room_deletions WHERE room_id = $1 ORDER BY created_ts, delete_id")
        .bind(room_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(deletion_from_row).collect())
}
