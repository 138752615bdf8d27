//! Black-box tests of the SentinelOne sink and client against the fake S1 (tests/fakes/sentinelone.rs):
//! wire format, 400 recovery, retry mapping, resolve, check, paging, and that the token never leaks.

#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;
#[path = "common/sink.rs"]
mod sink_harness;

use iocsync::config::Valid;
use iocsync::ioc::IocKind;
use iocsync::remote::RemoteFailure;
use iocsync::secret::Secret;
use iocsync::sinks::sentinelone::{
    ListQuery, S1Error, SentinelOneClient, SentinelOneConfig, SentinelOneSink,
};
use iocsync::sinks::{Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use sentinelone_fake::{start, DetailStyle, Failure, FakeS1, IOCS_PATH, TOKEN};
use serde_json::{json, Value};
use sink_harness::{
    change, create, created, id_of, rate_limited, recovered, run_cases, transport_failures, Case,
    Expect, Faults,
};
use std::time::Duration;

const ACCOUNT: &str = "1001";

fn cfg(fake: &FakeS1) -> SentinelOneConfig {
    SentinelOneConfig {
        url: Some(fake.url().to_string()),
        api_key: Some(Secret::new(TOKEN)),
        account_id: Some(ACCOUNT.into()),
        timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The section validated, as the loader does.
fn valid(cfg: &SentinelOneConfig) -> Valid<SentinelOneConfig> {
    Valid::new(cfg.clone()).expect("valid sentinelone_intel section")
}

fn sink(cfg: &SentinelOneConfig) -> SentinelOneSink {
    SentinelOneSink::new(&valid(cfg), "OpenCTI").expect("sink")
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

const MD5: &str = "0123456789abcdef0123456789abcdef";
const SHA1: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn every_kind() -> Vec<Change> {
    let mut v = vec![
        create(IocKind::Sha256, SHA256, "indicator--a"),
        create(IocKind::Sha1, SHA1, "indicator--b"),
        create(IocKind::Md5, MD5, "indicator--c"),
        create(IocKind::Url, "http://evil.example/x?y=1", "indicator--d"),
        create(IocKind::Domain, "evil.example", "indicator--e"),
        create(IocKind::Hostname, "host.evil.example", "indicator--f"),
        create(IocKind::Ipv4, "203.0.113.7", "indicator--g"),
        create(IocKind::Ipv6, "2001:db8::7", "indicator--h"),
    ];
    v[0].meta.score = Some(42);
    v[0].meta.labels = vec!["apt".into(), "c2".into()];
    v[0].meta.description = Some("x".repeat(3000));
    v[6].meta.valid_until = Some("2099-01-01T00:00:00Z".into());
    v[0].meta.valid_until = Some("2099-01-01T00:00:00Z".into());
    v
}

fn days_from_now(iso: &str) -> i64 {
    let t = chrono::DateTime::parse_from_rfc3339(iso).expect("validUntil is RFC 3339");
    (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() / 24
}

#[tokio::test]
async fn creates_a_batch_of_every_type() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let batch = every_kind();
    let out = s.apply(&batch).await;
    assert_eq!(out.len(), 8);
    let uuids: Vec<String> = out.iter().map(id_of).collect();
    assert!(uuids.iter().all(|u| is_hex32(u)), "{uuids:?}");

    let posts = fake.requests("POST");
    assert_eq!(posts.len(), 1);
    let req = &posts[0];
    assert_eq!(req.path, IOCS_PATH);
    assert_eq!(
        req.auth.as_deref(),
        Some(format!("ApiToken {TOKEN}").as_str())
    );
    let body = req.body.as_ref().expect("body");
    assert_eq!(
        body["filter"],
        json!({"accountIds": [ACCOUNT], "tenant": false})
    );
    let data = body["data"].as_array().expect("data");
    let types: Vec<&str> = data
        .iter()
        .map(|i| i["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        ["SHA256", "SHA1", "MD5", "URL", "DNS", "DNS", "IPV4", "IPV6"]
    );
    for (item, c) in data.iter().zip(&batch) {
        assert_eq!(item["method"], "EQUALS");
        assert_eq!(item["source"], "OpenCTI");
        assert_eq!(item["value"], c.ioc.value.as_str());
        assert_eq!(item["externalId"], c.indicator_id.as_str());
        assert_eq!(item["name"], format!("name of {}", c.ioc.value));
    }
    assert_eq!(data[0]["originalRiskScore"], 42);
    assert_eq!(data[1]["originalRiskScore"], 100);
    assert_eq!(data[0]["labels"], json!(["apt", "c2"]));
    assert_eq!(
        data[0]["description"]
            .as_str()
            .expect("desc")
            .chars()
            .count(),
        1000
    );
    // Far-future validity is clamped: 180 days for a hash, 30 for an IP; absent stays absent.
    let hash_days = days_from_now(data[0]["validUntil"].as_str().expect("hash validUntil"));
    let ip_days = days_from_now(data[6]["validUntil"].as_str().expect("ip validUntil"));
    assert!((179..=180).contains(&hash_days), "{hash_days}");
    assert!((29..=30).contains(&ip_days), "{ip_days}");
    assert!(data[1].get("validUntil").is_none());

    let stored = fake.iocs();
    assert_eq!(stored.len(), 8);
    assert_eq!(stored[0]["uuid"], uuids[0].as_str());
    assert!(
        iocsync::metrics::global().counter(
            "iocsync_api_calls_total",
            &[
                ("remote", "sentinelone"),
                ("endpoint", "POST /iocs"),
                ("status", "2xx")
            ]
        ) >= 1
    );
}

#[tokio::test]
async fn batches_by_configured_size_and_defaults() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.batch_size = 3;
    c.source_name = Some("My CTI".into());
    c.default_score = 70;
    c.default_valid_days = Some(7);
    let s = sink(&c);
    assert_eq!(s.max_batch(), 3);
    let batch: Vec<Change> = (0..7)
        .map(|i| {
            create(
                IocKind::Ipv4,
                &format!("198.51.100.{i}"),
                &format!("indicator--{i}"),
            )
        })
        .collect();
    let out = s.apply(&batch).await;
    assert!(out
        .iter()
        .all(|o| matches!(o, Outcome::Applied { remote_id: Some(_) })));
    let posts = fake.requests("POST");
    let sizes: Vec<usize> = posts
        .iter()
        .map(|p| {
            p.body.as_ref().expect("body")["data"]
                .as_array()
                .expect("data")
                .len()
        })
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    let item = &posts[0].body.as_ref().expect("body")["data"][0];
    assert_eq!(item["source"], "My CTI");
    assert_eq!(item["originalRiskScore"], 70);
    assert!((6..=7).contains(&days_from_now(item["validUntil"].as_str().expect("until"))));
}

#[tokio::test]
async fn deletes_by_uuid() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let out = s
        .apply(&[
            create(IocKind::Domain, "a.example", "indicator--1"),
            create(IocKind::Domain, "b.example", "indicator--2"),
        ])
        .await;
    let first = id_of(&out[0]);
    let mut del = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "a.example",
        "indicator--1",
    );
    del.remote_id = Some(first.clone());
    let mut gone = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "z.example",
        "indicator--9",
    );
    gone.remote_id = Some("ffffffffffffffffffffffffffffffff".into());
    let out = s.apply(&[del, gone]).await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Applied { .. })),
        "{out:?}"
    );

    let deletes = fake.requests("DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, IOCS_PATH);
    assert_eq!(
        deletes[0].body,
        Some(json!({"filter": {
            "accountIds": [ACCOUNT], "tenant": false,
            "uuids": [first, "ffffffffffffffffffffffffffffffff"]
        }}))
    );
    assert!(
        fake.requests("GET").is_empty(),
        "no lookup when the uuid is known"
    );
    let left = fake.iocs();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["value"], "b.example");
}

