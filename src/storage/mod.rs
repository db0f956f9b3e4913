//! Storage: a sqlx pool and small repositories, one per kind of data.
//!
//! Queries use `$N` placeholders through sqlx's `Any` driver so the same SQL serves both
//! engines: SQLite (the embedded default, `migrations/sqlite`) and PostgreSQL
//! (`migrations/postgres`). Where the dialects differ (full-text search, write locking) the
//! repository asks `Db::engine` or the connection's backend and uses each engine's form;
//! docs/storage.md says what differs and why.

pub mod account_data;
pub mod accounts;
pub mod aliases;
pub mod appservice;
pub mod e2ee;
pub mod events;
pub mod federation;
pub mod filters;
pub mod media;
pub mod presence;
pub mod purge;
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

/// Which database engine a `Db` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine a database url names, None for an unsupported scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The engine of an open connection (a transaction derefs to one).
    pub fn of_connection(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name() == "PostgreSQL" {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How to reach the database: the url and the pool's limits.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]`.
    pub url: String,
    pub max_connections: u32,
    /// PostgreSQL only: a statement running longer is cancelled (0: no limit).
    pub statement_timeout: Duration,
    /// How long a request waits for a free connection (or, on PostgreSQL, for the server
    /// to answer a connection attempt) before it fails.
    pub acquire_timeout: Duration,
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 8, statement_timeout: Duration::from_secs(60), acquire_timeout: Duration::from_secs(30) }
    }
}

/// A database url safe to print: the password replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The advisory lock every PostgreSQL write transaction takes: writers are serialised in
/// the database, across every process on it, so stream positions commit in order and a
/// reader never sees position N+1 before N. ("weft" in ASCII.)
const POSTGRES_WRITE_LOCK: i64 = 0x7765_6674;

/// The database handle shared by the repositories.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    /// Writers queue here for their turn: on SQLite instead of in SQLite's busy handler,
    /// which sleeps (up to 100 ms a try) instead of waking the next writer; on PostgreSQL
    /// so that a process's writers wait in memory, not holding pool connections while
    /// they wait for the database's write lock.
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
    /// Opens (creating if needed) the SQLite database at `url` with default limits.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        Self::open_with(&DbOptions::new(url)).await
    }

    /// Opens the database and brings its schema up to date. A PostgreSQL server that does
    /// not answer is a clear error (after the acquire timeout), not a panic.
    pub async fn open_with(options: &DbOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let shown = redacted_url(&options.url);
        let engine = Engine::of_url(&options.url)
            .with_context(|| format!("unsupported database url {shown:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE"))?;
        let pool = match engine {
            Engine::Sqlite => Self::open_sqlite(options).await?,
            Engine::Postgres => Self::open_postgres(options).await?,
        };
        let migrated = match engine {
            Engine::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Engine::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        };
        migrated.with_context(|| format!("migrating the database {shown}"))?;
        Ok(Self { pool, engine, write_lock: Arc::default() })
    }

    async fn open_sqlite(options: &DbOptions) -> anyhow::Result<AnyPool> {
        let url = if options.url.contains('?') { options.url.clone() } else { format!("{}?mode=rwc", options.url) };
        let connect = AnyConnectOptions::from_str(&url).with_context(|| format!("database url {url:?}"))?;
        AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
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
            .connect_with(connect)
            .await
            .with_context(|| format!("opening the database {url}"))
    }

    async fn open_postgres(options: &DbOptions) -> anyhow::Result<AnyPool> {
        let shown = redacted_url(&options.url);
        let connect = AnyConnectOptions::from_str(&options.url).with_context(|| format!("database url {shown:?}"))?;
        let statement_timeout_ms = options.statement_timeout.as_millis();
        AnyPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            // A server connection can drop (restart, failover, idle timeout): the pool
            // pings a connection before handing it out and opens a new one if it is dead.
            .test_before_acquire(true)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // Every commit is durable before the client hears about it, whatever
                    // the server's default says.
                    conn.execute(format!("SET statement_timeout = {statement_timeout_ms}; SET synchronous_commit = on").as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {shown}"))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so two
    /// writers never deadlock upgrading read locks; PostgreSQL takes the database-wide
    /// write lock (`POSTGRES_WRITE_LOCK`), held until commit or rollback.
    pub async fn begin_write(&self) -> sqlx::Result<WriteTx> {
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(POSTGRES_WRITE_LOCK).execute(&mut *tx).await?;
                tx
            }
        };
        Ok(WriteTx { tx, _turn: turn })
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
