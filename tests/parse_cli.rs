//! The `iocsync parse` contract (interface.md): one JSON line per input line or argument, in
//! order, every key present, empty lines reported as invalid, and JSON escaping identical to
//! `serde_json` — through the library's streaming writer and through the binary.

use iocsync::pattern::{report, write_report, write_report_bytes, write_reports, EMPTY_PATTERN};
use proptest::prelude::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const CORPUS: &str = include_str!("../fixtures/patterns/corpus.tsv");

/// The patterns of the hand-written corpus (first column).
fn corpus_patterns() -> Vec<&'static str> {
    CORPUS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplitn(3, '\t').nth(2))
        .collect()
}

/// Inputs that exercise escaping and the empty-line rule.
const TRICKY: &[&str] = &[
    "",
    " ",
    "\t \u{b}",
    "[url:value = 'http://x.example/\"q\"\\\\path']",
    "[url:value = 'http://例え.jp/パス']",
    "[domain-name:value = 'bücher.example']",
    "[file:name = 'a\u{1}b\u{1f}c\u{7f}d']",
    "[ipv4-addr:value = '1.2.3.4'] \u{8}\u{c}",
    "\u{2028}\u{2029}\u{feff}",
    "\"\\",
    "[ipv4-addr:value = '1.2.3.4'",
    "😀 [x:y = 'z']",
];

/// What the streaming writer produces for one pattern.
fn written(input: &str) -> String {
    let mut out = Vec::new();
    write_report(&mut out, input);
    String::from_utf8(out).expect("reports are UTF-8")
}

/// The reference: the owned report serialised by serde_json.
fn serde_line(input: &str) -> String {
    serde_json::to_string(&report(input)).expect("serialise") + "\n"
}

fn run_stdin(args: &[&str], stdin: &[u8]) -> (String, String, Option<i32>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iocsync"))
        .arg("parse")
        .args(args)
        .env_remove("IOCSYNC_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iocsync");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    // Written from a thread: the child's output could fill its pipe before we read it.
    let feeder = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    feeder.join().expect("feeder").expect("write stdin");
    (
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Every key of interface.md is present on every line, with a type that fits.
fn assert_contract(v: &Value) {
    let o = v.as_object().expect("an object");
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{v}");
    for key in ["pattern", "valid", "error", "ioc", "skip"] {
        assert!(o.contains_key(key), "missing {key}: {v}");
    }
    assert!(v["pattern"].is_string(), "{v}");
    let valid = v["valid"].as_bool().expect("valid is a bool");
    assert_eq!(v["error"].is_string(), !valid, "{v}");
    assert!(v["error"].is_string() || v["error"].is_null(), "{v}");
    assert!(
        v["ioc"].is_null() != v["skip"].is_null(),
        "exactly one of ioc and skip: {v}"
    );
}

#[test]
fn streaming_writer_matches_serde_on_the_corpus_and_tricky_inputs() {
    for input in corpus_patterns().into_iter().chain(TRICKY.iter().copied()) {
        assert_eq!(written(input), serde_line(input), "input {input:?}");
    }
}

#[test]
fn empty_and_whitespace_patterns_are_invalid_not_skipped() {
    for input in ["", " ", "\t", " \t  "] {
        let r = report(input);
        assert!(!r.valid);
        assert_eq!(r.error.as_deref(), Some(EMPTY_PATTERN));
        assert_eq!(r.skip, Some(iocsync::skip::SkipReason::Invalid));
        assert_eq!(r.pattern, input);
    }
}

#[test]
fn invalid_utf8_lines_are_reported_lossily_with_the_offset() {
    let mut out = Vec::new();
    write_report_bytes(&mut out, b"[url:value = '\xff\xfe']");
    let v: Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_contract(&v);
    assert_eq!(v["pattern"], "[url:value = '\u{fffd}\u{fffd}']");
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"], "invalid UTF-8 at offset 14");
    assert_eq!(v["skip"], "invalid");
}

/// Input split into lines the way the contract says (the reference for the streaming tests).
fn expected_patterns(input: &[u8]) -> Vec<String> {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if input.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}

/// Streams `input` through the library with the given reader buffer and thread count.
fn stream(input: &[u8], capacity: usize, threads: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let lines = write_reports(BufReader::with_capacity(capacity, input), &mut out, threads)
        .expect("stream to memory");
    let text = String::from_utf8(out).expect("UTF-8 output");
    let values = json_lines(&text);
    assert_eq!(lines as usize, values.len());
    values
}

#[test]
fn one_line_out_per_line_in_serial_and_parallel_with_lines_split_across_reads() {
    let mut input = Vec::new();
    let patterns = corpus_patterns();
    for n in 0..3_000 {
        match n % 7 {
            0 => input.extend_from_slice(b""),
            1 => input.extend_from_slice(b"   "),
            2 => input.extend_from_slice(b"[ipv4-addr:value = '10.0.0.1']\r"),
            3 => input.extend_from_slice(b"[url:value = '\xc3']"),
            _ => input.extend_from_slice(patterns[n % patterns.len()].as_bytes()),
        }
        input.push(b'\n');
    }
    input.extend_from_slice(b"[domain-name:value = 'last.example']"); // no final newline
    let expected = expected_patterns(&input);
    assert_eq!(expected.len(), 3_001);
    for (capacity, threads) in [(7, 1), (7, 2), (4096, 3), (1 << 16, 2), (1 << 16, 1)] {
        let values = stream(&input, capacity, threads);
        let got: Vec<&str> = values
            .iter()
            .map(|v| v["pattern"].as_str().expect("pattern"))
            .collect();
        assert_eq!(got, expected, "capacity {capacity}, threads {threads}");
        values.iter().for_each(assert_contract);
    }
}

#[test]
fn empty_input_gives_no_output_and_a_lone_newline_one_line() {
    assert!(stream(b"", 64, 2).is_empty());
    let v = stream(b"\n", 64, 2);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["error"], EMPTY_PATTERN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Hand-written JSON is byte-for-byte what serde_json makes of the owned report.
    #[test]
    fn any_string_is_escaped_like_serde(input in "\\PC*|[\\x00-\\x20\"\\\\\\[\\]':=a-z\u{80}-\u{10ffff}]{0,40}") {
        prop_assert_eq!(written(&input), serde_line(&input));
        let back: Value = serde_json::from_str(&written(&input)).expect("valid JSON");
        prop_assert_eq!(back["pattern"].as_str(), Some(input.as_str()));
    }

    /// Any bytes at all: one valid JSON line per input line, the pattern decoded lossily.
    #[test]
    fn any_bytes_give_one_json_line_per_line(
        input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), any::<u8>()], 0..300),
        capacity in 1usize..40,
        threads in 1usize..4,
    ) {
        let values = stream(&input, capacity, threads);
        let got: Vec<String> = values
            .iter()
            .map(|v| v["pattern"].as_str().map(str::to_owned).expect("pattern"))
            .collect();
        prop_assert_eq!(got, expected_patterns(&input));
    }
}

