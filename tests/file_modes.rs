//! File modes of what iocsync writes (issue 17 item 6): the state directory is owner-only, the
//! database and its WAL files are 0600, and the output files get their configured mode.
#![cfg(unix)]

use iocsync::config::Valid;
use iocsync::ioc::{Ioc, IocKind};
use iocsync::model::IocMeta;
use iocsync::sinks::jsonl::{FileMode, JsonlConfig, JsonlSink};
use iocsync::sinks::zeek::{ZeekConfig, ZeekSink};
use iocsync::sinks::{Change, ChangeOp, Outcome, Sink};
use iocsync::state::{State, DB_FILE};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn create(value: &str) -> Change {
    Change {
        intent_id: 1,
        op: ChangeOp::Create,
        ioc: Ioc {
            kind: IocKind::Md5,
            value: value.to_owned(),
        },
        indicator_id: "indicator--1".to_owned(),
        remote_id: None,
        meta: IocMeta::default(),
    }
}

fn applied(outcomes: &[Outcome]) {
    for outcome in outcomes {
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
}

#[test]
fn the_state_is_private_to_its_owner() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    // A directory someone made wide open is narrowed too.
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let state = State::open(&dir).expect("open");
    state.set_checkpoint("file", "42").expect("write");
    assert_eq!(mode(&dir), 0o700);
    for name in [
        DB_FILE.to_owned(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
    ] {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
    }
}

#[tokio::test]
async fn output_files_get_their_configured_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    for wanted in [FileMode::DEFAULT, FileMode(0o644), FileMode(0o600)] {
        let intel = dir.path().join(format!("intel-{:o}.dat", wanted.0));
        let zeek = ZeekSink::new(
            &Valid::new(ZeekConfig {
                intel_path: Some(intel.clone()),
                file_mode: wanted,
                ..ZeekConfig::default()
            })
            .expect("valid"),
        )
        .expect("zeek");
        applied(&zeek.apply(&[create("aa")]).await);
        assert_eq!(mode(&intel), wanted.0, "{}", intel.display());
        let mut sidecar = intel.into_os_string();
        sidecar.push(".iocsync.json");
        assert_eq!(mode(Path::new(&sidecar)), 0o600, "the Zeek sidecar");

        let path = dir.path().join(format!("iocs-{:o}.jsonl", wanted.0));
        let jsonl = JsonlSink::new(
            &Valid::new(JsonlConfig {
                path: Some(path.clone()),
                file_mode: wanted,
            })
            .expect("valid"),
        );
        applied(&jsonl.apply(&[create("aa")]).await);
        assert_eq!(mode(&path), wanted.0, "{}", path.display());
    }
}
