//! Checks of the deployment files Docker and systemd read, which no test here can run: every variable
//! docker-compose.yml, deploy/example.env and the unit set is a documented config key and loads; the
//! Dockerfile's binary path, user, volume and port agree with the compose file; the .dockerignore
//! keeps what the build needs; the image's HEALTHCHECK is `iocsync health`; the compose services are
//! hardened (read-only, tmpfs /tmp, no capabilities, no-new-privileges, limits); the systemd template
//! unit has its hardening, limits, credentials and restart policy.

use iocsync::config::{env_key, Config, SourceKind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every `section.key` (and top-level key) the configuration has.
fn known_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let Value::Object(top) = serde_json::to_value(Config::default()).expect("config as json")
    else {
        panic!("config is not an object");
    };
    for (name, value) in top {
        match value {
            Value::Object(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
            _ => {
                keys.insert(name);
            }
        }
    }
    keys
}

/// Variables the binary reads outside the config struct.
const READ_ELSEWHERE: &[&str] = &["IOCSYNC_CONFIG", "IOCSYNC_LOG"];

fn assert_documented(env: &BTreeMap<String, String>, file: &str) {
    let known = known_keys();
    for name in env.keys() {
        if READ_ELSEWHERE.contains(&name.as_str()) {
            continue;
        }
        let key =
            env_key(name).unwrap_or_else(|| panic!("{file}: `{name}` is not an iocsync variable"));
        assert!(
            known.contains(&key),
            "{file}: `{name}` maps to `{key}`, which is not a config key"
        );
    }
}

fn load(env: &BTreeMap<String, String>) -> Config {
    Config::load(None, env.clone()).unwrap_or_else(|e| panic!("{e}\n{env:?}"))
}

// --- docker-compose.yml ------------------------------------------------------------------------

fn compose() -> Value {
    use figment::providers::{Format, Yaml};
    figment::Figment::from(Yaml::string(&read("docker-compose.yml")))
        .extract::<Value>()
        .expect("docker-compose.yml is YAML")
}

/// Values for the `${NAME}` interpolations of the compose file (what a user's `.env` holds), chosen
/// to pass validation. An interpolated name missing here fails the test: keep both in step.
fn dot_env(name: &str) -> &'static str {
    match name {
        "OPENCTI_ADMIN_TOKEN" => "opencti-admin-token",
        "IOCSYNC_S1_CONNECTOR_ID" => "8a2f1c3e-1b2d-4c5e-9f60-7a8b9c0d1e2f",
        "IOCSYNC_SEKOIA_CONNECTOR_ID" => "1c9e7d5b-3a2f-4e1d-8c7b-6a5f4e3d2c1b",
        "IOCSYNC_S1_STREAM_ID" => "2d6b3c1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a",
        "IOCSYNC_SEKOIA_STREAM_ID" => "7e5d4c3b-2a19-4f8e-a7d6-c5b4a3928170",
        "SENTINELONE_URL" => "https://tenant.sentinelone.net",
        "SENTINELONE_API_KEY" => "s1-api-token",
        "SENTINELONE_ACCOUNT_ID" => "1234567890",
        "SEKOIA_API_KEY" => "sekoia-api-key",
        "SEKOIA_IOC_COLLECTION_UUID" => "6f1c2d3e-4a5b-4c6d-8e7f-901234567890",
        other => panic!("docker-compose.yml interpolates `{other}`: add a test value here"),
    }
}

/// Compose interpolation: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let expr = &rest[start + 2..end];
        let name_end = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let (name, op) = expr.split_at(name_end);
        let default = op.strip_prefix(":-").or_else(|| op.strip_prefix('-'));
        match default {
            Some(d) => out.push_str(d),
            None => {
                assert!(op.is_empty() || op.starts_with(":?") || op.starts_with('?'));
                out.push_str(dot_env(name));
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn service_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(&scalar(v))))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let s = scalar(item);
                let (k, v) = s.split_once('=').expect("NAME=value");
                (k.to_string(), interpolate(v))
            })
            .collect(),
        other => panic!("environment must be a mapping or a list, got {other}"),
    }
}

