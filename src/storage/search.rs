//! The full-text index of events (`event_search`, SQLite FTS5): written with the event,
//! emptied on redaction, queried with bm25 ranking or by recency.

use sqlx::{Any, Executor, Row};

use super::{
    events::{event_from_row, EventRow, EVENT_COLUMNS},
    in_list, Tx,
};

/// The searchable text of one event, by key (`content.body`, `content.name`,
/// `content.topic`), already segmented for the tokenizer.
#[derive(Debug, Default, PartialEq)]
pub struct SearchDocument {
    pub body: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
}

pub async fn insert(tx: &mut Tx, stream_ordering: i64, document: &SearchDocument) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO event_search (rowid, body, name, topic) VALUES ($1, $2, $3, $4)")
        .bind(stream_ordering)
        .bind(document.body.as_deref())
        .bind(document.name.as_deref())
        .bind(document.topic.as_deref())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Drops an event from the index (it was redacted).
pub async fn remove(tx: &mut Tx, stream_ordering: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM event_search WHERE rowid = $1").bind(stream_ordering).execute(&mut **tx).await?;
    Ok(())
}

/// Where a page of results starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cursor {
    /// Best ranked first, skipping this many matches.
    Rank { offset: i64 },
    /// Newest first, below this stream position (None: from the newest).
    Recent { before: Option<i64> },
}

/// Matches of an FTS5 query in `room_ids`, from `cursor`, at most `limit`, each with its
/// event and its bm25 score (higher is better).
pub async fn search<'c>(
    db: impl Executor<'c, Database = Any>,
    fts_query: &str,
    room_ids: &[String],
    cursor: Cursor,
    limit: i64,
) -> sqlx::Result<Vec<(EventRow, f64)>> {
    if room_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rooms = in_list(room_ids.len(), 2);
    let next = room_ids.len() + 2;
    let (condition, order) = match cursor {
        Cursor::Rank { .. } => (String::new(), format!("ORDER BY score LIMIT ${next} OFFSET ${}", next + 1)),
        Cursor::Recent { before: Some(_) } => (format!("AND event_search.rowid < ${}", next + 1), format!("ORDER BY event_search.rowid DESC LIMIT ${next}")),
        Cursor::Recent { before: None } => (String::new(), format!("ORDER BY event_search.rowid DESC LIMIT ${next}")),
    };
    // bm25 is lower for better matches.
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, bm25(event_search) AS score FROM event_search \
         JOIN events ON events.stream_ordering = event_search.rowid \
         WHERE event_search MATCH $1 AND events.room_id IN ({rooms}) {condition} {order}"
    );
    let mut query = sqlx::query(&sql).bind(fts_query);
    for room in room_ids {
        query = query.bind(room);
    }
    query = query.bind(limit);
    match cursor {
        Cursor::Rank { offset } => query = query.bind(offset),
        Cursor::Recent { before: Some(before) } => query = query.bind(before),
        Cursor::Recent { before: None } => {}
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let score: f64 = row.get(9);
            (event_from_row(row), -score)
        })
        .collect())
}

/// How many events match in `room_ids` (before visibility checks: the spec's approximate
/// `count`).
pub async fn count<'c>(db: impl Executor<'c, Database = Any>, fts_query: &str, room_ids: &[String]) -> sqlx::Result<i64> {
    if room_ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM event_search JOIN events ON events.stream_ordering = event_search.rowid \
         WHERE event_search MATCH $1 AND events.room_id IN ({})",
        in_list(room_ids.len(), 2)
    );
    let mut query = sqlx::query(&sql).bind(fts_query);
    for room in room_ids {
        query = query.bind(room);
    }
    Ok(query.fetch_one(db).await?.get(0))
}