#[tokio::test]
async fn deletes_by_external_id_lookup() {
    let fake = start().await;
    let ours = fake.insert(
        json!({"type": "IPV4", "value": "192.0.2.1", "externalId": "indicator--old", "method": "EQUALS", "source": "OpenCTI"})
            .as_object().expect("object").clone(),
        ACCOUNT,
    );
    // Same value from another source: must survive.
    fake.insert(
        json!({"type": "IPV4", "value": "192.0.2.1", "externalId": "other-feed-1", "method": "EQUALS", "source": "Other"})
            .as_object().expect("object").clone(),
        ACCOUNT,
    );
    let s = sink(&cfg(&fake));
    let out = s
        .apply(&[
            change(
                ChangeOp::Delete,
                IocKind::Ipv4,
                "192.0.2.1",
                "indicator--old",
            ),
            change(
                ChangeOp::Delete,
                IocKind::Ipv4,
                "192.0.2.99",
                "indicator--never",
            ),
        ])
        .await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Applied { .. })),
        "{out:?}"
    );

    let gets = fake.requests("GET");
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[0].param("externalId").as_deref(),
        Some("indicator--old")
    );
    assert_eq!(gets[0].param("value").as_deref(), Some("192.0.2.1"));
    assert_eq!(gets[0].param("type").as_deref(), Some("IPV4"));
    assert_eq!(gets[0].param("accountIds").as_deref(), Some(ACCOUNT));
    assert_eq!(gets[0].param("groupIds"), None);
    let deletes = fake.requests("DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].body.as_ref().expect("body")["filter"]["uuids"],
        json!([ours])
    );
    let left = fake.iocs();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["externalId"], "other-feed-1");
}

