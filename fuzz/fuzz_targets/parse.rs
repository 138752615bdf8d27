//! Fuzz target: the STIX pattern parser must never panic, and every pattern it accepts must
//! print canonically to text that parses back to the same tree; classification and the
//! `iocsync parse` report must not panic either.
#![no_main]

use iocsync::pattern::{classify, classify_expanded, parse, report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = report(input);
    if let Ok(pattern) = parse(input) {
        let printed = pattern.to_string();
        let again = parse(&printed).expect("canonical print must parse");
        assert_eq!(again, pattern, "round trip changed the tree: {printed:?}");
        assert_eq!(again.to_string(), printed, "canonical print is not idempotent");
        let _ = classify(&pattern);
        let _ = classify_expanded(&pattern);
    }
});
