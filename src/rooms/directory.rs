//! The public room directory: which published rooms a server lists, and how they page.
//!
//! One implementation serves local clients (`/publicRooms`) and other servers
//! (`/_matrix/federation/v1/publicRooms`).

use ruma::{
    directory::{Filter, PublicRoomsChunk, RoomNetwork, RoomTypeFilter},
    RoomId, UInt,
};
use serde_json::Value;

use super::Rooms;
use crate::{
    error::{MatrixError, Result},
    storage::{appservice as appservice_repo, rooms as room_repo},
};

/// Default and largest page sizes, as Synapse uses them.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

/// One page of the directory, ready to copy into a client or federation response.
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: Option<UInt>,
}

/// Which directory a page is of.
pub enum Listing<'a> {
    /// The server's own: rooms published with visibility `public`.
    Published,
    /// One application service network's (`third_party_instance_id` "{service}|{network}").
    Network { appservice_id: &'a str, network_id: &'a str },
    /// Both (`include_all_networks`).
    All,
}

impl<'a> Listing<'a> {
    /// The directory a `/publicRooms` request's network names.
    pub fn of_network(network: &'a RoomNetwork) -> Result<Self> {
        Ok(match network {
            RoomNetwork::All => Listing::All,
            RoomNetwork::ThirdParty(instance) => match instance.split_once('|') {
                Some((appservice_id, network_id)) => Listing::Network { appservice_id, network_id },
                None => return Err(MatrixError::invalid_param(format!("Unknown third_party_instance_id {instance:?}"))),
            },
            _ => Listing::Published,
        })
    }
}

/// A directory's rooms, largest first, narrowed by `filter`, paginated by offset tokens (`o<N>`).
pub async fn page(rooms: &Rooms, listing: Listing<'_>, limit: Option<UInt>, since: Option<&str>, filter: &Filter) -> Result<DirectoryPage> {
    let offset: usize = match since.filter(|s| !s.is_empty()) {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit.map(|l| u64::from(l) as usize).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let search = filter.generic_search_term.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut entries = Vec::new();
    // Ordered by joined members, largest first.
    let published = room_repo::published_rooms(rooms.db().pool()).await?.into_iter().map(|(room_id, _)| room_id);
    let listed: Vec<String> = match listing {
        Listing::Published => published.collect(),
        Listing::Network { appservice_id, network_id } => appservice_repo::listed_rooms(rooms.db().pool(), appservice_id, network_id).await?,
        Listing::All => {
            let mut all: Vec<String> = published.collect();
            for room_id in appservice_repo::all_listed_rooms(rooms.db().pool()).await? {
                if !all.contains(&room_id) {
                    all.push(room_id);
                }
            }
            all
        }
    };
    for room_id in listed {
        let room_id = RoomId::parse(room_id)?;
        let entry: PublicRoomsChunk = typed_summary(rooms.room_summary(&room_id).await?)?;
        if !filter.room_types.is_empty() {
            let room_type = RoomTypeFilter::from(entry.room_type.as_ref().map(|t| t.as_str()));
            if !filter.room_types.contains(&room_type) {
                continue;
            }
        }
        if let Some(term) = &search {
            let alias = entry.canonical_alias.as_ref().map(|a| a.as_str());
            let haystack = [entry.name.as_deref(), entry.topic.as_deref(), alias].iter().flatten().copied().collect::<Vec<_>>().join(" ").to_lowercase();
            if !haystack.contains(term.as_str()) {
                continue;
            }
        }
        entries.push(entry);
    }
    let total = entries.len();
    let chunk: Vec<PublicRoomsChunk> = entries.into_iter().skip(offset).take(limit).collect();
    let next_batch = (offset + chunk.len() < total).then(|| format!("o{}", offset + chunk.len()));
    let prev_batch = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    Ok(DirectoryPage { chunk, next_batch, prev_batch, total_room_count_estimate: UInt::try_from(total as u64).ok() })
}

/// Parses a summary into a ruma type; malformed aliases or URLs (room state may come from
/// other servers) are dropped rather than the room.
pub fn typed_summary<T: serde::de::DeserializeOwned>(mut summary: Value) -> Result<T> {
    match serde_json::from_value::<T>(summary.clone()) {
        Ok(typed) => Ok(typed),
        Err(_) => {
            if let Some(object) = summary.as_object_mut() {
                for key in ["canonical_alias", "avatar_url"] {
                    object.remove(key);
                }
            }
            serde_json::from_value(summary).map_err(|e| MatrixError::internal(e.to_string()))
        }
    }
}