fn iocsync_services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| scalar(&s["image"]).starts_with("iocsync"))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

#[test]
fn compose_services_load_and_validate_with_their_environment() {
    let compose = compose();
    let services = iocsync_services(&compose);
    assert_eq!(
        services.len(),
        2,
        "one service per stream → sink pair: SentinelOne and Sekoia"
    );
    let mut sinks = Vec::new();
    let mut connector_ids = BTreeSet::new();
    let mut streams = BTreeSet::new();
    for (name, service) in &services {
        let env = service_env(service);
        assert_documented(&env, &format!("docker-compose.yml service {name}"));
        let cfg = load(&env);
        assert_eq!(cfg.validate(), vec![], "service {name}");
        assert_eq!(cfg.source_kind(), Ok(SourceKind::OpenCti), "service {name}");
        let names = cfg.sink_names().expect("sinks");
        assert_eq!(names.len(), 1, "service {name}: one sink per process");
        sinks.push(names[0]);
        assert!(
            cfg.connector.expose_metrics,
            "service {name} exposes /metrics"
        );
        connector_ids.insert(cfg.connector.id.clone().expect("connector id"));
        streams.insert(cfg.connector.live_stream_id.clone().expect("stream"));
        assert!(
            cfg.opencti
                .url
                .as_deref()
                .is_some_and(|u| u.contains("//opencti:")),
            "service {name} reaches OpenCTI by its service name"
        );
    }
    sinks.sort_unstable();
    assert_eq!(sinks, ["sekoia", "sentinelone"]);
    assert_eq!(
        connector_ids.len(),
        2,
        "each service needs its own connector id"
    );
    assert_eq!(streams.len(), 2, "each service reads its own stream");
}

// --- Dockerfile --------------------------------------------------------------------------------

/// One instruction of the final stage (continuation lines joined).
struct Instruction {
    op: String,
    args: String,
}

/// The instructions of each stage, in order.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        logical.push(std::mem::take(&mut current));
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (op, args) = line.split_once(' ').unwrap_or((&line, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(Instruction {
                op,
                args: args.trim().to_string(),
            });
        }
    }
    stages
}

fn one<'a>(stage: &'a [Instruction], op: &str) -> &'a str {
    let found: Vec<&Instruction> = stage.iter().filter(|i| i.op == op).collect();
    assert_eq!(found.len(), 1, "the final stage needs exactly one {op}");
    &found[0].args
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("`{args}` is not the exec form: {e}"))
}

/// What the image promises the compose file.
struct Image {
    binary: String,
    uid: String,
    volume: String,
    state_dir: String,
    port: u16,
}

