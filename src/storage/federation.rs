//! Outliers, inbound transaction results, and the outbound federation queue.

use sqlx::{Any, Executor, Row};

use super::Tx;

pub async fn insert_outlier<'c>(
    db: impl Executor<'c, Database = Any>,
    event_id: &str,
    room_id: &str,
    json: &str,
    soft_failed: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outlier_events (event_id, room_id, json, soft_failed) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(room_id)
    .bind(json)
    .bind(soft_failed as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// Keeps an event that failed the auth rules against its own auth events: never read back
/// as an event (so nothing can rely on it), but known, so it is not fetched again.
pub async fn insert_rejected_outlier<'c>(db: impl Executor<'c, Database = Any>, event_id: &str, room_id: &str, json: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO outlier_events (event_id, room_id, json, rejected) VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING")
        .bind(event_id)
        .bind(room_id)
        .bind(json)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether the event is known as rejected.
pub async fn is_rejected_outlier<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<bool> {
    let row = sqlx::query("SELECT 1 FROM outlier_events WHERE event_id = $1 AND rejected = 1")
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    Ok(row.is_some())
}

/// (room_id, json) of a rejected event: what events built on it need (the state before it).
pub async fn rejected_outlier<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query("SELECT room_id, json FROM outlier_events WHERE event_id = $1 AND rejected = 1")
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// (room_id, json) of an outlier.
pub async fn outlier<'c>(db: impl Executor<'c, Database = Any>, event_id: &str) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query("SELECT room_id, json FROM outlier_events WHERE event_id = $1 AND rejected = 0")
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn txn_response<'c>(db: impl Executor<'c, Database = Any>, origin: &str, txn_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2")
        .bind(origin)
        .bind(txn_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn save_txn_response<'c>(db: impl Executor<'c, Database = Any>, origin: &str, txn_id: &str, response: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO federation_inbound_txns (origin, txn_id, response) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(txn_id)
    .bind(response)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn enqueue(tx: &mut Tx, destination: &str, kind: &str, payload: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO federation_outbox (destination, kind, payload) VALUES ($1, $2, $3)")
        .bind(destination)
        .bind(kind)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The oldest queued items for a destination: (id, kind, payload).
pub async fn queued<'c>(db: impl Executor<'c, Database = Any>, destination: &str, limit: i64) -> sqlx::Result<Vec<(i64, String, String)>> {
    let rows = sqlx::query("SELECT id, kind, payload FROM federation_outbox WHERE destination = $1 ORDER BY id LIMIT $2")
        .bind(destination)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

pub async fn dequeue_up_to<'c>(db: impl Executor<'c, Database = Any>, destination: &str, last_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2")
        .bind(destination)
        .bind(last_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Destinations with something queued.
pub async fn destinations_with_queue<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT destination FROM federation_outbox").fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

pub async fn save_invite_state(tx: &mut Tx, room_id: &str, user_id: &str, stripped_state: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO invite_states (room_id, user_id, stripped_state) VALUES ($1, $2, $3) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET stripped_state = excluded.stripped_state",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(stripped_state)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn invite_state<'c>(db: impl Executor<'c, Database = Any>, room_id: &str, user_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT stripped_state FROM invite_states WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}
