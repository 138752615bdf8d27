//! Decoding of OpenCTI live-stream messages (`id`, `event` topic, `data`) into [`SourceEvent`]s,
//! shared by the live source and the file source that reads stream captures.
//!
//! The topic is authoritative, not the `type` inside the payload: the server relabels an update that
//! makes an object leave the stream's filter as a `delete` topic while the payload still says
//! `update`.

use crate::model::{EventKind, Payload, SourceEvent};
use crate::sources::sse::Frame;
use serde::Deserialize;
use serde_json::Value;

/// Topic of the per-connection greeting; it carries no id and is not a resume point.
pub const TOPIC_CONNECTED: &str = "connected";
/// Topic of the keep-alive, whose id is the server's current position.
pub const TOPIC_HEARTBEAT: &str = "heartbeat";

/// Decodes one message whose `data` is raw text (the SSE wire). `None` for `connected`.
pub fn decode_event(topic: &str, id: Option<&str>, data: &str) -> Option<SourceEvent> {
    let kind = kind_of(topic)?;
    let position = position_of(id);
    let payload = match kind {
        EventKind::Create | EventKind::Update | EventKind::Delete => {
            match serde_json::from_str::<Value>(data) {
                Ok(v) => object_payload(topic, v),
                Err(e) => Payload::Malformed {
                    reason: format!("`{topic}` event data is not JSON: {e}"),
                },
            }
        }
        _ => Payload::None,
    };
    Some(SourceEvent {
        position,
        kind,
        payload,
    })
}

/// Decodes one SSE frame. Data that is not UTF-8 or larger than the decoder's bound makes the
/// event malformed (skipped with a reason, its position kept); `None` for `connected`.
pub fn decode_frame(frame: &Frame) -> Option<SourceEvent> {
    let kind = kind_of(&frame.event)?;
    let object_kind = matches!(
        kind,
        EventKind::Create | EventKind::Update | EventKind::Delete
    );
    match frame.data.text() {
        Ok(text) => decode_event(&frame.event, frame.id.as_deref(), text),
        Err(reason) => Some(SourceEvent {
            position: position_of(frame.id.as_deref()),
            kind,
            payload: if object_kind {
                Payload::Malformed {
                    reason: format!("`{}` event {reason}", frame.event),
                }
            } else {
                Payload::None
            },
        }),
    }
}

/// Decodes one message whose `data` is already parsed (NDJSON captures); a JSON string value is
/// taken as the unparsed wire text. `None` for `connected`.
pub fn decode_event_value(topic: &str, id: Option<&str>, data: Value) -> Option<SourceEvent> {
    if let Value::String(text) = &data {
        // A heartbeat's data is itself a JSON string (a date): only object topics re-parse text.
        if matches!(
            kind_of(topic)?,
            EventKind::Create | EventKind::Update | EventKind::Delete
        ) {
            return decode_event(topic, id, text);
        }
    }
    let kind = kind_of(topic)?;
    let payload = match kind {
        EventKind::Create | EventKind::Update | EventKind::Delete => object_payload(topic, data),
        _ => Payload::None,
    };
    Some(SourceEvent {
        position: position_of(id),
        kind,
        payload,
    })
}

/// The event kind of a topic; `None` for `connected`.
fn kind_of(topic: &str) -> Option<EventKind> {
    Some(match topic {
        TOPIC_CONNECTED => return None,
        TOPIC_HEARTBEAT => EventKind::Heartbeat,
        "create" => EventKind::Create,
        "update" | "merge" => EventKind::Update,
        "delete" => EventKind::Delete,
        // `no-recover` and whatever newer servers add: no action, but the id still counts.
        _ => EventKind::Other,
    })
}

/// A stream position: only `<digits>-<digits>` is one. Anything else (a control character, a
/// proxy's garbage) would be checkpointed and then refused as a `Last-Event-ID` header on every
/// reconnect, so it is no position at all.
pub fn position_of(id: Option<&str>) -> Option<String> {
    let id = id.map(str::trim)?;
    parse_stream_id_strict(id).map(|_| id.to_string())
}

