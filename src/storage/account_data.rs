//! Per-user account data, global (room_id = '') and per room.

use sqlx::{Any, Executor, Row};

use super::Tx;

pub async fn get<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    room_id: &str,
    data_type: &str,
) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Stores the content at the next account-data stream position, which it returns.
pub async fn put(tx: &mut Tx, user_id: &str, room_id: &str, data_type: &str, content: &str) -> sqlx::Result<i64> {
    let position = super::next_position(tx, "account_data").await?;
    sqlx::query(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_ordering) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, \
         stream_ordering = excluded.stream_ordering",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .bind(content)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(position)
}

/// Account data changed after `since`: (room_id or "", type, content).
pub async fn changed_since<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    since: i64,
) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_ordering > $2 \
         ORDER BY stream_ordering",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}
