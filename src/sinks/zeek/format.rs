//! The intel file's text: the `#fields` header, one row per item, Zeek's `\xHH` escaping, and how
//! each IOC kind is written as a Zeek indicator.

use crate::ioc::IocKind;
use std::fmt::Write as _;

/// The columns, in order; tombstone mode adds `meta.remove`.
const FIELDS: [&str; 5] = [
    "indicator",
    "indicator_type",
    "meta.source",
    "meta.desc",
    "meta.url",
];

/// The `#fields` line (with its newline).
pub(crate) fn header(with_remove: bool) -> String {
    let mut line = String::from("#fields");
    for field in FIELDS {
        line.push('\t');
        line.push_str(field);
    }
    if with_remove {
        line.push_str("\tmeta.remove");
    }
    line.push('\n');
    line
}

/// The `Intel::Type` of a kind. `Intel::SUBNET` is not produced: IP IOCs are single addresses.
pub(crate) fn intel_type(kind: IocKind) -> &'static str {
    match kind {
        IocKind::Ipv4 | IocKind::Ipv6 => "Intel::ADDR",
        IocKind::Domain | IocKind::Hostname => "Intel::DOMAIN",
        IocKind::Url => "Intel::URL",
        IocKind::Md5 | IocKind::Sha1 | IocKind::Sha256 => "Intel::FILE_HASH",
    }
}

/// A URL as Zeek matches it: `scheme://[user@]host[:port]/path?query#frag` → `host[:port]/path?query`.
///
/// Zeek's `HTTP::build_url` is the Host header plus the request URI, with the port only when it is not
/// the default: so the scheme, credentials and fragment (never sent on the wire) go, the default port
/// (80 for http, 443 for https) goes, any other port stays, and an empty path becomes `/` because a
/// request URI always starts with one.
pub(crate) fn zeek_url(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), value),
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    // The port follows the last `:` unless that colon is inside an IPv6 literal `[…]`.
    let (host, port) = match host_port.rfind(':') {
        Some(colon) if !host_port[colon..].contains(']') => {
            (&host_port[..colon], Some(&host_port[colon + 1..]))
        }
        _ => (host_port, None),
    };
    let default_port = match scheme.as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(host);
    match port {
        Some(p) if Some(p) == default_port || p.is_empty() => {}
        Some(p) => {
            out.push(':');
            out.push_str(p);
        }
        None => {}
    }
    if !tail.starts_with('/') {
        out.push('/');
    }
    out.push_str(tail);
    out
}

