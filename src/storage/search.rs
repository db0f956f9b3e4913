//! The full-text index of events, written with the event, emptied on redaction, queried
//! with ranking or by recency. SQLite: an FTS5 table (`event_search`, rowid = the event's
//! stream position) ranked by bm25. PostgreSQL: a `tsvector` per event under a GIN index,
//! ranked by `ts_rank_cd` (cover density: closer words rank higher).

use sqlx::{Any, Row};

use super::{
    events::{event_from_row, EventRow, EVENT_COLUMNS},
    in_list, Db, Engine, Tx,
};

/// The searchable text of one event, by key (`content.body`, `content.name`,
/// `content.topic`), already segmented for the tokenizer.
#[derive(Debug, Default, PartialEq)]
pub struct SearchDocument {
    pub body: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
}

/// One search in each engine's query language; the database's engine picks.
#[derive(Debug, Clone, Copy)]
pub struct IndexQuery<'a> {
    pub fts5: &'a str,
    pub tsquery: &'a str,
}

impl IndexQuery<'_> {
    fn for_engine(&self, engine: Engine) -> &str {
        match engine {
            Engine::Sqlite => self.fts5,
            Engine::Postgres => self.tsquery,
        }
    }
}

pub async fn insert(tx: &mut Tx, stream_ordering: i64, document: &SearchDocument) -> sqlx::Result<()> {
    let sql = match Engine::of_connection(tx) {
        Engine::Sqlite => "INSERT INTO event_search (rowid, body, name, topic) VALUES ($1, $2, $3, $4)",
        Engine::Postgres => {
            "INSERT INTO event_search (stream_ordering, vector) VALUES ($1, \
             setweight(to_tsvector('simple', COALESCE($2, '')), 'A') || setweight(to_tsvector('simple', COALESCE($3, '')), 'B') || \
             setweight(to_tsvector('simple', COALESCE($4, '')), 'C'))"
        }
    };
    sqlx::query(sql)
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
    let sql = match Engine::of_connection(tx) {
        Engine::Sqlite => "DELETE FROM event_search WHERE rowid = $1",
        Engine::Postgres => "DELETE FROM event_search WHERE stream_ordering = $1",
    };
    sqlx::query(sql).bind(stream_ordering).execute(&mut **tx).await?;
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

/// How each engine names the index's parts in the queries below: the match condition on
/// `$1`, the row's stream position, and its score (higher is better).
struct Dialect {
    table: &'static str,
    id: &'static str,
    matches: &'static str,
    score: &'static str,
}

fn dialect(engine: Engine) -> Dialect {
    match engine {
        Engine::Sqlite => Dialect {
            table: "event_search",
            id: "event_search.rowid",
            matches: "event_search MATCH $1",
            // bm25 is lower for better matches.
            score: "-bm25(event_search)",
        },
        Engine::Postgres => Dialect {
            table: "event_search",
            id: "event_search.stream_ordering",
            matches: "event_search.vector @@ to_tsquery('simple', $1)",
            score: "ts_rank_cd(event_search.vector, to_tsquery('simple', $1))::float8",
        },
    }
}

/// Matches of a query in `room_ids`, from `cursor`, at most `limit`, each with its event
/// and its score (higher is better).
pub async fn search(db: &Db, query: IndexQuery<'_>, room_ids: &[String], cursor: Cursor, limit: i64) -> sqlx::Result<Vec<(EventRow, f64)>> {
    if room_ids.is_empty() {
        return Ok(Vec::new());
    }
    let Dialect { table, id, matches, score } = dialect(db.engine());
    let rooms = in_list(room_ids.len(), 2);
    let next = room_ids.len() + 2;
    // Matches newest first, each joined to its event for the room; the score is only
    // computed for the rows the inner LIMIT lets through.
    let newest_matches = |extra: &str, limit: &str| {
        format!(
            "SELECT {id} AS id, {score} AS score FROM {table} \
             JOIN events m ON m.stream_ordering = {id} \
             WHERE {matches} AND m.room_id IN ({rooms}) {extra} ORDER BY {id} DESC LIMIT {limit}"
        )
    };
    let sql = match cursor {
        Cursor::Rank { .. } => format!(
            "SELECT {EVENT_COLUMNS}, r.score FROM (SELECT id, score FROM ({}) w ORDER BY score DESC, id DESC LIMIT ${next} OFFSET ${}) r \
             JOIN events ON events.stream_ordering = r.id ORDER BY r.score DESC, r.id DESC",
            newest_matches("", &RANK_WINDOW.to_string()),
            next + 1
        ),
        Cursor::Recent { before } => format!(
            "SELECT {EVENT_COLUMNS}, r.score FROM ({}) r JOIN events ON events.stream_ordering = r.id ORDER BY r.id DESC",
            newest_matches(&before.map(|_| format!("AND {id} < ${}", next + 1)).unwrap_or_default(), &format!("${next}"))
        ),
    };
    let mut sql_query = sqlx::query(&sql).bind(query.for_engine(db.engine()));
    for room in room_ids {
        sql_query = sql_query.bind(room);
    }
    sql_query = sql_query.bind(limit);
    match cursor {
        Cursor::Rank { offset } => sql_query = sql_query.bind(offset),
        Cursor::Recent { before: Some(before) } => sql_query = sql_query.bind(before),
        Cursor::Recent { before: None } => {}
    }
    let rows = sql_query.fetch_all(db.pool()).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let score: f64 = row.get(9);
            (event_from_row(row), score)
        })
        .collect())
}

/// PostgreSQL keeps no per-token document counts: beyond the window, its estimate counts
/// the index's matches up to this many.
const POSTGRES_COUNT_CAP: i64 = 100_000;

