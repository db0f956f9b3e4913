//! A user's push rules: the spec's server defaults plus their changes, kept in the
//! `m.push_rules` global account data (which is also how clients see them in /sync).

use std::sync::Arc;

use ruma::{push::Ruleset, UserId};
use serde_json::{json, Value};

use super::Push;
use crate::{
    error::{MatrixError, Result},
    storage::account_data,
};

pub const PUSH_RULES: &str = "m.push_rules";

impl Push {
    /// The user's ruleset (server defaults until they change something).
    pub async fn ruleset(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(cached) = self.rulesets.lock().unwrap_or_else(|p| p.into_inner()).get(user) {
            return Ok(cached.clone());
        }
        let stored = account_data::get(self.db.pool(), user.as_str(), "", PUSH_RULES).await?;
        let ruleset = match stored.and_then(|text| serde_json::from_str::<Value>(&text).ok()) {
            Some(value) => {
                let mut ruleset: Ruleset = serde_json::from_value(value["global"].clone())
                    .map_err(|e| MatrixError::internal(format!("stored push rules unreadable: {e}")))?;
                // Server-default rules added since the user last saved come in too.
                ruleset.update_with_server_default(Ruleset::server_default(user));
                ruleset
            }
            None => Ruleset::server_default(user),
        };
        let ruleset = Arc::new(ruleset);
        self.rulesets.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_owned(), ruleset.clone());
        Ok(ruleset)
    }

    /// Applies a change to the user's rules and stores them (bumping the account-data stream,
    /// so the change reaches the user's clients through /sync).
    pub async fn update_rules<T>(&self, user: &UserId, change: impl FnOnce(&mut Ruleset) -> Result<T>) -> Result<T> {
        let mut ruleset = (*self.ruleset(user).await?).clone();
        let result = change(&mut ruleset)?;
        let content = json!({ "global": ruleset }).to_string();
        let mut tx = self.db.begin_write().await?;
        account_data::put(&mut tx, user.as_str(), "", PUSH_RULES, &content).await?;
        tx.commit().await?;
        self.rulesets.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_owned(), Arc::new(ruleset));
        Ok(result)
    }

    /// The `m.push_rules` account data event for a user, for initial syncs.
    pub async fn rules_event(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "type": PUSH_RULES, "content": { "global": *self.ruleset(user).await? } }))
    }
}
