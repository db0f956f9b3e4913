//! Routes every endpoint at each path ruma knows for it (r0, v3, unstable aliases).

use axum::{
    extract::{Request, State},
    handler::Handler,
    http::Method,
    routing::{on, post, MethodFilter},
    Router,
};
use ruma::api::{path_builder::PathBuilder, Metadata};

use super::extract::TrailingPathArg;
use crate::error::MatrixError;

pub trait RumaRouter<S> {
    /// Registers `handler` for every path of ruma endpoint `T`.
    fn ruma<T: Metadata, H: Handler<X, S>, X: 'static>(self, handler: H) -> Self;

    /// Also serves `T`, a PUT whose path ends in a transaction id, as a POST without one:
    /// the deprecated form of `send` and `redact` that Synapse still serves and SyTest
    /// sends. Each such request gets a fresh transaction id, so none is deduplicated.
    fn ruma_post_without_txn_id<T: Metadata, H: Handler<X, S>, X: 'static>(self, handler: H) -> Self;
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::OPTIONS,
    }
}

impl<S: Clone + Send + Sync + 'static> RumaRouter<S> for Router<S> {
    fn ruma<T: Metadata, H: Handler<X, S>, X: 'static>(mut self, handler: H) -> Self {
        let filter = method_filter(&T::METHOD);
        for path in T::PATH_BUILDER.all_paths() {
            self = self.route(path, on(filter, handler.clone()));
            // State endpoints allow an empty state key: `/state/{type}` and `/state/{type}/`.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                self = self.route(prefix, on(filter, handler.clone()));
                self = self.route(&format!("{prefix}/"), on(filter, handler.clone()));
            }
        }
        self
    }

    fn ruma_post_without_txn_id<T: Metadata, H: Handler<X, S>, X: 'static>(mut self, handler: H) -> Self {
        for path in T::PATH_BUILDER.all_paths() {
            let Some(prefix) = path.strip_suffix("/{txn_id}") else { continue };
            let handler = handler.clone();
            self = self.route(
                prefix,
                post(move |State(state): State<S>, request: Request| async move { handler.call(with_fresh_txn_id(request), state).await }),
            );
        }
        self
    }
}

/// The request as a PUT with a new transaction id as its last path parameter.
fn with_fresh_txn_id(request: Request) -> Request {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(TrailingPathArg(format!("weft-post-{}", ruma::TransactionId::new())));
    parts.method = Method::PUT;
    Request::from_parts(parts, body)
}

pub async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized("Unrecognized request")
}

pub async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}