/// `<digits>-<digits>` and nothing else, as numbers.
fn parse_stream_id_strict(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `data.data` as a STIX payload, or why it cannot be one. A `merge` also names the objects merged
/// into the target (`context.sources`): they vanish from the platform without delete events.
/// Takes the envelope: the object is moved out of it, not copied.
fn object_payload(topic: &str, mut envelope: Value) -> Payload {
    let merged = if topic == "merge" {
        merged_ids(&envelope)
    } else {
        Vec::new()
    };
    let is_object = envelope.is_object();
    match envelope.get_mut("data") {
        Some(obj @ Value::Object(_)) => {
            let object = obj.take();
            if merged.is_empty() {
                Payload::Stix(object)
            } else {
                Payload::StixMerge { object, merged }
            }
        }
        Some(_) => Payload::Malformed {
            reason: "event `data.data` is not a JSON object".to_string(),
        },
        None if is_object => Payload::Malformed {
            reason: "event has no `data.data` object".to_string(),
        },
        None => Payload::Malformed {
            reason: "event data is not a JSON object".to_string(),
        },
    }
}

/// The ids of a merge's `context.sources` (objects, or bare ids on some versions).
fn merged_ids(envelope: &Value) -> Vec<String> {
    envelope
        .pointer("/context/sources")
        .and_then(Value::as_array)
        .map(|sources| {
            sources
                .iter()
                .filter_map(|s| s.get("id").unwrap_or(s).as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A stream id split as `(epoch ms, sequence)`; `None` when it is not of that form (ids are
/// opaque cursors to the pipeline, but ordering and lag need the numbers when they are there).
pub fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    parse_stream_id_strict(id.trim())
}

/// The payload of a `connected` message (all fields optional: older servers send fewer).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedInfo {
    /// The newest id in the stream when we connected: "caught up" means reaching it.
    pub last_event_id: Option<String>,
    /// The oldest id the server still holds.
    pub first_event_id: Option<String>,
    /// Number of events the server holds.
    pub stream_size: Option<u64>,
    /// The server's id for this connection.
    pub connection_id: Option<String>,
}

impl ConnectedInfo {
    /// Reads a `connected` payload; an unreadable one yields the empty info (it is only logged).
    pub fn parse(data: &[u8]) -> Self {
        serde_json::from_slice(data).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(kind: &str) -> String {
        json!({"version":"4","type":kind,"scope":"external","message":"m","origin":{},
               "data":{"id":"indicator--1","type":"indicator"}})
        .to_string()
    }

    #[test]
    fn maps_topics_to_kinds() {
        assert!(decode_event("connected", None, "{}").is_none());
        for (topic, kind) in [
            ("create", EventKind::Create),
            ("update", EventKind::Update),
            ("merge", EventKind::Update),
            ("delete", EventKind::Delete),
        ] {
            let ev = decode_event(topic, Some("1-2"), &envelope("update")).expect("event");
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.position.as_deref(), Some("1-2"));
            match ev.payload {
                Payload::Stix(v) => assert_eq!(v["id"], "indicator--1"),
                other => panic!("unexpected {other:?}"),
            }
        }
        let hb = decode_event("heartbeat", Some("5-0"), "\"2024-01-01T00:00:00Z\"").expect("hb");
        assert_eq!(hb.kind, EventKind::Heartbeat);
        assert!(matches!(hb.payload, Payload::None));
        let other = decode_event("no-recover", Some("6-0"), "{}").expect("other");
        assert_eq!(other.kind, EventKind::Other);
        assert_eq!(other.position.as_deref(), Some("6-0"));
    }

    #[test]
    fn malformed_data_keeps_its_position() {
        for data in ["{not json", "{\"type\":\"create\"}", "[1]", "{\"data\":3}"] {
            let ev = decode_event("create", Some("7-1"), data).expect("event");
            assert_eq!(ev.position.as_deref(), Some("7-1"));
            assert!(matches!(ev.payload, Payload::Malformed { .. }), "{data}");
        }
    }

    #[test]
    fn value_form_matches_text_form() {
        let env: Value = serde_json::from_str(&envelope("create")).expect("json");
        let a = decode_event_value("create", Some("1-0"), env).expect("a");
        let b = decode_event_value("create", Some("1-0"), Value::String(envelope("create")))
            .expect("b");
        assert!(matches!((a.payload, b.payload), (Payload::Stix(x), Payload::Stix(y)) if x == y));
        let hb = decode_event_value("heartbeat", Some("2-0"), json!("2024-01-01T00:00:00Z"))
            .expect("hb");
        assert_eq!(hb.kind, EventKind::Heartbeat);
        assert!(decode_event_value("connected", None, json!({})).is_none());
    }

    #[test]
    fn only_digit_pairs_are_positions() {
        assert_eq!(position_of(Some(" 12-3 ")).as_deref(), Some("12-3"));
        for bad in [
            "1\u{1}-0", "+1-0", "1--0", "-1", "1-", "abc", "1-0-0", "", "1 -0",
        ] {
            assert_eq!(position_of(Some(bad)), None, "{bad:?}");
        }
        let ev = decode_event("create", Some("1\u{7}-2"), &envelope("create")).expect("event");
        assert_eq!(ev.position, None);
    }

    #[test]
    fn frames_that_are_not_text_are_malformed_with_their_position() {
        use crate::sources::sse::FrameData;
        let frame = |event: &str, data| Frame {
            id: Some("4-2".into()),
            event: event.into(),
            data,
            end_offset: 0,
        };
        for data in [
            FrameData::Bytes(b"{\"data\":{\"id\":\"\xff\"}}".to_vec()),
            FrameData::Oversize { bytes: 99 },
        ] {
            let ev = decode_frame(&frame("update", data)).expect("event");
            assert_eq!(ev.kind, EventKind::Update);
            assert_eq!(ev.position.as_deref(), Some("4-2"));
            assert!(matches!(ev.payload, Payload::Malformed { .. }));
        }
        let hb = decode_frame(&frame("heartbeat", FrameData::Oversize { bytes: 99 })).expect("hb");
        assert_eq!(hb.kind, EventKind::Heartbeat);
        let ok = decode_frame(&frame(
            "create",
            FrameData::Bytes(envelope("create").into_bytes()),
        ))
        .expect("ok");
        assert!(matches!(ok.payload, Payload::Stix(_)));
    }

    #[test]
    fn stream_ids_and_connected_info() {
        assert_eq!(parse_stream_id("1712645920678-3"), Some((1712645920678, 3)));
        assert_eq!(parse_stream_id("abc"), None);
        assert!(parse_stream_id("10-2") > parse_stream_id("9-99"));
        let info = ConnectedInfo::parse(br#"{"lastEventId":"9-1","streamSize":3,"x":1}"#);
        assert_eq!(info.last_event_id.as_deref(), Some("9-1"));
        assert_eq!(ConnectedInfo::parse(b"garbage"), ConnectedInfo::default());
    }
}
