//! `POST /user_directory/search`: people search.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::user_directory::search_users;

use super::extract::{Ruma, RumaResponse};
use crate::{
    config::Config,
    error::Result,
    rooms::{user_directory::DirectoryScope, Rooms},
};

/// Synapse caps a search at this many results whatever the client asks.
const MAX_LIMIT: usize = 50;

pub async fn search(
    State(rooms): State<Rooms>,
    State(config): State<Arc<Config>>,
    request: Ruma<search_users::v3::Request>,
) -> Result<RumaResponse<search_users::v3::Response>> {
    let searcher = &request.user().user_id;
    let limit = usize::try_from(u64::from(request.body.limit)).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    let scope = if config.user_directory.search_all_users { DirectoryScope::AllLocalUsers } else { DirectoryScope::SharedAndPublic };
    let found = rooms.search_user_directory(searcher, &request.body.search_term, limit, scope).await?;
    let results = found
        .users
        .into_iter()
        .map(|(user_id, display_name, avatar_url)| {
            let mut user = search_users::v3::User::new(user_id);
            user.display_name = display_name;
            user.avatar_url = avatar_url.map(Into::into);
            user
        })
        .collect();
    Ok(RumaResponse(search_users::v3::Response::new(results, found.limited)))
}
