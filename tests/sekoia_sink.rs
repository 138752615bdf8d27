//! Black-box tests of the Sekoia.io sink against the fake Sekoia (tests/fakes/sekoia.rs): URL and
//! collection id forms, the import wire format and batching, revoking exactly our indicators, 400
//! recovery, retry mapping, auth/permission/collection errors, resolve, check, the quota count, and
//! that the API key never leaks.

#[path = "fakes/sekoia.rs"]
mod sekoia_fake;
#[path = "common/sink.rs"]
mod sink_harness;

use iocsync::config::Valid;
use iocsync::ioc::IocKind;
use iocsync::remote::RemoteFailure;
use iocsync::secret::Secret;
use iocsync::sinks::sekoia::{SekoiaClient, SekoiaConfig, SekoiaSink};
use iocsync::sinks::{Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use sekoia_fake::{collection_id, days_from_now, start, Failure, FakeSekoia, COLLECTION, TOKEN};
use serde_json::{json, Value};
use sink_harness::{
    change, create, created, delete, id_of, is_applied, nothing, rate_limited, recovered,
    run_cases, transport_failures, Case, Expect, Faults,
};
use std::time::Duration;

const LINK: &str = "https://cti.example/dashboard/observations/indicators/{id}";

fn cfg(fake: &FakeSekoia) -> SekoiaConfig {
    SekoiaConfig {
        url: Some(fake.url().to_string()),
        apikey: Some(Secret::new(TOKEN)),
        ioc_collection_uuid: Some(COLLECTION.into()),
        timeout: Duration::from_secs(5),
        link_template: Some(LINK.into()),
        ..Default::default()
    }
}

/// The section validated, as the loader does.
fn valid(cfg: &SekoiaConfig) -> Valid<SekoiaConfig> {
    Valid::new(cfg.clone()).expect("valid sekoia_intel section")
}

fn sink(cfg: &SekoiaConfig) -> SekoiaSink {
    SekoiaSink::new(&valid(cfg), "OpenCTI").expect("sink")
}

fn revoked(fake: &FakeSekoia, id: &str) -> bool {
    fake.item(id).expect("stored")["revoked"] == json!(true)
}

const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn every_kind() -> Vec<Change> {
    let mut v = vec![
        create(IocKind::Sha256, SHA256, "indicator--a"),
        create(
            IocKind::Sha1,
            "0123456789abcdef0123456789abcdef01234567",
            "indicator--b",
        ),
        create(
            IocKind::Md5,
            "0123456789abcdef0123456789abcdef",
            "indicator--c",
        ),
        create(IocKind::Url, "http://evil.example/x?y=1", "indicator--d"),
        create(IocKind::Domain, "evil.example", "indicator--e"),
        create(IocKind::Hostname, "host.evil.example", "indicator--f"),
        create(IocKind::Ipv4, "203.0.113.7", "indicator--g"),
        create(IocKind::Ipv6, "2001:db8::7", "indicator--h"),
    ];
    v[0].meta.valid_from = Some("2025-01-01T00:00:00Z".into());
    v[0].meta.valid_until = Some("2099-01-01T00:00:00Z".into());
    v[0].meta.kill_chain_phases = vec!["mitre-attack:command-and-control".into()];
    v[3].meta.source_url = Some("https://cti.example/own-link".into());
    v
}

#[tokio::test]
async fn every_url_form_reaches_the_collection_once() {
    let fake = start().await;
    let root = fake.url().to_string();
    for (base, prefix) in [
        (root.clone(), "/v2/inthreat"),
        (format!("{root}/"), "/v2/inthreat"),
        (format!("{root}/v2/inthreat"), "/v2/inthreat"),
        (format!("{root}//v2/inthreat/"), "/v2/inthreat"),
        (
            format!("{root}/v2/inthreat/ioc-collections"),
            "/v2/inthreat",
        ),
        (
            format!("{root}/v2/inthreat/ioc-collections/"),
            "/v2/inthreat",
        ),
        (format!("{root}/api"), "/api/v2/inthreat"),
        (format!("{root}/api/v2/inthreat"), "/api/v2/inthreat"),
        (
            format!("{root}/api/v2/inthreat/ioc-collections/"),
            "/api/v2/inthreat",
        ),
    ] {
        let mut c = cfg(&fake);
        c.url = Some(base.clone());
        fake.clear_journal();
        let s = sink(&c);
        s.check().await.unwrap_or_else(|e| panic!("{base}: {e}"));
        let out = s
            .apply(&[create(IocKind::Domain, "forms.example", "indicator--forms")])
            .await;
        assert!(is_applied(&out[0]), "{base}: {out:?}");
        let coll = format!("{prefix}/ioc-collections/{}", collection_id());
        let calls: Vec<(String, String)> = fake
            .journal()
            .into_iter()
            .map(|r| (r.method, r.path))
            .collect();
        // check, the import, the search that learns the new indicator's id.
        let indicators = format!("{coll}/indicators");
        assert_eq!(
            calls,
            [
                ("GET".to_string(), coll.clone()),
                ("POST".to_string(), indicators.clone()),
                ("GET".to_string(), indicators)
            ],
            "{base}"
        );
    }
}

#[tokio::test]
async fn collection_id_with_or_without_prefix() {
    let fake = start().await;
    for id in [
        COLLECTION.to_string(),
        collection_id(),
        format!("  {}  ", COLLECTION.to_uppercase()),
    ] {
        let mut c = cfg(&fake);
        c.ioc_collection_uuid = Some(id.clone());
        let s = sink(&c);
        let ok = s.check().await.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(ok.contains(&collection_id()), "{ok}");
    }
}

/// The wire format of Sekoia's documented JSON import: only `value` and `valid_from` per item,
/// `default_fields` always (one call per distinct set), ids learned by a search per value.
#[tokio::test]
async fn creates_every_type_with_default_fields() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let batch = every_kind();
    let out = s.apply(&batch).await;
    let ids: Vec<String> = out.iter().map(id_of).collect();
    assert!(ids.iter().all(|i| i.starts_with("indicator--")), "{ids:?}");
    assert_eq!(fake.items().len(), 8);
    for (c, id) in batch.iter().zip(&ids) {
        assert_eq!(
            fake.live_ids(&c.ioc.value),
            std::slice::from_ref(id),
            "{}",
            c.ioc.value
        );
    }

    // The first create has its own validity end and kill chain: a call of its own.
    let posts = fake.requests("POST");
    assert_eq!(posts.len(), 2);
    for req in &posts {
        assert_eq!(
            req.path,
            format!(
                "/v2/inthreat/ioc-collections/{}/indicators",
                collection_id()
            )
        );
        assert_eq!(
            req.auth.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        let body = req.body.as_ref().expect("body");
        assert_eq!(
            body["default_fields"]["description"],
            "OpenCTI indicator synced by iocsync [iocsync]"
        );
        for item in body["indicators"].as_array().expect("indicators") {
            let keys: Vec<&String> = item.as_object().expect("item").keys().collect();
            assert!(
                keys.iter().all(|k| *k == "value" || *k == "valid_from"),
                "per-item fields beyond value/valid_from: {item}"
            );
        }
    }
    let first = posts[0].body.as_ref().expect("body");
    assert_eq!(
        first["indicators"],
        json!([{"value": SHA256, "valid_from": "2025-01-01T00:00:00Z"}])
    );
    assert_eq!(
        first["default_fields"]["valid_until"],
        "2099-01-01T00:00:00Z"
    );
    assert_eq!(
        first["default_fields"]["kill_chain_phases"],
        json!([{"kill_chain_name": "mitre-attack", "phase_name": "command-and-control"}])
    );
    let rest = posts[1].body.as_ref().expect("body");
    let values: Vec<&str> = rest["indicators"]
        .as_array()
        .expect("indicators")
        .iter()
        .map(|i| i["value"].as_str().expect("value"))
        .collect();
    let want: Vec<&str> = batch[1..].iter().map(|c| c.ioc.value.as_str()).collect();
    assert_eq!(values, want);
    // Absent validity stays absent: Sekoia applies its own default.
    assert!(rest["default_fields"].get("valid_until").is_none());
    assert!(rest["indicators"][0].get("valid_from").is_none());
    // The stored indicators carry the call's description, hence our marker.
    assert!(fake
        .items()
        .iter()
        .all(|i| i["description"] == "OpenCTI indicator synced by iocsync [iocsync]"));

    // One exact-value search per created value learns the ids.
    let terms: Vec<String> = fake
        .requests("GET")
        .iter()
        .map(|r| r.param("term").expect("term"))
        .collect();
    let mut sorted_terms = terms.clone();
    sorted_terms.sort();
    let mut sorted_want: Vec<String> = batch.iter().map(|c| c.ioc.value.clone()).collect();
    sorted_want.sort();
    assert_eq!(sorted_terms, sorted_want);
    assert!(
        iocsync::metrics::global().counter(
            "iocsync_api_calls_total",
            &[
                ("remote", "sekoia"),
                ("endpoint", "POST /ioc-collections/{id}/indicators"),
                ("status", "2xx")
            ]
        ) >= 1
    );
}

/// Should Sekoia answer with ids after all (the rich fake), they are used and nothing is searched.
#[tokio::test]
async fn ids_in_a_richer_answer_need_no_lookup() {
    let fake = start().await;
    fake.set_rich(true);
    let s = sink(&cfg(&fake));
    let out = s.apply(&every_kind()).await;
    let ids: Vec<String> = out.iter().map(id_of).collect();
    let stored: Vec<String> = fake
        .items()
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, stored);
    assert!(
        fake.requests("GET").is_empty(),
        "no lookups when ids came back"
    );
}

