//! Read receipts: the latest per (room, type, user, thread).

use sqlx::{Any, Executor, Row};

use super::Tx;

#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// Stores a receipt at a new receipts-stream position, which it returns.
#[allow(clippy::too_many_arguments)]
/// Whether `event_id` comes before the event the user's current receipt of this type (and
/// thread) is at: such a receipt would move it back, which receipts never do (as Synapse).
pub async fn would_move_back(tx: &mut Tx, room_id: &str, receipt_type: &str, user_id: &str, thread_id: &str, event_id: &str) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "SELECT held.stream_ordering, proposed.stream_ordering FROM receipts r JOIN events held ON held.event_id = r.event_id \
         JOIN events proposed ON proposed.event_id = $5 \
         WHERE r.room_id = $1 AND r.receipt_type = $2 AND r.user_id = $3 AND r.thread_id = $4",
    )
    .bind(room_id)
    .bind(receipt_type)
    .bind(user_id)
    .bind(thread_id)
    .bind(event_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some_and(|row| row.get::<i64, _>(1) < row.get::<i64, _>(0)))
}

pub async fn upsert(
    tx: &mut Tx,
    room_id: &str,
    receipt_type: &str,
    user_id: &str,
    thread_id: &str,
    event_id: &str,
    ts: i64,
) -> sqlx::Result<i64> {
    let position = super::next_position(tx, "receipts").await?;
    sqlx::query(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_ordering) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET \
         event_id = excluded.event_id, ts = excluded.ts, stream_ordering = excluded.stream_ordering",
    )
    .bind(room_id)
    .bind(receipt_type)
    .bind(user_id)
    .bind(thread_id)
    .bind(event_id)
    .bind(ts)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(position)
}

/// Receipts of a room that changed after `since` (all of them when `since` is 0).
pub async fn changed_since<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, since: i64) -> sqlx::Result<Vec<ReceiptRow>> {
    let rows = sqlx::query(
        "SELECT receipt_type, user_id, thread_id, event_id, ts FROM receipts \
         WHERE room_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering",
    )
    .bind(room_id)
    .bind(since)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ReceiptRow { receipt_type: row.get(0), user_id: row.get(1), thread_id: row.get(2), event_id: row.get(3), ts: row.get(4) })
        .collect())
}

/// Receipts of several rooms that changed after `since`, each row with its room id: one
/// statement for a whole sliding sync page.
pub async fn changed_since_in_rooms<'c>(
    db: impl Executor<'c, Database = Any>,
    room_ids: &[&str],
    since: i64,
) -> sqlx::Result<Vec<(String, ReceiptRow)>> {
    if room_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts \
         WHERE stream_ordering > $1 AND room_id IN ({}) ORDER BY stream_ordering",
        super::in_list(room_ids.len(), 2)
    );
    let mut query = sqlx::query(&sql).bind(since);
    for room_id in room_ids {
        query = query.bind(*room_id);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let receipt = ReceiptRow { receipt_type: row.get(1), user_id: row.get(2), thread_id: row.get(3), event_id: row.get(4), ts: row.get(5) };
            (row.get(0), receipt)
        })
        .collect())
}

/// Rooms whose receipts changed after `since`.
pub async fn rooms_changed_since<'c>(db: impl Executor<'c, Database = Any>, since: i64) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT room_id FROM receipts WHERE stream_ordering > $1")
        .bind(since)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
