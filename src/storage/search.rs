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

/// Rank order looks at the newest this many matches (in the searched rooms) and ranks
/// those: scoring every match of a word found in half of a million messages would take
/// seconds (bm25 costs ~4 µs a match), and the best of the newest is what people look for.
pub const RANK_WINDOW: i64 = 1_000;

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
    // Matches newest first, each joined to its event for the room; bm25 is lower for
    // better matches, and is only computed for the rows the inner LIMIT lets through.
    let newest_matches = |extra: &str, limit: &str| {
        format!(
            "SELECT event_search.rowid AS id, bm25(event_search) AS score FROM event_search \
             JOIN events m ON m.stream_ordering = event_search.rowid \
             WHERE event_search MATCH $1 AND m.room_id IN ({rooms}) {extra} ORDER BY event_search.rowid DESC LIMIT {limit}"
        )
    };
    let sql = match cursor {
        Cursor::Rank { .. } => format!(
            "SELECT {EVENT_COLUMNS}, r.score FROM (SELECT id, score FROM ({}) ORDER BY score, id DESC LIMIT ${next} OFFSET ${}) r \
             JOIN events ON events.stream_ordering = r.id ORDER BY r.score, r.id DESC",
            newest_matches("", &RANK_WINDOW.to_string()),
            next + 1
        ),
        Cursor::Recent { before } => format!(
            "SELECT {EVENT_COLUMNS}, r.score FROM ({}) r JOIN events ON events.stream_ordering = r.id ORDER BY r.id DESC",
            newest_matches(&before.map(|_| format!("AND event_search.rowid < ${}", next + 1)).unwrap_or_default(), &format!("${next}"))
        ),
    };
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

/// About how many events match in `room_ids` (before visibility checks; the spec's `count`
/// is approximate). Exact up to `RANK_WINDOW` matches in `room_ids`; beyond, the index's
/// document counts of the query's tokens (`tokens`: per alternative, (token, is a prefix)),
/// the rarest token of each alternative, scaled by the share of the index's newest matches
/// that are in `room_ids`. Bounded work either way.
pub async fn count(db: &sqlx::AnyPool, fts_query: &str, tokens: &[Vec<(String, bool)>], room_ids: &[String]) -> sqlx::Result<i64> {
    if room_ids.is_empty() {
        return Ok(0);
    }
    let rooms = in_list(room_ids.len(), 2);
    fn bind_rooms<'q>(sql: &'q str, fts_query: &str, room_ids: &[String]) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(sql).bind(fts_query.to_owned());
        for room in room_ids {
            query = query.bind(room.clone());
        }
        query
    }
    let in_rooms_sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM event_search JOIN events e ON e.stream_ordering = event_search.rowid \
         WHERE event_search MATCH $1 AND e.room_id IN ({rooms}) ORDER BY event_search.rowid DESC LIMIT {RANK_WINDOW})"
    );
    let in_rooms: i64 = bind_rooms(&in_rooms_sql, fts_query, room_ids).fetch_one(db).await?.get(0);
    if in_rooms < RANK_WINDOW {
        return Ok(in_rooms);
    }
    let share_sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN room_id IN ({rooms}) THEN 1 ELSE 0 END), 0) FROM ( \
           SELECT e.room_id AS room_id FROM event_search JOIN events e ON e.stream_ordering = event_search.rowid \
           WHERE event_search MATCH $1 ORDER BY event_search.rowid DESC LIMIT {RANK_WINDOW})"
    );
    let row = bind_rooms(&share_sql, fts_query, room_ids).fetch_one(db).await?;
    let (scanned, newest_in_rooms): (i64, i64) = (row.get(0), row.get(1));
    let mut total = 0i64;
    for alternative in tokens {
        let mut rarest: Option<i64> = None;
        for (token, prefix) in alternative {
            let docs: i64 = if *prefix {
                sqlx::query("SELECT COALESCE(SUM(doc), 0) FROM event_search_vocab WHERE term >= $1 AND term < $2")
                    .bind(token)
                    .bind(format!("{token}\u{10FFFF}"))
                    .fetch_one(db)
                    .await?
                    .get(0)
            } else {
                sqlx::query("SELECT COALESCE(MAX(doc), 0) FROM event_search_vocab WHERE term = $1").bind(token).fetch_one(db).await?.get(0)
            };
            rarest = Some(rarest.map_or(docs, |r| r.min(docs)));
        }
        total += rarest.unwrap_or(0);
    }
    let estimate = ((total.max(scanned) as f64) * (newest_in_rooms as f64) / (scanned.max(1) as f64)).round() as i64;
    Ok(estimate.max(in_rooms))
}

#[cfg(test)]
mod tests {
    use super::{count, insert, search, Cursor, SearchDocument, RANK_WINDOW};
    use crate::storage::Db;

    /// `n` message events with `body`, alternating between rooms `!a` and `!b`.
    async fn fill(db: &Db, n: i64, body: &str) {
        let mut tx = db.begin_write().await.unwrap();
        for i in 0..n {
            let room = if i % 2 == 0 { "!a" } else { "!b" };
            let stream: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, room_id, event_type, sender, origin_server_ts, depth, json, state_group) \
                 VALUES ($1, $2, 'm.room.message', '@u:x', 0, $3, '{}', 0) RETURNING stream_ordering",
            )
            .bind(format!("${body}{i}"))
            .bind(room)
            .bind(i)
            .fetch_one(&mut **tx)
            .await
            .unwrap();
            insert(&mut tx, stream, &SearchDocument { body: Some(format!("{body} {i}")), ..Default::default() }).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn counts_exactly_below_the_window_and_estimates_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        fill(&db, 100, "pear").await;
        fill(&db, RANK_WINDOW * 2, "plum").await;
        let a = vec!["!a".to_owned()];
        let both = vec!["!a".to_owned(), "!b".to_owned()];
        let pear = vec![vec![("pear".to_owned(), false)]];
        let plum = vec![vec![("plum".to_owned(), false)]];
        assert_eq!(count(db.pool(), "pear", &pear, &a).await.unwrap(), 50);
        assert_eq!(count(db.pool(), "pear", &pear, &both).await.unwrap(), 100);
        // Beyond the window: the token's document count, scaled by the rooms' share.
        assert_eq!(count(db.pool(), "plum", &plum, &both).await.unwrap(), RANK_WINDOW * 2);
        assert_eq!(count(db.pool(), "plum", &plum, &a).await.unwrap(), RANK_WINDOW);
        let prefix = vec![vec![("pl".to_owned(), true)]];
        assert_eq!(count(db.pool(), "pl*", &prefix, &both).await.unwrap(), RANK_WINDOW * 2);

        // Rank order ranks the newest window; recency pages below a position.
        let ranked = search(db.pool(), "plum", &both, Cursor::Rank { offset: 0 }, 5).await.unwrap();
        assert_eq!(ranked.len(), 5);
        let past_window = search(db.pool(), "plum", &both, Cursor::Rank { offset: RANK_WINDOW }, 5).await.unwrap();
        assert!(past_window.is_empty());
        let newest = search(db.pool(), "plum", &a, Cursor::Recent { before: None }, 3).await.unwrap();
        let next = search(db.pool(), "plum", &a, Cursor::Recent { before: Some(newest[2].0.stream_ordering) }, 3).await.unwrap();
        assert!(newest.iter().chain(&next).all(|(row, _)| row.room_id == "!a"));
        assert!(next[0].0.stream_ordering < newest[2].0.stream_ordering);
    }
}