#[tokio::test]
async fn batches_at_most_one_hundred_per_import() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.default_valid_days = Some(30);
    c.link_template = None;
    let s = sink(&c);
    assert_eq!(s.max_batch(), 100);
    let batch: Vec<Change> = (0..250)
        .map(|i| {
            create(
                IocKind::Ipv4,
                &format!("198.51.{}.{}", i / 250, i % 250),
                &format!("indicator--{i}"),
            )
        })
        .collect();
    let out = s.apply(&batch).await;
    assert!(out.iter().all(is_applied));
    let sizes: Vec<usize> = fake
        .requests("POST")
        .iter()
        .map(|p| {
            p.body.as_ref().expect("body")["indicators"]
                .as_array()
                .expect("a")
                .len()
        })
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let first = fake.requests("POST")[0].body.clone().expect("body")["default_fields"].clone();
    assert_eq!(
        first["description"],
        "OpenCTI indicator synced by iocsync [iocsync]"
    );
    // 30 days from now, rounded up to the next midnight UTC.
    let until = first["valid_until"].as_str().expect("valid_until");
    assert!(until.ends_with("T00:00:00Z"), "{until}");
    assert!((30..=31).contains(&days_from_now(until)), "{until}");
    assert!(fake.items().iter().all(|i| i["valid_until"]
        .as_str()
        .is_some_and(|u| u.starts_with(&until[..10]))));

    // Validity ends on the same day share a call; another day is another call.
    fake.clear_journal();
    let mut batch: Vec<Change> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            create(
                IocKind::Domain,
                &format!("{n}.days.example"),
                &format!("indicator--{n}"),
            )
        })
        .collect();
    batch[0].meta.valid_until = Some("2099-05-01T01:00:00Z".into());
    batch[1].meta.valid_until = Some("2099-05-02T01:00:00Z".into());
    batch[2].meta.valid_until = Some("2099-05-01T23:00:00Z".into());
    assert!(s.apply(&batch).await.iter().all(is_applied));
    let calls: Vec<(Value, Vec<Value>)> = fake
        .requests("POST")
        .into_iter()
        .map(|p| {
            let body = p.body.expect("body");
            (
                body["default_fields"]["valid_until"].clone(),
                body["indicators"]
                    .as_array()
                    .expect("a")
                    .iter()
                    .map(|i| i["value"].clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                json!("2099-05-02T00:00:00Z"),
                vec![json!("a.days.example"), json!("c.days.example")]
            ),
            (json!("2099-05-03T00:00:00Z"), vec![json!("b.days.example")]),
        ]
    );

    let mut small = cfg(&fake);
    small.batch_size = 7;
    assert_eq!(sink(&small).max_batch(), 7);
}

