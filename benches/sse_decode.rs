//! Criterion benchmarks of the SSE decoder shared by the OpenCTI stream and the file source: the
//! fixture stream as the network delivers it (16 KiB chunks), and single `data:` lines of 2–16 MB,
//! the case that was quadratic under the previous decoder. Throughput is in input bytes.
// criterion's group macros define public functions without doc comments.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iocsync::sources::sse::{Frame, SseDecoder, DEFAULT_MAX_EVENT_BYTES};
use std::hint::black_box;

const CHUNK: usize = 16 * 1024;

fn decode(input: &[u8], max: usize) -> usize {
    let mut decoder = SseDecoder::new(max);
    let mut frames: Vec<Frame> = Vec::new();
    let mut count = 0;
    for chunk in input.chunks(CHUNK) {
        decoder.feed(chunk, &mut frames);
        count += frames.len();
        frames.clear();
    }
    count + usize::from(decoder.finish().is_some())
}

fn fixture_stream(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/opencti/stream.sse");
    let input = std::fs::read(path).expect("fixture");
    let mut group = c.benchmark_group("sse_fixture_stream");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("16KiB_chunks", |b| {
        b.iter(|| decode(black_box(&input), DEFAULT_MAX_EVENT_BYTES))
    });
    group.finish();
}

fn one_big_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_one_data_line");
    group.sample_size(10);
    for mb in [2usize, 4, 8, 16] {
        let mut input = b"id: 1-0\nevent: create\ndata: ".to_vec();
        input.resize(input.len() + mb * 1024 * 1024 - 64, b'a');
        input.extend_from_slice(b"\n\n");
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{mb}MB_accepted"), |b| {
            b.iter(|| decode(black_box(&input), 32 * 1024 * 1024))
        });
        group.bench_function(format!("{mb}MB_over_a_1MB_bound"), |b| {
            b.iter(|| decode(black_box(&input), 1024 * 1024))
        });
    }
    group.finish();
}

criterion_group!(benches, fixture_stream, one_big_line);
criterion_main!(benches);