#[test]
fn binary_reports_every_stdin_line_including_empty_ones() {
    let input = "[ipv4-addr:value = '198.51.100.7']\n\n   \r\n[file:hashes.MD5 = 'nothex']\r\n[url:value = 'http://a.example/\"x\"']";
    let (stdout, stderr, code) = run_stdin(&[], input.as_bytes());
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let values = json_lines(&stdout);
    values.iter().for_each(assert_contract);
    let patterns: Vec<&str> = values
        .iter()
        .filter_map(|v| v["pattern"].as_str())
        .collect();
    assert_eq!(
        patterns,
        [
            "[ipv4-addr:value = '198.51.100.7']",
            "",
            "   ",
            "[file:hashes.MD5 = 'nothex']",
            "[url:value = 'http://a.example/\"x\"']",
        ]
    );
    assert_eq!(values[0]["ioc"]["type"], "ipv4");
    assert_eq!(values[1]["error"], EMPTY_PATTERN);
    assert_eq!(values[2]["error"], EMPTY_PATTERN);
    assert_eq!(values[2]["skip"], "invalid");
    assert_eq!(values[3]["valid"], false);
    assert_eq!(values[4]["ioc"]["value"], "http://a.example/\"x\"");
}

#[test]
fn binary_dash_reads_stdin_and_keeps_order_over_many_blocks() {
    // Enough lines for many blocks, so the parallel path runs and must keep the order.
    let input: String = (0..60_000u32)
        .map(|n| {
            if n % 1000 == 999 {
                "\n".to_owned()
            } else {
                format!(
                    "[ipv4-addr:value = '10.{}.{}.{}']\n",
                    n >> 16,
                    (n >> 8) & 255,
                    n & 255
                )
            }
        })
        .collect();
    let (stdout, stderr, code) = run_stdin(&["-"], input.as_bytes());
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let values = json_lines(&stdout);
    assert_eq!(values.len(), 60_000);
    for (v, line) in values.iter().zip(input.lines()) {
        assert_eq!(v["pattern"], line);
    }
}

#[test]
fn binary_args_give_one_line_each_including_an_empty_argument() {
    let (stdout, stderr, code) = run_stdin(
        &[
            "[domain-name:value = 'Example.COM.']",
            "",
            "[x:y = 'z'] AND",
        ],
        b"ignored\n",
    );
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let values = json_lines(&stdout);
    assert_eq!(values.len(), 3);
    values.iter().for_each(assert_contract);
    assert_eq!(values[0]["ioc"]["value"], "example.com");
    assert_eq!(values[1]["pattern"], "");
    assert_eq!(values[1]["error"], EMPTY_PATTERN);
    assert_eq!(values[2]["valid"], false);
}

#[test]
fn binary_invalid_utf8_line_is_one_invalid_report() {
    let (stdout, stderr, code) = run_stdin(&[], b"[url:value = 'a']\n\xff\n");
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let values = json_lines(&stdout);
    assert_eq!(values.len(), 2);
    assert_eq!(values[1]["pattern"], "\u{fffd}");
    assert_eq!(values[1]["error"], "invalid UTF-8 at offset 0");
}

/// A script may write one pattern, wait for its answer, then write the next: each answer must
/// come before stdin is closed. (A watchdog kills the child so a regression fails, not hangs.)
#[test]
fn binary_answers_each_line_before_the_next_is_written() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iocsync"))
        .arg("parse")
        .env_remove("IOCSYNC_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start iocsync");
    let pid = child.id();
    let (done, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // Only a hang makes this time out; the child is not reaped before `done` is dropped,
        // so the pid is still ours.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watched.recv_timeout(std::time::Duration::from_secs(120))
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for pattern in [
        "[ipv4-addr:value = '192.0.2.1']",
        "",
        "[ipv6-addr:value = '::1']",
    ] {
        stdin
            .write_all(format!("{pattern}\n").as_bytes())
            .expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read answer");
        let v: Value = serde_json::from_str(&line).expect("JSON answer before EOF");
        assert_eq!(v["pattern"], pattern);
    }
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read rest");
    assert_eq!(rest, "");
    drop(done);
    watchdog.join().expect("watchdog");
    assert!(child.wait().expect("wait").success());
}
