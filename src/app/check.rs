//! `iocsync check`: validates the configuration, then probes the source, every sink and the state
//! directory; one line per check, a failed line naming the setting to fix.

use super::*;
use crate::config::SinkKind;

/// `iocsync check`: validates, then probes the source and every sink; one line per check. A failed
/// line names the setting to fix; the exit code is the worst failure's (3 credential, 2 config, 1
/// anything else).
pub async fn check(cfg: &Config, out: &mut impl std::io::Write) -> Result<(), AppError> {
    probe(cfg, None, out).await
}

/// The components `check` writes a line for, labelled as its lines are (`source misp`,
/// `sink sentinelone`, `state dir (IOCSYNC_STATE_DIR)`, and a remote whose TLS verification is off).
/// Fails as `check` does on an invalid configuration.
pub fn check_components(cfg: &Config) -> Result<Vec<String>, AppError> {
    let valid = validated(cfg)?;
    let kind = valid.source.kind();
    let mut out: Vec<String> = remotes_tls(cfg, kind)
        .iter()
        .filter(|t| !t.verify)
        .map(|t| t.remote.to_string())
        .collect();
    out.push(format!(
        "source {}",
        build_source(cfg, &valid, None)?.name()
    ));
    for sink in build_sinks(&valid, None)? {
        out.push(format!("sink {}", sink.name()));
    }
    out.push(STATE_DIR_LABEL.to_string());
    Ok(out)
}

/// One component of `iocsync check` (a label of [`check_components`]): the same probe and wording,
/// only that component's line. A label no line has writes nothing.
pub async fn check_component(
    cfg: &Config,
    component: &str,
    out: &mut impl std::io::Write,
) -> Result<(), AppError> {
    probe(cfg, Some(component), out).await
}

const STATE_DIR_LABEL: &str = "state dir (IOCSYNC_STATE_DIR)";

/// The probes of `check`, all of them or only the one labelled `only`.
async fn probe(
    cfg: &Config,
    only: Option<&str>,
    out: &mut impl std::io::Write,
) -> Result<(), AppError> {
    let wanted = |label: &str| only.is_none_or(|o| o == label);
    let valid = validated(cfg)?;
    let kind = valid.source.kind();
    // The MISP line reports the console's edits too (schedule, feed toggles), from the state
    // when there is one.
    let state = State::open_read_only(&cfg.state.dir).ok().flatten();
    let source = build_source(cfg, &valid, state.as_ref())?;
    let sinks = build_sinks(&valid, None)?;
    for tls in remotes_tls(cfg, kind)
        .iter()
        .filter(|t| !t.verify && wanted(t.remote))
    {
        let env =
            crate::config::env_name(tls.verify_key).unwrap_or_else(|| tls.verify_key.to_string());
        let _ = writeln!(
            out,
            "⚠ {}: TLS verification is off ({env}=false): neither the certificate nor the host \
             name is checked; trust an internal CA with {} instead",
            tls.remote,
            crate::config::env_name(tls.ca_key).unwrap_or_else(|| tls.ca_key.to_string())
        );
    }
    let mut failures: Vec<CheckFailure> = Vec::new();
    let mut note = |label: String, result: Result<String, CheckFailure>| match result {
        Ok(what) => {
            let _ = writeln!(out, "✓ {label}: {what}");
        }
        Err(failure) => {
            let _ = writeln!(out, "✗ {label}: {}", failure.line());
            failures.push(failure);
        }
    };
    let mut total = 0;
    let name = source.name();
    let label = format!("source {name}");
    if wanted(&label) {
        total += 1;
        note(
            label,
            source
                .check()
                .await
                .map_err(|e| CheckFailure::from_source(name, e)),
        );
    }
    for sink in &sinks {
        let name = sink.name();
        let label = format!("sink {name}");
        if wanted(&label) {
            total += 1;
            note(
                label,
                sink.check()
                    .await
                    .map_err(|e| CheckFailure::from_sink(name, e)),
            );
        }
    }
    if wanted(STATE_DIR_LABEL) {
        total += 1;
        note(STATE_DIR_LABEL.into(), probe_state_dir(&cfg.state.dir));
    }
    let Some(worst) = failures.iter().map(|f| f.code).max() else {
        return Ok(());
    };
    let summary = format!(
        "{} of {total} checks failed (see the ✗ lines above)",
        failures.len()
    );
    Err(match worst {
        3 => AppError::Auth(summary),
        2 => AppError::problems(
            failures
                .into_iter()
                .filter(|f| f.code == 2)
                .filter_map(|f| {
                    f.key.map(|key| Problem {
                        key: key.to_string(),
                        message: f.message,
                    })
                })
                .collect(),
        ),
        _ => AppError::Other(summary),
    })
}

