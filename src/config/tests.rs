//! Tests of loading, env mapping, secret files and validation.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn maps_vendor_and_own_env_names() {
    assert_eq!(
        env_key("SENTINELONE_INTEL_API_KEY").as_deref(),
        Some("sentinelone_intel.api_key")
    );
    assert_eq!(
        env_key("SENTINELONE_INTEL_API_URL").as_deref(),
        Some("sentinelone_intel.api_url")
    );
    assert_eq!(
        env_key("CONNECTOR_LIVE_STREAM_ID").as_deref(),
        Some("connector.live_stream_id")
    );
    assert_eq!(
        env_key("IOCSYNC_PIPELINE_LINGER").as_deref(),
        Some("pipeline.linger")
    );
    assert_eq!(
        env_key("IOCSYNC_ZEEK_INTEL_PATH").as_deref(),
        Some("zeek.intel_path")
    );
    assert_eq!(env_key("IOCSYNC_SINKS").as_deref(), Some("sinks"));
    assert_eq!(env_key("IOCSYNC_BOGUS"), None);
    assert_eq!(env_key("PATH"), None);
    assert_eq!(
        env_name("pipeline.linger").as_deref(),
        Some("IOCSYNC_PIPELINE_LINGER")
    );
    assert_eq!(
        env_name("sentinelone_intel.batch_size").as_deref(),
        Some("SENTINELONE_INTEL_BATCH_SIZE")
    );
}

#[test]
fn env_wins_and_strings_stay_strings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        "pipeline:\n  batch_events: 10\n  linger: 3s\njsonl:\n  path: /tmp/a.jsonl\n",
    )
    .expect("write");
    let cfg = Config::load(
        Some(&file),
        env(&[
            ("IOCSYNC_PIPELINE_BATCH_EVENTS", "20"),
            ("SENTINELONE_INTEL_ACCOUNT_ID", "123456"),
            ("CONNECTOR_LIVE_STREAM_LISTEN_DELETE", "false"),
            ("CONNECTOR_TYPE", "STREAM"),
            ("OPENCTI_SOMETHING_NEW", "x"),
        ]),
    )
    .expect("load");
    assert_eq!(cfg.pipeline.batch_events, 20);
    assert_eq!(cfg.pipeline.linger, Duration::from_secs(3));
    assert_eq!(cfg.sentinelone_intel.account_id.as_deref(), Some("123456"));
    assert!(!cfg.connector.live_stream_listen_delete);
    assert_eq!(cfg.jsonl.path.as_deref(), Some(Path::new("/tmp/a.jsonl")));
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let err = Config::load(None, env(&[("IOCSYNC_PIPELINE_LINGR", "1s")])).expect_err("unknown");
    assert!(err.to_string().contains("IOCSYNC_PIPELINE_LINGR"), "{err}");

    let err =
        Config::load(None, env(&[("IOCSYNC_PIPELINE_BATCH_EVENTS", "many")])).expect_err("bad");
    assert!(
        err.to_string().contains("IOCSYNC_PIPELINE_BATCH_EVENTS"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(&file, "pipeline:\n  lingr: 1s\n").expect("write");
    let err = Config::load(Some(&file), env(&[])).expect_err("unknown file key");
    assert!(err.to_string().contains("lingr"), "{err}");
}

/// Every key of the configuration, as `section.key`, from a YAML document.
fn yaml_keys(path: &Path) -> std::collections::BTreeSet<String> {
    let value: serde_json::Value = Figment::from(Yaml::file_exact(path))
        .extract()
        .expect("sample is YAML");
    let mut keys = std::collections::BTreeSet::new();
    for (name, v) in value.as_object().expect("a mapping") {
        match v.as_object() {
            Some(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
            None => {
                keys.insert(name.clone());
            }
        }
    }
    keys
}

#[test]
fn the_sample_documents_every_key_with_its_default() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yml.sample");
    let loaded = Config::load(Some(&sample), env(&[])).expect("the sample loads");
    assert_eq!(
        serde_json::to_value(&loaded).expect("json"),
        serde_json::to_value(Config::default()).expect("json"),
        "a default in config.yml.sample differs from the code"
    );
    let documented = yaml_keys(&sample);
    let known = known_keys();
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from config.yml.sample: {missing:?}"
    );
    let text = std::fs::read_to_string(&sample).expect("read sample");
    for key in &known {
        if let Some(env) = env_name(key) {
            assert!(
                text.contains(&env),
                "config.yml.sample does not name {env} for {key}"
            );
        }
    }
}

