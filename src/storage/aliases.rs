//! Room aliases (#alias:server → !room).

use sqlx::{Any, Executor, Row};

/// False when the alias already exists.
pub async fn insert<'c>(db: impl Executor<'c, Database = Any>, alias: &str, room_id: &str, creator: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING",
    )
    .bind(alias)
    .bind(room_id)
    .bind(creator)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// (room id, creator) of an alias.
pub async fn resolve<'c>(db: impl Executor<'c, Database = Any>, alias: &str) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn delete<'c>(db: impl Executor<'c, Database = Any>, alias: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM room_aliases WHERE alias = $1").bind(alias).execute(db).await?;
    Ok(())
}

pub async fn for_room<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
        .bind(room_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Points every alias of `old_room` at `new_room` (a room upgrade); how many moved.
pub async fn move_to_room<'c>(db: impl Executor<'c, Database = Any>, old_room: &str, new_room: &str) -> sqlx::Result<u64> {
    let result = sqlx::query("UPDATE room_aliases SET room_id = $1 WHERE room_id = $2").bind(new_room).bind(old_room).execute(db).await?;
    Ok(result.rows_affected())
}
