//! ruma-state-res's resolution fixtures (copied under tests/data/state-res, with the expected
//! states taken from its snapshots) run through weft's own resolution code
//! (`weft::rooms::resolve`): every PDU's state is the resolution of its prev events' states,
//! with the PDU applied through resolution too (so the auth rules decide), and the room's
//! state is the resolution of its leaves.

use std::collections::{HashMap, HashSet};

use ruma::{events::StateEventType, CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId};
use serde_json::Value;
use weft::rooms::{
    resolve::{resolve, ResolverState},
    Pdu,
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/state-res/");

fn load(files: &[&str]) -> (Vec<Pdu>, ruma::room_version_rules::RoomVersionRules) {
    let mut pdus = Vec::new();
    for file in files {
        let values: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(format!("{DIR}{file}")).unwrap()).unwrap();
        for value in values {
            let event_id = EventId::parse(value["event_id"].as_str().unwrap()).unwrap();
            let room_id = match value["room_id"].as_str() {
                Some(room) => RoomId::parse(room).unwrap(),
                None => RoomId::parse(format!("!{}", &event_id.as_str()[1..])).unwrap(),
            };
            let mut object: CanonicalJsonObject = serde_json::from_value(value.clone()).unwrap();
            object.remove("event_id");
            let mut pdu = Pdu::from_json(event_id, room_id, object).unwrap();
            pdu.rejected = value["rejected"].as_bool().unwrap_or(false);
            pdus.push(pdu);
        }
    }
    let version = pdus[0].content_value()["room_version"].as_str().unwrap_or("1").to_owned();
    let rules = RoomVersionId::try_from(version.as_str()).unwrap().rules().unwrap();
    (pdus, rules)
}

fn key(pdu: &Pdu) -> (StateEventType, String) {
    (pdu.kind().to_string().into(), pdu.state_key().expect("state events").to_owned())
}

/// A server's view: each PDU's state from its prev events, then the leaves resolved.
fn resolve_iteratively(pdus: &[Pdu], rules: &ruma::room_version_rules::RoomVersionRules) -> ResolverState {
    let events: HashMap<OwnedEventId, Pdu> = pdus.iter().map(|p| (p.event_id.clone(), p.clone())).collect();
    let mut state_at: HashMap<OwnedEventId, ResolverState> = HashMap::new();
    let mut remaining: Vec<&Pdu> = pdus.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|pdu| {
            if !pdu.prev_events.iter().all(|p| state_at.contains_key(p)) {
                return true;
            }
            let prev_states: Vec<ResolverState> = pdu.prev_events.iter().map(|p| state_at[p].clone()).collect();
            let state_before = if prev_states.is_empty() {
                ResolverState::new()
            } else {
                resolve(rules, &prev_states, &events).unwrap()
            };
            let mut proposed = state_before.clone();
            proposed.insert(key(pdu), pdu.event_id.clone());
            let state = resolve(rules, &[state_before, proposed], &events).unwrap();
            state_at.insert(pdu.event_id.clone(), state);
            false
        });
        assert!(remaining.len() < before, "some prev_events are missing");
    }
    let referenced: HashSet<&OwnedEventId> = pdus.iter().flat_map(|p| p.prev_events.iter()).collect();
    let leaves: Vec<ResolverState> =
        pdus.iter().filter(|p| !referenced.contains(&p.event_id)).map(|p| state_at[&p.event_id].clone()).collect();
    resolve(rules, &leaves, &events).unwrap()
}

fn resolve_state_maps(state_files: &[&str], pdu_files: &[&str]) -> ResolverState {
    let (pdus, rules) = load(pdu_files);
    let events: HashMap<OwnedEventId, Pdu> = pdus.iter().map(|p| (p.event_id.clone(), p.clone())).collect();
    let states: Vec<ResolverState> = state_files
        .iter()
        .map(|file| {
            let ids: Vec<OwnedEventId> = serde_json::from_str(&std::fs::read_to_string(format!("{DIR}{file}")).unwrap()).unwrap();
            ids.into_iter().map(|id| (key(&events[&id]), id)).collect()
        })
        .collect();
    resolve(&rules, &states, &events).unwrap()
}

fn expected(name: &str) -> Vec<(String, String, String)> {
    let all: HashMap<String, Vec<(String, String, String)>> =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}expected.json")).unwrap()).unwrap();
    all[name].clone()
}

fn sorted(state: &ResolverState) -> Vec<(String, String, String)> {
    let mut entries: Vec<_> = state.iter().map(|((t, k), id)| (t.to_string(), k.clone(), id.to_string())).collect();
    entries.sort();
    entries
}

macro_rules! batches {
    ($($name:ident: [$($file:literal),* $(,)?];)*) => {$(
        #[test]
        fn $name() {
            let (pdus, rules) = load(&[$($file),*]);
            assert_eq!(sorted(&resolve_iteratively(&pdus, &rules)), expected(stringify!($name)));
        }
    )*};
}

batches! {
    minimal_private_chat: ["bootstrap-private-chat.json"];
    minimal_public_chat: ["bootstrap-public-chat.json"];
    origin_server_ts_tiebreak: ["bootstrap-private-chat.json", "origin-server-ts-tiebreak.json"];
    ban_vs_power_levels: ["bootstrap-public-chat.json", "ban-vs-power-levels-alice.json", "ban-vs-power-levels-bob.json"];
    topic_vs_power_levels: ["bootstrap-public-chat.json", "topic-vs-power-levels-alice.json", "topic-vs-power-levels-bob.json"];
    power_levels_admin_vs_mod: ["bootstrap-public-chat.json", "power-levels-admin-vs-mod-alice.json", "power-levels-admin-vs-mod-bob.json"];
    topic_vs_ban: ["bootstrap-public-chat.json", "topic-vs-ban-common.json", "topic-vs-ban-alice.json", "topic-vs-ban-bob.json"];
    join_rules_vs_join: ["bootstrap-public-chat.json", "join-rules-vs-join-common.json", "join-rules-vs-join-alice.json", "join-rules-vs-join-ella.json"];
    concurrent_joins: ["bootstrap-public-chat.json", "concurrent-joins-charlie.json", "concurrent-joins-ella.json"];
}

#[test]
fn msc4297_problem_a_state_res_v2_0() {
    let state = resolve_state_maps(&["MSC4297-problem-A/state-bob.json", "MSC4297-problem-A/state-charlie.json"], &["MSC4297-problem-A/pdus-v11.json"]);
    assert_eq!(sorted(&state), expected("msc4297_problem_a_state_res_v2_0"));
}

#[test]
fn msc4297_problem_a_state_res_v2_1() {
    let state = resolve_state_maps(&["MSC4297-problem-A/state-bob.json", "MSC4297-problem-A/state-charlie.json"], &["MSC4297-problem-A/pdus-v12.json"]);
    assert_eq!(sorted(&state), expected("msc4297_problem_a_state_res_v2_1"));
}

#[test]
fn msc4297_problem_b_state_res_v2_0() {
    let state = resolve_state_maps(&["MSC4297-problem-B/state-eve.json", "MSC4297-problem-B/state-zara.json"], &["MSC4297-problem-B/pdus-v11.json"]);
    assert_eq!(sorted(&state), expected("msc4297_problem_b_state_res_v2_0"));
}

#[test]
fn msc4297_problem_b_state_res_v2_1() {
    let state = resolve_state_maps(&["MSC4297-problem-B/state-eve.json", "MSC4297-problem-B/state-zara.json"], &["MSC4297-problem-B/pdus-v12.json"]);
    assert_eq!(sorted(&state), expected("msc4297_problem_b_state_res_v2_1"));
}
