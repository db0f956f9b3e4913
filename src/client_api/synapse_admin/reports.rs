//! Synapse's admin API for event reports (what users reported with `/report`): list with
//! filters and paging, details with the reported event, delete. Paths and JSON as
//! Synapse's `docs/admin_api/event_reports.md`.

use axum::extract::State;
use ruma::{
    api::{auth_scheme::AccessToken, request, response},
    metadata,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::require_admin;
use crate::{
    client_api::extract::{Ruma, RumaResponse},
    error::{MatrixError, Result},
    rooms::Rooms,
    storage::reports as repo,
};

/// A report as the listing shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventReport {
    pub id: i64,
    pub received_ts: i64,
    pub room_id: String,
    pub name: Option<String>,
    pub canonical_alias: Option<String>,
    pub event_id: Option<String>,
    /// The reporter.
    pub user_id: String,
    /// The reported event's sender.
    pub sender: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    /// Details only: the reported event as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_json: Option<Value>,
}

/// The report with its room's name and alias (none when the room is gone, e.g. purged).
async fn report(rooms: &Rooms, row: repo::EventReportRow, with_event: bool) -> Result<EventReport> {
    let room_id = ruma::RoomId::parse(&row.room_id)?;
    let name = rooms.current_state_content(&room_id, "m.room.name", "").await.ok().flatten();
    let alias = rooms.current_state_content(&room_id, "m.room.canonical_alias", "").await.ok().flatten();
    Ok(EventReport {
        id: row.id,
        received_ts: row.received_ts,
        room_id: row.room_id,
        name: name.and_then(|c| c["name"].as_str().map(str::to_owned)),
        canonical_alias: alias.and_then(|c| c["alias"].as_str().map(str::to_owned)),
        event_id: row.event_id,
        user_id: row.reporter,
        sender: row.sender,
        reason: row.reason,
        score: row.score,
        event_json: if with_event { row.event_json.and_then(|json| serde_json::from_str(&json).ok()) } else { None },
    })
}

pub mod list_reports {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/event_reports",
    }

    #[request]
    #[derive(Default)]
    pub struct Request {
        #[ruma_api(query)]
        pub from: Option<i64>,
        #[ruma_api(query)]
        pub limit: Option<i64>,
        /// `b` (default: newest first) or `f`.
        #[ruma_api(query)]
        pub dir: Option<String>,
        /// The reporter.
        #[ruma_api(query)]
        pub user_id: Option<String>,
        #[ruma_api(query)]
        pub room_id: Option<String>,
        #[ruma_api(query)]
        pub event_sender_user_id: Option<String>,
    }

    #[response]
    pub struct Response {
        pub event_reports: Vec<EventReport>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_token: Option<i64>,
        pub total: i64,
    }
}

pub async fn list(State(rooms): State<Rooms>, request: Ruma<list_reports::Request>) -> Result<RumaResponse<list_reports::Response>> {
    require_admin(request.user())?;
    let body = request.body;
    let offset = body.from.unwrap_or(0);
    let limit = body.limit.unwrap_or(100);
    if offset < 0 || limit < 0 {
        return Err(MatrixError::invalid_param("from and limit must be positive integers"));
    }
    let newest_first = match body.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(MatrixError::invalid_param("Unknown direction: dir must be 'f' or 'b'")),
    };
    let listing = repo::ReportListing {
        reporter: body.user_id,
        room_id: body.room_id,
        event_sender: body.event_sender_user_id,
        newest_first,
        offset,
        limit: limit.min(1000),
    };
    let (rows, total) = repo::list_event_reports(rooms.db().pool(), &listing).await?;
    let mut event_reports = Vec::with_capacity(rows.len());
    for row in rows {
        event_reports.push(report(&rooms, row, false).await?);
    }
    let end = offset + event_reports.len() as i64;
    Ok(RumaResponse(list_reports::Response { next_token: (end < total).then_some(end), event_reports, total }))
}

pub mod report_details {
    use super::*;

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/event_reports/{report_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub report_id: String,
    }

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub report: EventReport,
    }
}

fn report_id(text: &str) -> Result<i64> {
    text.parse::<i64>().ok().filter(|id| *id >= 0).ok_or_else(|| MatrixError::invalid_param("The report_id parameter must be a string representing a positive integer."))
}

pub async fn details(State(rooms): State<Rooms>, request: Ruma<report_details::Request>) -> Result<RumaResponse<report_details::Response>> {
    require_admin(request.user())?;
    let id = report_id(&request.body.report_id)?;
    let row = repo::event_report(rooms.db().pool(), id).await?.ok_or_else(|| MatrixError::not_found("Event report not found"))?;
    Ok(RumaResponse(report_details::Response { report: report(&rooms, row, true).await? }))
}

pub mod delete_report {
    use super::*;

    metadata! {
        method: DELETE,
        rate_limited: false,
        authentication: AccessToken,
        path: "/_synapse/admin/v1/event_reports/{report_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub report_id: String,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

pub async fn delete(State(rooms): State<Rooms>, request: Ruma<delete_report::Request>) -> Result<RumaResponse<delete_report::Response>> {
    require_admin(request.user())?;
    let id = report_id(&request.body.report_id)?;
    if !repo::delete_event_report(rooms.db().pool(), id).await? {
        return Err(MatrixError::not_found("Event report not found"));
    }
    Ok(RumaResponse(delete_report::Response {}))
}
