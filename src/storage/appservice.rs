//! Application services: each one's position in the event stream, its unacknowledged
//! transactions, the rooms it lists in its networks' directories.

use sqlx::{Any, Executor, Row};

use super::Tx;

/// Where a service's streams stand: the last position considered of each, and the last
/// transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    pub events: i64,
    pub to_device: i64,
    pub device_lists: i64,
    pub last_txn_id: i64,
}

/// Records where a service seen for the first time starts, `start` (it is not sent the
/// past), and returns its positions.
pub async fn start_positions(tx: &mut Tx, appservice_id: &str, start: Positions) -> sqlx::Result<Positions> {
    sqlx::query(
        "INSERT INTO appservice_positions (appservice_id, stream_position, last_txn_id, to_device_position, device_list_position) \
         VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(appservice_id)
    .bind(start.events)
    .bind(start.to_device)
    .bind(start.device_lists)
    .execute(&mut **tx)
    .await?;
    read_positions(&mut **tx, appservice_id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The service's positions, None before its first start.
pub async fn read_positions<'c>(db: impl Executor<'c, Database = Any>, appservice_id: &str) -> sqlx::Result<Option<Positions>> {
    let row = sqlx::query(
        "SELECT stream_position, to_device_position, device_list_position, last_txn_id FROM appservice_positions WHERE appservice_id = $1",
    )
    .bind(appservice_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Positions { events: row.get(0), to_device: row.get(1), device_lists: row.get(2), last_txn_id: row.get(3) }))
}

pub async fn set_positions(tx: &mut Tx, appservice_id: &str, positions: Positions) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE appservice_positions SET stream_position = $2, to_device_position = $3, device_list_position = $4, last_txn_id = $5 \
         WHERE appservice_id = $1",
    )
    .bind(appservice_id)
    .bind(positions.events)
    .bind(positions.to_device)
    .bind(positions.device_lists)
    .bind(positions.last_txn_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One to-device message: (position, recipient user, recipient device, sender, type, content).
pub type StreamToDevice = (i64, String, String, String, String, String);

/// To-device messages after `position`, oldest first.
pub async fn to_device_after<'c>(db: impl Executor<'c, Database = Any>, position: i64, limit: i64) -> sqlx::Result<Vec<StreamToDevice>> {
    let rows = sqlx::query(
        "SELECT stream_ordering, user_id, device_id, sender, event_type, content FROM to_device WHERE stream_ordering > $1 \
         ORDER BY stream_ordering LIMIT $2",
    )
    .bind(position)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5))).collect())
}

/// Device-list changes after `position`, oldest first: (position, user).
pub async fn device_list_changes_after<'c>(db: impl Executor<'c, Database = Any>, position: i64, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query("SELECT stream_ordering, user_id FROM device_list_changes WHERE stream_ordering > $1 ORDER BY stream_ordering LIMIT $2")
        .bind(position)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn insert_txn(tx: &mut Tx, appservice_id: &str, txn_id: i64, body: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO appservice_txns (appservice_id, txn_id, body) VALUES ($1, $2, $3)")
        .bind(appservice_id)
        .bind(txn_id)
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The oldest transaction the service has not acknowledged: (txn id, body).
pub async fn oldest_txn<'c>(db: impl Executor<'c, Database = Any>, appservice_id: &str) -> sqlx::Result<Option<(i64, String)>> {
    let row = sqlx::query("SELECT txn_id, body FROM appservice_txns WHERE appservice_id = $1 ORDER BY txn_id LIMIT 1")
        .bind(appservice_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

pub async fn delete_txn(tx: &mut Tx, appservice_id: &str, txn_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM appservice_txns WHERE appservice_id = $1 AND txn_id = $2")
        .bind(appservice_id)
        .bind(txn_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One event of the stream: (position, event id, room id, PDU JSON).
pub type StreamEvent = (i64, String, String, String);

/// Timeline events after `position`, oldest first.
pub async fn events_after<'c>(db: impl Executor<'c, Database = Any>, position: i64, limit: i64) -> sqlx::Result<Vec<StreamEvent>> {
    let rows = sqlx::query("SELECT stream_ordering, event_id, room_id, json FROM events WHERE stream_ordering > $1 ORDER BY stream_ordering LIMIT $2")
        .bind(position)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))).collect())
}

pub async fn set_listed<'c>(
    db: impl Executor<'c, Database = Any>,
    appservice_id: &str,
    network_id: &str,
    room_id: &str,
    listed: bool,
) -> sqlx::Result<()> {
    let query = if listed {
        "INSERT INTO appservice_room_list (appservice_id, network_id, room_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM appservice_room_list WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3"
    };
    sqlx::query(query).bind(appservice_id).bind(network_id).bind(room_id).execute(db).await?;
    Ok(())
}

/// Rooms listed in one network's directory (`third_party_instance_id` "{service}|{network}").
pub async fn listed_rooms<'c>(db: impl Executor<'c, Database = Any>, appservice_id: &str, network_id: &str) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT room_id FROM appservice_room_list WHERE appservice_id = $1 AND network_id = $2 ORDER BY room_id")
        .bind(appservice_id)
        .bind(network_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Every room listed in any network's directory.
pub async fn all_listed_rooms<'c>(db: impl Executor<'c, Database = Any>) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT room_id FROM appservice_room_list ORDER BY room_id").fetch_all(db).await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

pub async fn set_user_appservice<'c>(db: impl Executor<'c, Database = Any>, user_id: &str, appservice_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET appservice_id = $2 WHERE user_id = $1").bind(user_id).bind(appservice_id).execute(db).await?;
    Ok(())
}

pub async fn user_appservice<'c>(db: impl Executor<'c, Database = Any>, user_id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query("SELECT appservice_id FROM users WHERE user_id = $1").bind(user_id).fetch_optional(db).await?;
    Ok(row.and_then(|row| row.get(0)))
}
