//! Users, devices, access tokens and user-interactive-auth sessions.

use sqlx::{Any, Executor, Row};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub is_guest: bool,
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    pub locked: bool,
    pub suspended: bool,
    /// Set for tokens issued with a refresh token.
    pub expires_ts: Option<i64>,
    /// False until the token's first use (then the refresh token it replaced is deleted).
    pub used: bool,
    pub refresh_token_hash: Option<String>,
}

pub async fn user_exists<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?
        .is_some())
}

/// Inserts a user; returns false when the id is taken.
pub async fn create_user<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    password_hash: Option<&str>,
    is_admin: bool,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO users (user_id, password_hash, is_admin, created_ts) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(password_hash)
    .bind(is_admin as i64)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Inserts a guest account (no password); returns false when the id is taken.
pub async fn create_guest<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO users (user_id, password_hash, is_admin, created_ts, is_guest) VALUES ($1, NULL, 0, $2, 1) \
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Makes a guest account a full one with a password; false when it is not a guest's.
pub async fn upgrade_guest(tx: &mut super::Tx, user_id: &str, password_hash: &str) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE users SET is_guest = 0, password_hash = $2 WHERE user_id = $1 AND is_guest = 1")
        .bind(user_id)
        .bind(password_hash)
        .execute(&mut **tx)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get_user<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Option<UserRow>> {
    let row = sqlx::query(
        "SELECT user_id, password_hash, is_admin, deactivated, displayname, avatar_url, is_guest \
         FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| UserRow {
        user_id: row.get(0),
        password_hash: row.get(1),
        is_admin: row.get::<i64, _>(2) != 0,
        deactivated: row.get::<i64, _>(3) != 0,
        displayname: row.get(4),
        avatar_url: row.get(5),
        is_guest: row.get::<i64, _>(6) != 0,
    }))
}

pub async fn set_password_hash<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    hash: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn deactivate<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_displayname<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    displayname: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET displayname = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(displayname)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_avatar_url<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    avatar_url: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET avatar_url = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(avatar_url)
        .execute(db)
        .await?;
    Ok(())
}

/// Creates the device if new (keeping an existing one's name), so re-login with the same
/// device id reuses it as the spec asks.
pub async fn upsert_device<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET \
         display_name = COALESCE(excluded.display_name, devices.display_name)",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(display_name)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn list_devices<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Vec<DeviceRow>> {
    let rows = sqlx::query(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices \
         WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(device_from_row).collect())
}

pub async fn get_device<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<Option<DeviceRow>> {
    let row = sqlx::query(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices \
         WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(device_from_row))
}

fn device_from_row(row: sqlx::any::AnyRow) -> DeviceRow {
    DeviceRow {
        device_id: row.get(0),
        display_name: row.get(1),
        last_seen_ts: row.get(2),
        last_seen_ip: row.get(3),
    }
}

pub async fn rename_device<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> sqlx::Result<bool> {
    let result = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn touch_device<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    device_id: &str,
    ip: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms())
        .bind(ip)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a device with its access tokens, pushers and keys; the user's device list changes.