/// About how many events match in `room_ids` (before visibility checks; the spec's `count`
/// is approximate). Exact up to `RANK_WINDOW` matches in `room_ids`; beyond, the index's
/// match count (SQLite: the document counts of the query's tokens (`tokens`: per
/// alternative, (token, is a prefix)), the rarest token of each alternative; PostgreSQL:
/// counted up to `POSTGRES_COUNT_CAP`), scaled by the share of the index's newest matches
/// that are in `room_ids`. Bounded work either way.
pub async fn count(db: &Db, query: IndexQuery<'_>, tokens: &[Vec<(String, bool)>], room_ids: &[String]) -> sqlx::Result<i64> {
    if room_ids.is_empty() {
        return Ok(0);
    }
    let Dialect { table, id, matches, .. } = dialect(db.engine());
    let index_query = query.for_engine(db.engine());
    let rooms = in_list(room_ids.len(), 2);
    fn bind_rooms<'q>(sql: &'q str, index_query: &str, room_ids: &[String]) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(sql).bind(index_query.to_owned());
        for room in room_ids {
            query = query.bind(room.clone());
        }
        query
    }
    let in_rooms_sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {table} JOIN events e ON e.stream_ordering = {id} \
         WHERE {matches} AND e.room_id IN ({rooms}) ORDER BY {id} DESC LIMIT {RANK_WINDOW}) w"
    );
    let in_rooms: i64 = bind_rooms(&in_rooms_sql, index_query, room_ids).fetch_one(db.pool()).await?.get(0);
    if in_rooms < RANK_WINDOW {
        return Ok(in_rooms);
    }
    let share_sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN room_id IN ({rooms}) THEN 1 ELSE 0 END), 0) FROM ( \
           SELECT e.room_id AS room_id FROM {table} JOIN events e ON e.stream_ordering = {id} \
           WHERE {matches} ORDER BY {id} DESC LIMIT {RANK_WINDOW}) w"
    );
    let row = bind_rooms(&share_sql, index_query, room_ids).fetch_one(db.pool()).await?;
    let (scanned, newest_in_rooms): (i64, i64) = (row.get(0), row.get(1));
    let total = match db.engine() {
        Engine::Sqlite => sqlite_token_estimate(db, tokens).await?,
        Engine::Postgres => {
            let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {matches} LIMIT {POSTGRES_COUNT_CAP}) w");
            sqlx::query(&sql).bind(index_query).fetch_one(db.pool()).await?.get(0)
        }
    };
    let estimate = ((total.max(scanned) as f64) * (newest_in_rooms as f64) / (scanned.max(1) as f64)).round() as i64;
    Ok(estimate.max(in_rooms))
}

/// The FTS5 vocabulary's document counts: per alternative, its rarest token's; summed.
async fn sqlite_token_estimate(db: &Db, tokens: &[Vec<(String, bool)>]) -> sqlx::Result<i64> {
    let mut total = 0i64;
    for alternative in tokens {
        let mut rarest: Option<i64> = None;
        for (token, prefix) in alternative {
            let docs: i64 = if *prefix {
                sqlx::query("SELECT COALESCE(SUM(doc), 0) FROM event_search_vocab WHERE term >= $1 AND term < $2")
                    .bind(token)
                    .bind(format!("{token}\u{10FFFF}"))
                    .fetch_one(db.pool())
                    .await?
                    .get(0)
            } else {
                sqlx::query("SELECT COALESCE(MAX(doc), 0) FROM event_search_vocab WHERE term = $1").bind(token).fetch_one(db.pool()).await?.get(0)
            };
            rarest = Some(rarest.map_or(docs, |r| r.min(docs)));
        }
        total += rarest.unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::{count, insert, search, Cursor, IndexQuery, SearchDocument, RANK_WINDOW};
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
        assert_eq!(count(&db, IndexQuery { fts5: "pear", tsquery: "" }, &pear, &a).await.unwrap(), 50);
        assert_eq!(count(&db, IndexQuery { fts5: "pear", tsquery: "" }, &pear, &both).await.unwrap(), 100);
        // Beyond the window: the token's document count, scaled by the rooms' share.
        assert_eq!(count(&db, IndexQuery { fts5: "plum", tsquery: "" }, &plum, &both).await.unwrap(), RANK_WINDOW * 2);
        assert_eq!(count(&db, IndexQuery { fts5: "plum", tsquery: "" }, &plum, &a).await.unwrap(), RANK_WINDOW);
        let prefix = vec![vec![("pl".to_owned(), true)]];
        assert_eq!(count(&db, IndexQuery { fts5: "pl*", tsquery: "" }, &prefix, &both).await.unwrap(), RANK_WINDOW * 2);

        // Rank order ranks the newest window; recency pages below a position.
        let ranked = search(&db, IndexQuery { fts5: "plum", tsquery: "" }, &both, Cursor::Rank { offset: 0 }, 5).await.unwrap();
        assert_eq!(ranked.len(), 5);
        let past_window = search(&db, IndexQuery { fts5: "plum", tsquery: "" }, &both, Cursor::Rank { offset: RANK_WINDOW }, 5).await.unwrap();
        assert!(past_window.is_empty());
        let newest = search(&db, IndexQuery { fts5: "plum", tsquery: "" }, &a, Cursor::Recent { before: None }, 3).await.unwrap();
        let next = search(&db, IndexQuery { fts5: "plum", tsquery: "" }, &a, Cursor::Recent { before: Some(newest[2].0.stream_ordering) }, 3).await.unwrap();
        assert!(newest.iter().chain(&next).all(|(row, _)| row.room_id == "!a"));
        assert!(next[0].0.stream_ordering < newest[2].0.stream_ordering);
    }
}
