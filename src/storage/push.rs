//! Push actions per (recipient, event) and pushers.

use sqlx::{Any, Executor, Row};

use super::{now_ms, Tx};

pub struct NewPushAction<'a> {
    pub user_id: &'a str,
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub stream_ordering: i64,
    pub thread_id: &'a str,
    pub notify: bool,
    pub highlight: bool,
    pub actions: &'a str,
}

/// Stores the push actions of one event for its recipients, in one statement per 100.
pub async fn insert_actions(tx: &mut Tx, actions: &[NewPushAction<'_>]) -> sqlx::Result<()> {
    let now = now_ms();
    for chunk in actions.chunks(100) {
        let sql = format!(
            "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering, thread_id, notify, highlight, actions, ts) \
             VALUES {} ON CONFLICT DO NOTHING",
            super::values_list(chunk.len(), 9, 1)
        );
        let mut query = sqlx::query(&sql);
        for action in chunk {
            query = query
                .bind(action.user_id)
                .bind(action.event_id)
                .bind(action.room_id)
                .bind(action.stream_ordering)
                .bind(action.thread_id)
                .bind(action.notify as i64)
                .bind(action.highlight as i64)
                .bind(action.actions)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The stream position a user has read up to in a room for a thread ('main' or a root):
/// the newest of their unthreaded receipt, their receipt for that thread, and their join
/// (nothing from before joining counts as unread, the invite included).
/// (The larger of the two is an aggregate MAX over both: SQLite's two-argument MAX is
/// PostgreSQL's GREATEST, and neither engine has the other's.)
const READ_UP_TO: &str = "COALESCE((SELECT MAX(p) FROM ( \
     SELECT (SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e ON e.event_id = r.event_id \
       WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private') \
       AND (r.thread_id = '' OR r.thread_id = a.thread_id)) AS p \
     UNION ALL SELECT (SELECT m.stream_ordering FROM room_memberships m WHERE m.room_id = a.room_id AND m.user_id = a.user_id \
       AND m.membership = 'join')) read_up_to), 0)";

/// Unread (notification, highlight) counts per thread in a room.
pub async fn unread_counts<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    room_id: &str,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    let rows = sqlx::query(&format!(
        "SELECT a.thread_id, SUM(a.notify), SUM(a.highlight) FROM event_push_actions a \
         WHERE a.user_id = $1 AND a.room_id = $2 AND a.stream_ordering > {READ_UP_TO} GROUP BY a.thread_id"
    ))
    .bind(user_id)
    .bind(room_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// Rooms with unread notifications for the user: the badge count pushed to phones.
pub async fn rooms_with_unread<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<i64> {
    let row = sqlx::query(&format!(
        "SELECT COUNT(DISTINCT a.room_id) FROM event_push_actions a \
         WHERE a.user_id = $1 AND a.notify = 1 AND a.stream_ordering > {READ_UP_TO}"
    ))
    .bind(user_id)
    .fetch_one(db)
    .await?;
    Ok(row.get(0))
}

pub struct NotificationRow {
    pub event_id: String,
    pub room_id: String,
    pub stream_ordering: i64,
    pub actions: String,
    pub ts: i64,
    pub read: bool,
}

/// The user's notifications, newest first, before `before`.
pub async fn notifications<'c>(
    db: impl Executor<'c, Database = Any>,
    user_id: &str,
    before: i64,
    only_highlight: bool,
    limit: i64,
) -> sqlx::Result<Vec<NotificationRow>> {
    let rows = sqlx::query(&format!(
        "SELECT a.event_id, a.room_id, a.stream_ordering, a.actions, a.ts, \
         CASE WHEN a.stream_ordering <= {READ_UP_TO} THEN 1 ELSE 0 END FROM event_push_actions a \
         WHERE a.user_id = $1 AND a.stream_ordering < $2 AND (a.notify = 1 OR a.highlight = 1) \
         AND ($3 = 0 OR a.highlight = 1) ORDER BY a.stream_ordering DESC LIMIT $4"
    ))
    .bind(user_id)
    .bind(before)
    .bind(only_highlight as i64)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| NotificationRow {
            event_id: row.get(0),
            room_id: row.get(1),
            stream_ordering: row.get(2),
            actions: row.get(3),
            ts: row.get(4),
            read: row.get::<i64, _>(5) != 0,
        })
        .collect())
}

pub async fn upsert_pusher(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
    app_id: &str,
    pushkey: &str,
    pusher: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO pushers (user_id, app_id, pushkey, pusher, pushkey_ts, device_id) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET pusher = excluded.pusher, device_id = excluded.device_id",
    )
    .bind(user_id)
    .bind(app_id)
    .bind(pushkey)
    .bind(pusher)
    .bind(now_ms() / 1000)
    .bind(device_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes the pusher with this app id and pushkey from every user but `keep_user`.
pub async fn delete_pusher_for_others(tx: &mut Tx, keep_user: &str, app_id: &str, pushkey: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
        .bind(app_id)
        .bind(pushkey)
        .bind(keep_user)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete_pusher<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, app_id: &str, pushkey: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(db)
        .await?;
    Ok(())
}

/// (pusher JSON, pushkey_ts) of a user's pushers.
/// The pushers of several users in one query: (user_id, pusher JSON, pushkey_ts).
pub async fn pushers_of_users<'c>(db: impl Executor<'c, Database = Any>, user_ids: &[&str]) -> sqlx::Result<Vec<(String, String, i64)>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT user_id, pusher, pushkey_ts FROM pushers WHERE user_id IN ({}) ORDER BY user_id, app_id, pushkey",
        super::in_list(user_ids.len(), 1)
    );
    let mut query = sqlx::query(&sql);
    for user in user_ids {
        query = query.bind(*user);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

pub async fn pushers<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT pusher, pushkey_ts FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey")
        .bind(user_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}
