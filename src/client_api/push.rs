//! Push rules, pushers and /notifications.

use axum::extract::State;
use ruma::{
    api::client::push::{
        delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pusher::v3::PusherAction, set_pushrule,
        set_pushrule_actions, set_pushrule_enabled, Pusher, PusherKind,
    },
    push::{InsertPushRuleError, RemovePushRuleError},
    MilliSecondsSinceUnixEpoch, RoomId, UInt,
};
use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    push::{gateway::raw_event, Push},
    rooms::{pdu_from_row, read::Viewer, Rooms},
    storage::{events as event_repo, push as repo},
};

fn rule_not_found() -> MatrixError {
    MatrixError::not_found("Push rule not found")
}

pub async fn get_all(
    State(push): State<Push>,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> Result<RumaResponse<get_pushrules_all::v3::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    Ok(RumaResponse(get_pushrules_all::v3::Response::new((*ruleset).clone())))
}

pub async fn get_global(
    State(push): State<Push>,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<RumaResponse<get_pushrules_global_scope::v3::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new((*ruleset).clone())))
}

/// `GET /pushrules/global/{kind}/`: the user's rules of one kind, as Synapse serves it (the
/// spec lists all rules, or one).
pub mod get_rules_of_kind {
    use ruma::{api::auth_scheme::AccessToken, api::request, api::response, metadata};
    use serde_json::Value;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/pushrules/global/{kind}/",
            1.1 => "/_matrix/client/v3/pushrules/global/{kind}/",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub kind: String,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub rules: Value,
    }
}

pub async fn get_kind(
    State(push): State<Push>,
    request: Ruma<get_rules_of_kind::Request>,
) -> Result<RumaResponse<get_rules_of_kind::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    let all = serde_json::to_value(&*ruleset).map_err(|e| MatrixError::internal(format!("serializing push rules: {e}")))?;
    match all.get(request.body.kind.as_str()) {
        Some(rules) if rules.is_array() => Ok(RumaResponse(get_rules_of_kind::Response { rules: rules.clone() })),
        _ => Err(malformed_path().await),
    }
}

/// Paths under `/pushrules/` that name no rule, kind or attribute the API has (an unknown
/// scope or kind, a missing rule id): `400 M_UNRECOGNIZED`, as Synapse answers them.
pub async fn malformed_path() -> MatrixError {
    MatrixError::new(http::StatusCode::BAD_REQUEST, "M_UNRECOGNIZED", "Not a push rule path")
}

pub async fn get_rule(
    State(push): State<Push>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<RumaResponse<get_pushrule::v3::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    let rule = ruleset.get(request.body.kind.clone(), &request.body.rule_id).ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule::v3::Response::new(rule.to_owned().into())))
}

