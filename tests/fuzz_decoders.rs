//! Bounded fuzzing in CI: the properties of `iocsync::fuzz` (the same bodies the cargo-fuzz targets
//! run) over arbitrary bytes and over bytes shaped like each input, so a run finds shallow
//! crashes without a nightly toolchain. `IOCSYNC_FUZZ_CASES` sets the cases per property
//! (default 4,000); coverage-guided runs of millions of executions are in `fuzz/README.md`.

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("IOCSYNC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

/// Pieces that make random bytes look like each input, so cases reach past the first check.
fn shaped(pieces: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::sample::select(pieces).prop_map(|p| p.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

const PATTERN_PIECES: &[&str] = &[
    "[",
    "]",
    "(",
    ")",
    "ipv4-addr:value",
    "file:hashes.'SHA-256'",
    "domain-name:value",
    " = ",
    " != ",
    " IN ",
    " LIKE ",
    " MATCHES ",
    " AND ",
    " OR ",
    " FOLLOWEDBY ",
    " NOT ",
    "EXISTS ",
    "'198.51.100.1'",
    "'a\\'b'",
    "h'0f'",
    "b'AA=='",
    "t'2020-01-01T00:00:00Z'",
    " WITHIN 5 SECONDS",
    " REPEATS 2 TIMES",
    " START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00Z'",
    "[*]",
    "[0]",
    ".",
    ",",
    "1.5",
    "-3",
    "true",
    "/* c */",
];

const SSE_PIECES: &[&str] = &[
    "id: 1-0\n", "id: 9\u{1}-0\n", "event: create\n", "event: update\n", "event: merge\n",
    "event: delete\n", "event: heartbeat\n", "event: connected\n", "data: ", "data:", "\n", "\r\n",
    "\r", ": comment\n", "retry: 10\n",
    "{\"data\":{\"id\":\"indicator--1\",\"type\":\"indicator\",\"pattern\":\"[ipv4-addr:value = '1.2.3.4']\",\"pattern_type\":\"stix\"}}",
    "{\"context\":{\"sources\":[{\"id\":\"indicator--2\"}]}}", "\u{feff}", "\u{e9}",
];

const EVENT_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"data\"",
    "\"id\"",
    "\"type\"",
    "\"indicator\"",
    "\"pattern\"",
    "\"[ipv4-addr:value = '1.2.3.4']\"",
    "\"valid_until\"",
    "\"2020-01-01T00:00:00Z\"",
    "\"revoked\"",
    "true",
    "null",
    "12",
    "\"response\"",
    "\"Attribute\"",
    "\"uuid\"",
    "\"u-1\"",
    "\"value\"",
    "\"ip-dst|port\"",
    "\"1.2.3.4|80\"",
    "\"to_ids\"",
    "\"1\"",
    "\"timestamp\"",
    "\"Tag\"",
    "\"name\"",
    "\"Event\"",
    "\"context\"",
    "\"sources\"",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn pattern_parser_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        iocsync::fuzz::pattern(&data);
    }

    #[test]
    fn pattern_parser_on_pattern_shaped_bytes(data in shaped(PATTERN_PIECES)) {
        iocsync::fuzz::pattern(&data);
    }

    #[test]
    fn sse_decoder_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        iocsync::fuzz::sse(&data);
    }

    #[test]
    fn sse_decoder_on_stream_shaped_bytes(data in shaped(SSE_PIECES)) {
        iocsync::fuzz::sse(&data);
    }

    #[test]
    fn event_decoders_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        iocsync::fuzz::events(&data);
    }

    #[test]
    fn event_decoders_on_json_shaped_bytes(data in shaped(EVENT_PIECES)) {
        iocsync::fuzz::events(&data);
    }
}
