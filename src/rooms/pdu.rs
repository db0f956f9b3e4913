//! A persistent data unit: one signed event of a room, as stored and as federated.

use ruma::{
    events::TimelineEventType, CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{value::RawValue, Map, Value};

/// The fields of a PDU that the server reads. The full signed JSON is kept alongside.
#[derive(Debug, Clone, Deserialize)]
pub struct PduFields {
    #[serde(default)]
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<Value>,
    #[serde(default)]
    pub auth_events: Vec<Value>,
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
    #[serde(default)]
    pub depth: u64,
}

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for v12 create events, derived from the event id).
    pub room_id: OwnedRoomId,
    pub fields: PduFields,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// The signed JSON as stored (event_id included only for v1/v2 rooms); see `json()`.
    json: OnceLock<CanonicalJsonObject>,
    /// The stored text, when read from the database: parsed into `json` on first use, as
    /// read paths (sync, /messages) never need the canonical object.
    text: Option<Arc<str>>,
    pub rejected: bool,
    /// For redactions: the redacted event (top-level `redacts` before v11, in content since).
    pub redacts_id: Option<OwnedEventId>,
}

impl Pdu {
    /// Reads a stored or freshly built PDU.
    pub fn from_json(event_id: OwnedEventId, room_id: OwnedRoomId, json: CanonicalJsonObject) -> Result<Self, String> {
        let value = serde_json::to_value(&json).map_err(|e| e.to_string())?;
        let fields: PduFields = serde_json::from_value(value).map_err(|e| format!("malformed PDU: {e}"))?;
        Self::assemble(event_id, room_id, fields, OnceLock::from(json), None)
    }

    /// Reads a stored PDU from its JSON text: the fields straight from the text, which is
    /// cheaper than going through the canonical object (every read path does this).
    pub fn from_text(event_id: OwnedEventId, room_id: OwnedRoomId, text: &str) -> Result<Self, String> {
        let fields: PduFields = serde_json::from_str(text).map_err(|e| format!("malformed PDU: {e}"))?;
        Self::assemble(event_id, room_id, fields, OnceLock::new(), Some(Arc::from(text)))
    }

    fn assemble(
        event_id: OwnedEventId,
        room_id: OwnedRoomId,
        fields: PduFields,
        json: OnceLock<CanonicalJsonObject>,
        text: Option<Arc<str>>,
    ) -> Result<Self, String> {
        // v1/v2 reference events as [event_id, {hashes}] pairs; later versions as plain ids.
        let ids = |refs: &[Value]| -> Result<Vec<OwnedEventId>, String> {
            refs.iter()
                .map(|r| {
                    let id = match r {
                        Value::String(s) => s.as_str(),
                        Value::Array(pair) => pair.first().and_then(Value::as_str).unwrap_or(""),
                        _ => "",
                    };
                    EventId::parse(id).map_err(|e| format!("bad event reference {r}: {e}"))
                })
                .collect()
        };
        let prev_events = ids(&fields.prev_events)?;
        let auth_events = ids(&fields.auth_events)?;
        let redacts_id = fields.redacts.clone().or_else(|| {
            #[derive(Deserialize)]
            struct RedactsInContent {
                redacts: Option<OwnedEventId>,
            }
            serde_json::from_str::<RedactsInContent>(fields.content.get()).ok().and_then(|c| c.redacts)
        });
        Ok(Self { event_id, room_id, fields, prev_events, auth_events, json, text, rejected: false, redacts_id })
    }

    /// The signed JSON as a canonical object.
    pub fn json(&self) -> &CanonicalJsonObject {
        self.json.get_or_init(|| {
            let text = self.text.as_deref().unwrap_or("{}");
            // The text was written from a canonical object, so this only fails on a damaged store.
            serde_json::from_str(text).unwrap_or_else(|error| {
                tracing::error!(event_id = %self.event_id, %error, "stored event is not canonical JSON");
                CanonicalJsonObject::new()
            })
        })
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    pub fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.fields.content.get()).unwrap_or(Value::Null)
    }

    /// The event id a redaction redacts: top-level before v11, in content since.
    pub fn redacts_target(&self) -> Option<&EventId> {
        if self.fields.kind == TimelineEventType::RoomRedaction { self.redacts_id.as_deref() } else { None }
    }

    /// The client-server format (ClientEvent) of this event, without `unsigned`.
    pub fn to_client_event(&self) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("event_id".into(), self.event_id.as_str().into());
        event.insert("room_id".into(), self.room_id.as_str().into());
        event.insert("sender".into(), self.fields.sender.as_str().into());
        event.insert("type".into(), self.fields.kind.to_string().into());
        event.insert("origin_server_ts".into(), u64::from(self.fields.origin_server_ts.0).into());
        event.insert("content".into(), self.content_value());
        if let Some(state_key) = &self.fields.state_key {
            event.insert("state_key".into(), state_key.as_str().into());
        }
        if let Some(redacts) = self.redacts_target() {
            event.insert("redacts".into(), redacts.as_str().into());
        }
        event
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.fields.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.fields.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.fields.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.fields.kind
    }

    fn content(&self) -> &RawValue {
        &self.fields.content
    }

    fn state_key(&self) -> Option<&str> {
        self.fields.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts_id.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