/// `check`'s state probe: the directory (or, while a first run has not created it, its nearest
/// existing ancestor) accepts a new file. Nothing is left behind and a missing directory is not
/// created, so `check` changes nothing.
fn probe_state_dir(dir: &Path) -> Result<String, CheckFailure> {
    let fail = |message: String| CheckFailure {
        message,
        key: Some("state.dir"),
        code: 1,
    };
    let existing = dir
        .ancestors()
        .find(|p| p.as_os_str().is_empty() || p.exists())
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(fail(format!(
            "`{}` cannot be created: `{}` is not a directory",
            dir.display(),
            existing.display()
        )));
    }
    let probe = existing.join(format!(".iocsync-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            // Best effort: a leftover empty probe file is harmless.
            let _ = std::fs::remove_file(&probe);
            Ok(if existing == dir {
                format!("`{}` is writable", dir.display())
            } else {
                format!(
                    "`{}` does not exist yet; `{}` is writable, the first run creates it",
                    dir.display(),
                    existing.display()
                )
            })
        }
        Err(e) => Err(fail(format!(
            "cannot write in `{}`: {e}",
            existing.display()
        ))),
    }
}

/// The TLS settings of the remotes this configuration talks to (the source, then the sinks).
fn remotes_tls(cfg: &Config, kind: SourceKind) -> Vec<crate::remote::TlsSettings<'_>> {
    let mut out = Vec::new();
    match kind {
        SourceKind::OpenCti => out.push(cfg.opencti.tls()),
        SourceKind::Misp => out.push(cfg.misp.tls()),
        SourceKind::File => {}
    }
    for sink in cfg.sink_kinds().unwrap_or_default() {
        out.extend(cfg.sink_tls(sink));
    }
    out
}

/// One failed probe of `iocsync check`.
struct CheckFailure {
    message: String,
    /// The setting most likely to fix it.
    key: Option<&'static str>,
    /// The exit code it stands for.
    code: i32,
}

impl CheckFailure {
    /// `<message> (check ENV_NAME)`.
    fn line(&self) -> String {
        match self.key {
            Some(key) => {
                let name = crate::config::env_name(key).unwrap_or_else(|| key.to_string());
                format!("{} (check {name})", self.message)
            }
            None => self.message.clone(),
        }
    }

    fn from_source(name: &'static str, e: SourceError) -> Self {
        let (url, credential) = endpoint_keys(name);
        match e {
            SourceError::Config { key, message, .. } => CheckFailure {
                message,
                key: Some(key),
                code: 2,
            },
            SourceError::Auth { .. } => CheckFailure {
                message: e.to_string(),
                key: credential,
                code: 3,
            },
            SourceError::Other { .. } => CheckFailure {
                message: e.to_string(),
                key: url,
                code: 1,
            },
        }
    }

    fn from_sink(name: &'static str, e: SinkError) -> Self {
        let (url, credential) = endpoint_keys(name);
        let (key, code) = match &e {
            SinkError::Config { key, message, .. } => {
                return CheckFailure {
                    message: message.clone(),
                    key: Some(key),
                    code: 2,
                }
            }
            SinkError::Auth { .. } | SinkError::Permission { .. } => (credential, 3),
            SinkError::Transport { .. } | SinkError::Http { .. } | SinkError::Io { .. } => (url, 1),
            SinkError::RateLimited { .. } | SinkError::NotSent { .. } => (None, 1),
        };
        CheckFailure {
            message: e.to_string(),
            key,
            code,
        }
    }
}

/// The (address or path, credential) settings of a source or sink, for `check`'s hints.
fn endpoint_keys(name: &str) -> (Option<&'static str>, Option<&'static str>) {
    let keys = SourceKind::from_name(name)
        .map(SourceKind::endpoint_keys)
        .or_else(|| SinkKind::from_name(name).map(SinkKind::endpoint_keys));
    match keys {
        Some((address, credential)) => (Some(address), credential),
        None => (None, None),
    }
}
