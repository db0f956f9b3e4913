//! The test vectors of the Matrix specification's appendix (canonical JSON, unpadded base64,
//! JSON and event signing), checked against the code weft signs and hashes events with.
//! `tests/data/spec-appendix-vectors.json` is a copy of the spec's vectors.

use ruma::{room_version_rules::RoomVersionRules, serde::Base64, signatures, CanonicalJsonObject};
use serde_json::Value;
use weft::crypto::{to_canonical, ServerKeys};

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/spec-appendix-vectors.json")).unwrap()
}

fn spec_key() -> ServerKeys {
    let v = vectors();
    let signing = &v["signing"];
    let version = signing["key_id"].as_str().unwrap().strip_prefix("ed25519:").unwrap();
    ServerKeys::from_seed(
        signing["server_name"].as_str().unwrap().try_into().unwrap(),
        version,
        signing["seed_b64"].as_str().unwrap(),
    )
    .unwrap()
}

fn object(value: &Value) -> CanonicalJsonObject {
    match to_canonical(value).unwrap() {
        ruma::CanonicalJsonValue::Object(map) => map,
        other => panic!("not an object: {other:?}"),
    }
}

#[test]
fn canonical_json() {
    let v = vectors();
    let cases = v["canonical_json"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        // Parse the raw text, so `-0` and `1e10` keep the spec's integer semantics.
        let parsed: Value = serde_json::from_str(case["input_text"].as_str().unwrap()).unwrap();
        let canonical = to_canonical(&parsed).unwrap().to_string();
        assert_eq!(canonical, case["expected"].as_str().unwrap(), "input {}", case["input_text"]);
    }
}

#[test]
fn non_integral_numbers_are_not_canonical() {
    let value: Value = serde_json::from_str(r#"{"a": 1.5}"#).unwrap();
    assert!(to_canonical(&value).is_err());
    let value: Value = serde_json::from_str(r#"{"a": 9007199254740992}"#).unwrap();
    assert!(to_canonical(&value).is_err(), "beyond 2^53 - 1");
}

#[test]
fn unpadded_base64() {
    let v = vectors();
    for case in v["unpadded_base64"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap().as_bytes().to_vec();
        let encoded = Base64::<ruma::serde::base64::Standard, _>::new(input).encode();
        assert_eq!(encoded, case["expected"].as_str().unwrap());
    }
}

#[test]
fn json_signing() {
    let v = vectors();
    let keys = spec_key();
    for case in v["json_signing"].as_array().unwrap() {
        let mut signed = object(&case["input"]);
        signatures::sign_json("domain", &*keys.keypair, &mut signed).unwrap();
        assert_eq!(serde_json::to_value(&signed).unwrap(), case["expected"]);
    }
}

#[test]
fn event_signing() {
    let v = vectors();
    let keys = spec_key();
    let cases = v["event_signing"].as_array().unwrap();
    // The minimal event is a v3–v10 style PDU; the message event (with event_id) a v1 one.
    for (case, rules) in cases.iter().zip([RoomVersionRules::V10, RoomVersionRules::V1]) {
        let mut event = object(&case["input"]);
        signatures::hash_and_sign_event("domain", &*keys.keypair, &mut event, &rules.redaction).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), case["expected"]);
    }
}

#[test]
fn signed_events_verify_with_the_public_key() {
    use std::collections::BTreeMap;
    let v = vectors();
    let keys = spec_key();
    let expected = object(&v["event_signing"][0]["expected"]);
    let public = Base64::<ruma::serde::base64::Standard, Vec<u8>>::new(keys.keypair.public_key().to_vec());
    let key_map: BTreeMap<String, Base64> = [("ed25519:1".to_owned(), public)].into();
    let public_keys: BTreeMap<String, BTreeMap<String, Base64>> = [("domain".to_owned(), key_map)].into();
    let verified = signatures::verify_event(&public_keys, &expected, &RoomVersionRules::V10).unwrap();
    assert_eq!(verified, signatures::Verified::All);
    // Tampering with the content breaks the hash (the signature still holds: it covers the
    // redacted form).
    let mut tampered = expected.clone();
    tampered.insert("content".into(), to_canonical(&serde_json::json!({ "x": 1 })).unwrap());
    assert_eq!(signatures::verify_event(&public_keys, &tampered, &RoomVersionRules::V10).unwrap(), signatures::Verified::Signatures);
}
