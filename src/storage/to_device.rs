//! To-device messages, kept until the recipient device's next sync proves receipt.

use sqlx::{Any, Executor, Row};

use super::Tx;

/// Stores a transaction id; false when this device already used it.
pub async fn claim_txn(tx: &mut Tx, user_id: &str, device_id: &str, txn_id: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(txn_id)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn insert(tx: &mut Tx, user_id: &str, device_id: &str, sender: &str, event_type: &str, content: &str) -> sqlx::Result<i64> {
    let row = sqlx::query(
        "INSERT INTO to_device (user_id, device_id, sender, event_type, content) VALUES ($1, $2, $3, $4, $5) \
         RETURNING stream_ordering",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(sender)
    .bind(event_type)
    .bind(content)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.get(0))
}

/// Deletes what the device has acknowledged by syncing with `since`.
pub async fn delete_up_to<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, device_id: &str, up_to: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3")
        .bind(user_id)
        .bind(device_id)
        .bind(up_to)
        .execute(db)
        .await?;
    Ok(())
}

/// Pending messages after `since`: (position, sender, type, content).
pub async fn pending<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
    since: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String, String, String)>> {
    let rows = sqlx::query(
        "SELECT stream_ordering, sender, event_type, content FROM to_device \
         WHERE user_id = $1 AND device_id = $2 AND stream_ordering > $3 ORDER BY stream_ordering LIMIT $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))).collect())
}

pub async fn max_position<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_ordering), 0) FROM to_device").fetch_one(db).await?;
    Ok(row.get(0))
}
