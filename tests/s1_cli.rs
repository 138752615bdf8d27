//! Black-box tests of `iocsync s1 list|add|update|delete`: the binary against the fake S1
//! (tests/fakes/sentinelone.rs), asserting what it sends (journal), what it prints and its exit code.

mod common;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::iocsync;
use sentinelone_fake::{start, Failure, FakeS1, TOKEN};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const ACCOUNT: &str = "1001";

/// `iocsync s1 ARGS` configured for the fake (env only: no config file, no source).
fn s1(fake: &FakeS1, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = iocsync(dir);
    cmd.arg("s1")
        .args(args)
        .env("SENTINELONE_INTEL_URL", fake.url())
        .env("SENTINELONE_INTEL_API_KEY", TOKEN)
        .env("SENTINELONE_INTEL_ACCOUNT_ID", ACCOUNT)
        .env("SENTINELONE_INTEL_TIMEOUT", "5s")
        .env("IOCSYNC_STATE_DIR", dir.join("state"));
    cmd
}

/// Runs the command off the async runtime (the fake serves on it), feeding `stdin` when given
/// (otherwise stdin is closed).
async fn run(mut cmd: Command, stdin: Option<&'static str>) -> Output {
    tokio::task::spawn_blocking(move || {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn iocsync");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait for iocsync")
    })
    .await
    .expect("join")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and asserts exit 0; returns (stdout, stderr).
