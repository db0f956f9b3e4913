//! Content reports for server admins.

use sqlx::{Any, Executor};

use super::now_ms;

pub async fn insert<'c>(
    db: impl Executor<'c, Database = Any>,
    reporter: &str,
    room_id: &str,
    event_id: Option<&str>,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO reports (reporter, room_id, event_id, reason, created_ts) VALUES ($1, $2, $3, $4, $5)")
        .bind(reporter)
        .bind(room_id)
        .bind(event_id)
        .bind(reason)
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}
