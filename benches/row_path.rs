//! What sqlx's `Any` driver costs against each engine's typed driver on weft's hottest read:
//! a page of 100 event rows with the columns `/messages` and `/sync` read, from a room of
//! 10,000 events of ~1 kB JSON each. Same query, same connection pool size, same process;
//! the figure is the median of 5 runs of 1,000 pages, after one unmeasured run.
//!
//!   cargo bench --bench row_path                                   # SQLite
//!   bash scripts/with-postgres.sh cargo bench --bench row_path     # and PostgreSQL
//!
//! docs/storage.md records the figures and the decision they support.

use std::time::{Duration, Instant};

use sqlx::Row;

const EVENTS: i64 = 10_000;
const PAGES: usize = 1_000;
const PAGE: i64 = 100;
const PAGE_SQL: &str = "SELECT stream_ordering, event_id, room_id, depth, json, state_group, redacted_by, txn_device_id, txn_id \
     FROM events WHERE room_id = $1 AND stream_ordering < $2 ORDER BY stream_ordering DESC LIMIT $3";

#[allow(dead_code)]
struct EventRow {
    stream_ordering: i64,
    event_id: String,
    room_id: String,
    depth: i64,
    json: String,
    state_group: i64,
    redacted_by: Option<String>,
    txn_device_id: Option<String>,
    txn_id: Option<String>,
}

macro_rules! event_row {
    ($row:expr) => {
        EventRow {
            stream_ordering: $row.get(0),
            event_id: $row.get(1),
            room_id: $row.get(2),
            depth: $row.get(3),
            json: $row.get(4),
            state_group: $row.get(5),
            redacted_by: $row.get(6),
            txn_device_id: $row.get(7),
            txn_id: $row.get(8),
        }
    };
}

/// The start position of page `i`: pages walk down the room and wrap.
fn before(i: usize) -> i64 {
    EVENTS + 1 - (i as i64 * PAGE) % (EVENTS - PAGE)
}

async fn fill(db: &weft::storage::Db) {
    let filler = "x".repeat(900);
    let mut tx = db.begin_write().await.unwrap();
    for i in 0..EVENTS {
        let json = format!(r#"{{"type":"m.room.message","content":{{"msgtype":"m.text","body":"{filler} {i}"}},"depth":{i}}}"#);
        sqlx::query(
            "INSERT INTO events (event_id, room_id, event_type, sender, origin_server_ts, depth, json, state_group) \
             VALUES ($1, '!bench:x', 'm.room.message', '@u:x', 0, $2, $3, 1)",
        )
        .bind(format!("$e{i}"))
        .bind(i)
        .bind(json)
        .execute(&mut **tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn median(mut run: impl AsyncFnMut() -> Duration) -> Duration {
    // One unmeasured run first: caches and the pool's connections warm for either driver.
    run().await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(run().await);
    }
    runs.sort();
    runs[2]
}

fn report(engine: &str, driver: &str, took: Duration) {
    let per_page = took.as_secs_f64() * 1e6 / PAGES as f64;
    let rows = (PAGES as f64 * PAGE as f64) / took.as_secs_f64();
    println!("{engine:<10} {driver:<6} {per_page:>8.1} µs/page {rows:>12.0} rows/s");
}

/// The median time of `PAGES` pages read through `$pool` (an `AnyPool` or a typed pool:
/// the same code, each driver's own row type).
macro_rules! time_pages {
    ($pool:expr) => {
        median(async || {
            let start = Instant::now();
            for i in 0..PAGES {
                let rows = sqlx::query(PAGE_SQL).bind("!bench:x").bind(before(i)).bind(PAGE).fetch_all($pool).await.unwrap();
                let page: Vec<EventRow> = rows.iter().map(|row| event_row!(row)).collect();
                assert_eq!(page.len(), PAGE as usize);
            }
            start.elapsed()
        })
        .await
    };
}

fn compare(engine: &str, any: Duration, typed: Duration) {
    report(engine, "Any", any);
    report(engine, "typed", typed);
    println!("{engine}: Any costs {:+.0}% over the typed driver", (any.as_secs_f64() / typed.as_secs_f64() - 1.0) * 100.0);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    sqlx::any::install_default_drivers();
    println!("{:<10} {:<6} {:>13} {:>19}", "engine", "driver", "per page", "rows decoded");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let db = weft::storage::Db::open(&url).await.unwrap();
    fill(&db).await;
    let any = time_pages!(db.pool());
    let typed_pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    compare("SQLite", any, time_pages!(&typed_pool));

    let Some(cluster) = std::env::var("WEFT_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        println!("(no WEFT_TEST_POSTGRES: PostgreSQL not measured)");
        return;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&format!("{cluster}/postgres")).await.unwrap();
    sqlx::Executor::execute(&mut admin, "DROP DATABASE IF EXISTS weft_row_path").await.unwrap();
    sqlx::Executor::execute(&mut admin, "CREATE DATABASE weft_row_path").await.unwrap();
    let url = format!("{cluster}/weft_row_path");
    let db = weft::storage::Db::open(&url).await.unwrap();
    fill(&db).await;
    let any = time_pages!(db.pool());
    let typed_pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    compare("PostgreSQL", any, time_pages!(&typed_pool));
}