async fn ok(cmd: Command, stdin: Option<&'static str>) -> (String, String) {
    let out = run(cmd, stdin).await;
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Stores an IOC in the fake's account; returns its uuid.
fn seed(fake: &FakeS1, kind: &str, value: &str, extra: Value) -> String {
    let mut m = obj(json!({
        "type": kind, "value": value, "method": "EQUALS", "source": "OpenCTI",
        "name": format!("name of {value}"), "validUntil": "2030-01-01T00:00:00Z",
        "originalRiskScore": 80,
    }));
    m.extend(obj(extra));
    fake.insert(m, ACCOUNT)
}

fn values_of(json_out: &str) -> Vec<String> {
    let list: Vec<Value> = serde_json::from_str(json_out).expect("JSON output");
    list.iter()
        .map(|i| i["value"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn list_values(fake: &FakeS1, dir: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "--format", "json"];
    all.extend_from_slice(args);
    let (out, _) = ok(s1(fake, dir, &all), None).await;
    let mut v = values_of(&out);
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}

async fn seeded() -> (FakeS1, tempfile::TempDir) {
    let fake = start().await;
    seed(
        &fake,
        "DNS",
        "evil.example",
        json!({"creator": "alice@corp", "description": "C2 of APT28"}),
    );
    seed(
        &fake,
        "DNS",
        "not-evil.example.org",
        json!({"name": "APT29 staging", "creator": "bob@corp"}),
    );
    seed(
        &fake,
        "DNS",
        "evilcorp.net",
        json!({"externalId": "indicator--e1", "source": "MISP"}),
    );
    seed(&fake, "URL", "http://x.example/a%20b", json!({}));
    seed(&fake, "IPV4", "10.9.8.7", json!({"description": "scanner"}));
    (fake, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_at_start_end_and_middle_case_insensitively() {
    let (fake, dir) = seeded().await;
    let d = dir.path();
    let wildcards: [(&str, &[&str]); 4] = [
        (
            "%EVIL%",
            &["evil.example", "not-evil.example.org", "evilcorp.net"],
        ),
        ("evil%", &["evil.example", "evilcorp.net"]),
        ("%.net", &["evilcorp.net"]),
        ("not%example%org", &["not-evil.example.org"]),
    ];
    for (pattern, listed) in wildcards {
        assert_eq!(
            list_values(&fake, d, &["--value", pattern]).await,
            strs(listed),
            "{pattern}"
        );
    }
    // Value wildcards are matched client-side: S1 gets no value filter.
    for r in fake.requests("GET") {
        assert_eq!(r.param("value"), None, "{r:?}");
    }
    // Without `%` a value is exact (S1's `value` filter), never a substring; a `%` in a URL is
    // literal when escaped.
    fake.clear_journal();
    assert_eq!(
        list_values(&fake, d, &["--value", "EVIL.example"]).await,
        strs(&["evil.example"])
    );
    assert_eq!(
        fake.requests("GET")[0].param("value").as_deref(),
        Some("evil.example")
    );
    assert!(list_values(&fake, d, &["--value", "evil"]).await.is_empty());
    assert_eq!(
        list_values(&fake, d, &["--value", r"http://x.example/a\%20b"]).await,
        strs(&["http://x.example/a%20b"])
    );
}

/// One row of the filter table: the `list` arguments, the values listed, and the S1 query
/// parameter the filter must become (if it is sent to S1).
struct FilterCase {
    args: &'static [&'static str],
    listed: &'static [&'static str],
    sent: Option<(&'static str, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_filters_use_s1_server_side_filters() {
    let (fake, dir) = seeded().await;
    let d = dir.path();
    let cases = [
        FilterCase {
            args: &["--name", "%apt%"],
            listed: &["not-evil.example.org"],
            sent: Some(("name__contains", "apt")),
        },
        // Literal name: the whole name must match.
        FilterCase {
            args: &["--name", "APT29"],
            listed: &[],
            sent: None,
        },
        FilterCase {
            args: &["--name", "apt29 STAGING"],
            listed: &["not-evil.example.org"],
            sent: None,
        },
        FilterCase {
            args: &["--user", "alice%"],
            listed: &["evil.example"],
            sent: Some(("creator__contains", "alice")),
        },
        FilterCase {
            args: &["--description", "%apt28"],
            listed: &["evil.example"],
            sent: Some(("description__contains", "apt28")),
        },
        FilterCase {
            args: &["--type", "ipv4"],
            listed: &["10.9.8.7"],
            sent: Some(("type", "IPV4")),
        },
        FilterCase {
            args: &["--source", "MISP"],
            listed: &["evilcorp.net"],
            sent: None,
        },
        FilterCase {
            args: &["--external-id", "indicator--e1"],
            listed: &["evilcorp.net"],
            sent: Some(("externalId", "indicator--e1")),
        },
    ];
    for case in cases {
        assert_eq!(
            list_values(&fake, d, case.args).await,
            strs(case.listed),
            "{:?}",
            case.args
        );
        if let Some((param, value)) = case.sent {
            assert_eq!(
                fake.requests("GET")
                    .last()
                    .and_then(|r| r.param(param))
                    .as_deref(),
                Some(value),
                "{:?}",
                case.args
            );
        }
    }
    // Every call carries the scope.
    assert!(fake
        .requests("GET")
        .iter()
        .all(|r| r.param("accountIds").as_deref() == Some(ACCOUNT)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_several_cursor_pages_and_honours_limit() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10 {
        seed(&fake, "DNS", &format!("host{i}.example"), json!({}));
    }
    fake.set_page_cap(3);
    let all = list_values(&fake, dir.path(), &[]).await;
    assert_eq!(all.len(), 10);
    let gets = fake.requests("GET");
    assert_eq!(gets.len(), 4, "4 pages of at most 3");
    assert_eq!(gets[0].param("cursor"), None);
    assert!(gets[1..].iter().all(|r| r.param("cursor").is_some()));

    fake.clear_journal();
    let (out, _) = ok(s1(&fake, dir.path(), &["list", "--limit", "4"]), None).await;
    assert!(out.contains("4 IOCs (--limit reached"), "{out}");
    assert_eq!(fake.requests("GET").len(), 2, "stops once 4 are read");

    // Client-side wildcard over pages: matches on pages 1 and 4.
    assert_eq!(
        list_values(&fake, dir.path(), &["--value", "%host1%", "--limit", "5"]).await,
        strs(&["host1.example"])
    );

    // A cursor that repeats ends the listing with a warning instead of looping.
    fake.set_repeat_cursor(true);
    let out = run(s1(&fake, dir.path(), &["list"]), None).await;
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("repeated a paging cursor"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_fits_80_columns_and_json_csv_parse_back() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let long_url = format!("https://very-long.example/{}", "path/".repeat(20));
    seed(
        &fake,
        "URL",
        &long_url,
        json!({"name": "a, \"quoted\"\nname", "creator": "c"}),
    );
    seed(
        &fake,
        "SHA256",
        &"ab".repeat(32),
        json!({"description": "x\u{1b}[31m"}),
    );
    let (table, _) = ok(s1(&fake, dir.path(), &["list"]), None).await;
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(
        table.starts_with("UUID") && table.contains("2 IOCs"),
        "{table}"
    );

    let (j, _) = ok(s1(&fake, dir.path(), &["list", "--format", "json"]), None).await;
    let parsed: Vec<Value> = serde_json::from_str(&j).expect("json");
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0]["value"], long_url.as_str());
    assert_eq!(parsed[0]["name"], "a, \"quoted\"\nname");
    assert!(parsed[0]["uuid"].as_str().is_some_and(|u| u.len() == 32));

    let (c, _) = ok(s1(&fake, dir.path(), &["list", "--format", "csv"]), None).await;
    let mut reader = csv::Reader::from_reader(c.as_bytes());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(&headers[0], "uuid");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    assert_eq!(&rows[0][col("value")], long_url);
    assert_eq!(&rows[0][col("name")], "a, \"quoted\"\nname");
    assert_eq!(&rows[0][col("creator")], "c");
    assert_eq!(&rows[1][col("originalRiskScore")], "80");
    assert_eq!(
        &rows[1][col("uuid")],
        parsed[1]["uuid"].as_str().unwrap_or("")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_detects_types_applies_defaults_and_prints_uuids() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sha = "AB".repeat(32);
    let (out, _) = ok(
        s1(
            &fake,
            dir.path(),
            &[
                "add",
                &sha,
                "Evil.Example.",
                "10.1.2.3",
                "https://x.example/p",
                "--format",
                "json",
            ],
        ),
        None,
    )
    .await;
    let posts = fake.requests("POST");
    assert_eq!(posts.len(), 1);
    let body = posts[0].body.clone().expect("body");
    assert_eq!(body["filter"]["accountIds"], json!([ACCOUNT]));
    let data = body["data"].as_array().expect("data");
    let got: Vec<(String, String)> = data
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap_or("").into(),
                i["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("SHA256".to_string(), "ab".repeat(32)),
            ("DNS".into(), "evil.example".into()),
            ("IPV4".into(), "10.1.2.3".into()),
            ("URL".into(), "https://x.example/p".into()),
        ]
    );
    let in_30_days = chrono::Utc::now() + chrono::Duration::days(30);
    for item in data {
        assert_eq!(item["originalRiskScore"], 100);
        assert_eq!(item["source"], "iocsync");
        assert_eq!(item["method"], "EQUALS");
        assert_eq!(item["name"], item["value"]);
        let until =
            chrono::DateTime::parse_from_rfc3339(item["validUntil"].as_str().expect("until"))
                .expect("rfc3339");
        assert!(
            (until.with_timezone(&chrono::Utc) - in_30_days)
                .num_minutes()
                .abs()
                < 5
        );
    }
    let created: Vec<Value> = serde_json::from_str(&out).expect("json");
    let stored: Vec<String> = fake
        .iocs()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    let printed: Vec<String> = created
        .iter()
        .map(|i| i["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(printed, stored);

    // The table shows the uuids too.
    let (table, _) = ok(s1(&fake, dir.path(), &["add", "second.example"]), None).await;
    let uuid = fake
        .iocs()
        .last()
        .and_then(|i| i["uuid"].as_str().map(str::to_string))
        .expect("uuid");
    assert!(
        table.contains(&uuid) && table.contains("1 IOC created"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_options_from_file_and_batches() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("iocs.txt");
    std::fs::write(
        &file,
        "# incident 42\na.example\n\nb.example\nc.example\na.example\n",
    )
    .expect("write");
    let mut cmd = s1(
        &fake,
        dir.path(),
        &[
            "add",
            "d.example",
            "e.example",
            "--from-file",
            file.to_str().expect("path"),
            "--type",
            "DNS",
            "--name",
            "IR-42",
            "--description",
            "from the incident",
            "--score",
            "70",
            "--valid-days",
            "7",
            "--source",
            "IR team",
        ],
    );
    cmd.env("SENTINELONE_INTEL_BATCH_SIZE", "2");
    ok(cmd, None).await;
    let posts = fake.requests("POST");
    assert_eq!(posts.len(), 3, "5 distinct values in batches of 2");
    let items: Vec<Value> = posts
        .iter()
        .flat_map(|p| {
            p.body
                .as_ref()
                .and_then(|b| b["data"].as_array().cloned())
                .unwrap_or_default()
        })
        .collect();
    let values: Vec<&str> = items.iter().filter_map(|i| i["value"].as_str()).collect();
    assert_eq!(
        values,
        [
            "d.example",
            "e.example",
            "a.example",
            "b.example",
            "c.example"
        ]
    );
    let in_7_days = chrono::Utc::now() + chrono::Duration::days(7);
    for i in &items {
        assert_eq!(i["name"], "IR-42");
        assert_eq!(i["description"], "from the incident");
        assert_eq!(i["originalRiskScore"], 70);
        assert_eq!(i["source"], "IR team");
        let until = chrono::DateTime::parse_from_rfc3339(i["validUntil"].as_str().expect("until"))
            .expect("date");
        assert!(
            (until.with_timezone(&chrono::Utc) - in_7_days)
                .num_minutes()
                .abs()
                < 5
        );
    }

    // Values on stdin with `--from-file -`; an IP's validity is capped at 30 days.
    fake.clear_journal();
    let (_, err) = ok(
        s1(
            &fake,
            dir.path(),
            &["add", "--from-file", "-", "--valid-days", "90"],
        ),
        Some("10.0.0.1\n"),
    )
    .await;
    assert!(err.contains("capped at 30 days"), "{err}");
    let body = fake.requests("POST")[0].body.clone().expect("body");
    assert_eq!(body["data"][0]["value"], "10.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_refuses_invalid_or_ambiguous_values_before_any_call() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        s1(
            &fake,
            dir.path(),
            &[
                "add",
                "good.example",
                "invoice.zip",
                "evil[.]com",
                "10.0.0.0/8",
                "1.2.3",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for words in [
        "refused 4 of 5 values, nothing was added",
        "`invoice.zip` is ambiguous",
        "--type DNS",
        "write it as `evil.com`",
        "network range",
        "`1.2.3` looks like an IPv4 address",
    ] {
        assert!(err.contains(words), "missing {words:?} in {err}");
    }
    assert!(
        fake.journal().is_empty(),
        "no call before validation passes"
    );

    // --type settles the ambiguity; a value that does not fit the type is refused.
    ok(
        s1(&fake, dir.path(), &["add", "invoice.zip", "--type", "DNS"]),
        None,
    )
    .await;
    let out = run(
        s1(&fake, dir.path(), &["add", "abc", "--type", "MD5"]),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a valid MD5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replaces_the_uuid_when_s1_does_not_upsert() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let old = seed(
        &fake,
        "DNS",
        "evil.example",
        json!({"externalId": "indicator--1", "labels": ["apt"], "severity": "High"}),
    );
    let (out, err) = ok(
        s1(
            &fake,
            dir.path(),
            &[
                "update",
                "--uuid",
                &old,
                "--valid-days",
                "10",
                "--name",
                "renamed",
                "--format",
                "json",
            ],
        ),
        None,
    )
    .await;
    assert!(err.contains(&format!("replaced {old} by")), "{err}");
    let methods: Vec<String> = fake.journal().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "POST", "DELETE"]);
    let post = fake.requests("POST")[0].body.clone().expect("body");
    let item = &post["data"][0];
    assert_eq!(item["externalId"], "indicator--1");
    assert_eq!(item["labels"], json!(["apt"]));
    assert_eq!(item["severity"], "High");
    assert_eq!(
        item["originalRiskScore"], 80,
        "unchanged fields are carried over"
    );
    let delete = fake.requests("DELETE")[0].body.clone().expect("body");
    assert_eq!(delete["filter"]["uuids"], json!([old]));

    let stored = fake.iocs();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0]["uuid"], old.as_str());
    assert_eq!(stored[0]["name"], "renamed");
    let in_10_days = chrono::Utc::now() + chrono::Duration::days(10);
    let until =
        chrono::DateTime::parse_from_rfc3339(stored[0]["validUntil"].as_str().expect("until"))
            .expect("date");
    assert!(
        (until.with_timezone(&chrono::Utc) - in_10_days)
            .num_minutes()
            .abs()
            < 5
    );
    let printed: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(printed[0]["uuid"], stored[0]["uuid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_in_place_when_s1_upserts_and_by_value() {
    let fake = start().await;
    fake.set_upsert(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let uuid = seed(&fake, "SHA1", &"c".repeat(40), json!({}));
    let (_, err) = ok(
        s1(
            &fake,
            dir.path(),
            &["update", "--value", &"C".repeat(40), "--score", "55"],
        ),
        None,
    )
    .await;
    assert!(err.contains(&format!("updated {uuid} in place")), "{err}");
    assert!(fake.requests("DELETE").is_empty());
    let stored = fake.iocs();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["uuid"], uuid.as_str());
    assert_eq!(stored[0]["originalRiskScore"], 55);

    // A value held by two IOCs must be chosen by uuid (or narrowed by --type).
    seed(&fake, "DNS", "dup.example", json!({}));
    seed(&fake, "DNS", "dup.example", json!({}));
    let out = run(
        s1(
            &fake,
            dir.path(),
            &["update", "--value", "dup.example", "--score", "1"],
        ),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("2 IOCs have value `dup.example`; choose one with --uuid"));
    // Nothing to change, or nothing found: refused.
    let out = run(s1(&fake, dir.path(), &["update", "--uuid", &uuid]), None).await;
    assert!(text(&out.stderr).contains("nothing to update"));
    let out = run(
        s1(
            &fake,
            dir.path(),
            &["update", "--uuid", &"0".repeat(32), "--score", "1"],
        ),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no IOC with uuid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_shows_then_asks_and_honours_the_answer() {
    let (fake, dir) = seeded().await;
    let d = dir.path();
    // "n": shown, nothing deleted.
    let (out, err) = ok(s1(&fake, d, &["delete", "--value", "evil%"]), Some("n\n")).await;
    assert!(
        out.contains("evil.example") && out.contains("evilcorp.net"),
        "{out}"
    );
    assert!(!out.contains("not-evil"), "{out}");
    assert!(
        err.contains("delete these 2 IOCs from SentinelOne (account 1001)? [y/N]"),
        "{err}"
    );
    assert!(err.contains("nothing deleted"));
    assert!(fake.requests("DELETE").is_empty());
    // Closed stdin without --yes: refused, exit 1.
    let out = run(s1(&fake, d, &["delete", "--value", "evil%"]), None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pass --yes"));
    assert!(fake.requests("DELETE").is_empty());
    // "y": exactly the shown uuids are deleted.
    let shown: Vec<String> = fake
        .iocs()
        .iter()
        .filter(|i| i["value"].as_str().is_some_and(|v| v.starts_with("evil")))
        .map(|i| i["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    let (_, err) = ok(s1(&fake, d, &["delete", "--value", "evil%"]), Some("y\n")).await;
    assert!(err.contains("deleted 2 of 2 IOCs"), "{err}");
    let deletes = fake.requests("DELETE");
    assert_eq!(deletes.len(), 1);
    let body = deletes[0].body.clone().expect("body");
    assert_eq!(body["filter"]["uuids"], json!(shown));
    assert_eq!(body["filter"]["accountIds"], json!([ACCOUNT]));
    assert!(
        body["filter"].get("value").is_none(),
        "never delete by filter: {body}"
    );
    assert_eq!(fake.iocs().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_yes_dry_run_and_selectors() {
    let (fake, dir) = seeded().await;
    let d = dir.path();
    // --dry-run: shown, no DELETE, no prompt.
    let (out, err) = ok(
        s1(&fake, d, &["delete", "--type", "DNS", "--dry-run"]),
        None,
    )
    .await;
    assert!(out.contains("3 IOCs selected"), "{out}");
    assert!(err.contains("dry run: 3 IOCs would be deleted"), "{err}");
    assert!(
        fake.requests("DELETE").is_empty(),
        "dry run sends no DELETE"
    );

    // Several uuids, an unknown one reported.
    let uuids: Vec<String> = fake
        .iocs()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap_or("").to_string())
        .collect();
    let unknown = "f".repeat(32);
    let (_, err) = ok(
        s1(
            &fake,
            d,
            &["delete", "--uuid", &uuids[0], &uuids[1], &unknown, "--yes"],
        ),
        None,
    )
    .await;
    assert!(err.contains(&format!("not found: {unknown}")), "{err}");
    assert!(err.contains("deleted 2 of 2 IOCs"), "{err}");
    // By external id, and by a filter option alone.
    ok(
        s1(
            &fake,
            d,
            &["delete", "--external-id", "indicator--e1", "--yes"],
        ),
        None,
    )
    .await;
    ok(
        s1(&fake, d, &["delete", "--description", "scanner", "--yes"]),
        None,
    )
    .await;
    let left: Vec<String> = fake
        .iocs()
        .iter()
        .map(|i| i["value"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(left, ["http://x.example/a%20b"]);
    // Nothing matches: nothing sent.
    fake.clear_journal();
    let (_, err) = ok(
        s1(&fake, d, &["delete", "--value", "nothing.example", "--yes"]),
        None,
    )
    .await;
    assert!(err.contains("nothing matches"));
    assert!(fake.requests("DELETE").is_empty());
    // No selector at all is a usage error.
    let out = run(s1(&fake, d, &["delete", "--yes"]), None).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_permission_failures_exit_3() {
    let (fake, dir) = seeded().await;
    fake.set_token("another-token");
    for args in [
        vec!["list"],
        vec!["add", "a.example"],
        vec!["delete", "--value", "evil.example", "--yes"],
    ] {
        let out = run(s1(&fake, dir.path(), &args), None).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("HTTP 401") && err.contains("sentinelone_intel.api_key"),
            "{err}"
        );
        assert!(!err.contains(TOKEN));
    }
    fake.set_token(TOKEN);
    fake.fail_next(1, Failure::MultiScope);
    let out = run(s1(&fake, dir.path(), &["list"]), None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("multi-scopes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_and_no_source_is_needed() {
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = s1(&fake, dir.path(), &["list"]);
    cmd.env_remove("SENTINELONE_INTEL_ACCOUNT_ID");
    let out = run(cmd, None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sentinelone_intel.account_id"),
        "{}",
        text(&out.stderr)
    );
    let mut cmd = s1(&fake, dir.path(), &["list"]);
    cmd.env("IOCSYNC_BOGUS", "1");
    assert_eq!(run(cmd, None).await.status.code(), Some(2));
    assert!(fake.journal().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_list_answers_from_the_last_full_listing_with_its_age() {
    let (fake, dir) = seeded().await;
    let d = dir.path();
    let out = run(s1(&fake, d, &["list", "--offline"]), None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no cached listing"));

    // A server-filtered listing is not a full listing: nothing cached yet.
    ok(s1(&fake, d, &["list", "--type", "DNS"]), None).await;
    assert_eq!(
        run(s1(&fake, d, &["list", "--offline"]), None)
            .await
            .status
            .code(),
        Some(1)
    );

    ok(s1(&fake, d, &["list"]), None).await;
    fake.clear_journal();
    fake.set_token("the API is gone");
    let (out, err) = ok(s1(&fake, d, &["list", "--offline"]), None).await;
    assert!(
        err.contains("offline: cached listing of 5 IOCs from"),
        "{err}"
    );
    assert!(err.contains("s old"), "{err}");
    assert!(out.contains("5 IOCs (offline, as of"), "{out}");
    // Filters apply to the cached listing too.
    let (j, _) = ok(
        s1(
            &fake,
            d,
            &["list", "--offline", "--value", "%evil%", "--format", "json"],
        ),
        None,
    )
    .await;
    assert_eq!(values_of(&j).len(), 3);
    assert!(fake.journal().is_empty(), "offline makes no call");

    // A cache of another scope is not shown as this one.
    let mut cmd = s1(&fake, d, &["list", "--offline"]);
    cmd.env("SENTINELONE_INTEL_ACCOUNT_ID", "2002");
    let out = run(cmd, None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not of the configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_repoints_the_pipeline_entry_to_the_new_uuid() {
    use iocsync::ioc::{Ioc, IocKind};
    use iocsync::state::{EntryStatus, SinkEntry, State};
    let fake = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let old = seed(
        &fake,
        "DNS",
        "evil.example",
        json!({"externalId": "indicator--1"}),
    );
    let state_dir = dir.path().join("state");
    {
        let mut state = State::open(&state_dir).expect("state");
        let tx = state.tx().expect("tx");
        tx.put_sink_entry(
            "sentinelone",
            &SinkEntry {
                ioc: Ioc {
                    kind: IocKind::Domain,
                    value: "evil.example".into(),
                },
                indicator_id: "indicator--1".into(),
                remote_id: Some(old.clone()),
                status: EntryStatus::Live,
                meta: Default::default(),
            },
        )
        .expect("entry");
        tx.commit().expect("commit");
    }
    ok(
        s1(
            &fake,
            dir.path(),
            &["update", "--uuid", &old, "--score", "5"],
        ),
        None,
    )
    .await;
    let new = fake.iocs()[0]["uuid"].as_str().expect("uuid").to_string();
    assert_ne!(new, old);
    let mut state = State::open(&state_dir).expect("state");
    let tx = state.tx().expect("tx");
    let entry = tx
        .sink_entry("sentinelone", IocKind::Domain, "evil.example")
        .expect("read")
        .expect("entry");
    assert_eq!(entry.remote_id.as_deref(), Some(new.as_str()));
}
