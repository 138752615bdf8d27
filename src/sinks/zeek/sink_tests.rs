//! Tests of the Zeek sink: the intel file after creates, deletes, restarts and rewrites.

use super::*;
use crate::ioc::IocKind;
use crate::sinks::jsonl::tests_support::change;
use crate::sinks::ChangeOp;

const DAY: i64 = 86_400;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
}

fn config(dir: &tempfile::TempDir, removal: Removal) -> ZeekConfig {
    ZeekConfig {
        intel_path: Some(dir.path().join("intel.dat")),
        removal,
        ..ZeekConfig::default()
    }
}

fn valid(cfg: ZeekConfig) -> Valid<ZeekConfig> {
    Valid::new(cfg).expect("valid")
}

fn sink(dir: &tempfile::TempDir, removal: Removal) -> ZeekSink {
    ZeekSink::new(&valid(config(dir, removal))).expect("sink")
}

/// The data rows of the intel file (header and comments left out).
fn rows(sink: &ZeekSink) -> Vec<String> {
    std::fs::read_to_string(sink.intel_path())
        .expect("read intel file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn all_applied(outcomes: &[Outcome], n: usize) {
    assert_eq!(outcomes.len(), n);
    for outcome in outcomes {
        assert!(
            matches!(outcome, Outcome::Applied { remote_id: None }),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn writes_header_and_one_row_per_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = sink(&dir, Removal::Tombstone);
    let mut url = change(
        ChangeOp::Create,
        IocKind::Url,
        "https://evil.example:8443/a?b=c",
        "indicator--u",
    );
    url.meta.source_url = Some("https://cti.example/i/u".to_owned());
    let batch = [
        change(ChangeOp::Create, IocKind::Sha256, "aa", "indicator--1"),
        change(ChangeOp::Create, IocKind::Sha1, "bb", "indicator--2"),
        change(ChangeOp::Create, IocKind::Md5, "cc", "indicator--3"),
        url,
        change(
            ChangeOp::Create,
            IocKind::Domain,
            "d.example",
            "indicator--4",
        ),
        change(
            ChangeOp::Create,
            IocKind::Hostname,
            "h.example",
            "indicator--5",
        ),
        change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.1", "indicator--6"),
        change(
            ChangeOp::Create,
            IocKind::Ipv6,
            "2001:db8::1",
            "indicator--7",
        ),
    ];
    all_applied(&sink.apply_at(&batch, t(0)).await, batch.len());
    let text = std::fs::read_to_string(sink.intel_path()).expect("read");
    assert!(text.starts_with(
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.remove\n"
    ));
    // Rows come in (kind, value) order; hostnames are stored as domains.
    assert_eq!(
        rows(&sink),
        [
            "aa\tIntel::FILE_HASH\tiocsync\tname of aa\t-\tF",
            "bb\tIntel::FILE_HASH\tiocsync\tname of bb\t-\tF",
            "cc\tIntel::FILE_HASH\tiocsync\tname of cc\t-\tF",
            "evil.example:8443/a?b=c\tIntel::URL\tiocsync\tname of https://evil.example:8443/a?b=c\thttps://cti.example/i/u\tF",
            "d.example\tIntel::DOMAIN\tiocsync\tname of d.example\t-\tF",
            "h.example\tIntel::DOMAIN\tiocsync\tname of h.example\t-\tF",
            "10.0.0.1\tIntel::ADDR\tiocsync\tname of 10.0.0.1\t-\tF",
            "2001:db8::1\tIntel::ADDR\tiocsync\tname of 2001:db8::1\t-\tF",
        ]
    );
}

#[tokio::test]
async fn rewrite_is_atomic_and_leaves_only_the_two_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = sink(&dir, Removal::Tombstone);
    for i in 0..3 {
        let c = change(
            ChangeOp::Create,
            IocKind::Md5,
            &format!("{i:02}"),
            "indicator--1",
        );
        all_applied(&sink.apply_at(&[c], t(i)).await, 1);
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["intel.dat", "intel.dat.iocsync.json"]);
    assert_eq!(rows(&sink).len(), 3);
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_planted_at_a_temp_name_does_not_redirect_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = elsewhere.path().join("precious");
    std::fs::write(&target, "keep me").expect("seed");
    // The names the writer used before (fixed) and any other guess in the same shape.
    for name in [
        ".intel.dat.iocsync-tmp",
        ".intel.dat.iocsync.json.iocsync-tmp",
        ".intel.dat.0000000000000000.iocsync-tmp",
    ] {
        std::os::unix::fs::symlink(&target, dir.path().join(name)).expect("symlink");
    }
    let sink = sink(&dir, Removal::Tombstone);
    let c = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
    all_applied(&sink.apply_at(&[c], t(0)).await, 1);
    assert_eq!(rows(&sink).len(), 1);
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me");
    for name in ["intel.dat", "intel.dat.iocsync.json"] {
        let meta = std::fs::symlink_metadata(dir.path().join(name)).expect("stat");
        assert!(meta.file_type().is_file(), "{name} is a regular file");
    }
}

#[tokio::test]
async fn tombstone_stays_for_the_retention_then_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = sink(&dir, Removal::Tombstone);
    let create = change(
        ChangeOp::Create,
        IocKind::Domain,
        "c2.example",
        "indicator--1",
    );
    let delete = change(
        ChangeOp::Delete,
        IocKind::Domain,
        "c2.example",
        "indicator--1",
    );
    all_applied(&sink.apply_at(std::slice::from_ref(&create), t(0)).await, 1);
    all_applied(
        &sink.apply_at(std::slice::from_ref(&delete), t(100)).await,
        1,
    );
    assert_eq!(
        rows(&sink),
        ["c2.example\tIntel::DOMAIN\tiocsync\tname of c2.example\t-\tT"]
    );

    // Just before the 7-day retention ends: nothing to do.
    assert_eq!(
        sink.maintain_at(t(100 + 7 * DAY - 1)).await.ok(),
        Some(false)
    );
    assert_eq!(rows(&sink).len(), 1);
    // Once it has passed, upkeep drops the row.
    assert_eq!(sink.maintain_at(t(100 + 7 * DAY)).await.ok(), Some(true));
    assert!(rows(&sink).is_empty());

    // Re-creating a tombstoned value makes it live again.
    all_applied(
        &sink
            .apply_at(&[create.clone(), delete, create], t(200))
            .await,
        3,
    );
    assert_eq!(
        rows(&sink),
        ["c2.example\tIntel::DOMAIN\tiocsync\tname of c2.example\t-\tF"]
    );
}

#[tokio::test]
async fn expire_mode_drops_rows_and_refreshes_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = sink(&dir, Removal::Expire);
    let a = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.1", "indicator--1");
    let b = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.2", "indicator--2");
    all_applied(&sink.apply_at(&[a, b], t(0)).await, 2);
    let delete = change(ChangeOp::Delete, IocKind::Ipv4, "10.0.0.1", "indicator--1");
    all_applied(&sink.apply_at(&[delete], t(10)).await, 1);
    let text = std::fs::read_to_string(sink.intel_path()).expect("read");
    assert!(
        text.starts_with("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n")
    );
    assert_eq!(
        rows(&sink),
        ["10.0.0.2\tIntel::ADDR\tiocsync\tname of 10.0.0.2\t-"]
    );

    // Rewritten once half the 1h interval has passed since the last write, not before.
    assert_eq!(sink.maintenance_interval(), Duration::from_secs(1800));
    assert_eq!(sink.maintain_at(t(10 + 1799)).await.ok(), Some(false));
    let content_before = std::fs::read(sink.intel_path()).expect("read");
    assert_eq!(sink.maintain_at(t(10 + 1800)).await.ok(), Some(true));
    assert_eq!(
        std::fs::read(sink.intel_path()).expect("read"),
        content_before
    );
    assert_eq!(sink.maintain_at(t(10 + 1801)).await.ok(), Some(false));
    assert_eq!(
        sink.maintain_at(t(0)).await.ok(),
        Some(true),
        "clock went back"
    );
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = sink(&dir, Removal::Tombstone);
    let kept = change(ChangeOp::Create, IocKind::Sha256, "aa", "indicator--1");
    let gone = change(ChangeOp::Create, IocKind::Sha256, "bb", "indicator--2");
    let delete = change(ChangeOp::Delete, IocKind::Sha256, "bb", "indicator--2");
    all_applied(
        &first.apply_at(&[kept.clone(), gone.clone()], t(0)).await,
        2,
    );
    all_applied(
        &first.apply_at(std::slice::from_ref(&delete), t(50)).await,
        1,
    );
    drop(first);

    let second = sink(&dir, Removal::Tombstone);
    let never = change(ChangeOp::Create, IocKind::Sha256, "cc", "indicator--3");
    let got = second
        .resolve_at(&[kept, gone, delete, never], t(60))
        .await
        .expect("resolve");
    // `bb`'s create is settled by its later delete, which the file shows: both applied.
    assert_eq!(
        got,
        [
            Resolution::Applied { remote_id: None },
            Resolution::Applied { remote_id: None },
            Resolution::Applied { remote_id: None },
            Resolution::NotApplied,
        ]
    );
    // The tombstone's deletion time came back from disk: it goes 7 days after t(50).
    assert_eq!(
        second.maintain_at(t(50 + 7 * DAY - 1)).await.ok(),
        Some(false)
    );
    assert_eq!(second.maintain_at(t(50 + 7 * DAY)).await.ok(), Some(true));
    assert_eq!(
        rows(&second),
        ["aa\tIntel::FILE_HASH\tiocsync\tname of aa\t-\tF"]
    );
}

