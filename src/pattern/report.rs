//! `iocsync parse` output: one JSON object per input pattern (interface.md), streamed from a
//! reader to a writer.
//!
//! The contract a script relies on: **exactly one output line per input line**, in input order.
//! An empty or whitespace-only line is an invalid pattern (`"error":"empty pattern"`), not
//! skipped, so inputs and outputs can be zipped. Lines end at `\n`; one `\r` before it is dropped
//! (CRLF files); a last line without `\n` still counts. A line that is not UTF-8 is reported
//! invalid (`"error":"invalid UTF-8 at offset N"`, N the first bad byte) with `pattern` holding
//! the line decoded lossily (U+FFFD for each bad sequence), so the output stays valid JSON.
//!
//! Throughput is the point of the streaming writer: each line is parsed from a reused input
//! buffer without copying it into a `String`, and its JSON is written by hand into a reused
//! output buffer (no JSON value tree, no per-line formatting allocations); the escaping matches
//! `serde_json` byte for byte, which the tests check against [`ParseReport`]'s `Serialize`.
//! Whole blocks of lines are parsed on several threads when there are cores for it, and the
//! output is flushed once per block read, so a script that writes a line and waits for its
//! answer still gets it at once.

use super::ast::Pattern;
use super::extract::{extract_ioc, extract_value};
use super::parser::parse;
use crate::ioc::{Ioc, IocKind};
use crate::skip::SkipReason;
use serde::Serialize;
use std::io::{self, BufRead, Write};
use std::sync::mpsc::sync_channel;

/// The `error` of an empty or whitespace-only pattern.
pub const EMPTY_PATTERN: &str = "empty pattern";

/// One line of `iocsync parse` output (interface.md); every key is always serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseReport {
    /// The input, as given.
    pub pattern: String,
    /// Whether the input is a syntactically and semantically valid STIX 2.1 pattern.
    pub valid: bool,
    /// Why it is not valid: the parse error with its byte offset, or `empty pattern`.
    pub error: Option<String>,
    /// The IOC, when the pattern is a single `=` comparison on a supported path with a good value.
    pub ioc: Option<Ioc>,
    /// Why there is no IOC (`invalid` when not valid).
    pub skip: Option<SkipReason>,
}

/// What one pattern comes to, before it is classified and owned ([`ParseReport`]) or written
/// ([`write_report`]).
enum Verdict<'a> {
    /// Empty or whitespace only.
    Empty,
    /// Not a valid pattern.
    Invalid(super::ParseError),
    /// Valid.
    Valid(Pattern<'a>),
}

fn verdict(input: &str) -> Verdict<'_> {
    // Nearly every pattern starts with `[` or `(`: then it is not blank, and the Unicode-aware
    // trim (a measurable share of a short pattern's cost) is not needed.
    let surely_not_blank = matches!(input.as_bytes().first(), Some(b'[' | b'('));
    if !surely_not_blank && input.trim().is_empty() {
        return Verdict::Empty;
    }
    match parse(input) {
        Ok(pattern) => Verdict::Valid(pattern),
        Err(e) => Verdict::Invalid(e),
    }
}

/// Parses and classifies one pattern for `iocsync parse` (no expansion: one IOC at most).
pub fn report(input: &str) -> ParseReport {
    let (valid, error, outcome) = match verdict(input) {
        Verdict::Empty => (
            false,
            Some(EMPTY_PATTERN.to_owned()),
            Err(SkipReason::Invalid),
        ),
        Verdict::Invalid(e) => (false, Some(e.to_string()), Err(SkipReason::Invalid)),
        Verdict::Valid(pattern) => (true, None, extract_ioc(&pattern)),
    };
    let (ioc, skip) = match outcome {
        Ok(ioc) => (Some(ioc), None),
        Err(reason) => (None, Some(reason)),
    };
    ParseReport {
        pattern: input.to_owned(),
        valid,
        error,
        ioc,
        skip,
    }
}

/// Appends the JSON line (with its `\n`) for the pattern `input` to `out`: the same object as
/// `serde_json::to_string(&report(input))`, without building it.
pub fn write_report(out: &mut Vec<u8>, input: &str) {
    write_verdict(out, input, verdict(input));
}

