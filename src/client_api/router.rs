//! Routes every endpoint at each path ruma knows for it (r0, v3, unstable aliases).

use axum::{
    handler::Handler,
    http::Method,
    routing::{on, MethodFilter},
    Router,
};
use ruma::api::{path_builder::PathBuilder, Metadata};

use crate::error::MatrixError;

pub trait RumaRouter<S> {
    /// Registers `handler` for every path of ruma endpoint `T`.
    fn ruma<T: Metadata, H: Handler<X, S>, X: 'static>(self, handler: H) -> Self;
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
}

pub async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized("Unrecognized request")
}

pub async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}
