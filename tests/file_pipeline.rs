//! Black-box tests of the foundation: the binary runs the fixture captures into the JSONL and Zeek
//! sinks and must end with exactly the expected live set, across restarts and SIGKILLs.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn file_run(dir: &Path, input: &Path) -> Command {
    let mut cmd = iocsync(dir);
    cmd.arg("run")
        .env("IOCSYNC_FILE_PATH", input)
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"))
        .env("IOCSYNC_ZEEK_INTEL_PATH", dir.join("out/intel.dat"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms");
    cmd
}

fn runs_json(dir: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(
        iocsync(dir)
            .args(["runs", "--json"])
            .env("IOCSYNC_STATE_DIR", dir.join("state")),
    );
    serde_json::from_slice(&out.stdout).expect("runs --json is JSON")
}

fn assert_balanced(run: &serde_json::Value) {
    let n = |k: &str| run[k].as_u64().unwrap_or(0);
    let skipped: u64 = run["skipped"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(
        n("received"),
        n("applied") + skipped + n("dead_lettered") + n("pending"),
        "unbalanced run: {run}"
    );
}

#[test]
fn sse_capture_lands_exactly_the_expected_live_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(&mut file_run(dir.path(), &fixture("opencti/stream.sse")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run summary (file)"), "{stdout}");

    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    assert!(
        expected.len() > 100,
        "fixture expectation too small: {}",
        expected.len()
    );
    let records = read_jsonl(&dir.path().join("out/iocs.jsonl"));
    assert_eq!(jsonl_live_set(&records), expected);
    assert_eq!(
        zeek_live_rows(&dir.path().join("out/intel.dat")),
        expected_as_zeek(&expected)
    );

    let runs = runs_json(dir.path());
    assert_eq!(runs.len(), 1);
    assert_balanced(&runs[0]);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("opencti/expected-summary.json")).expect("summary"),
    )
    .expect("summary json");
    // Every skip the generator made is counted under the same code. The generator counts skips of
    // create/update/merge events only; we also count deletes of non-indicator objects as
    // `not_indicator`, so that one may be higher.
    let expected_skips = summary["skipped_by_reason"]
        .as_object()
        .expect("skipped_by_reason");
    assert!(!expected_skips.is_empty());
    for (reason, count) in expected_skips {
        let want = count.as_u64().unwrap_or(0);
        let got = runs[0]["skipped"][reason].as_u64().unwrap_or(0);
        if reason == "not_indicator" {
            assert!(
                got >= want,
                "skip reason {reason}: got {got}, generator made {want}"
            );
        } else {
            assert_eq!(got, want, "skip reason {reason}");
        }
    }

    // A second run resumes at the end: nothing new, sinks unchanged.
    let before = std::fs::read(dir.path().join("out/iocs.jsonl")).expect("jsonl");
    run_ok(&mut file_run(dir.path(), &fixture("opencti/stream.sse")));
    assert_eq!(
        std::fs::read(dir.path().join("out/iocs.jsonl")).expect("jsonl"),
        before
    );
    let runs = runs_json(dir.path());
    assert_eq!(runs[0]["received"].as_u64(), Some(0), "{}", runs[0]);
}

#[test]
fn overlapping_small_batches_land_the_same_set() {
    // Small batches make the next batch's planning overlap the previous one's sink calls, and the
    // capture's updates and deletes then touch values still in flight: those batches must wait and
    // be planned again, never cancel or rewrite a change already on its way.
    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    let mut waited = 0;
    for batch in ["7", "64"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run_ok(
            file_run(dir.path(), &fixture("opencti/stream.sse"))
                .env("IOCSYNC_PIPELINE_BATCH_EVENTS", batch)
                .env("IOCSYNC_PIPELINE_LINGER", "0ms")
                .env("IOCSYNC_LOG", "iocsync::pipeline=debug"),
        );
        let log = String::from_utf8_lossy(&out.stderr);
        waited += log
            .matches("waiting for the batch in flight before planning the next")
            .count();
        let records = read_jsonl(&dir.path().join("out/iocs.jsonl"));
        assert_eq!(jsonl_live_set(&records), expected, "batch size {batch}");
        assert_eq!(
            zeek_live_rows(&dir.path().join("out/intel.dat")),
            expected_as_zeek(&expected),
            "batch size {batch}"
        );
        let runs = runs_json(dir.path());
        assert_balanced(&runs[0]);
        assert_eq!(runs[0]["pending"].as_u64(), Some(0), "{}", runs[0]);
    }
    assert!(waited > 0, "no batch ever touched a value in flight");
}

#[test]
fn ndjson_capture_gives_the_same_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(&mut file_run(dir.path(), &fixture("opencti/stream.ndjson")));
    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected
    );
}

#[test]
fn stix_bundle_creates_every_indicator() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(&mut file_run(dir.path(), &fixture("bundle/bundle.json")));
    let expected = read_expected(&fixture("bundle/expected-live.tsv"));
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected
    );
    assert_balanced(&runs_json(dir.path())[0]);
}

#[cfg(unix)]
#[test]
fn sigkill_mid_run_then_restart_gives_the_expected_set_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = fixture("opencti/stream.sse");
    // One event per batch makes the run slow enough to be killed in the middle several times.
    let mut kills = 0;
    for delay_ms in [150u64, 400, 250, 600, 300, 200, 350, 450] {
        if kills == 5 {
            break;
        }
        let mut child = file_run(dir.path(), &input)
            .env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
            .env("IOCSYNC_PIPELINE_LINGER", "1ms")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills >= 3,
        "the run finished too fast to be interrupted ({kills} kills)"
    );
    run_ok(&mut file_run(dir.path(), &input));
    let expected = read_expected(&fixture("opencti/expected-live.tsv"));
    // jsonl_live_set panics on a second create of a live value: that is the no-duplicate check.
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        expected
    );
    assert_eq!(
        zeek_live_rows(&dir.path().join("out/intel.dat")),
        expected_as_zeek(&expected)
    );
}

