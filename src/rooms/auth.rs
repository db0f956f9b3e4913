//! The authorization rules applied to an event against its own auth events (the spec's
//! check 4 on receipt of a PDU): both the rules that need no state and the state-dependent
//! ones, with the auth events standing in for the state. The check against the state before
//! the event and the soft-failure check against the current state are in `persist`.

use std::collections::HashMap;

use ruma::{events::StateEventType, room_version_rules::RoomVersionRules, EventId, OwnedEventId};

use super::Pdu;

/// Whether `pdu` passes the auth rules against `auth_events` (its auth events, by id, plus
/// the create event for room versions whose room id names it). The error says which rule
/// failed.
pub(crate) fn check_against_auth_events(rules: &RoomVersionRules, pdu: &Pdu, auth_events: &HashMap<OwnedEventId, Pdu>) -> Result<(), String> {
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id: &EventId| auth_events.get(id).cloned())?;
    let by_key: HashMap<(String, String), &Pdu> = auth_events
        .values()
        .filter_map(|event| Some(((event.kind().to_string(), event.state_key()?.to_owned()), event)))
        .collect();
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |kind: &StateEventType, key: &str| {
        by_key.get(&(kind.to_string(), key.to_owned())).map(|event| (*event).clone())
    })
}