pub async fn set_rule(
    State(push): State<Push>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<RumaResponse<set_pushrule::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = request.body;
    push.update_rules(&user, |ruleset| {
        ruleset.insert(body.rule, body.after.as_deref(), body.before.as_deref()).map_err(|error| match error {
            InsertPushRuleError::UnknownRuleId => MatrixError::not_found("The before/after rule does not exist"),
            InsertPushRuleError::ServerDefaultRuleId => MatrixError::invalid_param("Server-default rules cannot be replaced"),
            other => MatrixError::bad_json(other.to_string()),
        })
    })
    .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

pub async fn delete_rule(
    State(push): State<Push>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<RumaResponse<delete_pushrule::v3::Response>> {
    let kind = request.body.kind.clone();
    let rule_id = request.body.rule_id.clone();
    push.update_rules(&request.user().user_id, |ruleset| {
        ruleset.remove(kind, &rule_id).map_err(|error| match error {
            RemovePushRuleError::NotFound => rule_not_found(),
            RemovePushRuleError::ServerDefault => MatrixError::invalid_param("Server-default rules cannot be deleted"),
            other => MatrixError::bad_json(other.to_string()),
        })
    })
    .await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

pub async fn get_enabled(
    State(push): State<Push>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<get_pushrule_enabled::v3::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    let rule = ruleset.get(request.body.kind.clone(), &request.body.rule_id).ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(rule.enabled())))
}

pub async fn set_enabled(
    State(push): State<Push>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<set_pushrule_enabled::v3::Response>> {
    let body = &request.body;
    push.update_rules(&request.user().user_id, |ruleset| {
        ruleset.set_enabled(body.kind.clone(), &body.rule_id, body.enabled).map_err(|_| rule_not_found())
    })
    .await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

pub async fn get_actions(
    State(push): State<Push>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<get_pushrule_actions::v3::Response>> {
    let ruleset = push.ruleset(&request.user().user_id).await?;
    let rule = ruleset.get(request.body.kind.clone(), &request.body.rule_id).ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(rule.actions().to_vec())))
}

pub async fn set_actions(
    State(push): State<Push>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<set_pushrule_actions::v3::Response>> {
    let body = &request.body;
    push.update_rules(&request.user().user_id, |ruleset| {
        ruleset.set_actions(body.kind.clone(), &body.rule_id, body.actions.clone()).map_err(|_| rule_not_found())
    })
    .await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}

pub async fn get_pushers(
    State(push): State<Push>,
    request: Ruma<get_pushers::v3::Request>,
) -> Result<RumaResponse<get_pushers::v3::Response>> {
    let rows = repo::pushers(push.db().pool(), request.user().user_id.as_str()).await?;
    let pushers = rows
        .into_iter()
        .filter_map(|(json, _)| serde_json::from_str::<Pusher>(&json).ok())
        .collect();
    Ok(RumaResponse(get_pushers::v3::Response::new(pushers)))
}

pub async fn set_pusher(
    State(push): State<Push>,
    request: Ruma<set_pusher::v3::Request>,
) -> Result<RumaResponse<set_pusher::v3::Response>> {
    let user = request.user().clone();
    match &request.body.action {
        PusherAction::Post(data) => {
            let pusher = &data.pusher;
            match &pusher.kind {
                PusherKind::Http(http) => {
                    let url = reqwest::Url::parse(&http.url).map_err(|_| MatrixError::invalid_param("data.url is not a URL"))?;
                    if url.path() != "/_matrix/push/v1/notify" || !matches!(url.scheme(), "http" | "https") {
                        return Err(MatrixError::invalid_param("data.url must be an http(s) URL with the path /_matrix/push/v1/notify"));
                    }
                }
                _ => return Err(MatrixError::invalid_param("Only http pushers are supported")),
            }
            if pusher.ids.pushkey.len() > 512 || pusher.ids.app_id.len() > 64 {
                return Err(MatrixError::invalid_param("pushkey or app_id too long"));
            }
            let json = serde_json::to_string(pusher)?;
            let mut tx = push.db().begin_write().await?;
            if !data.append {
                repo::delete_pusher_for_others(&mut tx, user.user_id.as_str(), &pusher.ids.app_id, &pusher.ids.pushkey).await?;
            }
            repo::upsert_pusher(&mut tx, user.user_id.as_str(), user.device_id.as_str(), &pusher.ids.app_id, &pusher.ids.pushkey, &json)
                .await?;
            tx.commit().await?;
        }
        PusherAction::Delete(ids) => {
            repo::delete_pusher(push.db().pool(), user.user_id.as_str(), &ids.app_id, &ids.pushkey).await?;
        }
        _ => return Err(MatrixError::invalid_param("Unknown pusher kind")),
    }
    Ok(RumaResponse(set_pusher::v3::Response::new()))
}

pub async fn notifications(
    State(push): State<Push>,
    State(rooms): State<Rooms>,
    request: Ruma<get_notifications::v3::Request>,
) -> Result<RumaResponse<get_notifications::v3::Response>> {
    let user = request.user().clone();
    let body = &request.body;
    let before = match body.from.as_deref().filter(|f| !f.is_empty()) {
        Some(from) => from.parse::<i64>().map_err(|_| MatrixError::invalid_param("Invalid from token"))?,
        None => i64::MAX,
    };
    let limit = body.limit.map(|l| u64::from(l) as i64).unwrap_or(20).clamp(1, 100);
    let only_highlight = body.only.as_deref() == Some("highlight");
    let rows = repo::notifications(push.db().pool(), user.user_id.as_str(), before, only_highlight, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let mut notifications = Vec::new();
    let mut last = None;
    for row in rows.into_iter().take(limit as usize) {
        last = Some(row.stream_ordering);
        let Some(event_row) = event_repo::get(push.db().pool(), &row.event_id).await? else { continue };
        let pdu = pdu_from_row(&event_row.event_id, &event_row.room_id, &event_row.json)?;
        let mut event = rooms.client_event(&event_row, &pdu, Some(viewer)).await?;
        if let Some(map) = event.as_object_mut() {
            map.remove("room_id");
        }
        let Some(raw) = raw_event(&event) else { continue };
        let actions = serde_json::from_str(&row.actions).unwrap_or_default();
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(row.ts.max(0) as u64).unwrap_or_default());
        let room_id = RoomId::parse(row.room_id)?;
        notifications.push(get_notifications::v3::Notification::new(actions, raw, row.read, room_id, ts));
    }
    let mut response = get_notifications::v3::Response::new(notifications);
    response.next_token = if more { last.map(|l| l.to_string()) } else { None };
    Ok(RumaResponse(response))
}