#[tokio::test]
async fn update_replaces_the_entry_whether_or_not_s1_upserts() {
    for upsert in [false, true] {
        let fake = start().await;
        fake.set_upsert(upsert);
        let s = sink(&cfg(&fake));
        let old = created(&s, IocKind::Url, "http://u.example/", "indicator--u").await;
        let mut upd = change(
            ChangeOp::Update,
            IocKind::Url,
            "http://u.example/",
            "indicator--u",
        );
        upd.remote_id = Some(old.clone());
        upd.meta.name = Some("renamed".into());
        let new = id_of(&s.apply(&[upd]).await[0]);
        let stored = fake.iocs();
        assert_eq!(stored.len(), 1, "upsert={upsert}: {stored:?}");
        assert_eq!(stored[0]["name"], "renamed");
        assert_eq!(stored[0]["uuid"], new.as_str());
        assert_eq!(new == old, upsert);
        assert_eq!(fake.requests("DELETE").len(), usize::from(!upsert));
    }
}

#[tokio::test]
async fn create_then_delete_in_one_batch_ends_absent() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let out = s
        .apply(&[
            create(IocKind::Md5, MD5, "indicator--m"),
            change(ChangeOp::Delete, IocKind::Md5, MD5, "indicator--m"),
        ])
        .await;
    assert_eq!(out.len(), 2);
    assert!(fake.iocs().is_empty());
    assert!(
        fake.requests("GET").is_empty(),
        "the uuid from the same batch is reused"
    );
}

/// Good items plus items the fake refuses (bad hex, empty-file hash, bad DNS with a quote).
fn mixed_batch() -> Vec<Change> {
    vec![
        create(IocKind::Domain, "good-1.example", "indicator--1"),
        create(IocKind::Md5, "xyz", "indicator--2"),
        create(IocKind::Ipv4, "192.0.2.10", "indicator--3"),
        create(
            IocKind::Sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "indicator--4",
        ),
        create(IocKind::Domain, "it's.example", "indicator--5"),
        create(IocKind::Sha1, SHA1, "indicator--6"),
    ]
}

async fn recovery(style: DetailStyle) -> (Vec<Outcome>, FakeS1) {
    let fake = start().await;
    fake.set_detail_style(style);
    let s = sink(&cfg(&fake));
    let out = s.apply(&mixed_batch()).await;
    (out, fake)
}

