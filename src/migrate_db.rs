//! `weft migrate-db`: moves a server's data from its SQLite database to an empty
//! PostgreSQL database (what Synapse's `synapse_port_db` does for Synapse).
//!
//! One PostgreSQL transaction copies every table, rebuilds the full-text index (its form
//! differs between the engines), moves the id sequences past the copied rows and checks
//! each table's row count against the source before it commits: the target ends up with all
//! of the data or none of it, so a failed run is simply run again.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context};
use futures_util::TryStreamExt;
use sqlx::{any::AnyArguments, Arguments, Row};

use crate::{
    rooms::{pdu_from_row, search::document},
    storage::{self, Db, DbOptions, Engine},
};

/// Rows inserted per statement (PostgreSQL takes at most 65,535 parameters a statement).
const BATCH_ROWS: usize = 500;

/// Tables the engines keep in their own forms: rebuilt, not copied.
const REBUILT_TABLES: &[&str] = &["event_search"];

/// A column of the target schema: its name and whether it holds text (else an integer).
struct Column {
    name: String,
    text: bool,
}

/// Copies everything from `from` (SQLite) to `to` (PostgreSQL, empty). Returns the rows
/// copied per table. `progress` hears each table as it is done.
pub async fn migrate(from: &DbOptions, to: &DbOptions, mut progress: impl FnMut(&str, i64)) -> anyhow::Result<BTreeMap<String, i64>> {
    ensure!(Engine::of_url(&from.url) == Some(Engine::Sqlite), "--from must be a sqlite:// database url");
    ensure!(Engine::of_url(&to.url) == Some(Engine::Postgres), "--to must be a postgres:// database url");
    let source_path = from.url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default();
    ensure!(std::path::Path::new(source_path).exists(), "no SQLite database at {source_path}");
    // Opening brings both schemas up to date: the source to this version's, the target
    // created.
    let source = Db::open_with(from).await.context("opening the SQLite database")?;
    let target = Db::open_with(to).await.context("opening the PostgreSQL database")?;

    let tables = target_tables(&target).await?;
    let mut tx = target.begin_write().await?;
    for (table, _) in &tables {
        let row = sqlx::query(&format!("SELECT EXISTS (SELECT 1 FROM {table})")).fetch_one(&mut **tx).await?;
        let non_empty: bool = row.get(0);
        if non_empty {
            bail!("the PostgreSQL database is not empty (table {table} has rows): migrate-db only fills a new database");
        }
    }

    let mut copied = BTreeMap::new();
    for (table, columns) in &tables {
        if REBUILT_TABLES.contains(&table.as_str()) {
            continue;
        }
        let rows = copy_table(&source, &mut tx, table, columns).await.with_context(|| format!("copying table {table}"))?;
        progress(table, rows);
        copied.insert(table.clone(), rows);
    }
    let indexed = rebuild_search_index(&source, &mut tx).await.context("rebuilding the search index")?;
    progress("event_search (rebuilt)", indexed);
    advance_identity_sequences(&mut tx).await?;

    // Every table holds exactly what the source holds.
    for (table, rows) in &copied {
        let source_rows: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(source.pool()).await?.get(0);
        let target_rows: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut **tx).await?.get(0);
        ensure!(
            source_rows == *rows && target_rows == *rows,
            "row counts of {table} differ (SQLite {source_rows}, copied {rows}, PostgreSQL {target_rows}): nothing was committed"
        );
    }
    tx.commit().await.context("committing the copy")?;
    source.close().await;
    target.close().await;
    Ok(copied)
}

/// The target's tables (but sqlx's own) with their columns in order.
async fn target_tables(target: &Db) -> anyhow::Result<Vec<(String, Vec<Column>)>> {
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(target.pool())
    .await?;
    let mut tables: Vec<(String, Vec<Column>)> = Vec::new();
    for row in rows {
        let (table, name, data_type): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let text = match data_type.as_str() {
            "text" => true,
            "bigint" | "smallint" | "integer" => false,
            "tsvector" => continue,
            other => bail!("column {table}.{name} has type {other}, which migrate-db does not know how to copy"),
        };
        match tables.last_mut() {
            Some((last, columns)) if *last == table => columns.push(Column { name, text }),
            _ => tables.push((table, vec![Column { name, text }])),
        }
    }
    Ok(tables)
}

/// Streams one table from SQLite into PostgreSQL, `BATCH_ROWS` rows a statement.
async fn copy_table(source: &Db, tx: &mut storage::WriteTx, table: &str, columns: &[Column]) -> anyhow::Result<i64> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let mut rows = sqlx::query(&select).fetch(source.pool());
    let mut batch: Vec<sqlx::any::AnyRow> = Vec::with_capacity(BATCH_ROWS);
    let mut copied = 0i64;
    loop {
        let row = rows.try_next().await?;
        let done = row.is_none();
        if let Some(row) = row {
            batch.push(row);
        }
        if batch.len() == BATCH_ROWS || (done && !batch.is_empty()) {
            insert_batch(tx, table, columns, &batch).await?;
            copied += batch.len() as i64;
            batch.clear();
        }
        if done {
            return Ok(copied);
        }
    }
}

async fn insert_batch(tx: &mut storage::WriteTx, table: &str, columns: &[Column], batch: &[sqlx::any::AnyRow]) -> anyhow::Result<()> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let sql = format!("INSERT INTO {table} ({}) VALUES {}", names.join(", "), storage::values_list(batch.len(), columns.len(), 1));
    let mut arguments = AnyArguments::default();
    for row in batch {
        for (index, column) in columns.iter().enumerate() {
            let added = if column.text {
                arguments.add(row.try_get::<Option<String>, _>(index).with_context(|| format!("{table}.{}", column.name))?)
            } else {
                arguments.add(row.try_get::<Option<i64>, _>(index).with_context(|| format!("{table}.{}", column.name))?)
            };
            added.map_err(|e| anyhow::anyhow!("binding {table}.{}: {e}", column.name))?;
        }
    }
    sqlx::query_with(&sql, arguments).execute(&mut ***tx).await?;
    Ok(())
}

/// The full-text index, built from the copied events as the server builds it on write.
async fn rebuild_search_index(source: &Db, tx: &mut storage::WriteTx) -> anyhow::Result<i64> {
    let mut rows = sqlx::query(
        "SELECT stream_ordering, event_id, room_id, json FROM events WHERE redacted_by IS NULL \
         AND event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')",
    )
    .fetch(source.pool());
    let mut indexed = 0;
    while let Some(row) = rows.try_next().await? {
        let (stream, event_id, room_id, json): (i64, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
        // An event the server cannot read is not searchable there either.
        let Ok(pdu) = pdu_from_row(&event_id, &room_id, &json) else { continue };
        if let Some(doc) = document(&pdu) {
            storage::search::insert(tx, stream, &doc).await?;
            indexed += 1;
        }
    }
    Ok(indexed)
}

/// Identity columns continue after the largest copied id (rows were inserted with theirs).
async fn advance_identity_sequences(tx: &mut storage::WriteTx) -> anyhow::Result<()> {
    let identities = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES'",
    )
    .fetch_all(&mut ***tx)
    .await?;
    for row in identities {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST(COALESCE(MAX({column}), 0), 1), MAX({column}) IS NOT NULL)::bigint FROM {table}"
        );
        sqlx::query(&sql).fetch_one(&mut ***tx).await?;
    }
    Ok(())
}