#[tokio::test]
async fn revokes_by_stored_id() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let id = created(&s, IocKind::Domain, "gone.example", "indicator--g").await;
    fake.clear_journal();

    let out = s
        .apply(&[delete(
            IocKind::Domain,
            "gone.example",
            "indicator--g",
            Some(&id),
        )])
        .await;
    assert!(
        matches!(out[0], Outcome::Applied { remote_id: None }),
        "{out:?}"
    );
    let journal = fake.journal();
    assert_eq!(journal.len(), 1, "no lookup when the id is known");
    assert_eq!(journal[0].method, "DELETE");
    assert_eq!(
        journal[0].path,
        format!(
            "/v2/inthreat/ioc-collections/{}/indicators/{id}",
            collection_id()
        )
    );
    assert_eq!(
        journal[0].auth.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(revoked(&fake, &id), "soft delete keeps the item, revoked");

    // Revoking again (already revoked) and an unknown id are both done: nothing is live.
    let again = s
        .apply(&[
            delete(IocKind::Domain, "gone.example", "indicator--g", Some(&id)),
            delete(
                IocKind::Domain,
                "gone.example",
                "indicator--g",
                Some("indicator--nope"),
            ),
        ])
        .await;
    assert!(again.iter().all(is_applied), "{again:?}");

    // A revoke Sekoia refuses as such is dead-lettered, and does not stop the next one.
    let next = created(&s, IocKind::Domain, "next.example", "indicator--n").await;
    fake.fail_next(1, Failure::Status(400));
    let out = s
        .apply(&[
            delete(IocKind::Domain, "gone.example", "indicator--g", Some(&id)),
            delete(IocKind::Domain, "next.example", "indicator--n", Some(&next)),
        ])
        .await;
    assert!(
        matches!(&out[0], Outcome::Rejected { reason } if reason.contains("HTTP 400") && reason.contains("Injected failure")),
        "{out:?}"
    );
    assert!(is_applied(&out[1]));
    assert!(revoked(&fake, &next));
}

/// Sekoia as documented: the import answer has no ids and per-item fields are not read. The sink
/// must still learn what it created and revoke exactly that on delete.
#[tokio::test]
async fn documented_api_create_then_delete_revokes_exactly_ours() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let foreign = fake.insert("both.example", "from the seed connector", false);
    let out = s
        .apply(&[
            create(IocKind::Domain, "both.example", "indicator--b"),
            create(IocKind::Ipv4, "203.0.113.20", "indicator--c"),
            create(IocKind::Url, "http://moved.example/x", "indicator--m"),
        ])
        .await;
    // The ids are learned by a search after the import, never another source's.
    let ids: Vec<String> = out.iter().map(id_of).collect();
    assert_eq!(fake.live_ids("both.example").len(), 2);
    assert!(fake.live_ids("both.example").contains(&ids[0]));
    assert_ne!(ids[0], foreign);
    assert_eq!(fake.live_ids("203.0.113.20"), [ids[1].clone()]);

    // Deletes as the pipeline sends them: with the stored id; without one (an id that was never
    // learned), also when the value's holder changed since the create.
    let out = s
        .apply(&[
            delete(
                IocKind::Domain,
                "both.example",
                "indicator--b",
                Some(&ids[0]),
            ),
            delete(IocKind::Ipv4, "203.0.113.20", "indicator--c", None),
            delete(
                IocKind::Url,
                "http://moved.example/x",
                "indicator--other",
                None,
            ),
        ])
        .await;
    assert!(out.iter().all(is_applied), "{out:?}");
    for id in &ids {
        assert!(revoked(&fake, id), "{id} must be revoked");
    }
    assert!(
        !revoked(&fake, &foreign),
        "another source's indicator stays live"
    );
}

