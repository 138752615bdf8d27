//! Fuzz target: the STIX pattern parser (see `iocsync::fuzz::pattern` for the properties).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocsync::fuzz::pattern(data));