pub async fn delete_device(tx: &mut super::Tx, user_id: &str, device_id: &str) -> sqlx::Result<()> {
    super::e2ee::delete_device_keys(tx, user_id, device_id).await?;
    super::e2ee::mark_device_list_change(tx, user_id).await?;
    sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    delete_device_tokens(tx, user_id, device_id).await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete_all_devices(tx: &mut super::Tx, user_id: &str, except_device: Option<&str>) -> sqlx::Result<()> {
    let keep = except_device.unwrap_or("");
    for table in ["device_keys", "one_time_keys", "fallback_keys"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1 AND device_id <> $2"))
            .bind(user_id)
            .bind(keep)
            .execute(&mut **tx)
            .await?;
    }
    super::e2ee::mark_device_list_change(tx, user_id).await?;
    sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    for table in ["access_tokens", "refresh_tokens"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1 AND device_id <> $2"))
            .bind(user_id)
            .bind(keep)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn insert_token<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
    user_id: &str,
    device_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a device's access and refresh tokens (a new login on it, or its deletion).
pub async fn delete_device_tokens(tx: &mut super::Tx, user_id: &str, device_id: &str) -> sqlx::Result<()> {
    for table in ["access_tokens", "refresh_tokens"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"))
            .bind(user_id)
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// An access token that expires, issued with the refresh token `refresh_hash`; unused yet.
pub async fn insert_refreshable_token(
    tx: &mut super::Tx,
    token_hash: &str,
    user_id: &str,
    device_id: &str,
    expires_ts: i64,
    refresh_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_hash, used) \
         VALUES ($1, $2, $3, $4, $5, $6, 0)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(device_id)
    .bind(now_ms())
    .bind(expires_ts)
    .bind(refresh_hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn insert_refresh_token(tx: &mut super::Tx, token_hash: &str, user_id: &str, device_id: &str, prev_hash: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, user_id, device_id, prev_hash, created_ts) VALUES ($1, $2, $3, $4, $5)")
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(prev_hash)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// (user, device, the refresh token it replaced) of a refresh token.
pub async fn refresh_token_owner<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> sqlx::Result<Option<(String, String, Option<String>)>> {
    let row = sqlx::query("SELECT user_id, device_id, prev_hash FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
}

pub async fn delete_refresh_token(tx: &mut super::Tx, token_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1").bind(token_hash).execute(&mut **tx).await?;
    Ok(())
}

/// Deletes what an earlier refresh with this token issued: a retried refresh replaces the
/// pair the lost answer carried.
pub async fn delete_refresh_children(tx: &mut super::Tx, token_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE refresh_token_hash IN (SELECT token_hash FROM refresh_tokens WHERE prev_hash = $1)")
        .bind(token_hash)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE prev_hash = $1").bind(token_hash).execute(&mut **tx).await?;
    Ok(())
}

/// The first use of a refreshed access token: it is marked used, and the refresh token that
/// was traded for it is deleted.
pub async fn mark_token_used(tx: &mut super::Tx, token_hash: &str, refresh_hash: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE access_tokens SET used = 1 WHERE token_hash = $1").bind(token_hash).execute(&mut **tx).await?;
    if let Some(refresh_hash) = refresh_hash {
        sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = (SELECT prev_hash FROM refresh_tokens WHERE token_hash = $1)")
            .bind(refresh_hash)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn token_owner<'c>(
    db: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> sqlx::Result<Option<TokenOwner>> {
    let row = sqlx::query(
        "SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, t.expires_ts, t.used, t.refresh_token_hash, u.is_guest, \
         u.locked, u.suspended FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| TokenOwner {
        user_id: row.get(0),
        device_id: row.get(1),
        is_admin: row.get::<i64, _>(2) != 0,
        deactivated: row.get::<i64, _>(3) != 0,
        expires_ts: row.get(4),
        used: row.get::<i64, _>(5) != 0,
        refresh_token_hash: row.get(6),
        is_guest: row.get::<i64, _>(7) != 0,
        locked: row.get::<i64, _>(8) != 0,
        suspended: row.get::<i64, _>(9) != 0,
    }))
}

/// A local account's moderation flags: (locked, suspended); None for no such account.
pub async fn moderation<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Option<(bool, bool)>> {
    let row = sqlx::query("SELECT locked, suspended FROM users WHERE user_id = $1").bind(user_id).fetch_optional(db).await?;
    Ok(row.map(|row| (row.get::<i64, _>(0) != 0, row.get::<i64, _>(1) != 0)))
}

pub async fn set_locked(tx: &mut super::Tx, user_id: &str, locked: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET locked = $2 WHERE user_id = $1").bind(user_id).bind(locked as i64).execute(&mut **tx).await?;
    Ok(())
}

pub async fn set_suspended(tx: &mut super::Tx, user_id: &str, suspended: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET suspended = $2 WHERE user_id = $1").bind(user_id).bind(suspended as i64).execute(&mut **tx).await?;
    Ok(())
}

pub async fn delete_token<'c>(db: impl Executor<'c, Database = Any>, token_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1").bind(token_hash).execute(db).await?;
    Ok(())
}

/// A UIA session: (completed stages, the operation it was started for).
/// How long a UIA session lives (Synapse's 48 hours): a kept registration session does
/// not answer for its user forever.
const UIA_SESSION_LIFETIME_MS: i64 = 48 * 3600 * 1000;

pub async fn uia_session<'c>(db: impl Executor<'c, Database = Any>, session_id: &str) -> sqlx::Result<Option<(Vec<String>, String)>> {
    let row = sqlx::query("SELECT completed, operation FROM uia_sessions WHERE session_id = $1 AND created_ts > $2")
        .bind(session_id)
        .bind(now_ms() - UIA_SESSION_LIFETIME_MS)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| {
        let completed: String = row.get(0);
        (serde_json::from_str(&completed).unwrap_or_default(), row.get(1))
    }))
}

pub async fn save_uia_session<'c>(
    db: impl Executor<'c, Database = Any>,
    session_id: &str,
    completed: &[String],
    operation: &str,
) -> sqlx::Result<()> {
    let completed = serde_json::to_string(completed).unwrap_or_else(|_| "[]".to_owned());
    sqlx::query(
        "INSERT INTO uia_sessions (session_id, completed, created_ts, operation) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (session_id) DO UPDATE SET completed = excluded.completed",
    )
    .bind(session_id)
    .bind(completed)
    .bind(now_ms())
    .bind(operation)
    .execute(db)
    .await?;
    Ok(())
}

/// The parameters kept with a UIA session (`{}` for none or no such session).
pub async fn uia_params<'c>(db: impl Executor<'c, Database = Any>, session_id: &str) -> sqlx::Result<serde_json::Value> {
    let row = sqlx::query("SELECT params FROM uia_sessions WHERE session_id = $1 AND created_ts > $2")
        .bind(session_id)
        .bind(now_ms() - UIA_SESSION_LIFETIME_MS)
        .fetch_optional(db)
        .await?;
    Ok(row.and_then(|row| serde_json::from_str(&row.get::<String, _>(0)).ok()).unwrap_or_else(|| serde_json::json!({})))
}

/// Keeps parameters with an existing UIA session.
pub async fn set_uia_params<'c>(db: impl Executor<'c, Database = Any>, session_id: &str, params: &serde_json::Value) -> sqlx::Result<()> {
    sqlx::query("UPDATE uia_sessions SET params = $2 WHERE session_id = $1").bind(session_id).bind(params.to_string()).execute(db).await?;
    Ok(())
}