#[tokio::test]
async fn revoke_by_lookup_touches_only_our_exact_live_item() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    // Another source's indicator of the same value, a longer value the text search also matches,
    // a revoked one of ours, one of ours for another source indicator, then ours.
    let foreign = fake.insert("shared.example", "from the seed connector", false);
    let longer = fake.insert("x.shared.example", "[iocsync:indicator--s]", false);
    let old = fake.insert("shared.example", "old [iocsync:indicator--s]", true);
    let sibling = fake.insert("shared.example", "[iocsync:indicator--s2]", false);
    let ours = created(&s, IocKind::Domain, "shared.example", "indicator--s").await;
    fake.clear_journal();

    let out = s
        .apply(&[delete(
            IocKind::Domain,
            "shared.example",
            "indicator--s",
            None,
        )])
        .await;
    assert!(is_applied(&out[0]), "{out:?}");
    let search = &fake.requests("GET")[0];
    assert_eq!(search.param("term").as_deref(), Some("shared.example"));
    let deletes: Vec<String> = fake
        .requests("DELETE")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].ends_with(&ours));
    assert!(revoked(&fake, &ours));
    for other in [&foreign, &longer, &sibling] {
        assert!(!revoked(&fake, other), "{other} must stay live");
    }
    assert!(revoked(&fake, &old));

    // Nothing of ours left: done, without touching anything.
    fake.clear_journal();
    let out = s
        .apply(&[delete(
            IocKind::Domain,
            "shared.example",
            "indicator--s",
            None,
        )])
        .await;
    assert!(is_applied(&out[0]));
    assert!(fake.requests("DELETE").is_empty());
    assert_eq!(fake.live_ids("shared.example"), [foreign, sibling]);
}

#[tokio::test]
async fn lookup_pages_through_many_matches() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    for i in 0..230 {
        fake.insert(
            "paged.example",
            &format!("[iocsync:indicator--other{i}]"),
            i % 2 == 0,
        );
    }
    let ours = created(&s, IocKind::Domain, "paged.example", "indicator--p").await;
    fake.clear_journal();
    let out = s
        .apply(&[delete(
            IocKind::Domain,
            "paged.example",
            "indicator--p",
            None,
        )])
        .await;
    assert!(is_applied(&out[0]));
    let offsets: Vec<String> = fake
        .requests("GET")
        .iter()
        .map(|r| r.param("offset").expect("offset"))
        .collect();
    // Pages come back shorter than asked (25 of 100): the next offset follows what was read.
    let want: Vec<String> = (0..10).map(|p| (p * 25).to_string()).collect();
    assert_eq!(offsets, want);
    assert!(revoked(&fake, &ours));
}

#[tokio::test]
async fn create_then_delete_in_one_batch_ends_revoked() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let out = s
        .apply(&[
            create(IocKind::Url, "http://flip.example/a", "indicator--f"),
            delete(IocKind::Url, "http://flip.example/a", "indicator--f", None),
        ])
        .await;
    let id = id_of(&out[0]);
    assert!(is_applied(&out[1]));
    assert!(revoked(&fake, &id));
    assert_eq!(
        fake.requests("GET").len(),
        1,
        "one search learns the id after the import; the delete reuses it"
    );
    assert_eq!(fake.requests("DELETE").len(), 1);
}

#[tokio::test]
async fn a_merged_foreign_indicator_is_never_claimed() {
    let fake = start().await;
    fake.set_merge_existing(true);
    let s = sink(&cfg(&fake));
    let foreign = fake.insert("merged.example", "someone else's", false);
    let out = s
        .apply(&[create(IocKind::Domain, "merged.example", "indicator--m")])
        .await;
    assert!(
        matches!(out[0], Outcome::Applied { remote_id: None }),
        "{out:?}"
    );
    let out = s
        .apply(&[delete(
            IocKind::Domain,
            "merged.example",
            "indicator--m",
            None,
        )])
        .await;
    assert!(is_applied(&out[0]));
    assert!(!revoked(&fake, &foreign));
}

fn mixed_batch() -> Vec<Change> {
    vec![
        create(IocKind::Domain, "good1.example", "indicator--1"),
        create(IocKind::Domain, "bad..example", "indicator--2"),
        create(IocKind::Ipv4, "203.0.113.9", "indicator--3"),
        create(IocKind::Url, "http://bad url/", "indicator--4"),
        create(IocKind::Domain, "good2.example", "indicator--5"),
    ]
}

fn check_recovered(out: &[Outcome], fake: &FakeSekoia, reason_has_value: bool) {
    assert_eq!(out.len(), 5);
    for i in [0, 2, 4] {
        assert!(is_applied(&out[i]), "{i}: {:?}", out[i]);
    }
    for (i, value) in [(1, "bad..example"), (3, "http://bad url/")] {
        match &out[i] {
            Outcome::Rejected { reason } => {
                assert!(
                    reason.starts_with("Sekoia.io rejected the IOC (HTTP 400)"),
                    "{reason}"
                );
                assert!(reason.contains("INVALID_INDICATORS"), "{reason}");
                if reason_has_value {
                    assert!(reason.contains(value), "{reason}");
                }
            }
            other => panic!("{i}: expected Rejected, got {other:?}"),
        }
    }
    let stored: Vec<String> = fake
        .items()
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(stored, ["good1.example", "203.0.113.9", "good2.example"]);
}

#[tokio::test]
async fn named_bad_items_are_rejected_and_the_rest_resent() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    let out = s.apply(&mixed_batch()).await;
    check_recovered(&out, &fake, true);
    assert_eq!(
        fake.requests("POST").len(),
        2,
        "one 400, one retry without the named items"
    );
}

