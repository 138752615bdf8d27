//! Fuzz target: OpenCTI event data and MISP restSearch answers (see `iocsync::fuzz::events`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocsync::fuzz::events(data));
