//! Storage: a sqlx pool and small repositories, one per kind of data.
//!
//! Queries use `$N` placeholders through sqlx's `Any` driver so the same SQL serves SQLite
//! (the embedded default) and, later, PostgreSQL with its own `migrations/postgres`.

pub mod account_data;
pub mod accounts;
pub mod aliases;
pub mod e2ee;
pub mod events;
pub mod federation;
pub mod filters;
pub mod media;
pub mod presence;
pub mod push;
pub mod receipts;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod sliding;
pub mod state;
pub mod to_device;
pub mod user_directory;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    AnyPool, Executor,
};

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The database handle shared by the repositories.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// SQLite has one writer at a time; writers queue here rather than in SQLite's busy
    /// handler, which sleeps (up to 100 ms a try) instead of waking the next writer.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction, holding the process's write turn until it commits or drops.
pub struct WriteTx {
    tx: Tx,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        if !url.starts_with("sqlite:") {
            anyhow::bail!("unsupported database url {url:?}: only sqlite:// is available so far");
        }
        let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
        let options = AnyConnectOptions::from_str(&url).with_context(|| format!("database url {url:?}"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            // An embedded database cannot drop a connection: the default ping before every
            // acquire would double the round trips to SQLite's threads for nothing.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: readers never block the writer. synchronous=FULL: a commit is on
                    // disk before the client hears about it, even across power loss.
                    // temp_store in memory: sorts and groupings never create temp files.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                         PRAGMA temp_store = MEMORY;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening the database {url}"))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.with_context(|| format!("migrating the database {url}"))?;
        Ok(Self { pool, write_lock: Arc::default() })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so two
    /// writers never deadlock upgrading read locks.
    pub async fn begin_write(&self) -> sqlx::Result<WriteTx> {
        let turn = self.write_lock.clone().lock_owned().await;
        Ok(WriteTx { tx: self.pool.begin_with("BEGIN IMMEDIATE").await?, _turn: turn })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Advances a server-wide stream counter inside `tx` and returns the new position.
pub async fn next_position(tx: &mut Tx, stream: &str) -> sqlx::Result<i64> {
    use sqlx::Row;
    let row = sqlx::query(
        "INSERT INTO stream_positions (stream, position) VALUES ($1, 1) \
         ON CONFLICT (stream) DO UPDATE SET position = stream_positions.position + 1 RETURNING position",
    )
    .bind(stream)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.get(0))
}

/// The newest position of each sync stream kept in the database, read in one statement (a
/// sync reads them all every time it wakes).
#[derive(Debug, Clone, Copy)]
pub struct StreamHeads {
    pub events: i64,
    pub account_data: i64,
    pub receipts: i64,
    pub presence: i64,
    pub device_lists: i64,
}

pub async fn stream_heads<'c>(db: impl Executor<'c, Database = sqlx::Any>) -> sqlx::Result<StreamHeads> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT (SELECT COALESCE(MAX(stream_ordering), 0) FROM events),          (SELECT COALESCE(MAX(position), 0) FROM stream_positions WHERE stream = 'account_data'),          (SELECT COALESCE(MAX(position), 0) FROM stream_positions WHERE stream = 'receipts'),          (SELECT COALESCE(MAX(position), 0) FROM stream_positions WHERE stream = 'presence'),          (SELECT COALESCE(MAX(stream_ordering), 0) FROM device_list_changes)",
    )
    .fetch_one(db)
    .await?;
    Ok(StreamHeads {
        events: row.get(0),
        account_data: row.get(1),
        receipts: row.get(2),
        presence: row.get(3),
        device_lists: row.get(4),
    })
}

/// Placeholders for an `IN (...)` list of `count` values numbered from `$first`: `$1, $2`.
pub fn in_list(count: usize, first: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// Placeholders for a multi-row `VALUES` list: `rows` groups of `columns` numbered from
/// `$first`, e.g. `($1, $2), ($3, $4)`. One statement instead of one per row: every statement
/// is a round trip to the database thread.
pub fn values_list(rows: usize, columns: usize, first: usize) -> String {
    (0..rows)
        .map(|row| {
            let numbers: Vec<String> = (0..columns).map(|col| format!("${}", first + row * columns + col)).collect();
            format!("({})", numbers.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_lists_number_their_placeholders() {
        assert_eq!(super::values_list(2, 2, 1), "($1, $2), ($3, $4)");
        assert_eq!(super::values_list(1, 3, 2), "($2, $3, $4)");
        assert_eq!(super::in_list(3, 2), "$2, $3, $4");
    }
}