#[tokio::test]
async fn unnamed_bad_items_are_found_by_bisection() {
    let fake = start().await;
    fake.set_name_offenders(false);
    let s = sink(&cfg(&fake));
    let out = s.apply(&mixed_batch()).await;
    check_recovered(&out, &fake, false);
    let posts = fake.requests("POST").len();
    assert!(posts > 2 && posts <= 10, "{posts} imports");
}

#[tokio::test]
async fn an_overlong_source_name_is_cut_not_rejected() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.source_name = Some("x".repeat(900));
    let s = sink(&c);
    let id = created(&s, IocKind::Domain, "long.example", "indicator--l").await;
    let desc = fake.item(&id).expect("item")["description"]
        .as_str()
        .expect("description")
        .to_string();
    assert_eq!(desc.chars().count(), 500);
    assert!(desc.ends_with(" [iocsync]"));
}

/// Two iocsync processes feeding one collection, each with its own `instance`: each learns and
/// revokes only the indicator it created, though both hold the same value.
#[tokio::test]
async fn instances_sharing_a_collection_never_revoke_each_other() {
    let fake = start().await;
    let sinks: Vec<SekoiaSink> = ["opencti-prod", "misp-prod"]
        .iter()
        .map(|i| {
            let mut c = cfg(&fake);
            c.instance = Some((*i).into());
            sink(&c)
        })
        .collect();
    assert_eq!(sinks[0].marker(), "[iocsync:opencti-prod]");
    let mut ids = Vec::new();
    for s in &sinks {
        ids.push(created(s, IocKind::Domain, "twice.example", "indicator--t").await);
    }
    assert_ne!(ids[0], ids[1]);
    let desc = fake.item(&ids[1]).expect("item")["description"].clone();
    assert_eq!(
        desc,
        "OpenCTI indicator synced by iocsync [iocsync:misp-prod]"
    );
    // The first revokes by search (no stored id): only its own goes.
    let out = sinks[0]
        .apply(&[delete(
            IocKind::Domain,
            "twice.example",
            "indicator--t",
            None,
        )])
        .await;
    assert!(is_applied(&out[0]));
    assert!(revoked(&fake, &ids[0]));
    assert!(!revoked(&fake, &ids[1]));
    // A crash leftover of the second: its create is found, its delete is not done yet.
    let got = sinks[1]
        .resolve(&[
            create(IocKind::Domain, "twice.example", "indicator--t"),
            delete(IocKind::Domain, "twice.example", "indicator--t", None),
        ])
        .await
        .expect("resolve");
    assert_eq!(
        got,
        [
            Resolution::Applied {
                remote_id: Some(ids[1].clone())
            },
            Resolution::NotApplied
        ]
    );
}

/// The failures the fake Sekoia injects, for the rows both HTTP sinks share.
fn faults() -> Faults<FakeSekoia> {
    Faults {
        sink: "sekoia",
        rate_limit: |f, after| f.fail_next(1, Failure::RateLimit(after)),
        status: |f, status| f.fail_next(1, Failure::Status(status)),
        reset: |f| f.fail_next(1, Failure::Reset),
        slow: |f| f.fail_next(1, Failure::Slow(Duration::from_secs(2))),
        status_text: "Injected failure 503",
        reset_text: "failed",
        holds_nothing: |f| f.items().is_empty(),
    }
}

/// Rate limits, server errors, resets, timeouts, a failed lookup, a refused key and refused writes:
/// each a retry with the error the pipeline reads, nothing created meanwhile, and the batch through
/// afterwards.
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
            "429 without Retry-After, on a revoke",
            |f: &FakeSekoia| f.fail_next(1, Failure::RateLimit(None)),
            vec![delete(
                IocKind::Domain,
                "x.example",
                "indicator--x",
                Some("indicator--1"),
            )],
            vec![Expect::retry(None, |e| {
                matches!(e, SinkError::RateLimited { sink: "sekoia", .. })
            })],
        ),
        recovered(every_kind()),
    ];
    cases.extend(transport_failures(&f, one));
    cases.extend([
        // Not "nothing to revoke"; the second change is never attempted, so re-sending it cannot
        // duplicate anything.
        Case::new(
            "a failed lookup is a retry and stops the rest of the run",
            |f: &FakeSekoia| {
                f.fail_next(1, Failure::Status(500));
                f.clear_journal();
            },
            vec![
                delete(IocKind::Domain, "x.example", "indicator--x", None),
                delete(IocKind::Domain, "y.example", "indicator--y", None),
            ],
            vec![
                Expect::retry(None, |e| matches!(e, SinkError::Http { status: 500, .. })),
                Expect::retry(None, |e| matches!(e, SinkError::NotSent { .. })),
            ],
        )
        .then(|f| assert_eq!(f.journal().len(), 1)),
        Case::new(
            "a refused key",
            |f: &FakeSekoia| f.set_token("another-key"),
            one(),
            vec![Expect::retry(None, |e| {
                e.is_auth()
                    && matches!(e, SinkError::Auth { status: 401, message, .. }
                        if message.contains("sekoia_intel.apikey")
                            && message.contains("invalid or expired"))
            })],
        )
        .then(|f| f.set_token(TOKEN)),
        Case::new(
            "a key without write permission, on creates and revokes",
            |f: &FakeSekoia| f.deny_writes(true),
            vec![
                create(IocKind::Domain, "x.example", "indicator--x"),
                delete(IocKind::Domain, "y.example", "i--y", Some("indicator--1")),
            ],
            vec![Expect::retry(None, |e| {
                matches!(e, SinkError::Permission { status: 403, message, .. }
                    if message.contains("manage IOC collections"))
            })],
        )
        .then(|f| f.deny_writes(false)),
    ]);
    run_cases(&s, &fake, cases).await;
}

