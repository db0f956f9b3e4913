//! Push: per-user push rules evaluated for every event and local recipient, unread counts,
//! notifications, and pushers that POST to push gateways.

pub mod gateway;
pub mod rules;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    push::{Action, HighlightTweakValue, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset, Tweak},
    room_version_rules::RoomVersionRules,
    serde::Raw,
    Int, OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::{json, Value};

use crate::{
    error::Result,
    rooms::Pdu,
    storage::{
        push::{self as repo, NewPushAction},
        rooms as room_repo, Db, Tx,
    },
};

/// The account data type listing the users a user ignores.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// What the push rules decided for one recipient of an event.
#[derive(Debug, Clone)]
pub struct RecipientActions {
    pub user_id: OwnedUserId,
    pub actions: Vec<Action>,
    pub notify: bool,
    pub highlight: bool,
}

#[derive(Clone)]
pub struct Push {
    db: Db,
    server_name: ruma::OwnedServerName,
    gateway: gateway::Gateway,
    /// Each user's rules, cached: evaluated for every event in every room they are in.
    rulesets: Arc<Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>>,
    /// Each user's ignored users, cached likewise (forgotten when the list is written).
    ignored: Arc<Mutex<HashMap<OwnedUserId, Arc<std::collections::HashSet<String>>>>>,
}

impl Push {
    pub fn new(db: Db, server_name: ruma::OwnedServerName, gateway: gateway::Gateway) -> Self {
        Self { db, server_name, gateway, rulesets: Arc::default(), ignored: Arc::default() }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs every local recipient's push rules on an event about to be persisted (the event
    /// in client format). Recipients: local joined members but the sender, and an invitee.
    /// `auth_state` is the state the event was authorised against (its power levels and create
    /// event feed the sender-notification-permission condition); `joined`, the room's joined
    /// members with their member events when the caller has them.
    pub async fn evaluate(
        &self,
        pdu: &Pdu,
        client_event: &Value,
        rules: &RoomVersionRules,
        auth_state: &HashMap<(String, String), Pdu>,
        joined: Option<&[(String, Option<String>)]>,
    ) -> Result<Vec<RecipientActions>> {
        let room_id = pdu.room_id.as_str();
        // One query for every joined member and their member event (for display names),
        // unless the caller (a batch) read them already.
        let joined = match joined {
            Some(joined) => joined.to_vec(),
            None => room_repo::joined_members_with_events(self.db.pool(), room_id).await?,
        };
        let member_count = joined.len();
        let mut recipients: Vec<(String, Option<String>)> = joined
            .into_iter()
            .map(|(user, json)| {
                let name = json.and_then(|j| serde_json::from_str::<MemberEvent>(&j).ok()).and_then(|e| e.content.displayname);
                (user, name)
            })
            .collect();
        if pdu.kind().to_string() == "m.room.member" {
            if let Some(target) = pdu.state_key() {
                if pdu.content_value()["membership"] == "invite" && !recipients.iter().any(|(r, _)| r == target) {
                    recipients.push((target.to_owned(), None));
                }
            }
        }
        let local = |user: &UserId| user.server_name() == self.server_name;
        let recipients: Vec<(OwnedUserId, Option<String>)> = recipients
            .into_iter()
            .filter(|(r, _)| r != pdu.fields.sender.as_str())
            .filter_map(|(r, name)| UserId::parse(r.as_str()).ok().map(|u| (u, name)))
            .filter(|(u, _)| local(u))
            .collect();
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let power_levels = power_levels_ctx(auth_state, rules);
        let raw: Raw<Value> = Raw::new(client_event).map_err(|e| crate::error::MatrixError::internal(e.to_string()))?;
        let mut decided = Vec::new();
        for (user_id, display_name) in recipients {
            if self.ignores(&user_id, pdu.fields.sender.as_str()).await? {
                continue;
            }
            let display_name = display_name.unwrap_or_else(|| user_id.localpart().to_owned());
            let mut context = PushConditionRoomCtx::new(
                pdu.room_id.clone(),
                UInt::try_from(member_count as u64).unwrap_or_default(),
                user_id.clone(),
                display_name,
            );
            context.power_levels = power_levels.clone();
            let ruleset = self.ruleset(&user_id).await?;
            let actions = ruleset.get_actions(&raw, &context).await.to_vec();
            let notify = actions.iter().any(|a| matches!(a, Action::Notify));
            let highlight = actions.iter().any(|a| matches!(a, Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes))));
            if notify || highlight {
                decided.push(RecipientActions { user_id, actions, notify, highlight });
            }
        }
        Ok(decided)
    }

    /// Whether `user` ignores `sender`: then nothing of the sender's notifies them.
    async fn ignores(&self, user: &UserId, sender: &str) -> Result<bool> {
        Ok(self.ignored_users(user).await?.contains(sender))
    }

    /// The users `user` ignores (cached; forgotten when they write the list).
    pub async fn ignored_users(&self, user: &UserId) -> Result<Arc<std::collections::HashSet<String>>> {
        let cached = self.ignored.lock().unwrap_or_else(|p| p.into_inner()).get(user).cloned();
        let ignored = match cached {
            Some(ignored) => ignored,
            None => {
                let content = crate::storage::account_data::get(self.db.pool(), user.as_str(), "", IGNORED_USER_LIST).await?;
                let content: Value = content.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(Value::Null);
                let ignored: std::collections::HashSet<String> = content["ignored_users"].as_object().map(|u| u.keys().cloned().collect()).unwrap_or_default();
                let ignored = Arc::new(ignored);
                self.ignored.lock().unwrap_or_else(|p| p.into_inner()).insert(user.to_owned(), ignored.clone());
                ignored
            }
        };
        Ok(ignored)
    }

    /// The user wrote their ignore list: read it again when next needed.
    pub fn forget_ignored(&self, user: &UserId) {
        self.ignored.lock().unwrap_or_else(|p| p.into_inner()).remove(user);
    }

    /// Stores the decided actions in the event's own transaction.
    pub async fn store(&self, tx: &mut Tx, pdu: &Pdu, stream_ordering: i64, decided: &[RecipientActions]) -> Result<()> {
        let thread_id = thread_of(pdu);
        let actions: Vec<String> = decided.iter().map(|r| serde_json::to_string(&r.actions)).collect::<serde_json::Result<_>>()?;
        let rows: Vec<NewPushAction> = decided
            .iter()
            .zip(&actions)
            .map(|(recipient, actions)| NewPushAction {
                user_id: recipient.user_id.as_str(),
                event_id: pdu.event_id.as_str(),
                room_id: pdu.room_id.as_str(),
                stream_ordering,
                thread_id: &thread_id,
                notify: recipient.notify,
                highlight: recipient.highlight,
                actions,
            })
            .collect();
        repo::insert_actions(tx, &rows).await?;
        Ok(())
    }

    /// After commit: tell the recipients' push gateways.
    pub fn deliver(&self, pdu: &Pdu, client_event: Value, decided: Vec<RecipientActions>) {
        let notifying: Vec<RecipientActions> = decided.into_iter().filter(|r| r.notify).collect();
        if !notifying.is_empty() {
            self.gateway.notify(pdu.clone(), client_event, notifying);
        }
    }

    /// Before a user's read receipt: their badge (rooms with unread notifications) when they
    /// have pushers, so that `receipt_stored` can tell whether it changed.
    pub async fn badge_before_receipt(&self, user: &UserId) -> Result<Option<i64>> {
        if repo::pushers_of_users(self.db.pool(), &[user.as_str()]).await?.is_empty() {
            return Ok(None);
        }
        Ok(Some(repo::rooms_with_unread(self.db.pool(), user.as_str()).await?))
    }

    /// After a user's read receipt: if their badge changed, their phones are told the new
    /// count (a push with counts only, as Synapse sends), so the app icon stops showing
    /// messages read elsewhere.
    pub fn receipt_stored(&self, user: &UserId, badge_before: Option<i64>) {
        if let Some(before) = badge_before {
            self.gateway.update_badge(user.to_owned(), before);
        }
    }

    /// Unread counts in a room: (notifications, highlights) for the main timeline (all threads
    /// folded in unless `per_thread`), and per thread root when `per_thread`.
    pub async fn unread(&self, user: &UserId, room_id: &RoomId, per_thread: bool) -> Result<(Value, Option<Value>)> {
        let rows = repo::unread_counts(self.db.pool(), user.as_str(), room_id.as_str()).await?;
        let (mut notes, mut highlights) = (0, 0);
        let mut threads = serde_json::Map::new();
        for (thread, n, h) in rows {
            if per_thread && thread != "main" {
                threads.insert(thread, json!({ "notification_count": n, "highlight_count": h }));
            } else {
                notes += n;
                highlights += h;
            }
        }
        let main = json!({ "notification_count": notes, "highlight_count": highlights });
        Ok((main, per_thread.then_some(Value::Object(threads))))
    }
}

