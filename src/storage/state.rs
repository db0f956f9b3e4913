//! Deduplicated room state: state groups as bounded delta chains, plus the current-state index.
//!
//! A state group is either a full snapshot or a delta on its previous group. After
//! `MAX_CHAIN` deltas a full snapshot is written, so reading any state merges at most
//! `MAX_CHAIN + 1` groups and storage grows with the number of state *changes*, not with
//! (events × state size).

use std::collections::HashMap;

use sqlx::{Any, Executor, Row};

use super::Tx;

/// (event type, state key) → event id.
pub type StateMap = HashMap<(String, String), String>;

const MAX_CHAIN: i64 = 32;

const CHAIN_CTE: &str = "WITH RECURSIVE chain(id, prev, n) AS ( \
       SELECT id, prev_group, 0 FROM state_groups WHERE id = $1 \
       UNION ALL SELECT g.id, g.prev_group, chain.n + 1 FROM state_groups g JOIN chain ON g.id = chain.prev)";

/// The full state of a group.
pub async fn load_group<'c>(db: impl Executor<'c, Database = Any>, group: i64) -> sqlx::Result<StateMap> {
    let sql = format!(
        "{CHAIN_CTE} SELECT e.event_type, e.state_key, e.event_id FROM chain \
         JOIN state_group_entries e ON e.state_group = chain.id ORDER BY chain.n DESC"
    );
    let rows = sqlx::query(&sql).bind(group).fetch_all(db).await?;
    let mut state = StateMap::with_capacity(rows.len());
    // Oldest group first, so newer deltas overwrite.
    for row in rows {
        state.insert((row.get(0), row.get(1)), row.get(2));
    }
    Ok(state)
}

/// One entry of a group's state.
pub async fn lookup_in_group<'c>(
    db: impl Executor<'c, Database = Any>,
    group: i64,
    event_type: &str,
    state_key: &str,
) -> sqlx::Result<Option<String>> {
    let sql = format!(
        "{CHAIN_CTE} SELECT e.event_id FROM chain JOIN state_group_entries e ON e.state_group = chain.id \
         WHERE e.event_type = $2 AND e.state_key = $3 ORDER BY chain.n ASC LIMIT 1"
    );
    let row = sqlx::query(&sql).bind(group).bind(event_type).bind(state_key).fetch_optional(db).await?;
    Ok(row.map(|row| row.get(0)))
}

/// Writes a new group: `prev` plus `changes`. Returns its id.
pub async fn create_group(
    tx: &mut Tx,
    room_id: &str,
    prev: Option<i64>,
    changes: &[(String, String, String)],
) -> sqlx::Result<i64> {
    let prev_chain: Option<i64> = match prev {
        Some(prev) => sqlx::query("SELECT chain_length FROM state_groups WHERE id = $1")
            .bind(prev)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.get(0)),
        None => None,
    };
    let (prev_group, chain_length, entries) = match (prev, prev_chain) {
        (Some(prev), Some(length)) if length < MAX_CHAIN => (Some(prev), length + 1, changes.to_vec()),
        (Some(prev), Some(_)) => {
            // Chain is long enough: write a full snapshot.
            let mut state = load_group(&mut **tx, prev).await?;
            for (t, k, id) in changes {
                state.insert((t.clone(), k.clone()), id.clone());
            }
            (None, 0, state.into_iter().map(|((t, k), id)| (t, k, id)).collect())
        }
        _ => (None, 0, changes.to_vec()),
    };
    let row = sqlx::query(
        "INSERT INTO state_groups (room_id, prev_group, chain_length) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(room_id)
    .bind(prev_group)
    .bind(chain_length)
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.get(0);
    for (event_type, state_key, event_id) in entries {
        sqlx::query(
            "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(event_type)
        .bind(state_key)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

/// Selected entries of the room's current state.
pub async fn current_entries<'c>(
    db: impl Executor<'c, Database = Any>,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> sqlx::Result<Option<String>> {
    let row = sqlx::query(
        "SELECT event_id FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
    )
    .bind(room_id)
    .bind(event_type)
    .bind(state_key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// The room's whole current state as (type, state_key, event_id).
pub async fn current_state<'c>(db: impl Executor<'c, Database = Any>, room_id: &str) -> sqlx::Result<StateMap> {
    let rows = sqlx::query("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
        .bind(room_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect())
}

pub async fn set_current(
    tx: &mut Tx,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    event_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )
    .bind(room_id)
    .bind(event_type)
    .bind(state_key)
    .bind(event_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