#[tokio::test]
async fn an_unknown_collection_is_a_config_error_naming_it() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.ioc_collection_uuid = Some("00000000-0000-4000-8000-000000000000".into());
    let other = sink(&c);
    let cases = vec![Case::new(
        "create and revoke in a collection Sekoia does not know",
        nothing,
        vec![
            create(IocKind::Domain, "x.example", "indicator--x"),
            delete(IocKind::Domain, "y.example", "i--y", Some("indicator--1")),
        ],
        vec![Expect::retry(None, |e| {
            !e.is_auth()
                && matches!(e, SinkError::Config { key: "sekoia_intel.ioc_collection_uuid", message, .. }
                    if message.contains("ioc-collection--00000000-0000-4000-8000-000000000000")
                        && message.contains("IOC Collection not found"))
        })],
    )];
    run_cases(&other, &fake, cases).await;
}

#[tokio::test]
async fn check_reports_what_it_verified() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    s.set_live_count(1234);
    let ok = s.check().await.expect("check");
    assert!(
        ok.contains("iocsync tests") && ok.contains("1234 live IOCs"),
        "{ok}"
    );
    assert!(!ok.contains(TOKEN));
    let get = &fake.requests("GET")[0];
    assert_eq!(
        get.path,
        format!("/v2/inthreat/ioc-collections/{}", collection_id())
    );

    fake.set_token("rotated");
    let err = s.check().await.expect_err("bad key");
    assert!(matches!(err, SinkError::Auth { .. }), "{err}");
    fake.set_token(TOKEN);

    let mut c = cfg(&fake);
    c.ioc_collection_uuid = Some("ioc-collection--00000000-0000-4000-8000-000000000000".into());
    let err = sink(&c).check().await.expect_err("missing collection");
    assert!(
        matches!(
            &err,
            SinkError::Config {
                key: "sekoia_intel.ioc_collection_uuid",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not found"), "{err}");

    fake.fail_next(1, Failure::Status(403));
    assert!(matches!(s.check().await, Err(SinkError::Permission { .. })));
}

#[tokio::test]
async fn resolve_settles_crash_leftovers() {
    let fake = start().await;
    let s = sink(&cfg(&fake));
    // Created before the crash (ours), a same-value foreign one, and never created.
    let done = created(&s, IocKind::Domain, "done.example", "indicator--d").await;
    fake.insert("lost.example", "someone else's", false);
    let revoked_id = created(&s, IocKind::Domain, "rev.example", "indicator--r").await;
    s.apply(&[delete(
        IocKind::Domain,
        "rev.example",
        "indicator--r",
        Some(&revoked_id),
    )])
    .await;

    let pending = vec![
        create(IocKind::Domain, "done.example", "indicator--d"),
        create(IocKind::Domain, "lost.example", "indicator--l"),
        delete(IocKind::Domain, "done.example", "indicator--d", Some(&done)),
        delete(IocKind::Domain, "done.example", "indicator--d", None),
        delete(
            IocKind::Domain,
            "rev.example",
            "indicator--r",
            Some(&revoked_id),
        ),
        delete(IocKind::Domain, "lost.example", "indicator--l", None),
    ];
    let got = s.resolve(&pending).await.expect("resolve");
    assert_eq!(
        got,
        [
            Resolution::Applied {
                remote_id: Some(done.clone())
            },
            Resolution::NotApplied,
            Resolution::NotApplied,
            Resolution::NotApplied,
            Resolution::Applied { remote_id: None },
            Resolution::Applied { remote_id: None },
        ]
    );
    assert_eq!(fake.requests("DELETE").len(), 1, "resolve changes nothing");

    // A value revoked then created again: the pending delete of the first generation (stored id) is
    // done, though a newer indicator of ours holds the value; the newer one is not touched.
    let again = created(&s, IocKind::Domain, "rev.example", "indicator--r2").await;
    let got = s
        .resolve(&[
            delete(
                IocKind::Domain,
                "rev.example",
                "indicator--r",
                Some(&revoked_id),
            ),
            create(IocKind::Domain, "rev.example", "indicator--r2"),
        ])
        .await
        .expect("resolve");
    assert_eq!(
        got,
        [
            Resolution::Applied { remote_id: None },
            Resolution::Applied {
                remote_id: Some(again.clone())
            }
        ]
    );
    assert!(!revoked(&fake, &again));

    // A lookup that fails transiently leaves that change undecided rather than failing the rest.
    fake.fail_next(1, Failure::Status(502));
    assert_eq!(
        s.resolve(&pending[..2]).await.expect("resolve"),
        [Resolution::Unknown, Resolution::NotApplied]
    );
}

#[tokio::test]
async fn live_count_follows_outcomes_and_warns_near_the_quota() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.quota = 10;
    let s = sink(&c);
    s.set_live_count(7);
    assert!(!s.near_quota());
    let out = s
        .apply(&[
            create(IocKind::Domain, "q1.example", "indicator--q1"),
            create(IocKind::Domain, "bad..example", "indicator--q2"),
            create(IocKind::Domain, "q3.example", "indicator--q3"),
        ])
        .await;
    assert!(matches!(out[1], Outcome::Rejected { .. }));
    assert_eq!(
        s.live_count(),
        9,
        "two created, the rejected one not counted"
    );
    assert!(s.near_quota(), "9 of 10 is 90 %");

    let id = id_of(&out[0]);
    fake.fail_next(1, Failure::Status(500));
    s.apply(&[delete(
        IocKind::Domain,
        "q1.example",
        "indicator--q1",
        Some(&id),
    )])
    .await;
    assert_eq!(s.live_count(), 9, "a failed revoke changes nothing");
    s.apply(&[delete(
        IocKind::Domain,
        "q1.example",
        "indicator--q1",
        Some(&id),
    )])
    .await;
    assert_eq!(s.live_count(), 8);
    assert!(!s.near_quota());
}

/// Collects everything logged on this thread (the test runtime is single-threaded).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_logs() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let fake = start().await;
    let mut c = cfg(&fake);
    c.timeout = Duration::from_millis(300);
    let s = sink(&c);
    let client = SekoiaClient::new(&valid(&c)).expect("client");
    let mut texts = vec![
        format!("{s:?}"),
        format!("{client:?}"),
        format!("{c:?}"),
        format!("{:?}", valid(&c)),
    ];
    texts.push(serde_json::to_string(&c).expect("config json"));
    let mut batch = mixed_batch();
    batch.push(delete(
        IocKind::Domain,
        "good1.example",
        "indicator--1",
        None,
    ));
    for failure in [
        Some(Failure::RateLimit(Some(1))),
        Some(Failure::Status(502)),
        Some(Failure::Status(403)),
        Some(Failure::Reset),
        Some(Failure::Slow(Duration::from_secs(2))),
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
    }
    fake.set_token("x");
    texts.push(format!("{}", s.check().await.expect_err("401")));
    texts.push(format!(
        "{:?}",
        s.resolve(&batch[..1]).await.expect_err("401")
    ));
    let mut bad = c.clone();
    bad.ioc_collection_uuid = Some("nope".into());
    texts.push(Valid::new(bad).expect_err("config").to_string());
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logged.contains("sekoia rejected an IOC"),
        "logs were captured"
    );
    texts.push(logged);
    assert!(texts.len() > 20);
    for t in &texts {
        assert!(!t.contains(TOKEN), "key leaked in: {t}");
    }
}