#[test]
fn every_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let cfg = Config::load(
        None,
        vec![
            ("OPENCTI_TOKEN_FILE".into(), file("o", b"otok\n")),
            ("MISP_KEY_FILE".into(), file("m", b"mkey\r\n")),
            ("SENTINELONE_INTEL_API_KEY_FILE".into(), file("s", b"stok")),
            ("SEKOIA_INTEL_APIKEY_FILE".into(), file("k", b"ktok\n\n")),
        ],
    )
    .expect("load");
    let exposed = |s: &Option<crate::secret::Secret>| s.as_ref().map(|s| s.expose().to_string());
    assert_eq!(exposed(&cfg.opencti.token).as_deref(), Some("otok"));
    assert_eq!(exposed(&cfg.misp.key).as_deref(), Some("mkey"));
    assert_eq!(
        exposed(&cfg.sentinelone_intel.api_key).as_deref(),
        Some("stok")
    );
    assert_eq!(
        exposed(&cfg.sekoia_intel.apikey).as_deref(),
        Some("ktok\n"),
        "only one trailing newline is trimmed"
    );
    for key in SECRET_KEYS {
        let name = format!("{}_FILE", env_name(key).expect("env name"));
        assert_eq!(secret_file_key(&name).as_deref(), Some(*key));
    }
    assert_eq!(secret_file_key("CONNECTOR_ID_FILE"), None, "not a secret");
}

#[test]
fn a_secret_file_conflict_or_read_failure_names_the_key_and_never_the_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, b"sup3r-s3cret\xff\n").expect("write");
    let path = path.display().to_string();
    let err = Config::load(
        None,
        env(&[("OPENCTI_TOKEN", "inline"), ("OPENCTI_TOKEN_FILE", &path)]),
    )
    .expect_err("both set");
    let text = err.to_string();
    assert!(
        text.contains("OPENCTI_TOKEN ") && text.contains("OPENCTI_TOKEN_FILE"),
        "{text}"
    );

    let missing = dir.path().join("absent").display().to_string();
    for (name, file) in [
        ("MISP_KEY_FILE", missing.as_str()),
        ("MISP_KEY_FILE", &path),
    ] {
        let err = Config::load(None, env(&[(name, file)])).expect_err("unreadable");
        let text = err.to_string();
        assert!(text.contains("misp.key") && text.contains(name), "{text}");
        assert!(!text.contains("sup3r"), "the content leaked: {text}");
    }
}

#[test]
fn the_metrics_endpoint_binds_loopback_by_default() {
    let cfg = Config::load(None, env(&[])).expect("load");
    assert_eq!(cfg.http.bind, "127.0.0.1");
    let cfg = Config::load(None, env(&[("IOCSYNC_HTTP_BIND", "0.0.0.0")])).expect("load");
    assert_eq!(cfg.http.bind, "0.0.0.0");
}

#[test]
fn source_and_sinks_selection() {
    let cfg = Config::load(None, env(&[])).expect("load");
    assert!(cfg.source_kind().is_err());
    let cfg = Config::load(
        None,
        env(&[
            ("IOCSYNC_FILE_PATH", "x.sse"),
            ("IOCSYNC_JSONL_PATH", "out.jsonl"),
        ]),
    )
    .expect("load");
    assert_eq!(cfg.source_kind(), Ok(SourceKind::File));
    assert_eq!(cfg.sink_names(), Ok(vec!["jsonl"]));
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let cfg = Config::load(
        None,
        env(&[("IOCSYNC_FILE_PATH", "x.sse"), ("IOCSYNC_SINKS", "zeek")]),
    )
    .expect("load");
    assert!(cfg.sink_names().is_err());
}

