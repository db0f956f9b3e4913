//! Application services (bridges): the registered services, what each one owns, the
//! homeserver's requests to them and the transactions that carry events to them.

pub mod client;
pub mod ephemeral;
pub mod registration;
pub mod sender;

use std::sync::Arc;

pub use registration::AppService;

/// Every registered application service, read once at start-up.
#[derive(Clone, Default)]
pub struct AppServices {
    services: Arc<Vec<Arc<AppService>>>,
}

impl AppServices {
    pub fn new(services: Vec<AppService>) -> Self {
        Self { services: Arc::new(services.into_iter().map(Arc::new).collect()) }
    }

    pub fn all(&self) -> &[Arc<AppService>] {
        &self.services
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The service an `as_token` belongs to. Compared in constant time: tokens are secrets.
    pub fn by_token(&self, token: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|service| constant_time_eq(service.registration.as_token.as_bytes(), token.as_bytes()))
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|service| service.id() == id)
    }

    /// The service a request was made by (with its `as_token`), if any.
    pub fn of_requester(&self, requester: &crate::accounts::Requester) -> Option<&Arc<AppService>> {
        requester.appservice_id.as_deref().and_then(|id| self.by_id(id))
    }

    /// Services that declare third-party protocols (lookups by alias or user id ask them).
    pub fn with_protocols(&self) -> impl Iterator<Item = &Arc<AppService>> {
        self.services.iter().filter(|service| service.registration.protocols.as_ref().is_some_and(|p| !p.is_empty()))
    }

    /// The service that holds this user id exclusively, if any.
    pub fn exclusive_owner_of_user(&self, user_id: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|service| service.owns_user_exclusively(user_id))
    }

    pub fn exclusive_owner_of_alias(&self, alias: &str) -> Option<&Arc<AppService>> {
        self.services.iter().find(|service| service.owns_alias_exclusively(alias))
    }

    /// Services to ask about an unknown user id or alias (those whose namespaces hold it).
    pub fn interested_in_user<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a Arc<AppService>> + 'a {
        self.services.iter().filter(move |service| service.users.iter().any(|p| p.matches(user_id)))
    }

    pub fn interested_in_alias<'a>(&'a self, alias: &'a str) -> impl Iterator<Item = &'a Arc<AppService>> + 'a {
        self.services.iter().filter(move |service| service.is_interested_in_alias(alias))
    }

    pub fn providing_protocol<'a>(&'a self, protocol: &'a str) -> impl Iterator<Item = &'a Arc<AppService>> + 'a {
        self.services.iter().filter(move |service| service.provides_protocol(protocol))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
