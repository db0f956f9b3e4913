//! Device keys, one-time and fallback keys, cross-signing keys and signatures, device-list
//! change stream, and room key backups.

use sqlx::{Any, Executor, Row};

use super::Tx;

pub async fn set_device_keys(tx: &mut Tx, user_id: &str, device_id: &str, key_json: &str) -> sqlx::Result<bool> {
    let existing = sqlx::query("SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| row.get::<String, _>(0));
    if existing.as_deref() == Some(key_json) {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(key_json)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// (device_id, key JSON) of a user's devices with keys.
pub async fn device_keys<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT device_id, key_json FROM device_keys WHERE user_id = $1 ORDER BY device_id")
        .bind(user_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn delete_device_keys(tx: &mut Tx, user_id: &str, device_id: &str) -> sqlx::Result<()> {
    for table in ["device_keys", "one_time_keys", "fallback_keys"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"))
            .bind(user_id)
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored JSON of a one-time key id, if any.
pub async fn one_time_key(tx: &mut Tx, user_id: &str, device_id: &str, key_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3")
        .bind(user_id)
        .bind(device_id)
        .bind(key_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn add_one_time_key(tx: &mut Tx, user_id: &str, device_id: &str, key_id: &str, algorithm: &str, key_json: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, key_json) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(key_id)
    .bind(algorithm)
    .bind(key_json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts of unclaimed one-time keys per algorithm.
pub async fn one_time_key_counts<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, device_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A device's one-time key counts per algorithm and its unused fallback key algorithms, in
/// one statement (every sync response carries both).
pub async fn key_state<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<(Vec<(String, i64)>, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT 'otk', algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm          UNION ALL SELECT 'fallback', algorithm, 0 FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(db)
    .await?;
    let (mut counts, mut fallback) = (Vec::new(), Vec::new());
    for row in rows {
        match row.get::<String, _>(0).as_str() {
            "otk" => counts.push((row.get(1), row.get(2))),
            _ => fallback.push(row.get(1)),
        }
    }
    fallback.sort();
    Ok((counts, fallback))
}

/// Takes one one-time key of the algorithm (removing it), in the caller's write transaction:
/// each key is handed out exactly once.
pub async fn take_one_time_key(tx: &mut Tx, user_id: &str, device_id: &str, algorithm: &str) -> sqlx::Result<Option<(String, String)>> {
    let oldest = sqlx::query(
        "SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(key_id) = oldest.map(|row| row.get::<String, _>(0)) else { return Ok(None) };
    let row = sqlx::query("DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3 RETURNING key_json")
        .bind(user_id)
        .bind(device_id)
        .bind(&key_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some((key_id, row.get(0))))
}

pub async fn set_fallback_key(tx: &mut Tx, user_id: &str, device_id: &str, algorithm: &str, key_id: &str, key_json: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0) \
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, \
         used = CASE WHEN fallback_keys.key_id = excluded.key_id THEN fallback_keys.used ELSE 0 END",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .bind(key_id)
    .bind(key_json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The fallback key of the algorithm, marking it used.
pub async fn use_fallback_key(tx: &mut Tx, user_id: &str, device_id: &str, algorithm: &str) -> sqlx::Result<Option<(String, String)>> {
    let row = sqlx::query(
        "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn set_cross_signing_key(tx: &mut Tx, user_id: &str, key_type: &str, key_json: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(key_type)
    .bind(key_json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn cross_signing_key<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, key_type: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT key_json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2")
        .bind(user_id)
        .bind(key_type)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn add_signature(tx: &mut Tx, target_user: &str, target_key: &str, signer_user: &str, signer_key_id: &str, signature: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (target_user, target_key, signer_user, signer_key_id) DO UPDATE SET signature = excluded.signature",
    )
    .bind(target_user)
    .bind(target_key)
    .bind(signer_user)
    .bind(signer_key_id)
    .bind(signature)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Extra signatures on a key: (signer user, signer key id, signature).
pub async fn signatures_for<'c>(db: impl Executor<'c, Database = Any>, target_user: &str, target_key: &str) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query("SELECT signer_user, signer_key_id, signature FROM key_signatures WHERE target_user = $1 AND target_key = $2")
        .bind(target_user)
        .bind(target_key)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

pub async fn mark_device_list_change(tx: &mut Tx, user_id: &str) -> sqlx::Result<i64> {
    let row = sqlx::query("INSERT INTO device_list_changes (user_id) VALUES ($1) RETURNING stream_ordering")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.get(0))
}

pub async fn max_device_list_position<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_ordering), 0) FROM device_list_changes").fetch_one(db).await?;
    Ok(row.get(0))
}

/// Users whose device lists changed in `(after, up_to]` among the given candidates' rooms:
/// the changers who share a room with `user_id`, and the user themself.
pub async fn changed_users_between<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    after: i64,
    up_to: i64,
) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT c.user_id FROM device_list_changes c WHERE c.stream_ordering > $2 AND c.stream_ordering <= $3 \
         AND (c.user_id = $1 OR c.user_id IN (SELECT other.user_id FROM room_memberships mine \
           JOIN room_memberships other ON other.room_id = mine.room_id WHERE mine.user_id = $1 \
           AND mine.membership = 'join' AND other.membership = 'join'))",
    )
    .bind(user_id)
    .bind(after)
    .bind(up_to)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

// Room key backup.

pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

pub async fn create_backup(tx: &mut Tx, user_id: &str, algorithm: &str, auth_data: &str) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    let version: i64 = row.get(0);
    sqlx::query("INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)")
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut **tx)
        .await?;
    Ok(version)
}

/// A live backup version (or the latest when `version` is None).
pub async fn backup<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, version: Option<i64>) -> sqlx::Result<Option<BackupVersion>> {
    let row = sqlx::query(
        "SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND deleted = 0 \
         AND ($2 IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| BackupVersion { version: row.get(0), algorithm: row.get(1), auth_data: row.get(2), etag: row.get(3) }))
}

pub async fn update_backup(tx: &mut Tx, user_id: &str, version: i64, auth_data: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete_backup(tx: &mut Tx, user_id: &str, version: i64) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0")
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn bump_backup_etag(tx: &mut Tx, user_id: &str, version: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub struct BackupKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

pub async fn backup_key(tx: &mut Tx, user_id: &str, version: i64, room_id: &str, session_id: &str) -> sqlx::Result<Option<BackupKey>> {
    let row = sqlx::query(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM backup_keys \
         WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(backup_key_from_row))
}

fn backup_key_from_row(row: sqlx::any::AnyRow) -> BackupKey {
    BackupKey {
        room_id: row.get(0),
        session_id: row.get(1),
        first_message_index: row.get(2),
        forwarded_count: row.get(3),
        is_verified: row.get::<i64, _>(4) != 0,
        session_data: row.get(5),
    }
}

pub async fn put_backup_key(tx: &mut Tx, user_id: &str, version: i64, key: &BackupKey) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
         first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
         is_verified = excluded.is_verified, session_data = excluded.session_data",
    )
    .bind(user_id)
    .bind(version)
    .bind(&key.room_id)
    .bind(&key.session_id)
    .bind(key.first_message_index)
    .bind(key.forwarded_count)
    .bind(key.is_verified as i64)
    .bind(&key.session_data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Keys of a backup, optionally of one room and one session.
pub async fn backup_keys<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> sqlx::Result<Vec<BackupKey>> {
    let rows = sqlx::query(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM backup_keys \
         WHERE user_id = $1 AND version = $2 AND ($3 IS NULL OR room_id = $3) AND ($4 IS NULL OR session_id = $4) \
         ORDER BY room_id, session_id",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(backup_key_from_row).collect())
}

pub async fn delete_backup_keys(tx: &mut Tx, user_id: &str, version: i64, room_id: Option<&str>, session_id: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND ($3 IS NULL OR room_id = $3) \
         AND ($4 IS NULL OR session_id = $4)",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn count_backup_keys<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, version: i64) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(db)
        .await?;
    Ok(row.get(0))
}

/// The user's two newest device-list positions: (latest, the one before it).
pub async fn user_device_list_positions<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<(i64, Option<i64>)> {
    let rows = sqlx::query("SELECT stream_ordering FROM device_list_changes WHERE user_id = $1 ORDER BY stream_ordering DESC LIMIT 2")
        .bind(user_id)
        .fetch_all(db)
        .await?;
    let positions: Vec<i64> = rows.into_iter().map(|row| row.get(0)).collect();
    Ok((positions.first().copied().unwrap_or(0), positions.get(1).copied()))
}