fn check_recovered(out: &[Outcome], fake: &FakeS1, reason_has_value: bool) {
    let bad = [1, 3, 4];
    for (i, o) in out.iter().enumerate() {
        if bad.contains(&i) {
            let Outcome::Rejected { reason } = o else {
                panic!("item {i} should be rejected: {o:?}");
            };
            assert!(reason.contains("4000010 Validation Error"), "{reason}");
            if reason_has_value {
                let value = &mixed_batch()[i].ioc.value;
                assert!(reason.contains(value.as_str()), "{reason}");
            }
        } else {
            assert!(
                matches!(o, Outcome::Applied { remote_id: Some(_) }),
                "item {i}: {o:?}"
            );
        }
    }
    let values: Vec<String> = fake
        .iocs()
        .iter()
        .map(|i| i["value"].as_str().expect("value").to_string())
        .collect();
    assert_eq!(values, ["good-1.example", "192.0.2.10", SHA1]);
}

#[tokio::test]
async fn bad_items_are_rejected_from_a_json_detail() {
    let (out, fake) = recovery(DetailStyle::Json).await;
    check_recovered(&out, &fake, true);
    assert_eq!(
        fake.requests("POST").len(),
        2,
        "one failed POST, one re-POST"
    );
}

#[tokio::test]
async fn bad_items_are_rejected_from_a_python_detail() {
    let (out, fake) = recovery(DetailStyle::Python).await;
    check_recovered(&out, &fake, true);
    assert_eq!(fake.requests("POST").len(), 2);
}

#[tokio::test]
async fn unparseable_detail_is_bisected() {
    let (out, fake) = recovery(DetailStyle::Unparseable).await;
    check_recovered(&out, &fake, false);
    let Outcome::Rejected { reason } = &out[1] else {
        panic!("rejected")
    };
    assert!(
        reason.contains("One or more IOCs failed validation"),
        "{reason}"
    );
    let posts = fake.requests("POST").len();
    assert!(posts > 2 && posts <= 12, "{posts} POSTs");
}

/// The failures the fake S1 injects, for the rows both HTTP sinks share.
fn faults() -> Faults<FakeS1> {
    Faults {
        sink: "sentinelone",
        rate_limit: |f, after| f.fail_next(1, Failure::RateLimit(after)),
        status: |f, status| f.fail_next(1, Failure::Status(status)),
        reset: |f| f.fail_next(1, Failure::Reset),
        slow: |f| f.fail_next(1, Failure::Slow(Duration::from_secs(2))),
        status_text: "",
        reset_text: "connection",
        holds_nothing: |f| f.iocs().is_empty(),
    }
}

/// Rate limits, server errors, resets, timeouts, a refused token and a refused scope: each a retry
/// with the error the pipeline reads, nothing created meanwhile, and the batch through afterwards.
#[tokio::test]
async fn failures_are_retries_with_the_error_the_pipeline_reads() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.timeout = Duration::from_millis(300);
    let s = sink(&c);
    let one = || vec![create(IocKind::Domain, "x.example", "indicator--x")];
    let f = faults();
    let mut cases = vec![
        rate_limited(&f, every_kind()),
        Case::new(
            "429 without Retry-After",
            |f: &FakeS1| f.fail_next(1, Failure::RateLimit(None)),
            every_kind()[..1].to_vec(),
            vec![Expect::retry(None, |e| {
                matches!(e, SinkError::RateLimited { .. })
            })],
        )
        .then(|f| assert!(f.iocs().is_empty())),
        recovered(every_kind()),
    ];
    cases.extend(transport_failures(&f, one));
    cases.extend([
        Case::new(
            "a failed delete lookup is a retry too, not \"already gone\"",
            |f: &FakeS1| f.fail_next(1, Failure::Status(500)),
            vec![change(
                ChangeOp::Delete,
                IocKind::Domain,
                "x.example",
                "indicator--x",
            )],
            vec![Expect::retry(None, |e| {
                matches!(e, SinkError::Http { status: 500, .. })
            })],
        ),
        Case::new(
            "a refused token",
            |f: &FakeS1| f.set_token("another-token"),
            one(),
            vec![Expect::retry(None, |e| {
                e.is_auth()
                    && matches!(e, SinkError::Auth { status: 401, message, .. }
                        if message.starts_with("SentinelOne rejected the API token")
                            && message.contains("4010010"))
            })],
        ),
        Case::new(
            "a multi-scope user",
            |f: &FakeS1| {
                f.set_token(TOKEN);
                f.fail_next(1, Failure::MultiScope);
            },
            one(),
            vec![Expect::retry(None, |e| {
                matches!(e, SinkError::Permission { status: 403, message, .. }
                    if message.contains("multi-scopes") && message.contains("4030010"))
            })],
        ),
    ]);
    run_cases(&s, &fake, cases).await;
}