fn image() -> Image {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage build");
    let build = stages.first().expect("build stage");
    assert!(
        build
            .iter()
            .any(|i| i.op == "RUN" && i.args.contains("cargo build --release --locked")),
        "the builder runs `cargo build --release --locked`"
    );
    let from = one(build, "FROM");
    assert!(from.starts_with("rust:"), "builder: {from}");
    let last = stages.last().expect("final stage");
    let base = one(last, "FROM");
    assert!(
        base.starts_with("debian:bookworm-slim") || base.contains("distroless"),
        "runtime base: {base}"
    );

    let entrypoint = exec_form(one(last, "ENTRYPOINT"));
    let health_binary = exec_form(
        one(last, "HEALTHCHECK")
            .split_once("CMD ")
            .map_or("[]", |(_, c)| c),
    );
    assert_eq!(
        health_binary.first(),
        entrypoint.first(),
        "HEALTHCHECK runs the same binary"
    );
    assert_eq!(exec_form(one(last, "CMD")), ["run"]);
    let copy = last
        .iter()
        .find(|i| i.op == "COPY" && i.args.starts_with("--from="))
        .expect("the binary is copied from the build stage");
    let dest = copy
        .args
        .split_whitespace()
        .last()
        .expect("COPY destination");
    let binary = match entrypoint.as_slice() {
        [path] if path.starts_with('/') => path.clone(),
        // A bare name is found on the default PATH, which has /usr/local/bin.
        [name] if name == "iocsync" => "/usr/local/bin/iocsync".to_string(),
        other => panic!("ENTRYPOINT should be the iocsync binary alone, got {other:?}"),
    };
    assert_eq!(dest, binary, "COPY destination vs ENTRYPOINT");

    let user = one(last, "USER");
    let uid = user.split(':').next().unwrap_or_default().to_string();
    assert!(
        !uid.is_empty() && uid != "0" && uid != "root",
        "runs as a non-root user, not `{user}`"
    );
    let setup = last
        .iter()
        .filter(|i| i.op == "RUN")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        setup.contains(&format!("--uid {uid}")),
        "the image creates user {uid}"
    );
    assert!(
        setup.contains("ca-certificates"),
        "CA certificates installed"
    );

    let volume = exec_form(one(last, "VOLUME"));
    let [volume] = volume.as_slice() else {
        panic!("one state volume, got {volume:?}")
    };
    assert!(
        setup.contains(&format!("chown {uid}:{uid} {volume}"))
            || setup.contains(&format!("chown iocsync:iocsync {volume}")),
        "the volume belongs to the runtime user"
    );
    let env: BTreeMap<&str, &str> = one(last, "ENV")
        .split_whitespace()
        .map(|kv| kv.split_once('=').expect("ENV KEY=value …"))
        .collect();
    let state_dir = env
        .get("IOCSYNC_STATE_DIR")
        .expect("ENV IOCSYNC_STATE_DIR=…")
        .to_string();
    assert_eq!(
        env.get("IOCSYNC_HTTP_BIND"),
        Some(&"0.0.0.0"),
        "the default bind is loopback, which a port mapping cannot reach: the image sets every interface"
    );
    assert_eq!(&state_dir, volume, "the state lives on the volume");
    let port: u16 = one(last, "EXPOSE").parse().expect("EXPOSE port");
    assert_eq!(
        port,
        Config::default().connector.metrics_port,
        "EXPOSE the default metrics port"
    );
    let healthcheck = one(last, "HEALTHCHECK");
    let (options, command) = healthcheck
        .split_once("CMD ")
        .expect("HEALTHCHECK [options] CMD [...]");
    let command = exec_form(command);
    assert_eq!(
        command.get(1).map(String::as_str),
        Some("health"),
        "the health check is `iocsync health` (no curl in the image): {command:?}"
    );
    for option in ["--interval=", "--timeout=", "--start-period="] {
        assert!(options.contains(option), "HEALTHCHECK {option}: {options}");
    }
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ] {
        assert!(one(last, "LABEL").contains(label), "missing label {label}");
    }
    Image {
        binary,
        uid,
        volume: volume.clone(),
        state_dir,
        port,
    }
}