#[test]
fn validated_carries_each_section_with_what_its_checks_established() {
    let cfg = Config::load(
        None,
        env(&[
            ("MISP_URL", " https://misp.example "),
            ("MISP_KEY", "k3y"),
            ("IOCSYNC_SINKS", "jsonl,sentinelone,sekoia"),
            ("IOCSYNC_JSONL_PATH", "out.jsonl"),
            ("SENTINELONE_INTEL_URL", "https://s1.example/"),
            ("SENTINELONE_INTEL_API_KEY", "ApiToken s1-t0ken"),
            ("SENTINELONE_INTEL_SITE_ID", "7"),
            ("SEKOIA_INTEL_URL", "https://api.sekoia.io"),
            ("SEKOIA_INTEL_APIKEY", "Bearer sek-k3y"),
            (
                "SEKOIA_INTEL_IOC_COLLECTION_UUID",
                "3E7F0D2C-5B1A-4C6D-9E8F-0A1B2C3D4E5F",
            ),
        ]),
    )
    .expect("load");
    let valid = cfg.validated().expect("valid");
    let ValidSource::Misp(misp) = &valid.source else {
        panic!("misp expected, got {:?}", valid.source.kind());
    };
    assert_eq!(misp.facts().url, "https://misp.example");
    let kinds: Vec<SinkKind> = valid.sinks.iter().map(ValidSink::kind).collect();
    assert_eq!(
        kinds,
        [SinkKind::Jsonl, SinkKind::SentinelOne, SinkKind::Sekoia],
        "in IOCSYNC_SINKS' order"
    );
    for sink in &valid.sinks {
        match sink {
            ValidSink::Jsonl(j) => assert_eq!(j.facts().path, PathBuf::from("out.jsonl")),
            ValidSink::SentinelOne(s) => {
                assert_eq!(s.facts().token.expose(), "s1-t0ken");
                assert_eq!(s.facts().scope.site_ids, ["7"]);
                assert_eq!(s.facts().console_url, "https://s1.example/");
            }
            ValidSink::Sekoia(s) => {
                assert_eq!(s.facts().key.expose(), "sek-k3y");
                assert_eq!(
                    s.facts().collection_id,
                    "ioc-collection--3e7f0d2c-5b1a-4c6d-9e8f-0a1b2c3d4e5f"
                );
                assert_eq!(
                    s.facts().collections_url,
                    "https://api.sekoia.io/v2/inthreat/ioc-collections"
                );
            }
            ValidSink::Zeek(_) => panic!("zeek is not selected"),
        }
    }
    let shown = format!("{valid:?}");
    for secret in ["s1-t0ken", "sek-k3y", "k3y\""] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
}

#[test]
fn validated_and_validate_report_the_same_problems() {
    let cfg = Config::load(
        None,
        env(&[
            ("OPENCTI_URL", "ftp://cti"),
            ("SENTINELONE_INTEL_URL", "https://s1.example"),
            ("SENTINELONE_INTEL_API_KEY", "bad\ntoken"),
            ("IOCSYNC_PIPELINE_BATCH_EVENTS", "0"),
        ]),
    )
    .expect("load");
    let problems = cfg.validate();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "opencti.url",
            "opencti.token",
            "connector.id",
            "connector.live_stream_id",
            "sentinelone_intel.api_key",
            "sentinelone_intel.account_id",
            "pipeline.batch_events"
        ]
    );
    assert!(
        problems[4]
            .message
            .contains("not allowed in an HTTP header"),
        "{}",
        problems[4].message
    );
    match cfg.validated() {
        Err(ConfigError::Invalid(same)) => assert_eq!(same, problems),
        Ok(v) => panic!("invalid config validated: {v:?}"),
    }
}
