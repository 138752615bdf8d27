//! Fuzz bodies: what must hold for *any* input to the decoders that read remote or user bytes. One
//! definition serves both the cargo-fuzz targets in `fuzz/` (coverage-guided, nightly, run by hand)
//! and the bounded property tests over arbitrary bytes in `tests/fuzz_decoders.rs` (in CI). Each
//! function panics when a property fails; returning normally is a pass.

use crate::model::{EventKind, Payload};
use crate::pattern::{extract_ioc, extract_iocs, parse, report};
use crate::pipeline::classify::{classify_object, ClassifyOptions};
use crate::sources::misp::mapping::{map_attribute, MapOptions};
use crate::sources::misp::wire::{attributes_of, Attribute};
use crate::sources::opencti::event::{decode_event, decode_frame, position_of};
use crate::sources::sse::{Frame, FrameData, SseDecoder};

/// The STIX pattern parser never panics; whatever it accepts prints canonically to text that parses
/// back to the same tree; classification and the `iocsync parse` report never panic.
pub fn pattern(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let _ = report(&input);
    if let Ok(pattern) = parse(&input) {
        let printed = pattern.to_string();
        let again = match parse(&printed) {
            Ok(again) => again,
            Err(e) => panic!("canonical print {printed:?} does not parse: {e}"),
        };
        assert_eq!(again, pattern, "round trip changed the tree: {printed:?}");
        assert_eq!(
            again.to_string(),
            printed,
            "canonical print is not idempotent"
        );
        let _ = extract_ioc(&pattern);
        let _ = extract_iocs(&pattern);
    }
}

/// The SSE decoder never panics, never dispatches more than the bound holds, gives the same frames
/// whichever way the bytes are cut (the first byte of `data` picks the cut), and every frame
/// decodes to an event (or nothing) without panicking, with only `<digits>-<digits>` positions.
pub fn sse(data: &[u8]) {
    const BOUND: usize = 4096;
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = decode_all(body, &[body.len()], BOUND);
    let step = usize::from(cut % 64) + 1;
    let cuts: Vec<usize> = (1..=body.len()).step_by(step).collect();
    assert_eq!(
        decode_all(body, &cuts, BOUND),
        whole,
        "chunking changed the frames"
    );
    let mut last_end = 0;
    for frame in &whole {
        assert!(frame.end_offset >= last_end && frame.end_offset <= body.len() as u64);
        last_end = frame.end_offset;
        if let FrameData::Bytes(b) = &frame.data {
            assert!(b.len() <= BOUND, "a frame over the bound was dispatched");
        }
        if let Some(event) = decode_frame(frame) {
            if let Some(p) = &event.position {
                assert_eq!(position_of(Some(p)).as_deref(), Some(p.as_str()));
            }
            classify_payload(event.kind, event.payload);
        }
    }
}

fn decode_all(body: &[u8], ends: &[usize], bound: usize) -> Vec<Frame> {
    let mut decoder = SseDecoder::new(bound);
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in ends {
        decoder.feed(&body[start..end], &mut frames);
        start = end;
    }
    decoder.feed(&body[start..], &mut frames);
    frames.extend(decoder.finish());
    frames
}

fn classify_payload(kind: EventKind, payload: Payload) {
    let opts = ClassifyOptions {
        expand_or: true,
        expired_at: Some(chrono::Utc::now()),
        ..ClassifyOptions::default()
    };
    match payload {
        Payload::Stix(object) | Payload::StixMerge { object, .. } => {
            let _ = classify_object(kind, &object, opts);
        }
        Payload::None | Payload::Classified(_) | Payload::Malformed { .. } => {}
    }
}

/// The decoders of OpenCTI event data and MISP `restSearch` answers never panic on any bytes: an
/// OpenCTI `create`/`update`/`delete`/`merge` data text, and a MISP answer whose attributes are
/// read and mapped to indicator states.
pub fn events(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for topic in ["create", "update", "merge", "delete", "heartbeat", "other"] {
        if let Some(event) = decode_event(topic, Some("1-0"), &text) {
            classify_payload(event.kind, event.payload);
        }
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let opts = MapOptions {
        only_to_ids: true,
        expand: Some(crate::pattern::DEFAULT_EXPAND_MAX),
        base_url: "https://misp.example".into(),
    };
    for value in attributes_of(&body).unwrap_or_default() {
        if let Ok(attribute) = Attribute::from_value(value) {
            let _ = map_attribute(&attribute, false, &opts);
        }
    }
}
