//! The user directory's view of rooms: which rooms are public, remote users' profiles from
//! their joins, and search over the users a searcher may find.

use ruma::{OwnedUserId, UserId};
use serde_json::Value;

use super::Rooms;
use crate::{
    error::Result,
    storage::{user_directory as directory_repo, Tx},
};

/// Users the directory may show the searcher.
pub enum DirectoryScope {
    /// Others sharing a joined room with the searcher, and members of public rooms this
    /// server is in (the searcher too, when in one).
    SharedAndPublic,
    /// Those, and every local user.
    AllLocalUsers,
}

pub struct DirectoryResult {
    pub users: Vec<(OwnedUserId, Option<String>, Option<String>)>,
    pub limited: bool,
}

impl Rooms {
    /// Keeps the directory's indexes in step with a state event that became current, in the
    /// transaction that writes it.
    pub(super) async fn index_directory_state(&self, tx: &mut Tx, room_id: &str, kind: &str, state_key: &str, content: &Value) -> Result<()> {
        match kind {
            "m.room.join_rules" if state_key.is_empty() => {
                let rule = content.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
                directory_repo::set_join_rule(tx, room_id, rule).await?;
            }
            "m.room.history_visibility" if state_key.is_empty() => {
                let world_readable = content.get("history_visibility").and_then(Value::as_str) == Some("world_readable");
                directory_repo::set_world_readable(tx, room_id, world_readable).await?;
            }
            // Local users are listed with their global profile (kept by `Accounts`); remote
            // users with what their latest join says.
            "m.room.member" if content.get("membership").and_then(Value::as_str) == Some("join") => {
                if let Ok(user) = UserId::parse(state_key) {
                    if user.server_name() != self.server_name() {
                        let name = content.get("displayname").and_then(Value::as_str);
                        let avatar = content.get("avatar_url").and_then(Value::as_str);
                        directory_repo::upsert(tx, user.as_str(), name, avatar).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Users matching every word of `term` (by user id or display name, across case and
    /// diacritics) that `searcher` may find, at most `limit`.
    pub async fn search_user_directory(&self, searcher: &UserId, term: &str, limit: usize, scope: DirectoryScope) -> Result<DirectoryResult> {
        let words: Vec<String> = crate::text::fold(term).split_whitespace().map(str::to_owned).collect();
        let local_suffix = format!(":{}", self.server_name());
        let all_local = matches!(scope, DirectoryScope::AllLocalUsers);
        let mut rows = directory_repo::search(self.db.pool(), searcher.as_str(), &words, &local_suffix, all_local, limit as i64 + 1).await?;
        let limited = rows.len() > limit;
        rows.truncate(limit);
        let users = rows
            .into_iter()
            .filter_map(|row| Some((UserId::parse(row.user_id).ok()?, row.display_name, row.avatar_url)))
            .collect();
        Ok(DirectoryResult { users, limited })
    }
}
