//! The user directory: one searchable profile per user, and the join rule of each room
//! (members of public rooms are visible to everyone).

use sqlx::{Any, Executor, Row};

use super::Tx;

use crate::text::fold;

fn search_key(user_id: &str, display_name: Option<&str>) -> String {
    fold(&format!("{user_id} {}", display_name.unwrap_or("")))
}

/// Sets a user's directory profile.
pub async fn upsert(tx: &mut Tx, user_id: &str, display_name: Option<&str>, avatar_url: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO user_directory (user_id, display_name, avatar_url, search_key) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url, \
         search_key = excluded.search_key",
    )
    .bind(user_id)
    .bind(display_name)
    .bind(avatar_url)
    .bind(search_key(user_id, display_name))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes a user out of the directory (deactivated).
pub async fn remove(tx: &mut Tx, user_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM user_directory WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    Ok(())
}

/// Records the join rule of a room's current state (rooms with none are `invite`).
pub async fn set_join_rule(tx: &mut Tx, room_id: &str, join_rule: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_join_rules (room_id, join_rule) VALUES ($1, $2) \
         ON CONFLICT (room_id) DO UPDATE SET join_rule = excluded.join_rule",
    )
    .bind(room_id)
    .bind(join_rule)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records whether a room's current history visibility is `world_readable`.
pub async fn set_world_readable(tx: &mut Tx, room_id: &str, world_readable: bool) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_join_rules (room_id, join_rule, world_readable) VALUES ($1, 'invite', $2) \
         ON CONFLICT (room_id) DO UPDATE SET world_readable = excluded.world_readable",
    )
    .bind(room_id)
    .bind(world_readable as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub struct DirectoryEntry {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Users whose folded id or display name contains every one of `words` (already folded),
/// among the others who share a joined room with `searcher` and those joined to a public
/// room this server is in (a local user, id ending in `local_suffix` = `:server`, is joined);
/// `all_local`: also every local user. Users whose name or id starts with the first word
/// come first. At most `limit` rows.
pub async fn search<'c>(
    db: impl Executor<'c, Database = Any>,
    searcher: &str,
    words: &[String],
    local_suffix: &str,
    all_local: bool,
    limit: i64,
) -> sqlx::Result<Vec<DirectoryEntry>> {
    let mut sql = String::from(
        "SELECT d.user_id, d.display_name, d.avatar_url FROM user_directory d WHERE (d.user_id IN ( \
           SELECT other.user_id FROM room_memberships mine JOIN room_memberships other ON other.room_id = mine.room_id \
           WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.membership = 'join' AND other.user_id <> $1 \
           UNION SELECT m.user_id FROM room_join_rules r JOIN room_memberships m ON m.room_id = r.room_id \
           WHERE (r.join_rule = 'public' OR r.world_readable = 1) AND m.membership = 'join' AND EXISTS (SELECT 1 FROM room_memberships l \
             WHERE l.room_id = r.room_id AND l.membership = 'join' AND l.user_id LIKE $3 ESCAPE '\\'))",
    );
    // `$2` is '' (matches no id) unless every local user is searchable.
    sql.push_str(" OR d.user_id LIKE $2 ESCAPE '\\')");
    let first_param = 4;
    for (i, _) in words.iter().enumerate() {
        sql.push_str(&format!(" AND d.search_key LIKE ${} ESCAPE '\\'", first_param + i));
    }
    // Prefix matches of the first word (at the start of the id's localpart or of the name)
    // rank first; then by user id, for a stable order.
    let rank_param = first_param + words.len();
    sql.push_str(&format!(
        " ORDER BY CASE WHEN d.search_key LIKE ${rank_param} ESCAPE '\\' OR d.search_key LIKE ${} ESCAPE '\\' THEN 0 ELSE 1 END, d.user_id LIMIT ${}",
        rank_param + 1,
        rank_param + 2
    ));
    let local_pattern = format!("%{}", escape_like(local_suffix));
    let mut query = sqlx::query(&sql).bind(searcher).bind(if all_local { local_pattern.clone() } else { String::new() }).bind(local_pattern);
    for word in words {
        query = query.bind(format!("%{}%", escape_like(word)));
    }
    let first = words.first().map(|w| escape_like(w)).unwrap_or_default();
    query = query.bind(format!("@{first}%")).bind(format!("% {first}%")).bind(limit);
    let rows = query.fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| DirectoryEntry { user_id: row.get(0), display_name: row.get(1), avatar_url: row.get(2) })
        .collect())
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