#[tokio::test]
async fn a_kill_between_the_two_renames_is_repaired_before_resolve_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = sink(&dir, Removal::Tombstone);
    let create = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
    all_applied(
        &first.apply_at(std::slice::from_ref(&create), t(0)).await,
        1,
    );
    // As if killed after the sidecar rename: the intel file is the previous (empty) one.
    std::fs::write(first.intel_path(), header(true)).expect("roll back intel file");
    drop(first);

    let second = sink(&dir, Removal::Tombstone);
    let got = second.resolve_at(&[create], t(1)).await.expect("resolve");
    assert_eq!(got, [Resolution::Applied { remote_id: None }]);
    assert_eq!(
        rows(&second),
        ["aa\tIntel::FILE_HASH\tiocsync\tname of aa\t-\tF"]
    );
}

#[tokio::test]
async fn url_template_fills_in_when_there_is_no_source_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = ZeekSink::new(&valid(ZeekConfig {
        url_template: Some("https://cti.example/indicators/{internal_id}".to_owned()),
        source_name: "cti\tprod".to_owned(),
        ..config(&dir, Removal::Expire)
    }))
    .expect("sink");
    let mut with_id = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
    with_id.meta.source_internal_id = Some("abc".to_owned());
    let mut without = change(ChangeOp::Create, IocKind::Md5, "bb", "indicator--2");
    without.meta.name = None;
    all_applied(&sink.apply_at(&[with_id, without], t(0)).await, 2);
    assert_eq!(
        rows(&sink),
        [
            "aa\tIntel::FILE_HASH\tcti\\x09prod\tname of aa\thttps://cti.example/indicators/abc",
            "bb\tIntel::FILE_HASH\tcti\\x09prod\tindicator--2\t-",
        ]
    );
}

