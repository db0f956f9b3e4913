//! Content reports (events, rooms, users) for server admins.

use sqlx::{Any, Executor, Row};

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

pub async fn insert_user_report<'c>(db: impl Executor<'c, Database = Any>, reporter: &str, target: &str, reason: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO user_reports (reporter, target_user_id, reason, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(reporter)
        .bind(target)
        .bind(reason)
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

/// An event report with what the admin API shows beside it: the reported event's sender
/// and JSON, when this server still has the event.
#[derive(Debug, Clone)]
pub struct EventReportRow {
    pub id: i64,
    pub reporter: String,
    pub room_id: String,
    pub event_id: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub received_ts: i64,
    pub sender: Option<String>,
    pub event_json: Option<String>,
}

const REPORT_COLUMNS: &str = "r.id, r.reporter, r.room_id, r.event_id, r.reason, r.score, r.created_ts, e.sender, e.json";

fn report_from_row(row: sqlx::any::AnyRow) -> EventReportRow {
    EventReportRow {
        id: row.get(0),
        reporter: row.get(1),
        room_id: row.get(2),
        event_id: row.get(3),
        reason: row.get(4),
        score: row.get(5),
        received_ts: row.get(6),
        sender: row.get(7),
        event_json: row.get(8),
    }
}

/// Which reports a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ReportListing {
    pub reporter: Option<String>,
    pub room_id: Option<String>,
    pub event_sender: Option<String>,
    /// Newest first (Synapse's default, `dir=b`).
    pub newest_first: bool,
    pub offset: i64,
    pub limit: i64,
}

/// A page of event and room reports and how many match in all.
pub async fn list_event_reports(db: &sqlx::AnyPool, listing: &ReportListing) -> sqlx::Result<(Vec<EventReportRow>, i64)> {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    for (column, value) in [("r.reporter", &listing.reporter), ("r.room_id", &listing.room_id), ("e.sender", &listing.event_sender)] {
        if let Some(value) = value {
            binds.push(value.clone());
            conditions.push(format!("{column} = ${}", binds.len()));
        }
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let from = "FROM reports r LEFT JOIN events e ON e.event_id = r.event_id";
    let count_sql = format!("SELECT COUNT(*) {from} {filter}");
    let mut count = sqlx::query(&count_sql);
    for bind in &binds {
        count = count.bind(bind.clone());
    }
    let total: i64 = count.fetch_one(db).await?.get(0);
    let order = if listing.newest_first { "DESC" } else { "ASC" };
    let page_sql = format!(
        "SELECT {REPORT_COLUMNS} {from} {filter} ORDER BY r.created_ts {order}, r.id {order} LIMIT ${} OFFSET ${}",
        binds.len() + 1,
        binds.len() + 2
    );
    let mut page = sqlx::query(&page_sql);
    for bind in &binds {
        page = page.bind(bind.clone());
    }
    let rows = page.bind(listing.limit).bind(listing.offset).fetch_all(db).await?;
    Ok((rows.into_iter().map(report_from_row).collect(), total))
}

pub async fn event_report<'c>(db: impl Executor<'c, Database = Any>, id: i64) -> sqlx::Result<Option<EventReportRow>> {
    let row = sqlx::query(&format!("SELECT {REPORT_COLUMNS} FROM reports r LEFT JOIN events e ON e.event_id = r.event_id WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(report_from_row))
}

/// Deletes a report; false when there was none.
pub async fn delete_event_report<'c>(db: impl Executor<'c, Database = Any>, id: i64) -> sqlx::Result<bool> {
    Ok(sqlx::query("DELETE FROM reports WHERE id = $1").bind(id).execute(db).await?.rows_affected() == 1)
}