/// Appends a value escaped for Zeek's ASCII reader: `-` stands for an empty value, and tab, newline,
/// backslash and other control characters become `\xHH`. A value that is literally `-` or
/// `(empty)` is escaped too, so the reader does not take it for the unset or empty marker. Writes
/// straight into `out`: the file can hold 100k+ rows.
fn push_field(out: &mut String, value: &str) {
    match value {
        "" => return out.push('-'),
        "-" => return out.push_str("\\x2d"),
        "(empty)" => return out.push_str("\\x28empty)"),
        _ => {}
    }
    if !value.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return out.push_str(value);
    }
    for c in value.chars() {
        if c == '\\' || c.is_ascii_control() {
            // Infallible: writing to a String cannot fail.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// Reads a field back as [`push_field`] wrote it: `-` and `(empty)` are empty, `\xHH` is the
/// byte HH (a malformed escape is kept as it is).
pub(crate) fn parse_field(raw: &str) -> String {
    if raw == "-" || raw == "(empty)" {
        return String::new();
    }
    if !raw.contains("\\x") {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x'))
            .then(|| raw.get(i + 2..i + 4))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One row of the file.
pub(crate) struct Row<'a> {
    /// The IOC kind (as stored in the sink).
    pub kind: IocKind,
    /// The IOC value.
    pub value: &'a str,
    /// `meta.source`.
    pub source: &'a str,
    /// `meta.desc`.
    pub desc: &'a str,
    /// `meta.url`, empty for none.
    pub url: &'a str,
    /// `meta.remove`, in tombstone mode.
    pub remove: Option<bool>,
}

/// Appends one row (with its newline) to `out`.
pub(crate) fn push_row(out: &mut String, row: &Row<'_>) {
    match row.kind {
        IocKind::Url => push_field(out, &zeek_url(row.value)),
        _ => push_field(out, row.value),
    }
    out.push('\t');
    out.push_str(intel_type(row.kind));
    for cell in [row.source, row.desc, row.url] {
        out.push('\t');
        push_field(out, cell);
    }
    if let Some(remove) = row.remove {
        out.push_str(if remove { "\tT" } else { "\tF" });
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_uses_single_tabs() {
        assert_eq!(
            header(false),
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n"
        );
        assert_eq!(
            header(true),
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.remove\n"
        );
    }

    #[test]
    fn every_kind_has_its_intel_type() {
        let expected = [
            (IocKind::Sha256, "Intel::FILE_HASH"),
            (IocKind::Sha1, "Intel::FILE_HASH"),
            (IocKind::Md5, "Intel::FILE_HASH"),
            (IocKind::Url, "Intel::URL"),
            (IocKind::Domain, "Intel::DOMAIN"),
            (IocKind::Hostname, "Intel::DOMAIN"),
            (IocKind::Ipv4, "Intel::ADDR"),
            (IocKind::Ipv6, "Intel::ADDR"),
        ];
        for (kind, ty) in expected {
            assert_eq!(intel_type(kind), ty, "{kind}");
        }
    }

    #[test]
    fn urls_lose_scheme_default_port_credentials_and_fragment() {
        let cases = [
            (
                "http://evil.example/a/b?x=1&y=2",
                "evil.example/a/b?x=1&y=2",
            ),
            ("http://evil.example:80/a", "evil.example/a"),
            ("http://evil.example:8080/a", "evil.example:8080/a"),
            ("https://evil.example:443/a", "evil.example/a"),
            (
                "https://evil.example:8443/login?next=/x",
                "evil.example:8443/login?next=/x",
            ),
            ("https://evil.example:80/a", "evil.example:80/a"),
            ("HTTP://evil.example", "evil.example/"),
            ("http://evil.example?q", "evil.example/?q"),
            ("http://user:pw@evil.example/a#frag", "evil.example/a"),
            ("http://[2001:db8::1]/a", "[2001:db8::1]/a"),
            ("http://[2001:db8::1]:8080/a", "[2001:db8::1]:8080/a"),
            ("ftp://files.example:21/x", "files.example:21/x"),
            ("evil.example/no-scheme", "evil.example/no-scheme"),
        ];
        for (url, want) in cases {
            assert_eq!(zeek_url(url), want, "{url}");
        }
    }

    fn field(value: &str) -> String {
        let mut out = String::new();
        push_field(&mut out, value);
        out
    }

    #[test]
    fn fields_escape_separators_and_markers() {
        assert_eq!(field(""), "-");
        assert_eq!(field("-"), "\\x2d");
        assert_eq!(field("(empty)"), "\\x28empty)");
        assert_eq!(field("a\tb\nc\\d\re"), "a\\x09b\\x0ac\\x5cd\\x0de");
        assert_eq!(field("Emotet C2 – é"), "Emotet C2 – é");
        for value in [
            "",
            "-",
            "(empty)",
            "a\tb\nc\\d\re",
            "Emotet C2 – é",
            "\\xzz",
        ] {
            assert_eq!(parse_field(&field(value)), value, "{value:?}");
        }
    }

    #[test]
    fn rows_follow_the_header() {
        let mut out = String::new();
        push_row(
            &mut out,
            &Row {
                kind: IocKind::Url,
                value: "https://evil.example:8443/p?q=1",
                source: "iocsync",
                desc: "Phish\tkit",
                url: "",
                remove: Some(false),
            },
        );
        push_row(
            &mut out,
            &Row {
                kind: IocKind::Hostname,
                value: "c2.example",
                source: "iocsync",
                desc: "indicator--1",
                url: "https://cti/1",
                remove: None,
            },
        );
        assert_eq!(
            out,
            "evil.example:8443/p?q=1\tIntel::URL\tiocsync\tPhish\\x09kit\t-\tF\n\
             c2.example\tIntel::DOMAIN\tiocsync\tindicator--1\thttps://cti/1\n"
        );
    }
}
