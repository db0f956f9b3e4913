//! Stored sync filters.

use sqlx::{Any, Executor, Row};

use super::Tx;

/// Stores a filter and returns its id (per user, counting up from 0).
pub async fn insert(tx: &mut Tx, user_id: &str, definition: &str) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    let id: i64 = row.get(0);
    sqlx::query("INSERT INTO filters (user_id, filter_id, definition) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(id)
        .bind(definition)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

pub async fn get<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, filter_id: i64) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT definition FROM filters WHERE user_id = $1 AND filter_id = $2")
        .bind(user_id)
        .bind(filter_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}
