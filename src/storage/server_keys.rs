//! Other servers' signing keys, as fetched (directly or through a notary).

use sqlx::{Any, Executor, Row};

use super::now_ms;

pub async fn upsert<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    key_id: &str,
    public_key: &str,
    valid_until_ts: i64,
    response: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO server_signing_keys (server_name, key_id, public_key, valid_until_ts, response, fetched_ts) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (server_name, key_id) DO UPDATE SET \
         public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts, response = excluded.response, \
         fetched_ts = excluded.fetched_ts",
    )
    .bind(server_name)
    .bind(key_id)
    .bind(public_key)
    .bind(valid_until_ts)
    .bind(response)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// (public key, valid until) of a server's key.
pub async fn get<'c>(db: impl Executor<'c, Database = Any>, server_name: &str, key_id: &str) -> sqlx::Result<Option<(String, i64)>> {
    let row = sqlx::query("SELECT public_key, valid_until_ts FROM server_signing_keys WHERE server_name = $1 AND key_id = $2")
        .bind(server_name)
        .bind(key_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The stored key responses of a server valid at least until `min_valid_until`.
pub async fn responses<'c>(db: impl Executor<'c, Database = Any>, server_name: &str, min_valid_until: i64) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT response FROM server_signing_keys WHERE server_name = $1 AND valid_until_ts >= $2",
    )
    .bind(server_name)
    .bind(min_valid_until)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
