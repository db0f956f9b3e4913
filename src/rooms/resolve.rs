//! State resolution (v2, and v2.1 for room v12) with ruma-state-res, over events prefetched
//! into memory: callers gather the states, their events and auth chains first, then resolve
//! off the async executor.

use std::collections::{HashMap, HashSet};

use ruma::{
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet},
    EventId, OwnedEventId,
};

use super::Pdu;

/// (event type, state key) → event id, as ruma-state-res takes it.
pub type ResolverState = state_res::StateMap<OwnedEventId>;

/// The full auth chain of an event (its auth events, theirs, ...), from `events`.
pub fn auth_chain(event: &Pdu, events: &HashMap<OwnedEventId, Pdu>) -> HashSet<OwnedEventId> {
    let mut chain = HashSet::new();
    let mut stack: Vec<OwnedEventId> = event.auth_events.clone();
    while let Some(id) = stack.pop() {
        if !chain.insert(id.clone()) {
            continue;
        }
        if let Some(auth) = events.get(&id) {
            stack.extend(auth.auth_events.iter().cloned());
        }
    }
    chain
}

/// The conflicted state subgraph (state res v2.1): every event on an auth-event path from one
/// conflicted event to another, the two ends included.
pub fn conflicted_subgraph(conflicted: &HashSet<OwnedEventId>, events: &HashMap<OwnedEventId, Pdu>) -> HashSet<OwnedEventId> {
    // Whether an event is, or has in its auth chain, a conflicted event (memoised DFS).
    fn reaches(id: &EventId, conflicted: &HashSet<OwnedEventId>, events: &HashMap<OwnedEventId, Pdu>, memo: &mut HashMap<OwnedEventId, bool>) -> bool {
        if let Some(known) = memo.get(id) {
            return *known;
        }
        memo.insert(id.to_owned(), false); // cycles are impossible in valid DAGs; guard anyway
        let result = conflicted.contains(id)
            || events
                .get(id)
                .is_some_and(|pdu| pdu.auth_events.iter().any(|a| reaches(a, conflicted, events, memo)));
        memo.insert(id.to_owned(), result);
        result
    }
    let mut memo = HashMap::new();
    let mut subgraph = HashSet::new();
    for start in conflicted {
        let Some(pdu) = events.get(start) else { continue };
        let mut stack: Vec<OwnedEventId> = pdu.auth_events.clone();
        let mut seen = HashSet::new();
        let mut start_on_path = false;
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if reaches(&id, conflicted, events, &mut memo) {
                subgraph.insert(id.clone());
                start_on_path = true;
                if let Some(auth) = events.get(&id) {
                    stack.extend(auth.auth_events.iter().cloned());
                }
            }
        }
        if start_on_path {
            subgraph.insert(start.clone());
        }
    }
    subgraph
}

/// Resolves several states of a room into one.
pub fn resolve(rules: &RoomVersionRules, states: &[ResolverState], events: &HashMap<OwnedEventId, Pdu>) -> Result<ResolverState, String> {
    let Some(state_res_rules) = rules.state_res.v2_rules() else {
        return Err("state resolution v1 (room versions 1) is not supported".into());
    };
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = states
        .iter()
        .map(|state| {
            let mut chain = HashSet::new();
            for id in state.values() {
                if let Some(pdu) = events.get(id) {
                    chain.extend(auth_chain(pdu, events));
                }
            }
            chain.into_iter().collect()
        })
        .collect();
    state_res::resolve(
        &rules.authorization,
        state_res_rules,
        states.iter(),
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted| {
            let ids: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
            Some(conflicted_subgraph(&ids, events).into_iter().collect())
        },
    )
    .map_err(|e| e.to_string())
}

/// Converts between the storage form of a state map and ruma-state-res's.
pub fn to_resolver(state: &HashMap<(String, String), String>) -> Result<ResolverState, String> {
    state
        .iter()
        .map(|((kind, key), id)| Ok(((StateEventType::from(kind.as_str()), key.clone()), EventId::parse(id.as_str()).map_err(|e| e.to_string())?)))
        .collect()
}

pub fn from_resolver(state: &ResolverState) -> HashMap<(String, String), String> {
    state.iter().map(|((kind, key), id)| ((kind.to_string(), key.clone()), id.to_string())).collect()
}