pub async fn delete_uia_session<'c>(db: impl Executor<'c, Database = Any>, session_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1").bind(session_id).execute(db).await?;
    Ok(())
}

/// Marks a user as erased (deactivated with `erase: true`).
pub async fn mark_erased<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO erased_users (user_id, erased_ts) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

pub async fn erased_users<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT user_id FROM erased_users").fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Stores an OpenID token; expired ones are dropped on the way.
pub async fn insert_openid_token(tx: &mut super::Tx, token_hash: &str, user_id: &str, expires_ts: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM openid_tokens WHERE expires_ts < $1").bind(now_ms()).execute(&mut **tx).await?;
    sqlx::query("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)")
        .bind(token_hash)
        .bind(user_id)
        .bind(expires_ts)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The user of an OpenID token that has not expired.
pub async fn openid_token_owner<'c>(db: impl Executor<'c, Database = Any>, token_hash: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts >= $2")
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// One account as the admin API shows it.
#[derive(Debug, Clone)]
pub struct AdminUserRow {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    pub locked: bool,
    pub suspended: bool,
    pub erased: bool,
    pub created_ts: i64,
    /// The newest `last_seen_ts` of the account's devices.
    pub last_seen_ts: Option<i64>,
    /// The application service that registered the account.
    pub appservice_id: Option<String>,
}

const ADMIN_USER_COLUMNS: &str = "u.user_id, u.displayname, u.avatar_url, u.is_admin, u.is_guest, u.deactivated, u.locked, \
     u.suspended, CASE WHEN EXISTS (SELECT 1 FROM erased_users e WHERE e.user_id = u.user_id) THEN 1 ELSE 0 END, u.created_ts, \
     (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id), u.appservice_id";

fn admin_user_from_row(row: sqlx::any::AnyRow) -> AdminUserRow {
    AdminUserRow {
        user_id: row.get(0),
        displayname: row.get(1),
        avatar_url: row.get(2),
        is_admin: row.get::<i64, _>(3) != 0,
        is_guest: row.get::<i64, _>(4) != 0,
        deactivated: row.get::<i64, _>(5) != 0,
        locked: row.get::<i64, _>(6) != 0,
        suspended: row.get::<i64, _>(7) != 0,
        erased: row.get::<i64, _>(8) != 0,
        created_ts: row.get(9),
        last_seen_ts: row.get(10),
        appservice_id: row.get(11),
    }
}

pub async fn admin_user<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Option<AdminUserRow>> {
    let row = sqlx::query(&format!("SELECT {ADMIN_USER_COLUMNS} FROM users u WHERE u.user_id = $1")).bind(user_id).fetch_optional(db).await?;
    Ok(row.map(admin_user_from_row))
}

/// Which accounts an admin listing shows, in which order.
#[derive(Debug, Clone, Default)]
pub struct UserListing {
    /// Part of the user id.
    pub user_id: Option<String>,
    /// Part of the user id or of the display name (case-insensitive, ASCII).
    pub name: Option<String>,
    pub guests: bool,
    pub deactivated: bool,
    pub locked: bool,
    pub admins: Option<bool>,
    /// A column of `AdminUserRow` to sort by (validated by the caller's whitelist).
    pub order_by: &'static str,
    pub descending: bool,
    pub offset: i64,
    pub limit: i64,
}

/// A page of accounts and how many match in all.
pub async fn list_users(db: &sqlx::AnyPool, listing: &UserListing) -> sqlx::Result<(Vec<AdminUserRow>, i64)> {
    fn like(text: &str) -> String {
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    }
    let mut conditions = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    if let Some(part) = &listing.user_id {
        binds.push(like(part));
        conditions.push(format!("lower(u.user_id) LIKE ${} ESCAPE '\\'", binds.len()));
    }
    if let Some(part) = &listing.name {
        binds.push(like(part));
        let n = binds.len();
        conditions.push(format!("(lower(u.user_id) LIKE ${n} ESCAPE '\\' OR lower(COALESCE(u.displayname, '')) LIKE ${n} ESCAPE '\\')"));
    }
    if !listing.guests {
        conditions.push("u.is_guest = 0".into());
    }
    if !listing.deactivated {
        conditions.push("u.deactivated = 0".into());
    }
    if !listing.locked {
        conditions.push("u.locked = 0".into());
    }
    match listing.admins {
        Some(true) => conditions.push("u.is_admin = 1".into()),
        Some(false) => conditions.push("u.is_admin = 0".into()),
        None => {}
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let count_sql = format!("SELECT COUNT(*) FROM users u {filter}");
    let mut count = sqlx::query(&count_sql);
    for bind in &binds {
        count = count.bind(bind.clone());
    }
    let total: i64 = count.fetch_one(db).await?.get(0);
    let sql = format!(
        "SELECT {ADMIN_USER_COLUMNS} FROM users u {filter} ORDER BY {} {direction}, u.user_id {direction} LIMIT ${} OFFSET ${}",
        listing.order_by,
        binds.len() + 1,
        binds.len() + 2
    );
    let mut page = sqlx::query(&sql);
    for bind in &binds {
        page = page.bind(bind.clone());
    }
    let rows = page.bind(listing.limit).bind(listing.offset).fetch_all(db).await?;
    Ok((rows.into_iter().map(admin_user_from_row).collect(), total))
}

/// Brings a deactivated account back, with a new password.
pub async fn reactivate(tx: &mut super::Tx, user_id: &str, password_hash: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET deactivated = 0, password_hash = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(password_hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_admin(tx: &mut super::Tx, user_id: &str, is_admin: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET is_admin = $2 WHERE user_id = $1").bind(user_id).bind(is_admin as i64).execute(&mut **tx).await?;
    Ok(())
}
