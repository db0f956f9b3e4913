//! A user's push rules: the spec's server defaults plus their changes, kept in the
//! `m.push_rules` global account data (which is also how clients see them in /sync).

use std::sync::Arc;

use ruma::{
    push::{NewConditionalPushRule, NewPushRule, NewSimplePushRule, PushCondition, RuleKind, Ruleset},
    RoomId, UserId,
};
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

    /// The user's own enabled rules for `old_room` (its room rule, and override / underride
    /// rules with a `room_id` condition on it) get a copy for `new_room` after an upgrade,
    /// named after the new room as Synapse names them. Copies that exist already are kept.
    /// True when a rule was copied.
    pub async fn copy_room_rules(&self, user: &UserId, old_room: &RoomId, new_room: &RoomId) -> Result<bool> {
        let ruleset = self.ruleset(user).await?;
        let names_old_room = |condition: &PushCondition| {
            matches!(condition, PushCondition::EventMatch(c) if c.key == "room_id" && c.pattern == old_room.as_str())
        };
        let for_new_room = |conditions: &[PushCondition]| -> Vec<PushCondition> {
            conditions
                .iter()
                .map(|condition| match condition {
                    PushCondition::EventMatch(c) if names_old_room(condition) => {
                        let mut c = c.clone();
                        c.pattern = new_room.to_string();
                        PushCondition::EventMatch(c)
                    }
                    other => other.clone(),
                })
                .collect()
        };
        let mut copies = Vec::new();
        if let Some(rule) = ruleset.room.iter().find(|r| r.enabled && r.rule_id == old_room) {
            copies.push(NewPushRule::Room(NewSimplePushRule::new(new_room.to_owned(), rule.actions.clone())));
        }
        for (kind, rules) in [(RuleKind::Override, &ruleset.override_), (RuleKind::Underride, &ruleset.underride)] {
            for rule in rules.iter().filter(|r| r.enabled && !r.default && r.conditions.iter().any(names_old_room)) {
                let copy = NewConditionalPushRule::new(new_room.to_string(), for_new_room(&rule.conditions), rule.actions.clone());
                copies.push(if kind == RuleKind::Override { NewPushRule::Override(copy) } else { NewPushRule::Underride(copy) });
            }
        }
        copies.retain(|copy| ruleset.get(copy.kind(), copy.rule_id()).is_none());
        if copies.is_empty() {
            return Ok(false);
        }
        self.update_rules(user, |ruleset| {
            for copy in copies {
                ruleset.insert(copy, None, None).map_err(|e| MatrixError::internal(format!("copying a push rule: {e}")))?;
            }
            Ok(true)
        })
        .await
    }

    /// The `m.push_rules` account data event for a user, for initial syncs.
    pub async fn rules_event(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "type": PUSH_RULES, "content": { "global": *self.ruleset(user).await? } }))
    }
}
