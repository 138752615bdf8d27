//! Remote text made fit for logs, `check` and dead letters: registered credentials and URL
//! credentials scrubbed out, bodies trimmed and capped, transport errors described without URLs.

/// Longest remote text (error body, error message) carried into logs, `check` and dead letters.
pub const MAX_REMOTE_TEXT: usize = 2048;

/// Secrets shorter than this are not scrubbed: replacing every `abc` in a text would garble it
/// while hiding nothing a real token would need hiding.
const MIN_SECRET_LEN: usize = 4;

/// The credentials of the remotes this process talks to, registered when their clients are built.
/// Process-wide because remote text travels far (errors → logs, `check`, dead letters) and a server
/// may echo any remote's credential, not only its own.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Registers a credential to remove from remote text (see [`scrub`]).
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a token is removed whole before a shorter secret inside it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Removes every registered credential and every URL credential (`scheme://user:pass@` →
/// `scheme://***@`) from text that came from a remote.
pub fn scrub(text: &str) -> String {
    let mut out = scrub_url_credentials(text);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// `scheme://user:pass@host` → `scheme://***@host`, for every URL in the text.
fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c))
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut with `…`.
fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Remote text made fit for a log line, `check` or a dead letter: scrubbed (see [`scrub`]),
/// trimmed and capped at [`MAX_REMOTE_TEXT`].
pub fn remote_text(text: &str) -> String {
    cap(scrub(text.trim()).trim(), MAX_REMOTE_TEXT)
}

/// Shortens a response body for an error message (bodies can be whole HTML pages); scrubbed.
pub fn trim_body(body: &str) -> String {
    const MAX: usize = 300;
    cap(&remote_text(body), MAX)
}

/// A non-2xx body as text for parsing the remote's error entries: scrubbed whole (not capped, so
/// a long list of item errors still parses), so everything derived from it is free of secrets.
pub fn error_body(bytes: &[u8]) -> String {
    scrub(&String::from_utf8_lossy(bytes))
}

/// Describes a reqwest error without the URL's query (which could carry a secret) for logs.
pub fn describe_transport_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    let mut msg = remote_text(&msg);
    // rustls' wording; the fix is rarely the URL the `check` hint points at.
    if msg.contains("invalid peer certificate") {
        msg.push_str(" (TLS: the server's certificate is not trusted; a private CA goes in the remote's `*_SSL_CA` setting)");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_registered_secrets_and_url_credentials() {
        register_secret("unit-secret-4f2a");
        register_secret("abc"); // too short to scrub
        let text = "Authorization: Bearer unit-secret-4f2a; see https://bob:pw%40x@host.example/p \
                    and http://plain.example/a@b and ftp://u@h abc";
        let clean = scrub(text);
        assert_eq!(
            clean,
            "Authorization: Bearer ***; see https://***@host.example/p \
                    and http://plain.example/a@b and ftp://***@h abc"
        );
    }

    #[test]
    fn remote_text_is_capped() {
        let long = "x".repeat(3 * MAX_REMOTE_TEXT);
        let t = remote_text(&long);
        assert!(t.len() <= MAX_REMOTE_TEXT + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }

    #[test]
    fn trims_long_bodies_on_char_boundaries() {
        let long = "é".repeat(400);
        let t = trim_body(&long);
        assert!(t.len() <= 304);
        assert!(t.ends_with('…'));
    }
}