#[test]
fn dockerfile_and_compose_agree_on_binary_user_volume_and_port() {
    let image = image();
    assert!(
        root().join("Cargo.lock").exists(),
        "--locked needs Cargo.lock"
    );
    let compose = compose();
    let mut host_ports = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    for (name, service) in iocsync_services(&compose) {
        if let Some(entry) = service.get("entrypoint") {
            let first = match entry {
                Value::Array(a) => a.first().map(scalar).unwrap_or_default(),
                other => scalar(other)
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            assert_eq!(first, image.binary, "service {name}: entrypoint");
        }
        if let Some(command) = service.get("command") {
            let first = match command {
                Value::Array(a) => a.first().map(scalar).unwrap_or_default(),
                other => scalar(other),
            };
            assert!(
                ["run", "check"].contains(&first.as_str()),
                "service {name}: the command is a subcommand (the binary is the ENTRYPOINT), got `{first}`"
            );
        }
        if let Some(user) = service.get("user") {
            let user = scalar(user);
            assert_eq!(
                user.split(':').next(),
                Some(image.uid.as_str()),
                "service {name}: user"
            );
        }
        let env = service_env(&service);
        if let Some(dir) = env.get("IOCSYNC_STATE_DIR") {
            assert_eq!(dir, &image.state_dir, "service {name}: IOCSYNC_STATE_DIR");
        }
        let mounts: Vec<String> = service["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(scalar)
            .collect();
        let state = mounts
            .iter()
            .find_map(|m| {
                let mut parts = m.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                (target == image.volume).then(|| source.to_string())
            })
            .unwrap_or_else(|| panic!("service {name}: no volume on {}", image.volume));
        assert!(
            compose["volumes"].get(&state).is_some(),
            "service {name}: named volume `{state}` is declared"
        );
        assert!(
            volumes.insert(state),
            "service {name} shares a state volume"
        );

        assert_eq!(
            env.get("IOCSYNC_HTTP_BIND").map(String::as_str),
            Some("0.0.0.0"),
            "service {name}: the port mapping needs the endpoint on every interface"
        );
        let metrics_port: u16 = env
            .get("CONNECTOR_METRICS_PORT")
            .map_or(image.port, |p| p.parse().expect("port"));
        assert_eq!(metrics_port, image.port, "service {name}: metrics port");
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = scalar(port);
            let (host, container) = port.rsplit_once(':').expect("host:container");
            assert_eq!(container.parse::<u16>().ok(), Some(metrics_port), "{port}");
            assert!(
                host_ports.insert(host.to_string()),
                "host port reused: {port}"
            );
        }
        assert_eq!(
            service["read_only"],
            Value::Bool(true),
            "service {name}: read-only root file system"
        );
        assert!(
            service["tmpfs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| scalar(t).split(':').next() == Some("/tmp")),
            "service {name}: a tmpfs for the temporary directory"
        );
        assert_eq!(
            service["cap_drop"],
            serde_json::json!(["ALL"]),
            "service {name}: every capability dropped"
        );
        assert!(
            service["security_opt"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| scalar(o) == "no-new-privileges:true"),
            "service {name}: no-new-privileges"
        );
        let limits = &service["deploy"]["resources"]["limits"];
        assert!(
            !scalar(&limits["memory"]).is_empty() && !scalar(&limits["cpus"]).is_empty(),
            "service {name}: memory and CPU limits"
        );
        assert_eq!(
            env.get("CONNECTOR_EXPOSE_METRICS").map(String::as_str),
            Some("true"),
            "service {name}: the image's HEALTHCHECK asks /readyz"
        );
        let grace = scalar(&service["stop_grace_period"]);
        let grace = humantime_serde::re::humantime::parse_duration(&grace).unwrap_or_default();
        assert!(
            grace > Config::default().pipeline.shutdown_timeout,
            "service {name}: stop_grace_period must exceed pipeline.shutdown_timeout"
        );
    }
}

/// `.dockerignore` patterns as Docker applies them (last match wins, `!` re-includes).
fn docker_ignored(patterns: &[String], path: &str) -> bool {
    let mut ignored = false;
    for p in patterns {
        let (negate, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let p = p.trim_end_matches('/');
        let name = path.rsplit('/').next().unwrap_or(path);
        let matches = if let Some(suffix) = p.strip_prefix('*') {
            !suffix.contains('*') && (name.ends_with(suffix) || path.ends_with(suffix))
        } else {
            path == p || path.starts_with(&format!("{p}/"))
        };
        if matches {
            ignored = !negate;
        }
    }
    ignored
}

#[test]
fn dockerignore_keeps_what_the_build_needs() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        // `run --demo` compiles the sample capture into the binary.
        "fixtures/opencti/stream.sse",
        "benches/pattern.rs",
    ] {
        assert!(root().join(needed).exists(), "{needed} exists");
        assert!(
            !docker_ignored(&patterns, needed),
            ".dockerignore drops {needed}"
        );
    }
    for dropped in ["target/debug/iocsync", ".git/HEAD", ".env", "prod.env"] {
        assert!(
            docker_ignored(&patterns, dropped),
            "{dropped} should stay out"
        );
    }
}

// --- systemd -----------------------------------------------------------------------------------

/// section → key → values (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            unit.entry(name.to_string()).or_default();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not `Key=value`: {line}", n + 1));
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric()),
            "line {}: bad key `{key}`",
            n + 1
        );
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("line {}: outside a section", n + 1));
        unit.entry(section)
            .or_default()
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    unit
}

