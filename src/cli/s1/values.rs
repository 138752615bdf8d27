//! Turns the values an analyst types into S1 IOCs: the type from `--type` or our classifier
//! ([`Ioc::detect`]), normalised and validated by [`Ioc::new`], with a clear message for values that
//! are invalid or whose type is a guess we should not make silently.

use crate::ioc::{Ioc, IocKind};
use crate::sinks::sentinelone::S1Type;
use crate::skip::SkipReason;

/// File extensions that are also (or look like) top-level domains: `invoice.zip` may be a file
/// name pasted by mistake, so auto-detection refuses to call it a domain without `--type DNS`.
const FILE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "sys", "bat", "cmd", "ps1", "vbs", "js", "jse", "hta", "scr", "msi", "lnk",
    "jar", "zip", "rar", "7z", "iso", "img", "doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt",
    "pptx", "pdf", "rtf", "txt", "bin", "dat", "tmp", "mov", "sh", "py",
];

/// Parses a `--type` argument: S1's names (`DNS`, `IPV4`, `IPV6`, `MD5`, `SHA1`, `SHA256`, `URL`),
/// any case, plus `domain` and `hostname` for `DNS`.
pub fn parse_type(raw: &str) -> Result<S1Type, String> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("domain") || t.eq_ignore_ascii_case("hostname") {
        return Ok(S1Type::Dns);
    }
    S1Type::from_name(t).ok_or_else(|| {
        format!("unknown type `{raw}` (expected DNS, IPV4, IPV6, MD5, SHA1, SHA256 or URL)")
    })
}

/// Our IOC kind that validates values of an S1 type.
pub fn kind_for(t: S1Type) -> IocKind {
    match t {
        S1Type::Dns => IocKind::Domain,
        S1Type::Ipv4 => IocKind::Ipv4,
        S1Type::Ipv6 => IocKind::Ipv6,
        S1Type::Md5 => IocKind::Md5,
        S1Type::Sha1 => IocKind::Sha1,
        S1Type::Sha256 => IocKind::Sha256,
        S1Type::Url => IocKind::Url,
    }
}

fn reason_text(reason: SkipReason, t: Option<S1Type>) -> String {
    match (reason, t) {
        (SkipReason::CidrRange, _) => {
            "is a network range; SentinelOne takes single addresses".into()
        }
        (SkipReason::EmptyFileHash, _) => {
            "is the hash of the empty file: it would match every empty file".into()
        }
        (_, Some(t)) => format!("is not a valid {t} value"),
        (_, None) => "is not a value iocsync recognises (a hash of 32, 40 or 64 hex digits, an \
                      IP address, a URL with scheme://, or a domain); give --type if it is one"
            .into(),
    }
}

/// A defanged value (`evil[.]com`, `hxxp://…`) and its refanged form, to suggest.
fn refanged(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    let defanged = ["[.]", "(.)", "{.}", "[dot]", "[:]", "hxxp", "[://]"]
        .iter()
        .any(|m| lower.contains(m));
    defanged.then(|| {
        let mut s = raw.to_string();
        for (from, to) in [
            ("[.]", "."),
            ("(.)", "."),
            ("{.}", "."),
            ("[dot]", "."),
            ("[:]", ":"),
            ("[://]", "://"),
            ("hxxp", "http"),
            ("HXXP", "HTTP"),
        ] {
            s = s.replace(from, to);
        }
        s
    })
}

/// The S1 type and normalised value of one typed value, or the message saying why not.
pub fn detect_type(raw: &str, forced: Option<S1Type>) -> Result<(S1Type, String), String> {
    let value = raw.trim();
    let quoted = format!("`{value}`");
    if value.is_empty() {
        return Err("an empty value".into());
    }
    if let Some(fixed) = refanged(value) {
        return Err(format!(
            "{quoted} looks defanged: write it as `{fixed}` if that is what you mean"
        ));
    }
    if let Some(t) = forced {
        return Ioc::new(kind_for(t), value)
            .map(|ioc| (t, ioc.value))
            .map_err(|r| format!("{quoted} {}", reason_text(r, Some(t))));
    }
    let numeric = value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if numeric && value.contains('.') && value.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!(
            "{quoted} looks like an IPv4 address but is not a valid one"
        ));
    }
    let ioc = Ioc::detect(value).map_err(|r| format!("{quoted} {}", reason_text(r, None)))?;
    if ioc.kind == IocKind::Domain {
        let tld = ioc.value.rsplit('.').next().unwrap_or("");
        if FILE_EXTENSIONS.contains(&tld) {
            return Err(format!(
                "{quoted} is ambiguous: it could be a file name or a domain; give --type DNS to \
                 add it as a domain"
            ));
        }
    }
    Ok((S1Type::from_kind(ioc.kind), ioc.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_normalises() {
        let sha = "A".repeat(64);
        assert_eq!(
            detect_type(&sha, None),
            Ok((S1Type::Sha256, "a".repeat(64)))
        );
        assert_eq!(
            detect_type(" Evil.Example. ", None),
            Ok((S1Type::Dns, "evil.example".into()))
        );
        assert_eq!(
            detect_type("10.0.0.1/32", None),
            Ok((S1Type::Ipv4, "10.0.0.1".into()))
        );
        assert_eq!(
            detect_type("https://x.example/a?b", None),
            Ok((S1Type::Url, "https://x.example/a?b".into()))
        );
        assert_eq!(
            detect_type("2001:DB8::1", None),
            Ok((S1Type::Ipv6, "2001:db8::1".into()))
        );
    }

    #[test]
    fn refuses_invalid_and_ambiguous() {
        for (raw, words) in [
            ("invoice.zip", "file name or a domain"),
            ("1.2.3", "looks like an IPv4"),
            ("10.0.0.256", "looks like an IPv4"),
            ("10.0.0.0/8", "network range"),
            ("d41d8cd98f00b204e9800998ecf8427e", "empty file"),
            ("evil[.]com", "`evil.com`"),
            ("hxxp://evil.example/x", "`http://evil.example/x`"),
            ("justaword", "give --type"),
            ("abc", "not a value"),
            ("  ", "empty"),
        ] {
            let e = detect_type(raw, None).expect_err(raw);
            assert!(e.contains(words), "{raw}: {e}");
        }
        assert_eq!(
            detect_type("invoice.zip", Some(S1Type::Dns)),
            Ok((S1Type::Dns, "invoice.zip".into()))
        );
        let e = detect_type(&"a".repeat(40), Some(S1Type::Md5)).expect_err("md5 of 40");
        assert!(e.contains("not a valid MD5"), "{e}");
    }

    #[test]
    fn parses_types() {
        assert_eq!(parse_type("sha256"), Ok(S1Type::Sha256));
        assert_eq!(parse_type("domain"), Ok(S1Type::Dns));
        assert!(parse_type("email").is_err());
    }
}
