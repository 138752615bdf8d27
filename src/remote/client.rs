//! The reqwest client of one remote: our user agent, TLS verification (on unless turned off, with a
//! warning naming the key), the remote's own CA bundle, and timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::text::describe_transport_error;

/// How one remote's TLS is set up, from its `<section>.ssl_verify` and `<section>.ssl_ca` keys.
#[derive(Debug, Clone, Copy)]
pub struct TlsSettings<'a> {
    /// The remote's name in log lines (`opencti`, `misp`, `sentinelone`, `sekoia`).
    pub remote: &'static str,
    /// Verify the certificate chain and the host name (the default).
    pub verify: bool,
    /// The `ssl_verify` key, named in the warning when verification is off.
    pub verify_key: &'static str,
    /// A PEM bundle of CA certificates trusted in addition to the bundled and system roots.
    pub ca: Option<&'a Path>,
    /// The `ssl_ca` key, named when the bundle is unusable.
    pub ca_key: &'static str,
}

impl<'a> TlsSettings<'a> {
    /// A remote's settings from its `[ssl_verify key, ssl_ca key]` and values; an empty CA path
    /// (`OPENCTI_SSL_CA=`) means none.
    pub fn new(
        remote: &'static str,
        [verify_key, ca_key]: [&'static str; 2],
        verify: bool,
        ca: Option<&'a Path>,
    ) -> Self {
        TlsSettings {
            remote,
            verify,
            verify_key,
            ca: ca.filter(|p| !p.as_os_str().is_empty()),
            ca_key,
        }
    }
}

/// Why the HTTP client of a remote could not be built. Every variant is a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle file could not be read.
    #[error("cannot read the CA bundle `{}`: {source}", path.display())]
    CaUnreadable {
        /// The `ssl_ca` key.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA bundle holds no usable PEM certificate.
    #[error("`{}` is not a usable PEM CA bundle: {message}", path.display())]
    CaInvalid {
        /// The `ssl_ca` key.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// reqwest refused the settings (TLS backend setup).
    #[error("cannot build the HTTP client: {message}")]
    Build {
        /// The key most likely at fault.
        key: &'static str,
        /// The builder's error.
        message: String,
    },
}

impl ClientError {
    /// The setting to fix.
    pub fn key(&self) -> &'static str {
        match self {
            ClientError::CaUnreadable { key, .. }
            | ClientError::CaInvalid { key, .. }
            | ClientError::Build { key, .. } => key,
        }
    }
}

/// Reads a PEM bundle of CA certificates. An empty or non-PEM file is an error rather than a
/// silent no-op: the user meant to trust something.
fn load_ca_bundle(
    path: &Path,
    key: &'static str,
) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaUnreadable {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| ClientError::CaInvalid {
        key,
        path: path.to_path_buf(),
        message,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            "no `-----BEGIN CERTIFICATE-----` block found".into(),
        ));
    }
    Ok(certs)
}

/// A client builder with our user agent and the remote's TLS settings: webpki's bundled roots,
/// the system's roots (which honour `SSL_CERT_FILE`/`SSL_CERT_DIR`) and the remote's own CA bundle.
/// Used directly only where a client needs other timeouts (the OpenCTI stream); everything else
/// calls [`http_client`], which also warns when verification is off.
pub fn client_builder(tls: &TlsSettings<'_>) -> Result<reqwest::ClientBuilder, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("iocsync/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!tls.verify);
    if let Some(path) = tls.ca {
        for cert in load_ca_bundle(path, tls.ca_key)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Builds a configured client, mapping a builder failure: with a CA bundle set, the bundle is
/// the likely culprit (a PEM block whose content is not a certificate is only caught here).
pub fn build_client(
    builder: reqwest::ClientBuilder,
    tls: &TlsSettings<'_>,
) -> Result<reqwest::Client, ClientError> {
    builder.build().map_err(|e| {
        let message = describe_transport_error(&e);
        match tls.ca {
            Some(path) => ClientError::CaInvalid {
                key: tls.ca_key,
                path: path.to_path_buf(),
                message,
            },
            None => ClientError::Build {
                key: tls.verify_key,
                message,
            },
        }
    })
}

/// Builds the HTTP client for one remote. TLS verification is on unless the user turned it off;
/// when off, a warning names the key (once per client, i.e. at start).
pub fn http_client(
    tls: &TlsSettings<'_>,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let builder = client_builder(tls)?
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout);
    let client = build_client(builder, tls)?;
    if !tls.verify {
        warn_unverified(tls);
    }
    Ok(client)
}

/// The warning logged when a remote's certificate is not checked.
fn warn_unverified(tls: &TlsSettings<'_>) {
    let env = crate::config::env_name(tls.verify_key).unwrap_or_else(|| tls.verify_key.into());
    tracing::warn!(
        remote = tls.remote,
        "TLS verification is off for {} ({env}=false): neither its certificate nor its host \
         name is checked, so anyone on the path can read the credential",
        tls.remote
    );
}