#[test]
fn systemd_template_unit_has_its_keys() {
    let unit = parse_unit(&read("deploy/iocsync@.service"));
    let get = |section: &str, key: &str| -> Vec<String> {
        unit.get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let single = |section: &str, key: &str| -> String {
        let v = get(section, key);
        assert_eq!(v.len(), 1, "[{section}] {key}= once, got {v:?}");
        v[0].clone()
    };
    assert_eq!(single("Service", "Type"), "simple");
    assert_eq!(single("Service", "EnvironmentFile"), "/etc/iocsync/%i.env");
    assert_eq!(single("Service", "DynamicUser"), "yes");
    let state = single("Service", "StateDirectory");
    assert_eq!(state, "iocsync/%i");
    assert!(
        get("Service", "Environment").contains(&format!("IOCSYNC_STATE_DIR=/var/lib/{state}")),
        "the state dir is the StateDirectory"
    );
    for (key, want) in [
        ("SystemCallFilter", "@system-service"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(single("Service", key), want, "{key}");
    }
    assert!(!single("Service", "RestartSec").is_empty());
    let nofile: u64 = single("Service", "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE number");
    assert!(
        nofile >= 256,
        "room for the listener's 32 connections and more"
    );
    assert!(!single("Service", "MemoryMax").is_empty());
    let credentials = single("Service", "LoadCredential");
    let (id, source) = credentials.split_once(':').expect("ID:PATH");
    assert!(!id.is_empty() && source.contains("%i"), "{credentials}");
    let text = read("deploy/iocsync@.service");
    let instance_dir = source.replace("%i", "s1");
    assert!(
        text.contains(&format!("install -d -m 0700 {instance_dir}")),
        "the install steps create {instance_dir}: systemd refuses to start without it"
    );
    assert!(
        text.contains(&format!("/run/credentials/iocsync@s1.service/{id}_")),
        "the unit's comment shows where a credential appears"
    );
    assert!(
        single("Service", "RestartPreventExitStatus")
            .split_whitespace()
            .any(|c| c == "2"),
        "a configuration error (exit 2) must not restart"
    );
    let exec = single("Service", "ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/iocsync"));
    assert_eq!(words.next(), Some("run"));
    let stop = humantime_serde::re::humantime::parse_duration(&single("Service", "TimeoutStopSec"))
        .expect("duration");
    assert!(stop > Config::default().pipeline.shutdown_timeout);
    assert_eq!(single("Install", "WantedBy"), "multi-user.target");
    assert!(unit.contains_key("Unit"));
}

// --- deploy/example.env ------------------------------------------------------------------------

/// `KEY=value` lines, as systemd's EnvironmentFile reads them (quotes stripped).
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn example_env_is_documented_and_only_its_placeholders_fail_validation() {
    let env = env_file(&read("deploy/example.env"));
    assert_documented(&env, "deploy/example.env");
    assert!(
        !env.contains_key("IOCSYNC_STATE_DIR"),
        "the unit sets the state dir per instance"
    );
    let placeholders: BTreeSet<String> = env
        .iter()
        .filter(|(_, v)| v.as_str() == "ChangeMe")
        .map(|(k, _)| env_key(k).expect("key"))
        .collect();
    assert!(!placeholders.is_empty());
    // As shipped, the file is refused, and only for its placeholders (not every sink recognises the
    // `ChangeMe` word: a token has no shape to check).
    let problems: BTreeSet<String> = load(&env).validate().into_iter().map(|p| p.key).collect();
    assert!(!problems.is_empty());
    assert!(problems.is_subset(&placeholders), "{problems:?}");
    // Filled in, the file is a working configuration.
    let mut filled = env.clone();
    for (name, value) in filled.iter_mut().filter(|(_, v)| v.as_str() == "ChangeMe") {
        *value = match name.as_str() {
            "CONNECTOR_ID" => "8a2f1c3e-1b2d-4c5e-9f60-7a8b9c0d1e2f",
            "SENTINELONE_INTEL_ACCOUNT_ID" => "1234567890",
            _ => "a-real-value",
        }
        .to_string();
    }
    let cfg = load(&filled);
    assert_eq!(cfg.validate(), vec![]);
    assert_eq!(cfg.sink_names(), Ok(vec!["sentinelone"]));
    assert_eq!(cfg.http.bind, "127.0.0.1");
}