#[tokio::test]
async fn check_names_a_refused_token() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    fake.set_token("another-token");
    let check = s.check().await.expect_err("bad token");
    assert!(matches!(check, SinkError::Auth { .. }), "{check}");
}

#[tokio::test]
async fn check_reports_what_it_verified() {
    let fake = start().await;
    fake.restrict_scopes(&[ACCOUNT], &[]);
    let s = sink(&cfg(&fake));
    let ok = s.check().await.expect("check");
    assert!(
        ok.contains("token accepted") && ok.contains("scope account 1001 visible"),
        "{ok}"
    );
    let get = &fake.requests("GET")[0];
    assert_eq!(get.param("limit").as_deref(), Some("1"));
    assert_eq!(get.param("accountIds").as_deref(), Some(ACCOUNT));

    let mut wrong = cfg(&fake);
    wrong.account_id = Some("999".into());
    let err = sink(&wrong).check().await.expect_err("wrong account");
    assert!(
        matches!(&err, SinkError::Permission { message, .. } if message.contains("scope account 999")),
        "{err}"
    );
}

#[tokio::test]
async fn resolve_settles_crash_leftovers() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let sent = create(IocKind::Domain, "sent.example", "indicator--s");
    let uuid = id_of(&s.apply(std::slice::from_ref(&sent)).await[0]);
    let unsent = create(IocKind::Domain, "unsent.example", "indicator--n");
    let mut del_live = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "sent.example",
        "indicator--s",
    );
    del_live.remote_id = Some(uuid.clone());
    let mut del_gone = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "gone.example",
        "indicator--g",
    );
    del_gone.remote_id = Some("0000000000000000000000000000abcd".into());
    let del_lookup = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "sent.example",
        "indicator--s",
    );

    let got = s
        .resolve(&[sent, unsent, del_live, del_gone, del_lookup])
        .await
        .expect("resolve");
    assert_eq!(
        got,
        [
            Resolution::Applied {
                remote_id: Some(uuid.clone())
            },
            Resolution::NotApplied,
            Resolution::NotApplied,
            Resolution::Applied { remote_id: None },
            Resolution::NotApplied,
        ]
    );
}

#[tokio::test]
async fn resolve_finishes_an_interrupted_update() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let old = created(&s, IocKind::Ipv6, "2001:db8::1", "indicator--v6").await;
    let mut upd = change(
        ChangeOp::Update,
        IocKind::Ipv6,
        "2001:db8::1",
        "indicator--v6",
    );
    upd.remote_id = Some(old.clone());
    // Before the POST: nothing but the old entry ⇒ send it again.
    assert_eq!(
        s.resolve(std::slice::from_ref(&upd))
            .await
            .expect("resolve"),
        [Resolution::NotApplied]
    );
    // Crash after the POST (S1 made a second entry) but before the old one was deleted.
    let new = created(&s, IocKind::Ipv6, "2001:db8::1", "indicator--v6").await;
    assert_ne!(new, old);
    assert_eq!(
        s.resolve(&[upd]).await.expect("resolve"),
        [Resolution::Applied {
            remote_id: Some(new.clone())
        }]
    );
    let stored = fake.iocs();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["uuid"], new.as_str());
}

