//! Helpers shared by the black-box tests: running the binary, reading sink outputs, comparing live sets.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture path.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// The `iocsync` binary with a clean environment (no inherited IOCSYNC_/OPENCTI_/… variables).
pub fn iocsync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iocsync"));
    cmd.current_dir(dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// Runs and returns the output, printing it on failure for diagnosis.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn iocsync");
    assert!(
        out.status.success(),
        "iocsync failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `type\tvalue` lines → set; hostname counts as domain (sinks store them as one entry).
pub fn read_expected(path: &Path) -> BTreeSet<(String, String)> {
    std::fs::read_to_string(path)
        .expect("read expected set")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (t, v) = l.split_once('\t').expect("tab-separated expected line");
            (canonical_type(t), v.to_string())
        })
        .collect()
}

fn canonical_type(t: &str) -> String {
    if t == "hostname" {
        "domain".into()
    } else {
        t.to_string()
    }
}

/// One JSONL sink record.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JsonlRecord {
    pub op: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub indicator_id: String,
}

/// All records of a JSONL sink file.
pub fn read_jsonl(path: &Path) -> Vec<JsonlRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}")))
        .collect()
}

/// The live set of a JSONL sink: creates minus later deletes of the same indicator id (interface.md),
/// asserting on the way that no value is created twice without a delete in between.
pub fn jsonl_live_set(records: &[JsonlRecord]) -> BTreeSet<(String, String)> {
    let mut live: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in records {
        let key = (canonical_type(&r.kind), r.value.clone());
        match r.op.as_str() {
            "create" => {
                if let Some(prev) = live.get(&key) {
                    panic!(
                        "duplicate create of {key:?}: held by {prev}, created again for {}",
                        r.indicator_id
                    );
                }
                live.insert(key, r.indicator_id.clone());
            }
            "delete" => {
                let holder = live.remove(&key);
                assert_eq!(
                    holder.as_deref(),
                    Some(r.indicator_id.as_str()),
                    "delete of {key:?} that was not live under that indicator"
                );
            }
            "update" => assert!(
                live.contains_key(&key),
                "update of {key:?} that is not live"
            ),
            other => panic!("unknown op {other}"),
        }
    }
    live.into_keys().collect()
}

/// The live rows of a Zeek intel file as (indicator_type, indicator).
pub fn zeek_live_rows(path: &Path) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(path).expect("read zeek file");
    let mut lines = text.lines();
    let header = lines.next().expect("zeek header");
    let fields: Vec<&str> = header
        .trim_start_matches("#fields")
        .trim_start_matches('\t')
        .split('\t')
        .collect();
    let col = |name: &str| fields.iter().position(|f| *f == name);
    let (i, t) = (
        col("indicator").expect("indicator column"),
        col("indicator_type").expect("type column"),
    );
    let remove = col("meta.remove");
    lines
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                cells.len(),
                fields.len(),
                "zeek row with wrong column count: {l:?}"
            );
            if remove.is_some_and(|r| cells[r] == "T") {
                return None;
            }
            Some((cells[t].to_string(), cells[i].to_string()))
        })
        .collect()
}

/// What the expected set looks like as Zeek rows.
pub fn expected_as_zeek(expected: &BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
    expected
        .iter()
        .map(|(t, v)| {
            let zt = match t.as_str() {
                "ipv4" | "ipv6" => "Intel::ADDR",
                "domain" => "Intel::DOMAIN",
                "url" => "Intel::URL",
                _ => "Intel::FILE_HASH",
            };
            let value = if t == "url" { zeek_url(v) } else { v.clone() };
            (zt.to_string(), value)
        })
        .collect()
}

/// Zeek's form of a URL: scheme stripped, default port dropped.
fn zeek_url(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match (scheme.as_deref(), host.rsplit_once(':')) {
        (Some("http"), Some((h, "80"))) | (Some("https"), Some((h, "443"))) => h,
        _ => host,
    };
    format!("{host}{path}")
}

/// Runs the binary to completion (async tests with in-process fakes), bounded by `limit`.
pub async fn output_within(mut cmd: tokio::process::Command, limit: std::time::Duration) -> Output {
    tokio::time::timeout(limit, cmd.output())
        .await
        .expect("iocsync finished in time")
        .expect("spawn iocsync")
}

/// Asserts success, printing the tail of the logs on failure.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "iocsync failed ({:?})\nstdout:\n{}\nstderr (tail):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