#[tokio::test]
async fn bad_config_never_validates_and_updates_are_no_ops() {
    let fake = start().await;
    let mut c = cfg(&fake);
    c.batch_size = 500;
    let err = Valid::new(c).expect_err("batch over 100");
    assert!(err.to_string().contains("sekoia_intel.batch_size"), "{err}");
    let mut c = cfg(&fake);
    c.apikey = None;
    let err = Valid::new(c).expect_err("no key");
    assert!(err.to_string().contains("sekoia_intel.apikey"), "{err}");

    let s = sink(&cfg(&fake));
    assert!(!s.supports_update());
    let mut u = change(
        ChangeOp::Update,
        IocKind::Domain,
        "u.example",
        "indicator--u",
    );
    u.remote_id = Some("indicator--kept".into());
    let out = s.apply(&[u]).await;
    assert_eq!(id_of(&out[0]), "indicator--kept");
    assert!(fake.journal().is_empty());
}

/// Self-tests of the fake's own rules, so other suites can trust it.
mod fake_rules {
    use super::*;

    async fn raw(
        fake: &FakeSekoia,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", fake.url()))
            .header("Authorization", auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn enforces_auth_limits_and_validation() {
        let fake = start().await;
        let auth = format!("Bearer {TOKEN}");
        let coll = format!("/api/v2/inthreat/ioc-collections/{}", collection_id());
        let imports = format!("{coll}/indicators");

        let (st, body) = raw(&fake, reqwest::Method::GET, &coll, "Bearer nope", None).await;
        assert_eq!(st, 401);
        assert!(
            body["message"].is_string() && body["code"].is_string(),
            "{body}"
        );
        let (st, body) = raw(
            &fake,
            reqwest::Method::GET,
            "/v2/inthreat/ioc-collections/ioc-collection--x",
            &auth,
            None,
        )
        .await;
        assert_eq!(
            (st, body["message"].as_str()),
            (404, Some("IOC Collection not found"))
        );
        let (st, _) = raw(
            &fake,
            reqwest::Method::GET,
            &format!("{coll}/"),
            &auth,
            None,
        )
        .await;
        assert_eq!(st, 404, "a trailing slash is another path");

        let defaults = json!({"description": "fake test [iocsync]"});
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"value": format!("10.0.0.{i}")}))
            .collect();
        let (st, _) = raw(
            &fake,
            reqwest::Method::POST,
            &imports,
            &auth,
            Some(json!({"indicators": many, "default_fields": defaults})),
        )
        .await;
        assert_eq!(st, 400, "more than 100 per import");
        let (st, body) = raw(
            &fake,
            reqwest::Method::POST,
            &imports,
            &auth,
            Some(json!({"indicators": [{"value": "ok.example"}]})),
        )
        .await;
        assert_eq!(st, 400, "default_fields is required: {body}");

