//! TLS towards the remotes: a certificate signed by a private CA is refused with a clear error
//! until `*_SSL_CA` names that CA (or the system store holds it), and turning verification off is
//! loud — a warning at start and a `check` ⚠ line naming the `*_SSL_VERIFY` key. An unusable CA
//! bundle is a config error (exit 2) naming its key.

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;
#[path = "fakes/opencti.rs"]
mod opencti_fake;
#[path = "fakes/sekoia.rs"]
mod sekoia_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;
#[path = "fakes/tls_front.rs"]
mod tls_front;

use common::*;
use opencti_fake::{indicator, FakeOpenCti};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tls_front::{TestPki, TlsFront};

const OPENCTI_TOKEN: &str = "opencti-tls-token-7c1d";
const CONNECTOR_ID: &str = "6a0f3f55-2c1e-4d7b-8f0a-1b2c3d4e5f60";

/// The three fakes, each behind its own TLS front signed by one test CA.
struct Remotes {
    pki: TestPki,
    opencti: FakeOpenCti,
    _s1: sentinelone_fake::FakeS1,
    _sekoia: sekoia_fake::FakeSekoia,
    opencti_tls: TlsFront,
    s1_tls: TlsFront,
    sekoia_tls: TlsFront,
}

async fn remotes() -> Remotes {
    let pki = TestPki::new();
    let opencti = FakeOpenCti::start(OPENCTI_TOKEN).await;
    opencti.add_stream("stream-1", "TLS stream", true);
    let s1 = sentinelone_fake::start().await;
    let sekoia = sekoia_fake::start().await;
    let opencti_tls = pki.front(&opencti.url).await;
    let s1_tls = pki.front(s1.url()).await;
    let sekoia_tls = pki.front(sekoia.url()).await;
    Remotes {
        pki,
        opencti,
        _s1: s1,
        _sekoia: sekoia,
        opencti_tls,
        s1_tls,
        sekoia_tls,
    }
}

/// `iocsync check` against the TLS fronts; `tweak` adds the TLS settings under test.
async fn check(r: &Remotes, dir: &Path, tweak: impl FnOnce(&mut Command)) -> (Option<i32>, String) {
    let mut cmd = iocsync(dir);
    cmd.arg("check")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("OPENCTI_URL", &r.opencti_tls.url)
        .env("OPENCTI_TOKEN", OPENCTI_TOKEN)
        .env("OPENCTI_REQUEST_TIMEOUT", "5s")
        .env("CONNECTOR_ID", CONNECTOR_ID)
        .env("CONNECTOR_LIVE_STREAM_ID", "stream-1")
        .env("SENTINELONE_INTEL_URL", &r.s1_tls.url)
        .env("SENTINELONE_INTEL_API_KEY", sentinelone_fake::TOKEN)
        .env("SENTINELONE_INTEL_ACCOUNT_ID", "1234567890")
        .env("SENTINELONE_INTEL_TIMEOUT", "5s")
        .env("SEKOIA_INTEL_URL", &r.sekoia_tls.url)
        .env("SEKOIA_INTEL_APIKEY", sekoia_fake::TOKEN)
        .env("SEKOIA_INTEL_IOC_COLLECTION_UUID", sekoia_fake::COLLECTION)
        .env("SEKOIA_INTEL_TIMEOUT", "5s");
    tweak(&mut cmd);
    let out = output(cmd).await;
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs a prepared command off the async threads (the fakes live on them).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn iocsync"))
        .await
        .expect("join")
}

fn line<'a>(all: &'a str, needle: &str) -> &'a str {
    all.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{all}"))
}