#[tokio::test]
async fn write_failure_is_a_retry_and_keeps_the_previous_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = ZeekSink::new(&valid(ZeekConfig {
        intel_path: Some(dir.path().join("blocker/intel.dat")),
        ..ZeekConfig::default()
    }))
    .expect("sink");
    // The directory cannot be created once a plain file holds its name.
    std::fs::write(dir.path().join("blocker"), "").expect("file");
    let create = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
    let outcomes = sink.apply_at(std::slice::from_ref(&create), t(0)).await;
    match &outcomes[..] {
        [Outcome::Retry { after: None, error }] => {
            assert!(error.to_string().contains("blocker"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!sink.inner.lock().await.live.reflects(&create));
    assert!(sink.check().await.is_err());
}

#[test]
fn unreadable_state_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("intel.dat.iocsync.json"), "{oops").expect("write");
    let err = ZeekSink::new(&valid(config(&dir, Removal::Tombstone))).expect_err("corrupt state");
    assert!(err.to_string().contains("intel.dat.iocsync.json"), "{err}");
    let err = Valid::new(ZeekConfig::default()).expect_err("no path");
    assert!(err.to_string().contains("zeek.intel_path"), "{err}");
}

#[tokio::test]
async fn check_reports_the_writable_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = sink(&dir, Removal::Tombstone);
    let said = sink.check().await.expect("check");
    assert_eq!(said, format!("writable `{}`", sink.intel_path().display()));
    assert_eq!(sink.name(), "zeek");
    assert_eq!(sink.max_batch(), 10_000);
    assert!(sink.supports_update());
}

#[tokio::test]
async fn maintenance_task_writes_at_start_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(sink(&dir, Removal::Expire));
    let shutdown = CancellationToken::new();
    let task = Arc::clone(&sink).spawn_maintenance(shutdown.clone());
    // The first tick is immediate and a freshly loaded sink is not yet synced.
    for _ in 0..200 {
        if sink.intel_path().exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sink.intel_path().exists());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}