#[test]
fn state_show_and_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(&mut file_run(dir.path(), &fixture("opencti/small.sse")));
    let show = |dir: &Path| {
        let out = run_ok(
            iocsync(dir)
                .args(["state", "show"])
                .env("IOCSYNC_STATE_DIR", dir.join("state")),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = show(dir.path());
    assert!(text.contains("checkpoint file:"), "{text}");
    assert!(text.contains("sink jsonl:"), "{text}");
    run_ok(
        iocsync(dir.path())
            .args(["state", "reset", "--yes"])
            .env("IOCSYNC_STATE_DIR", dir.path().join("state")),
    );
    assert!(show(dir.path()).contains("checkpoint: none"));
}

fn config_error(envs: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = iocsync(dir.path());
    cmd.arg("run");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2 for {envs:?}, stderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "stderr should name {needle}: {stderr}"
    );
}

#[test]
fn configuration_mistakes_exit_2_and_name_the_key() {
    let base = [
        ("IOCSYNC_FILE_PATH", "in.sse"),
        ("IOCSYNC_JSONL_PATH", "out.jsonl"),
    ];
    config_error(&[], "IOCSYNC_SOURCE");
    config_error(&[base[0]], "IOCSYNC_SINKS");
    config_error(
        &[base[0], base[1], ("IOCSYNC_PIPELINE_LINGR", "1s")],
        "IOCSYNC_PIPELINE_LINGR",
    );
    config_error(
        &[base[0], base[1], ("IOCSYNC_PIPELINE_BATCH_EVENTS", "lots")],
        "IOCSYNC_PIPELINE_BATCH_EVENTS",
    );
    config_error(
        &[base[0], base[1], ("IOCSYNC_PIPELINE_BATCH_EVENTS", "0")],
        "IOCSYNC_PIPELINE_BATCH_EVENTS",
    );
    config_error(
        &[base[0], base[1], ("IOCSYNC_SOURCE", "kafka")],
        "IOCSYNC_SOURCE",
    );
    config_error(
        &[base[0], base[1], ("IOCSYNC_SINKS", "zeek")],
        "IOCSYNC_SINKS",
    );
    config_error(
        &[
            base[0],
            ("SENTINELONE_INTEL_URL", "https://s1.example"),
            ("SENTINELONE_INTEL_API_KEY", "k"),
            ("SENTINELONE_INTEL_ACCOUNT_ID", "1"),
            ("SENTINELONE_INTEL_SITE_ID", "2"),
        ],
        "SENTINELONE_INTEL_",
    );
    config_error(
        &[base[0], base[1], ("CONNECTOR_LOG_LEVEL", "chatty")],
        "CONNECTOR_LOG_LEVEL",
    );
}

#[test]
fn parse_command_prints_one_json_object_per_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_ok(iocsync(dir.path()).args([
        "parse",
        "[file:hashes.'SHA-256' = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']",
        "[ipv4-addr:value = '1.2.3.4'] AND [ipv4-addr:value = '1.2.3.5']",
        "[ipv4-addr:value = '1.2.3.4'",
    ]));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        for key in ["pattern", "valid", "error", "ioc", "skip"] {
            assert!(l.get(key).is_some(), "missing {key} in {l}");
        }
    }
    assert_eq!(lines[0]["ioc"]["type"], "sha256");
    assert_eq!(lines[0]["ioc"]["value"], "a".repeat(64));
    assert_eq!(lines[1]["skip"], "compound");
    assert_eq!(lines[1]["valid"], true);
    assert_eq!(lines[2]["valid"], false);
    assert!(
        lines[2]["error"].as_str().unwrap_or("").contains("offset"),
        "{}",
        lines[2]
    );
}

#[test]
fn a_merge_removes_what_the_merged_away_indicators_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let indicator = |id: &str, value: &str, modified: &str| {
        serde_json::json!({"id": id, "type": "indicator", "spec_version": "2.1", "pattern_type": "stix",
            "pattern": format!("[domain-name:value = '{value}']"), "name": value, "modified": modified})
    };
    let a = "indicator--00000000-0000-4000-8000-00000000000a";
    let b = "indicator--00000000-0000-4000-8000-00000000000b";
    let lines = [
        serde_json::json!({"id": "1-0", "event": "create", "data": {"data": indicator(a, "kept.example", "2025-01-01T00:00:00Z")}}),
        serde_json::json!({"id": "2-0", "event": "create", "data": {"data": indicator(b, "merged.example", "2025-01-01T00:00:00Z")}}),
        serde_json::json!({"id": "3-0", "event": "merge", "data": {
            "data": indicator(a, "kept.example", "2025-01-02T00:00:00Z"),
            "context": {"sources": [indicator(b, "merged.example", "2025-01-01T00:00:00Z")]}}}),
    ];
    let input = dir.path().join("merge.ndjson");
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
    run_ok(&mut file_run(dir.path(), &input));
    let live = jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl")));
    let want: std::collections::BTreeSet<(String, String)> =
        [("domain".to_string(), "kept.example".to_string())]
            .into_iter()
            .collect();
    assert_eq!(live, want);
    let runs = runs_json(dir.path());
    assert_eq!(runs[0]["received"].as_u64(), Some(3));
    assert_balanced(&runs[0]);
}