#[tokio::test]
async fn trailing_slash_url_and_prefixed_key() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.url = None;
    c.api_url = Some(format!("{}//", fake.url()));
    c.api_key = Some(Secret::new(format!("apitoken {TOKEN}")));
    let s = sink(&c);
    assert!(matches!(
        s.apply(&[create(IocKind::Domain, "x.example", "indicator--x")])
            .await[0],
        Outcome::Applied { .. }
    ));
    let req = &fake.journal()[0];
    assert_eq!(req.path, IOCS_PATH);
    assert_eq!(
        req.auth.as_deref(),
        Some(format!("ApiToken {TOKEN}").as_str())
    );
}

fn seed(fake: &FakeS1, n: usize) {
    for i in 0..n {
        let ioc = json!({"type": "DNS", "value": format!("d{i}.example"), "method": "EQUALS", "source": "seed"});
        fake.insert(ioc.as_object().expect("object").clone(), ACCOUNT);
    }
}

#[tokio::test]
async fn lists_across_cursor_pages() {
    let fake = start().await;
    seed(&fake, 25);
    fake.set_page_cap(10);
    let client = SentinelOneClient::new(&valid(&cfg(&fake))).expect("client");

    let all = client
        .list_all(&ListQuery::default(), None)
        .await
        .expect("list");
    assert_eq!(all.items.len(), 25);
    assert_eq!(all.total_items, Some(25));
    assert!(!all.truncated && !all.repeated_cursor);
    let values: Vec<&str> = all
        .items
        .iter()
        .map(|i| i.value.as_deref().expect("value"))
        .collect();
    assert_eq!(values[24], "d24.example");
    let cursors: Vec<Option<String>> = fake
        .requests("GET")
        .iter()
        .map(|r| r.param("cursor"))
        .collect();
    assert_eq!(cursors.len(), 3);
    assert_eq!(cursors[0], None);
    assert!(cursors[1].is_some() && cursors[1] != cursors[2]);

    let some = client
        .list_all(&ListQuery::default(), Some(15))
        .await
        .expect("list");
    assert_eq!(some.items.len(), 15);
    assert!(some.truncated);

    fake.clear_journal();
    fake.set_repeat_cursor(true);
    let stuck = client
        .list_all(&ListQuery::default(), None)
        .await
        .expect("list");
    assert!(stuck.repeated_cursor);
    assert_eq!(stuck.items.len(), 20);
    assert_eq!(
        fake.requests("GET").len(),
        2,
        "stops at the repeated cursor"
    );

    let page = client
        .list(&ListQuery {
            value: Some("d3.example".into()),
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn client_deletes_by_filter_and_refuses_unbounded() {
    let fake = start().await;
    seed(&fake, 3);
    let client = SentinelOneClient::new(&valid(&cfg(&fake))).expect("client");
    let n = client
        .delete_where(&iocsync::sinks::sentinelone::DeleteFilter {
            value: Some("d1.example".into()),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(n, 1);
    let err = client
        .delete_where(&Default::default())
        .await
        .expect_err("unbounded");
    assert!(matches!(err, S1Error::Unsafe { .. }));
    assert_eq!(fake.requests("DELETE").len(), 1);
    assert_eq!(fake.iocs().len(), 2);
}

#[tokio::test]
async fn the_token_never_appears_in_errors() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.timeout = Duration::from_millis(300);
    let s = sink(&c);
    let client = SentinelOneClient::new(&valid(&c)).expect("client");
    let batch = mixed_batch();
    let mut texts = vec![
        format!("{s:?}"),
        format!("{client:?}"),
        format!("{c:?}"),
        format!("{:?}", valid(&c)),
    ];
    texts.push(serde_json::to_string(&c).expect("config json"));
    for failure in [
        Some(Failure::RateLimit(Some(1))),
        Some(Failure::Status(502)),
        Some(Failure::Reset),
        Some(Failure::Slow(Duration::from_secs(2))),
        Some(Failure::MultiScope),
        None,
    ] {
        if let Some(f) = failure {
            fake.fail_next(1, f);
        }
        for o in s.apply(&batch).await {
            match o {
                Outcome::Retry { error, .. } => texts.push(format!("{error} {error:?}")),
                Outcome::Rejected { reason } => texts.push(reason),
                Outcome::Applied { .. } => {}
            }
        }
        if let Err(e) = client.probe().await {
            texts.push(format!("{e} {e:?}"));
        }
    }
    fake.set_token("x");
    texts.push(format!("{}", s.check().await.expect_err("401")));
    texts.push(format!("{}", client.probe().await.expect_err("401")));
    assert!(texts.len() > 20);
    for t in &texts {
        assert!(!t.contains(TOKEN), "token leaked in: {t}");
    }
}

#[tokio::test]
async fn bad_config_never_makes_a_valid_section() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.site_id = Some("5".into());
    let err = Valid::new(c).expect_err("account and site");
    assert!(
        err.to_string().contains("sentinelone_intel.site_id"),
        "{err}"
    );
    let mut c = cfg(&fake);
    c.api_key = None;
    let err = Valid::new(c).expect_err("no token");
    assert!(
        err.to_string().contains("sentinelone_intel.api_key"),
        "{err}"
    );
}

/// Self-tests of the fake's own rules, so other suites can trust it.
mod fake_rules {
    use super::*;

    async fn raw(fake: &FakeS1, method: reqwest::Method, auth: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{IOCS_PATH}", fake.url()))
            .header("Authorization", auth)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn validates_items_and_scope() {
        let fake = start().await;
        let auth = format!("APITOKEN {TOKEN}");
        let item =
            |t: &str, v: &str| json!({"type": t, "value": v, "method": "EQUALS", "source": "t"});
        let scope = json!({"accountIds": [ACCOUNT], "tenant": false});

        let (st, _) = raw(
            &fake,
            reqwest::Method::POST,
            &auth,
            json!({"data": [item("DNS", "a.example")]}),
        )
        .await;
        assert_eq!(st, 400, "scope is required");
        let (st, body) = raw(&fake, reqwest::Method::POST, "Bearer x", json!({})).await;
        assert_eq!(
            (st, body["errors"][0]["code"].as_i64()),
            (401, Some(4_010_010))
        );

        for bad in [
            item("DOMAIN", "a.example"),
            item("MD5", "d41d8cd98f00b204e9800998ecf8427e"),
            item("SHA1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            item("IPV4", "300.1.1.1"),
            item("IPV6", "nope"),
            item("URL", "http://a b"),
            json!({"type": "DNS", "value": "a.example", "method": "CONTAINS", "source": "t"}),
        ] {
            let (st, body) = raw(
                &fake,
                reqwest::Method::POST,
                &auth,
                json!({"filter": scope, "data": [item("DNS", "ok.example"), bad]}),
            )
            .await;
            assert_eq!(st, 400, "{bad}");
            assert_eq!(body["errors"][0]["code"], 4_000_010);
        }
        assert!(fake.iocs().is_empty(), "a 400 stores nothing");

        let (st, body) = raw(
            &fake,
            reqwest::Method::POST,
            &auth,
            json!({"filter": scope, "data": [item("SHA256", SHA256)]}),
        )
        .await;
        assert_eq!(st, 200);
        assert!(is_hex32(body["data"][0]["uuid"].as_str().expect("uuid")));
        let (st, body) = raw(
            &fake,
            reqwest::Method::DELETE,
            &auth,
            json!({"filter": {"accountIds": [ACCOUNT], "value": SHA256}}),
        )
        .await;
        assert_eq!((st, body), (200, json!({"data": {"affected": 1}})));
    }

    #[tokio::test]
    async fn injects_every_kth_failure() {
        let fake = start().await;
        fake.fail_every(2, Failure::Status(500));
        let client = SentinelOneClient::new(&valid(&cfg(&fake))).expect("client");
        let statuses: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(
                    client
                        .probe()
                        .await
                        .map(|_| 200)
                        .unwrap_or_else(|e| e.status()),
                );
            }
            v
        };
        assert_eq!(statuses, [200, 500, 200, 500]);
        fake.clear_failures();
        assert!(client.probe().await.is_ok());
    }
}