/// Appends the JSON line for one raw input line (without its line ending), which may not be
/// UTF-8: see the module documentation.
pub fn write_report_bytes(out: &mut Vec<u8>, line: &[u8]) {
    match std::str::from_utf8(line) {
        Ok(input) => write_report(out, input),
        Err(e) => {
            out.extend_from_slice(b"{\"pattern\":");
            write_json_str(out, &String::from_utf8_lossy(line));
            out.extend_from_slice(b",\"valid\":false,\"error\":\"invalid UTF-8 at offset ");
            write_usize(out, e.valid_up_to());
            out.extend_from_slice(b"\",\"ioc\":null,\"skip\":\"invalid\"}\n");
        }
    }
}

fn write_verdict(out: &mut Vec<u8>, input: &str, verdict: Verdict<'_>) {
    out.extend_from_slice(b"{\"pattern\":");
    write_json_str(out, input);
    let pattern;
    let outcome = match verdict {
        Verdict::Empty => {
            out.extend_from_slice(b",\"valid\":false,\"error\":");
            write_json_str(out, EMPTY_PATTERN);
            Err(SkipReason::Invalid)
        }
        Verdict::Invalid(e) => {
            out.extend_from_slice(b",\"valid\":false,\"error\":\"");
            // The Display form of ParseError, `<message> at offset <offset>`, without formatting.
            write_json_str_body(out, &e.message);
            out.extend_from_slice(b" at offset ");
            write_usize(out, e.offset);
            out.push(b'"');
            Err(SkipReason::Invalid)
        }
        Verdict::Valid(valid) => {
            out.extend_from_slice(b",\"valid\":true,\"error\":null");
            pattern = valid;
            extract_value(&pattern)
        }
    };
    match outcome {
        Ok((kind, value)) => {
            out.extend_from_slice(b",\"ioc\":{\"type\":\"");
            out.extend_from_slice(kind.as_str().as_bytes());
            out.extend_from_slice(b"\",\"value\":");
            if kind == IocKind::Url {
                write_json_str(out, &value);
            } else {
                // Normalised hashes, addresses and names are made of `[0-9a-z.:_-]` only:
                // nothing to escape, so the escaping scan is skipped.
                debug_assert!(!value.bytes().any(needs_escape), "{value:?}");
                out.push(b'"');
                out.extend_from_slice(value.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"},\"skip\":null}\n");
        }
        Err(reason) => {
            out.extend_from_slice(b",\"ioc\":null,\"skip\":\"");
            out.extend_from_slice(reason.code().as_bytes());
            out.extend_from_slice(b"\"}\n");
        }
    }
}

/// Writes `s` as a JSON string, quotes included.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_json_str_body(out, s);
    out.push(b'"');
}

/// Writes `s` escaped as serde_json does: `"` and `\`, the control characters below U+0020
/// (`\b \t \n \f \r` short, the others `\u00XX`); everything else, non-ASCII included, verbatim.
fn write_json_str_body(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Nearly every pattern needs no escape: find that out in one pass without early exit, which
    // the compiler vectorises (cheaper than the word-at-a-time search below), and copy it whole.
    if bytes
        .iter()
        .fold(0u8, |any, &b| any | u8::from(needs_escape(b)))
        == 0
    {
        out.extend_from_slice(bytes);
        return;
    }
    // `bytes[start..at]` is a run of verbatim bytes: runs are copied whole.
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        let b = bytes[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The index of the first byte at or after `from` that [`needs_escape`]. Multi-byte UTF-8
/// sequences have no byte below 0x80, so looking at bytes is enough.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut words = rest.chunks_exact(8);
    // Eight bytes at a time up to the word that holds one (the common case: none does).
    let mut skipped = 0;
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if word_needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        skipped += 8;
    }
    rest[skipped..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| from + skipped + i)
}

/// Whether JSON needs the byte escaped (`|`, not `||`: no branches, so loops over it vectorise).
fn needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether any of the eight bytes in `word` [`needs_escape`], without looking at each: the
/// classic "has a byte below n" bit trick (exact as a yes/no answer for n <= 0x80), applied to
/// `word` for n = 0x20 and to `word` XOR the quote / backslash repeated for n = 1.
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let control = below(word, 0x20);
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    (control | quote | backslash) != 0
}

