//! The one error type handlers return: a Matrix `errcode` + `error` with its HTTP status.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    /// Ours are constants; a remote server's refusal passed on keeps its own code.
    pub errcode: std::borrow::Cow<'static, str>,
    pub message: String,
    /// Extra top-level fields (retry_after_ms, UIA flows, ...).
    pub extra: Map<String, Value>,
}

pub type Result<T, E = MatrixError> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($fn_name:ident => $status:ident, $code:literal;)*) => {
        impl MatrixError {
            $(pub fn $fn_name(message: impl Into<String>) -> Self {
                Self::new(StatusCode::$status, $code, message)
            })*
        }
    };
}

constructors! {
    forbidden => FORBIDDEN, "M_FORBIDDEN";
    not_found => NOT_FOUND, "M_NOT_FOUND";
    bad_json => BAD_REQUEST, "M_BAD_JSON";
    not_json => BAD_REQUEST, "M_NOT_JSON";
    missing_param => BAD_REQUEST, "M_MISSING_PARAM";
    invalid_param => BAD_REQUEST, "M_INVALID_PARAM";
    missing_token => UNAUTHORIZED, "M_MISSING_TOKEN";
    unknown_token => UNAUTHORIZED, "M_UNKNOWN_TOKEN";
    user_in_use => BAD_REQUEST, "M_USER_IN_USE";
    invalid_username => BAD_REQUEST, "M_INVALID_USERNAME";
    exclusive => BAD_REQUEST, "M_EXCLUSIVE";
    room_in_use => BAD_REQUEST, "M_ROOM_IN_USE";
    too_large => PAYLOAD_TOO_LARGE, "M_TOO_LARGE";
    unrecognized => NOT_FOUND, "M_UNRECOGNIZED";
    unsupported_room_version => BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION";
    unknown => BAD_REQUEST, "M_UNKNOWN";
    internal => INTERNAL_SERVER_ERROR, "M_UNKNOWN";
    user_deactivated => FORBIDDEN, "M_USER_DEACTIVATED";
    not_joined => FORBIDDEN, "M_FORBIDDEN";
    invalid_room_state => BAD_REQUEST, "M_INVALID_ROOM_STATE";
    user_suspended => FORBIDDEN, "M_USER_SUSPENDED";
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { status, errcode: errcode.into(), message: message.into(), extra: Map::new() }
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "Method not allowed")
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too many requests")
            .with("retry_after_ms", retry_after_ms.into())
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        // A UIA challenge without a failed stage has no errcode.
        if !self.errcode.is_empty() {
            body.insert("errcode".into(), self.errcode.clone().into());
            body.insert("error".into(), self.message.clone().into());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.errcode, self.message)
    }
}

impl std::error::Error for MatrixError {}

impl IntoResponse for MatrixError {
    fn into_response(mut self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            // What went wrong (database text, file paths) is for the log, not the client: the
            // client gets a reference to quote, found beside the error in the log.
            let reference: String = {
                use rand::Rng;
                let mut rng = rand::thread_rng();
                (0..10).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
            };
            tracing::error!(error = %self.message, %reference, "internal error");
            self.message = format!("Internal server error (reference {reference})");
        } else if self.status.is_server_error() {
            tracing::warn!(error = %self.message, status = %self.status, "answered with a server error");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(ms) = self.extra.get("retry_after_ms").and_then(Value::as_u64) {
            let secs = ms.div_ceil(1000).to_string();
            if let Ok(value) = secs.parse() {
                response.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sqlx::Error> for MatrixError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(format!("database error: {error}"))
    }
}

/// JSON the server stored or built itself that does not parse is corrupt data: a 500. Input
/// from a client or another server is parsed where it arrives, with its own 400.
impl From<serde_json::Error> for MatrixError {
    fn from(error: serde_json::Error) -> Self {
        Self::internal(format!("malformed JSON: {error}"))
    }
}

impl From<ruma::IdParseError> for MatrixError {
    fn from(error: ruma::IdParseError) -> Self {
        Self::invalid_param(error.to_string())
    }
}