const LABELS: [&str; 3] = ["source opencti", "sink sentinelone", "sink sekoia"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_until_ssl_ca_names_it() {
    let r = remotes().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let (code, out) = check(&r, dir.path(), |_| {}).await;
    assert_eq!(code, Some(1), "{out}");
    for label in LABELS {
        let l = line(&out, label);
        assert!(l.starts_with('✗'), "{out}");
        assert!(l.contains("certificate"), "not a clear TLS error: {l}");
    }

    let ca = r.pki.write_ca(dir.path());
    let (code, out) = check(&r, dir.path(), |cmd| {
        cmd.env("OPENCTI_SSL_CA", &ca)
            .env("SENTINELONE_INTEL_SSL_CA", &ca)
            .env("SEKOIA_INTEL_SSL_CA", &ca);
    })
    .await;
    assert_eq!(code, Some(0), "{out}");
    for label in LABELS {
        assert!(line(&out, label).starts_with('✓'), "{out}");
    }
    assert!(!out.contains('⚠'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_store_is_trusted_too() {
    let r = remotes().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = r.pki.write_ca(dir.path());
    // rustls-native-certs reads `SSL_CERT_FILE` the way OpenSSL does: the system store.
    let (code, out) = check(&r, dir.path(), |cmd| {
        cmd.env("SSL_CERT_FILE", &ca);
    })
    .await;
    assert_eq!(code, Some(0), "{out}");
    for label in LABELS {
        assert!(line(&out, label).starts_with('✓'), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_off_connects_but_says_so_for_each_remote() {
    let r = remotes().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = check(&r, dir.path(), |cmd| {
        cmd.env("OPENCTI_SSL_VERIFY", "false")
            .env("SENTINELONE_INTEL_SSL_VERIFY", "false")
            .env("SEKOIA_INTEL_SSL_VERIFY", "false");
    })
    .await;
    assert_eq!(code, Some(0), "{out}");
    for label in LABELS {
        assert!(line(&out, label).starts_with('✓'), "{out}");
    }
    for (remote, key) in [
        ("opencti", "OPENCTI_SSL_VERIFY"),
        ("sentinelone", "SENTINELONE_INTEL_SSL_VERIFY"),
        ("sekoia", "SEKOIA_INTEL_SSL_VERIFY"),
    ] {
        let warned = out
            .lines()
            .filter(|l| l.contains(key) && l.contains("TLS verification is off"))
            .collect::<Vec<_>>();
        assert!(
            warned
                .iter()
                .any(|l| l.starts_with(&format!("⚠ {remote}:"))),
            "no ⚠ line for {remote}:\n{out}"
        );
        assert!(
            warned.iter().any(|l| l.contains("WARN")),
            "no warning logged for {remote}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_ca_bundle_is_a_config_error_naming_the_key() {
    let r = remotes().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("not-a-ca.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let bad_block = dir.path().join("bad-block.pem");
    std::fs::write(
        &bad_block,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for (env, path) in [
        ("OPENCTI_SSL_CA", &garbage),
        ("SENTINELONE_INTEL_SSL_CA", &missing),
        ("SEKOIA_INTEL_SSL_CA", &bad_block),
    ] {
        let (code, out) = check(&r, dir.path(), |cmd| {
            cmd.env(env, path);
        })
        .await;
        assert_eq!(code, Some(2), "{env}: {out}");
        assert!(out.contains(env), "the error does not name {env}:\n{out}");
        assert!(out.contains("CA bundle"), "{env}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opencti_stream_client_uses_the_same_ca() {
    let r = remotes().await;
    for n in 0..5 {
        r.opencti.push("create", indicator(n));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = r.pki.write_ca(dir.path());
    let out_file = dir.path().join("out/iocs.jsonl");
    let mut cmd = iocsync(dir.path());
    cmd.args(["run", "--once"])
        .env("OPENCTI_URL", &r.opencti_tls.url)
        .env("OPENCTI_TOKEN", OPENCTI_TOKEN)
        .env("OPENCTI_SSL_CA", &ca)
        .env("CONNECTOR_ID", CONNECTOR_ID)
        .env("CONNECTOR_LIVE_STREAM_ID", "stream-1")
        .env("CONNECTOR_LIVE_STREAM_RECOVER_ISO_DATE", "false")
        .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
        .env("IOCSYNC_JSONL_PATH", &out_file)
        .env("IOCSYNC_PIPELINE_LINGER", "20ms");
    let out = output_within(tokio::process::Command::from(cmd), Duration::from_secs(120)).await;
    assert_success(&out);
    assert_eq!(read_jsonl(&out_file).len(), 5);
    assert!(!r.opencti.stream_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misp_and_the_s1_cli_honour_their_ca_setting() {
    let r = remotes().await;
    let misp = misp_fake::FakeMisp::start().await;
    let misp_tls = r.pki.front(misp.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = r.pki.write_ca(dir.path());

    // MISP as the source of `check` (OpenCTI unset), S1 as its sink.
    let misp_check = |with_ca: bool| {
        let mut cmd = iocsync(dir.path());
        cmd.arg("check")
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("MISP_URL", &misp_tls.url)
            .env("MISP_KEY", misp_fake::KEY)
            .env("MISP_TIMEOUT", "5s")
            .env("IOCSYNC_JSONL_PATH", dir.path().join("out.jsonl"));
        if with_ca {
            cmd.env("MISP_SSL_CA", &ca);
        }
        cmd
    };
    let out = output(misp_check(false)).await;
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(line(&all, "source misp").contains("certificate"), "{all}");
    let out = output(misp_check(true)).await;
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(line(&all, "source misp").starts_with('✓'), "{all}");

    let s1_list = |with_ca: bool| {
        let mut cmd = iocsync(dir.path());
        cmd.args(["s1", "list", "--format", "json"])
            .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
            .env("SENTINELONE_INTEL_URL", &r.s1_tls.url)
            .env("SENTINELONE_INTEL_API_KEY", sentinelone_fake::TOKEN)
            .env("SENTINELONE_INTEL_ACCOUNT_ID", "1234567890")
            .env("SENTINELONE_INTEL_TIMEOUT", "5s");
        if with_ca {
            cmd.env("SENTINELONE_INTEL_SSL_CA", &ca);
        }
        cmd
    };
    let out = output(s1_list(false)).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output(s1_list(true)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