        // Per item only the value and valid_from count: problems there name the value.
        for bad in [
            json!({"value": "not a value"}),
            json!({"value": "a.example", "valid_from": "yesterday"}),
            json!({"value": "a.example", "valid_from": "2100-01-01T00:00:00Z"}),
        ] {
            let (st, body) = raw(
                &fake,
                reqwest::Method::POST,
                &imports,
                &auth,
                Some(json!({
                    "indicators": [{"value": "ok.example"}, bad],
                    "default_fields": {"description": "d", "valid_until": "2099-01-01T00:00:00Z"}
                })),
            )
            .await;
            assert_eq!(st, 400, "{bad}");
            assert!(
                body["message"]
                    .as_str()
                    .expect("message")
                    .contains("'a.example'")
                    || body["message"]
                        .as_str()
                        .expect("message")
                        .contains("'not a value'"),
                "{body}"
            );
        }
        // Problems in default_fields fail the call without naming an item.
        for bad in [
            json!({"description": "d".repeat(501)}),
            json!({"valid_until": "tomorrow"}),
            json!({"kill_chain_phases": ["x"]}),
        ] {
            let (st, body) = raw(
                &fake,
                reqwest::Method::POST,
                &imports,
                &auth,
                Some(json!({"indicators": [{"value": "ok.example"}], "default_fields": bad})),
            )
            .await;
            assert_eq!(st, 400, "{bad}");
            assert!(
                !body["message"].as_str().expect("message").contains('\''),
                "{body}"
            );
        }
        assert!(fake.items().is_empty(), "a 400 stores nothing");

        let (st, body) = raw(
            &fake,
            reqwest::Method::POST,
            &format!("{imports}/text"),
            &auth,
            Some(json!({"indicators": "1.2.3.4", "format": "one_per_line"})),
        )
        .await;
        assert_eq!((st, body["task_id"].is_string()), (202, true));
        assert!(
            fake.items().is_empty(),
            "the text import creates nothing synchronously"
        );

        // The documented answer carries no id, and per-item fields beyond value/valid_from are
        // ignored (an over-long per-item description is no error: it is not read).
        let (st, body) = raw(
            &fake,
            reqwest::Method::POST,
            &imports,
            &auth,
            Some(json!({
                "indicators": [{"value": SHA256, "description": "d".repeat(501)}],
                "default_fields": defaults
            })),
        )
        .await;
        assert_eq!((st, body["total"].as_u64()), (200, Some(1)));
        assert_eq!(
            body["items"][0],
            json!({"value": SHA256, "result": "created"})
        );
        let stored = fake.items()[0].clone();
        assert_eq!(stored["description"], "fake test [iocsync]");
        assert_eq!(
            stored["pattern"],
            format!("[file:hashes.'SHA-256' = '{SHA256}']")
        );
        let id = stored["id"].as_str().expect("id").to_string();
        assert!(id.starts_with("indicator--") && id.len() == "indicator--".len() + 36);

        // Rich mode: per-item fields win and the answer carries the stored indicator.
        fake.set_rich(true);
        let (st, body) = raw(
            &fake,
            reqwest::Method::POST,
            &imports,
            &auth,
            Some(json!({"indicators": [{"value": "rich.example", "description": "own"}]})),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert!(body["items"][0]["id"].is_string(), "{body}");
        assert_eq!(body["items"][0]["description"], "own");
        fake.set_rich(false);

        let (st, _) = raw(
            &fake,
            reqwest::Method::DELETE,
            &format!("{imports}/{id}"),
            &auth,
            None,
        )
        .await;
        assert_eq!(st, 204);
        let (st, body) = raw(
            &fake,
            reqwest::Method::GET,
            &format!("{imports}?term=0123456789ABCDEF"),
            &auth,
            None,
        )
        .await;
        assert_eq!((st, body["total"].as_u64()), (200, Some(1)));
        assert_eq!(
            body["items"][0]["revoked"], true,
            "search returns revoked items"
        );
        let (st, _) = raw(
            &fake,
            reqwest::Method::DELETE,
            &format!("{imports}/indicator--unknown"),
            &auth,
            None,
        )
        .await;
        assert_eq!(st, 404);
    }

    #[tokio::test]
    async fn search_pages_are_shorter_than_asked() {
        let fake = start().await;
        for i in 0..60 {
            fake.insert("page.example", &format!("n{i}"), false);
        }
        let auth = format!("Bearer {TOKEN}");
        let url = format!(
            "/v2/inthreat/ioc-collections/{}/indicators?term=page.example&limit=100&offset=50",
            collection_id()
        );
        let (st, body) = raw(&fake, reqwest::Method::GET, &url, &auth, None).await;
        assert_eq!((st, body["total"].as_u64()), (200, Some(60)));
        assert_eq!(body["items"].as_array().expect("items").len(), 10);
        let first = url.replace("offset=50", "offset=0");
        let (_, body) = raw(&fake, reqwest::Method::GET, &first, &auth, None).await;
        assert_eq!(
            body["items"].as_array().expect("items").len(),
            sekoia_fake::DEFAULT_PAGE_CAP,
            "a short page while more follow"
        );
    }

    #[tokio::test]
    async fn injects_every_kth_failure() {
        let fake = start().await;
        fake.fail_every(2, Failure::Status(500));
        let client = SekoiaClient::new(&valid(&cfg(&fake))).expect("client");
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(
                client
                    .get_collection()
                    .await
                    .map(|_| 200)
                    .unwrap_or_else(|e| e.status()),
            );
        }
        assert_eq!(statuses, [200, 500, 200, 500]);
        fake.clear_failures();
        assert!(client.get_collection().await.is_ok());
    }
}