/// Writes a decimal number without going through `fmt`.
fn write_usize(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the reports of every line of `block` (whole lines, the last one possibly without
/// `\n`) to `out`; returns how many lines there were.
fn write_block(out: &mut Vec<u8>, block: &[u8]) -> u64 {
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    let mut lines = 0;
    // UTF-8 is checked once per block; a block with a bad line takes the byte path, which checks
    // each line on its own. Line ends are found with the `memchr` crate (SIMD): std's `split`
    // cost about as much as escaping the line for JSON.
    if let Ok(text) = std::str::from_utf8(block) {
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', block).chain(std::iter::once(block.len()));
        for end in ends {
            let line = &text[start..end];
            write_report(out, line.strip_suffix('\r').unwrap_or(line));
            lines += 1;
            start = end + 1;
        }
    } else {
        for line in block.split(|&b| b == b'\n') {
            write_report_bytes(out, line.strip_suffix(b"\r").unwrap_or(line));
            lines += 1;
        }
    }
    lines
}

/// Why streaming stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading the patterns failed.
    #[error("failed to read the patterns: {0}")]
    Read(#[source] io::Error),
    /// Writing the reports failed (e.g. a closed pipe).
    #[error("failed to write output: {0}")]
    Write(#[source] io::Error),
}

/// The input buffer to give [`write_reports`]: each read becomes one block of whole lines, so
/// this is about the block size (more when one line is longer; a pipe gives at most what it
/// holds, 64 KiB on Linux). Big enough that per-block costs (a channel message, a `write`, a
/// flush) vanish, small enough to keep every worker busy from the first block on.
pub const BLOCK_BYTES: usize = 64 * 1024;

/// Reads the next block of whole lines into `block`: what `carry` held from the last read, then
/// what the reader has ready, cut after the last `\n` (the rest goes to `carry`). It only reads
/// again while no line is complete, so an interactive writer is never waited on for more than the
/// line it sent. Returns `false` at end of input with nothing left.
fn next_block(
    input: &mut impl BufRead,
    block: &mut Vec<u8>,
    carry: &mut Vec<u8>,
) -> io::Result<bool> {
    block.clear();
    block.append(carry);
    loop {
        let ready = match input.fill_buf() {
            Ok(ready) => ready,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if ready.is_empty() {
            // End of input: a last line without `\n` is still a line.
            return Ok(!block.is_empty());
        }
        let taken = ready.len();
        match ready.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                block.extend_from_slice(&ready[..=end]);
                carry.extend_from_slice(&ready[end + 1..]);
                input.consume(taken);
                // Reading on could block on a pipe while these lines wait: hand them over.
                return Ok(true);
            }
            None => {
                block.extend_from_slice(ready);
                input.consume(taken);
            }
        }
    }
}

/// Reads patterns from `input`, one per line, and writes one JSON report line per input line to
/// `output`, in order, flushing after each block; returns the number of lines. `threads` is how
/// many threads parse (1: all on the calling thread); see [`default_threads`].
///
/// Give `input` a buffer of about [`BLOCK_BYTES`] (e.g. `BufReader::with_capacity`): each read
/// becomes one block. It is read on another thread when `threads > 1`, hence `Send` (a
/// `BufReader<Stdin>`, not a `StdinLock`); `output` stays on the calling thread.
pub fn write_reports<R: BufRead + Send, W: Write>(
    input: R,
    output: W,
    threads: usize,
) -> Result<u64, StreamError> {
    if threads <= 1 {
        write_reports_serial(input, output)
    } else {
        write_reports_parallel(input, output, threads)
    }
}

/// The number of parsing threads for this machine: its available parallelism, at most 8 (the
/// reader and the writer need a little too).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Writes the report of each pattern given as an argument (an empty one is an invalid pattern,
/// like an empty line), then flushes.
pub fn write_arg_reports<S: AsRef<str>, W: Write>(
    patterns: &[S],
    mut output: W,
) -> Result<u64, StreamError> {
    let mut out = Vec::new();
    for pattern in patterns {
        write_report(&mut out, pattern.as_ref());
    }
    output.write_all(&out).map_err(StreamError::Write)?;
    output.flush().map_err(StreamError::Write)?;
    Ok(patterns.len() as u64)
}

fn write_reports_serial<R: BufRead, W: Write>(
    mut input: R,
    mut output: W,
) -> Result<u64, StreamError> {
    let (mut block, mut carry, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = 0;
    while next_block(&mut input, &mut block, &mut carry).map_err(StreamError::Read)? {
        out.clear();
        lines += write_block(&mut out, &block);
        output.write_all(&out).map_err(StreamError::Write)?;
        output.flush().map_err(StreamError::Write)?;
    }
    Ok(lines)
}

/// Reader thread → `threads` parsing threads → the calling thread, which writes (so `output`
/// may be a `StdoutLock`, which cannot move to another thread). Block `n` goes to worker
/// `n % threads` and the writer takes block `n`'s report from that worker, so order is kept
/// without reordering; blocks are of similar size, so the round robin keeps every worker busy.
/// Channels are bounded (two blocks in flight per worker) and buffers travel back to be reused.
fn write_reports_parallel<R: BufRead + Send, W: Write>(
    mut input: R,
    mut output: W,
    threads: usize,
) -> Result<u64, StreamError> {
    std::thread::scope(|scope| {
        let mut block_txs = Vec::with_capacity(threads);
        let mut report_rxs = Vec::with_capacity(threads);
        let mut spent_report_txs = Vec::with_capacity(threads);
        // Spent input blocks go back to the reader, spent output buffers to their worker.
        let (spent_block_tx, spent_blocks) = sync_channel::<Vec<u8>>(threads * 4);
        for _ in 0..threads {
            let (block_tx, blocks) = sync_channel::<Vec<u8>>(2);
            let (report_tx, report_rx) = sync_channel::<(Vec<u8>, u64)>(2);
            let (spent_report_tx, spent_reports) = sync_channel::<Vec<u8>>(4);
            let spent_block_tx = spent_block_tx.clone();
            scope.spawn(move || {
                for block in blocks {
                    let mut out = spent_reports.try_recv().unwrap_or_default();
                    out.clear();
                    // A report line is about three times its pattern: grow once, not by doubling.
                    out.reserve(block.len() * 4);
                    let lines = write_block(&mut out, &block);
                    // The reader may be gone or have buffers enough: then this one is dropped.
                    let _ = spent_block_tx.try_send(block);
                    if report_tx.send((out, lines)).is_err() {
                        // The writer stopped on an error: nothing left to do.
                        break;
                    }
                }
            });
            block_txs.push(block_tx);
            report_rxs.push(report_rx);
            spent_report_txs.push(spent_report_tx);
        }
        drop(spent_block_tx);
        let reader = scope.spawn(move || -> io::Result<()> {
            let mut carry = Vec::new();
            for turn in (0..block_txs.len()).cycle() {
                // A block is the carried part of a line plus one read of the input buffer.
                let mut block = spent_blocks
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(2 * BLOCK_BYTES));
                if !next_block(&mut input, &mut block, &mut carry)? {
                    break;
                }
                if block_txs[turn].send(block).is_err() {
                    // The worker stopped because the writer failed; the writer has the error.
                    break;
                }
            }
            // Dropping `block_txs` here ends the workers in turn, after their last block.
            Ok(())
        });
        let mut lines = 0;
        let mut written = Ok(());
        // Take the reports round robin until the worker whose turn it is has no more.
        for turn in (0..report_rxs.len()).cycle() {
            let Ok((report, n)) = report_rxs[turn].recv() else {
                break;
            };
            written = output.write_all(&report).and_then(|()| output.flush());
            if written.is_err() {
                break;
            }
            lines += n;
            let _ = spent_report_txs[turn].try_send(report);
        }
        // Stops the workers (and through them the reader) if the writer stopped early.
        drop(report_rxs);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reader thread panicked")));
        // A read error cuts the output short too; report it first, as the cause.
        read.map_err(StreamError::Read)?;
        written.map_err(StreamError::Write)?;
        Ok(lines)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 100, 12345, usize::MAX] {
            let mut out = Vec::new();
            write_usize(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn word_check_agrees_with_the_byte_check() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(word)),
                    needs_escape(b),
                    "byte {b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn blocks_split_on_newlines_and_drop_one_carriage_return() {
        let mut out = Vec::new();
        assert_eq!(write_block(&mut out, b"a\r\n\n \r\r\nlast"), 4);
        let text = String::from_utf8(out).expect("utf-8");
        let patterns: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["pattern"].as_str().expect("pattern").to_owned()
            })
            .collect();
        assert_eq!(patterns, ["a", "", " \r", "last"]);
    }
}