/// The thread an event belongs to: its root, or "main".
pub fn thread_of(pdu: &Pdu) -> String {
    let content = pdu.content_value();
    let relates = &content["m.relates_to"];
    match (relates["rel_type"].as_str(), relates["event_id"].as_str()) {
        (Some("m.thread"), Some(root)) => root.to_owned(),
        _ => "main".to_owned(),
    }
}

/// Only the display name of a member event is read.
#[derive(serde::Deserialize)]
struct MemberEvent {
    content: MemberContent,
}

#[derive(serde::Deserialize)]
struct MemberContent {
    displayname: Option<String>,
}

/// The power-levels context of push conditions, from the state an event was authorised
/// against.
fn power_levels_ctx(state: &HashMap<(String, String), Pdu>, rules: &RoomVersionRules) -> Option<PushConditionPowerLevelsCtx> {
    let content = |kind: &str| state.get(&(kind.to_owned(), String::new()));
    let power = content("m.room.power_levels")?.content_value();
    let users = power["users"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(u, l)| Some((UserId::parse(u.as_str()).ok()?, Int::new(l.as_i64()?)?)))
                .collect()
        })
        .unwrap_or_default();
    let users_default = Int::new(power["users_default"].as_i64().unwrap_or(0)).unwrap_or_default();
    let notifications = serde_json::from_value(power["notifications"].clone()).unwrap_or_default();
    let mut creators: Vec<OwnedUserId> = Vec::new();
    if let Some(create) = content("m.room.create") {
        creators.push(create.fields.sender.clone());
        if let Some(extra) = create.content_value()["additional_creators"].as_array() {
            creators.extend(extra.iter().filter_map(|u| u.as_str()).filter_map(|u| UserId::parse(u).ok()));
        }
    }
    let power_rules = ruma::room_version_rules::RoomPowerLevelsRules::new(&rules.authorization, creators);
    Some(PushConditionPowerLevelsCtx::new(users, users_default, notifications, power_rules))
}
