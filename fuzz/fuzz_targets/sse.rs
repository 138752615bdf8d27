//! Fuzz target: the SSE decoder and the OpenCTI frame decoding (see `iocsync::fuzz::sse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iocsync::fuzz::sse(data));
