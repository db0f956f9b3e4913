//! The homeserver's requests to application services (the Application Service API), as
//! ruma's typed requests, authenticated with the service's `hs_token`.
//!
//! A service's url is the operator's own setting (most bridges listen on loopback), so
//! these requests do not go through the federation's IP-range guard.

use std::time::Duration;

use ruma::api::{
    appservice::{
        ping::send_ping,
        query::{query_room_alias, query_user_id},
    },
    appservice::HomeserverToken,
    path_builder::SinglePath,
    IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
};

use super::{AppService, AppServices};

/// How a request to a service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the application service has no url")]
    NoUrl,
    #[error("the application service timed out")]
    Timeout,
    #[error("connecting to the application service failed: {0}")]
    Connection(String),
    /// It answered, with an error status.
    #[error("the application service answered {status}")]
    Status { status: http::StatusCode, body: String },
    #[error("the application service's answer is not valid: {0}")]
    BadResponse(String),
    #[error("building the request failed: {0}")]
    Request(String),
}

/// Requests to the registered services.
#[derive(Clone)]
pub struct AppServiceClient {
    http: reqwest::Client,
    services: AppServices,
}

impl AppServiceClient {
    /// `extra_roots`: CA certificates trusted beyond the system's (`federation.extra_ca_files`;
    /// a bridge on another host may use a private CA too).
    pub fn new(services: AppServices, extra_roots: &[reqwest::Certificate]) -> Self {
        let mut builder = reqwest::Client::builder();
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client builds");
        Self { http, services }
    }

    /// Sends one typed request to the service and parses its answer.
    pub async fn call<R>(&self, service: &AppService, request: R, timeout: Duration) -> Result<R::IncomingResponse, CallError>
    where
        R: OutgoingRequest<Authentication = HomeserverToken, PathBuilder = SinglePath>,
    {
        let (status, bytes) = self.send(service, request, timeout).await?;
        let response = http::Response::builder().status(status).body(&bytes[..]).map_err(|e| CallError::BadResponse(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(response).map_err(|e| CallError::BadResponse(e.to_string()))
    }

    /// Sends one typed request and returns the answer's JSON as it came, for answers the
    /// homeserver passes on (third-party metadata, whose fields services fill loosely).
    pub async fn call_json<R>(&self, service: &AppService, request: R, timeout: Duration) -> Result<serde_json::Value, CallError>
    where
        R: OutgoingRequest<Authentication = HomeserverToken, PathBuilder = SinglePath>,
    {
        let (_, bytes) = self.send(service, request, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadResponse(e.to_string()))
    }

    async fn send<R>(&self, service: &AppService, request: R, timeout: Duration) -> Result<(http::StatusCode, bytes::Bytes), CallError>
    where
        R: OutgoingRequest<Authentication = HomeserverToken, PathBuilder = SinglePath>,
    {
        let url = service.url().ok_or(CallError::NoUrl)?;
        let request = request
            .try_into_http_request::<Vec<u8>>(url.trim_end_matches('/'), &service.registration.hs_token, ())
            .map_err(|e| CallError::Request(e.to_string()))?;
        let request = reqwest::Request::try_from(request).map_err(|e| CallError::Request(e.to_string()))?;
        let response = tokio::time::timeout(timeout, self.http.execute(request)).await.map_err(|_| CallError::Timeout)?;
        let response = response.map_err(|e| if e.is_timeout() { CallError::Timeout } else { CallError::Connection(e.to_string()) })?;
        let status = response.status();
        let bytes = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|e| CallError::Connection(e.to_string()))?;
        if !status.is_success() {
            return Err(CallError::Status { status, body: String::from_utf8_lossy(&bytes).into_owned() });
        }
        Ok((status, bytes))
    }

    /// `POST /_matrix/app/v1/ping`.
    pub async fn ping(&self, service: &AppService, transaction_id: Option<ruma::OwnedTransactionId>) -> Result<(), CallError> {
        let mut request = send_ping::v1::Request::new();
        request.transaction_id = transaction_id;
        self.call(service, request, Duration::from_secs(10)).await.map(|_| ())
    }

    pub fn services(&self) -> &AppServices {
        &self.services
    }

    /// Whether a service whose namespaces hold this (unknown) user created it when asked.
    pub async fn user_created(&self, user_id: &ruma::UserId) -> bool {
        for service in self.services.interested_in_user(user_id.as_str()) {
            if self.query_user(service, user_id).await {
                return true;
            }
        }
        false
    }

    /// Whether a service whose namespaces hold this (unknown) alias created it when asked.
    pub async fn alias_created(&self, alias: &ruma::RoomAliasId) -> bool {
        for service in self.services.interested_in_alias(alias.as_str()) {
            if self.query_alias(service, alias).await {
                return true;
            }
        }
        false
    }

    /// Asks the service whether it has this user (`GET /_matrix/app/v1/users/{userId}`):
    /// true when it answered 200, having created it.
    pub async fn query_user(&self, service: &AppService, user_id: &ruma::UserId) -> bool {
        let request = query_user_id::v1::Request::new(user_id.to_owned());
        match self.call(service, request, Duration::from_secs(10)).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(appservice = service.id(), %user_id, %error, "user query answered no");
                false
            }
        }
    }

    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: true when the service created the alias.
    pub async fn query_alias(&self, service: &AppService, alias: &ruma::RoomAliasId) -> bool {
        let request = query_room_alias::v1::Request::new(alias.to_owned());
        match self.call(service, request, Duration::from_secs(10)).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(appservice = service.id(), %alias, %error, "alias query answered no");
                false
            }
        }
    }
}
