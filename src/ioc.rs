//! The typed IOC: its kind, and the normalisation and validation rules of each kind.

use crate::skip::SkipReason;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The kinds of IOC iocsync pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IocKind {
    /// A SHA-256 file hash (64 hex digits, lower-cased).
    Sha256,
    /// A SHA-1 file hash (40 hex digits).
    Sha1,
    /// An MD5 file hash (32 hex digits).
    Md5,
    /// A URL.
    Url,
    /// A domain name (lower case, IDNA as punycode, no trailing dot).
    Domain,
    /// `hostname:value`; sinks treat it as a domain (SentinelOne `DNS`, Zeek `Intel::DOMAIN`).
    Hostname,
    /// An IPv4 address (a `/32` is one address; wider ranges are skipped).
    Ipv4,
    /// An IPv6 address (canonical text; `/128` is one address).
    Ipv6,
}

impl IocKind {
    /// Every kind, for metrics pre-registration and docs.
    pub const ALL: [IocKind; 8] = [
        IocKind::Sha256,
        IocKind::Sha1,
        IocKind::Md5,
        IocKind::Url,
        IocKind::Domain,
        IocKind::Hostname,
        IocKind::Ipv4,
        IocKind::Ipv6,
    ];

    /// The lower-case name used in JSON output, metrics and state.
    pub fn as_str(self) -> &'static str {
        match self {
            IocKind::Sha256 => "sha256",
            IocKind::Sha1 => "sha1",
            IocKind::Md5 => "md5",
            IocKind::Url => "url",
            IocKind::Domain => "domain",
            IocKind::Hostname => "hostname",
            IocKind::Ipv4 => "ipv4",
            IocKind::Ipv6 => "ipv6",
        }
    }

    /// Parses `as_str()` back.
    pub fn from_name(name: &str) -> Option<IocKind> {
        IocKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind under which a sink stores the value: a hostname and a domain of the same value are one
    /// entry in every sink, so reference counting and de-duplication use this.
    pub fn sink_kind(self) -> IocKind {
        match self {
            IocKind::Hostname => IocKind::Domain,
            other => other,
        }
    }
}

impl std::fmt::Display for IocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalised, validated indicator value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ioc {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: IocKind,
    /// The normalised value (see [`Ioc::new`]).
    pub value: String,
}

/// The hashes of the empty file, lower-case: they would match every empty file.
const EMPTY_FILE_HASHES: [(IocKind, &str); 3] = [
    (IocKind::Md5, "d41d8cd98f00b204e9800998ecf8427e"),
    (IocKind::Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    (
        IocKind::Sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
];

/// Whether `value` is the hash of the empty file for the hash kind `kind` (any letter case).
pub fn is_empty_file_hash(kind: IocKind, value: &str) -> bool {
    EMPTY_FILE_HASHES
        .iter()
        .any(|(k, h)| *k == kind && h.eq_ignore_ascii_case(value))
}

impl Ioc {
    /// Normalises and validates `raw` as a value of `kind` (surrounding whitespace is ignored):
    ///
    /// - hashes: hex of the kind's length, lower-cased; the empty-file hash is
    ///   [`SkipReason::EmptyFileHash`];
    /// - IPv4/IPv6: parsed and printed canonically; a `/32` (`/128`) suffix is the address, a
    ///   shorter prefix is [`SkipReason::CidrRange`];
    /// - domain/hostname: lower-cased, one trailing dot removed, Unicode converted to punycode
    ///   (IDNA), labels of 1–63 characters from `[a-z0-9_-]`, at most 253 characters, and not an
    ///   IP address;
    /// - URL: kept as given (trimmed), but not empty and without whitespace or control characters.
    ///
    /// Anything else is [`SkipReason::InvalidValue`].
    pub fn new(kind: IocKind, raw: &str) -> Result<Ioc, SkipReason> {
        normalise(kind, raw).map(|value| Ioc {
            kind,
            value: value.into_owned(),
        })
    }

    /// Guesses the kind of a bare value (the CLI's `s1 add`), then normalises it with
    /// [`Ioc::new`]: 32/40/64 hex digits are MD5/SHA-1/SHA-256, then an IPv4 or IPv6 address
    /// (or CIDR), then anything with `scheme://` is a URL, then a dotted name is a domain.
    /// Anything else is [`SkipReason::InvalidValue`].
    pub fn detect(raw: &str) -> Result<Ioc, SkipReason> {
        let value = raw.trim();
        if value.bytes().all(|b| b.is_ascii_hexdigit()) {
            let kind = match value.len() {
                32 => IocKind::Md5,
                40 => IocKind::Sha1,
                64 => IocKind::Sha256,
                _ => return Err(SkipReason::InvalidValue),
            };
            return Ioc::new(kind, value);
        }
        let address = value.split_once('/').map_or(value, |(addr, _)| addr);
        if address.parse::<std::net::Ipv4Addr>().is_ok() {
            return Ioc::new(IocKind::Ipv4, value);
        }
        if address.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ioc::new(IocKind::Ipv6, value);
        }
        if value.contains("://") {
            return Ioc::new(IocKind::Url, value);
        }
        if value.trim_end_matches('.').contains('.') {
            return Ioc::new(IocKind::Domain, value);
        }
        Err(SkipReason::InvalidValue)
    }
}

/// The value [`Ioc::new`] makes of `raw` as a `kind`, borrowed from `raw` when `raw` already is
/// in normal form (lower-case hashes and names, canonical IPv4, URLs: nearly every input), so a
/// caller that only writes the value out allocates nothing.
pub(crate) fn normalise(kind: IocKind, raw: &str) -> Result<Cow<'_, str>, SkipReason> {
    let raw = trim(raw);
    match kind {
        IocKind::Md5 => normalise_hash(kind, raw, 32),
        IocKind::Sha1 => normalise_hash(kind, raw, 40),
        IocKind::Sha256 => normalise_hash(kind, raw, 64),
        IocKind::Ipv4 => normalise_ip::<std::net::Ipv4Addr>(raw, 32),
        IocKind::Ipv6 => normalise_ip::<std::net::Ipv6Addr>(raw, 128),
        IocKind::Domain | IocKind::Hostname => normalise_domain(raw),
        IocKind::Url => normalise_url(raw),
    }
}

/// `str::trim`, without walking the Unicode whitespace tables when both ends are visible ASCII
/// (nearly always): such a byte can be neither whitespace nor part of a multi-byte character.
fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// Hex of exactly `len` digits, lower-cased; the empty-file hash is its own skip reason.
fn normalise_hash(kind: IocKind, raw: &str, len: usize) -> Result<Cow<'_, str>, SkipReason> {
    let (hex, upper) = hex_digits(raw);
    if raw.len() != len || !hex {
        return Err(SkipReason::InvalidValue);
    }
    if is_empty_file_hash(kind, raw) {
        return Err(SkipReason::EmptyFileHash);
    }
    Ok(if upper {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    })
}

/// Whether every byte of `s` is a hex digit, and whether any is an upper-case letter. One pass
/// without early exit, which the compiler vectorises: every hash value goes through this twice
/// (the parser's hash-form check, then normalisation), and `all` + `any` cost a tenth of a
/// pattern's time.
pub(crate) fn hex_digits(s: &str) -> (bool, bool) {
    let (not_hex, upper) = s.bytes().fold((0u8, 0u8), |(not_hex, upper), b| {
        // `| 0x20` lower-cases exactly the letters `A`–`F` into `a`–`f` among bytes that can
        // become `a`–`f`; digits keep their value.
        let letter = (b | 0x20).wrapping_sub(b'a') < 6;
        let hex = b.is_ascii_digit() | letter;
        (
            not_hex | u8::from(!hex),
            upper | u8::from(letter & (b & 0x20 == 0)),
        )
    });
    (not_hex == 0, upper != 0)
}

/// An address, optionally with a prefix length: the full length is the address itself, a shorter
/// one a range.
fn normalise_ip<A>(raw: &str, full_prefix: u8) -> Result<Cow<'_, str>, SkipReason>
where
    A: std::str::FromStr + std::fmt::Display,
{
    let (address, prefix) = match raw.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (raw, None),
    };
    let address_text = address;
    let address: A = address.parse().map_err(|_| SkipReason::InvalidValue)?;
    if let Some(prefix) = prefix {
        // Digits only: `u8::from_str` would also take `+32`.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SkipReason::InvalidValue);
        }
        match prefix.parse::<u8>() {
            Ok(p) if p == full_prefix => {}
            Ok(p) if p < full_prefix => return Err(SkipReason::CidrRange),
            _ => return Err(SkipReason::InvalidValue),
        }
    }
    if full_prefix == 32 {
        // std's IPv4 parser accepts only the canonical dotted quad (no leading zeros, signs or
        // spaces), so the text already is its display form: skip formatting it again.
        return Ok(Cow::Borrowed(address_text));
    }
    Ok(Cow::Owned(address.to_string()))
}

/// Lower-case ASCII domain without trailing dot; Unicode goes through IDNA (punycode).
fn normalise_domain(raw: &str) -> Result<Cow<'_, str>, SkipReason> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_ascii() {
        let has_upper = check_ascii_name(name)?;
        return Ok(if has_upper {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        });
    }
    // ASCII bytes other than these would be percent-decoded or rejected by the URL host parser
    // in surprising ways; refuse them up front.
    let ascii_ok = name
        .bytes()
        .all(|b| !b.is_ascii() || b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ascii_ok {
        return Err(SkipReason::InvalidValue);
    }
    let ascii = match url::Host::parse(name) {
        Ok(url::Host::Domain(domain)) => domain,
        _ => return Err(SkipReason::InvalidValue),
    };
    // What IDNA made of it must itself be a lower-case name.
    match check_ascii_name(&ascii) {
        Ok(false) => Ok(Cow::Owned(ascii)),
        _ => Err(SkipReason::InvalidValue),
    }
}

/// Checks an ASCII name in one pass: not empty, at most 253 bytes, labels of 1–63 bytes from
/// `[A-Za-z0-9_-]`, and a last label that is not all digits (then it is an IP address or
/// nonsense, never a domain). Returns whether it has upper-case letters.
fn check_ascii_name(name: &str) -> Result<bool, SkipReason> {
    if name.is_empty() || name.len() > 253 {
        return Err(SkipReason::InvalidValue);
    }
    let label_ok = |len: usize| (1..=63).contains(&len);
    let (mut has_upper, mut label_len, mut label_numeric) = (false, 0, true);
    for b in name.bytes() {
        match b {
            b'.' => {
                if !label_ok(label_len) {
                    return Err(SkipReason::InvalidValue);
                }
                (label_len, label_numeric) = (0, true);
                continue;
            }
            b'0'..=b'9' => {}
            b'a'..=b'z' | b'-' | b'_' => label_numeric = false,
            b'A'..=b'Z' => (has_upper, label_numeric) = (true, false),
            _ => return Err(SkipReason::InvalidValue),
        }
        label_len += 1;
    }
    if !label_ok(label_len) || label_numeric {
        return Err(SkipReason::InvalidValue);
    }
    Ok(has_upper)
}

/// A URL is pushed as given; it only has to be one token.
fn normalise_url(raw: &str) -> Result<Cow<'_, str>, SkipReason> {
    // Bytes are enough unless there is non-ASCII text, whose whitespace and controls need chars.
    let suspect = raw.bytes().any(|b| b <= b' ' || b >= 0x7f);
    if raw.is_empty() || (suspect && raw.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(SkipReason::InvalidValue);
    }
    Ok(Cow::Borrowed(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(kind: IocKind, raw: &str) -> String {
        Ioc::new(kind, raw).expect("valid").value
    }

    fn err(kind: IocKind, raw: &str) -> SkipReason {
        Ioc::new(kind, raw).expect_err("invalid")
    }

    #[test]
    fn hashes_are_lower_cased_and_length_checked() {
        let md5 = "0123456789ABCDEF0123456789abcdef";
        assert_eq!(ok(IocKind::Md5, md5), md5.to_ascii_lowercase());
        assert_eq!(ok(IocKind::Sha1, &"a".repeat(40)), "a".repeat(40));
        assert_eq!(
            ok(IocKind::Sha256, &format!(" {} ", "F".repeat(64))),
            "f".repeat(64)
        );
        assert_eq!(err(IocKind::Md5, &"a".repeat(31)), SkipReason::InvalidValue);
        assert_eq!(
            err(IocKind::Sha1, &"a".repeat(32)),
            SkipReason::InvalidValue
        );
        assert_eq!(
            err(IocKind::Sha256, &"g".repeat(64)),
            SkipReason::InvalidValue
        );
    }

    #[test]
    fn empty_file_hashes_are_skipped() {
        for (kind, hash) in EMPTY_FILE_HASHES {
            assert_eq!(err(kind, hash), SkipReason::EmptyFileHash);
            assert_eq!(
                err(kind, &hash.to_ascii_uppercase()),
                SkipReason::EmptyFileHash
            );
            assert!(is_empty_file_hash(kind, hash));
        }
        assert!(!is_empty_file_hash(IocKind::Sha1, EMPTY_FILE_HASHES[0].1));
    }

    #[test]
    fn addresses() {
        assert_eq!(ok(IocKind::Ipv4, "198.51.100.7"), "198.51.100.7");
        assert_eq!(ok(IocKind::Ipv4, "198.51.100.7/32"), "198.51.100.7");
        assert_eq!(err(IocKind::Ipv4, "198.51.100.0/24"), SkipReason::CidrRange);
        assert_eq!(
            err(IocKind::Ipv4, "198.51.100.0/33"),
            SkipReason::InvalidValue
        );
        assert_eq!(
            err(IocKind::Ipv4, "198.51.100.0/+32"),
            SkipReason::InvalidValue
        );
        assert_eq!(
            err(IocKind::Ipv4, "198.51.100.256"),
            SkipReason::InvalidValue
        );
        assert_eq!(err(IocKind::Ipv4, "2001:db8::1"), SkipReason::InvalidValue);
        assert_eq!(ok(IocKind::Ipv6, "2001:DB8:0:0::1"), "2001:db8::1");
        assert_eq!(ok(IocKind::Ipv6, "2001:db8::1/128"), "2001:db8::1");
        assert_eq!(err(IocKind::Ipv6, "2001:db8::/32"), SkipReason::CidrRange);
        assert_eq!(err(IocKind::Ipv6, "1.2.3.4"), SkipReason::InvalidValue);
    }

    #[test]
    fn domains() {
        assert_eq!(ok(IocKind::Domain, "Example.COM."), "example.com");
        assert_eq!(
            ok(IocKind::Hostname, "_dmarc.example.com"),
            "_dmarc.example.com"
        );
        assert_eq!(
            ok(IocKind::Domain, "bücher.example"),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "exa mple.com",
            "ex%61mple.com",
            "a/b.com",
            "1.2.3.4",
        ] {
            assert_eq!(
                err(IocKind::Domain, bad),
                SkipReason::InvalidValue,
                "{bad:?}"
            );
        }
        assert_eq!(
            err(IocKind::Domain, &format!("{}.com", "a".repeat(64))),
            SkipReason::InvalidValue
        );
    }

    #[test]
    fn urls_are_trimmed_only() {
        assert_eq!(
            ok(IocKind::Url, "  http://EXAMPLE.com/a?b=c \n"),
            "http://EXAMPLE.com/a?b=c"
        );
        assert_eq!(err(IocKind::Url, "   "), SkipReason::InvalidValue);
        assert_eq!(err(IocKind::Url, "http://a b"), SkipReason::InvalidValue);
    }

    #[test]
    fn detect_guesses_the_kind() {
        let kind = |raw: &str| Ioc::detect(raw).map(|i| i.kind);
        assert_eq!(kind(&"a".repeat(32)), Ok(IocKind::Md5));
        assert_eq!(kind(&"a".repeat(40)), Ok(IocKind::Sha1));
        assert_eq!(kind(&"a".repeat(64)), Ok(IocKind::Sha256));
        assert_eq!(kind(&"a".repeat(33)), Err(SkipReason::InvalidValue));
        assert_eq!(kind("10.0.0.1"), Ok(IocKind::Ipv4));
        assert_eq!(kind("10.0.0.0/8"), Err(SkipReason::CidrRange));
        assert_eq!(kind("::1"), Ok(IocKind::Ipv6));
        assert_eq!(kind("https://example.com/x"), Ok(IocKind::Url));
        assert_eq!(kind("Evil.Example.com"), Ok(IocKind::Domain));
        assert_eq!(kind("localhost"), Err(SkipReason::InvalidValue));
        assert_eq!(kind("not a value"), Err(SkipReason::InvalidValue));
        assert_eq!(
            Ioc::detect(EMPTY_FILE_HASHES[2].1),
            Err(SkipReason::EmptyFileHash)
        );
    }

    #[test]
    fn hex_digits_classifies_every_byte() {
        for b in 0..=255u8 {
            let text = [b'a', b, b'0'];
            if let Ok(s) = std::str::from_utf8(&text) {
                let expected = (
                    b.is_ascii_hexdigit(),
                    b.is_ascii_hexdigit() && b.is_ascii_uppercase(),
                );
                assert_eq!(hex_digits(s), expected, "byte {b:#x}");
            }
        }
        assert_eq!(hex_digits("é"), (false, false));
        assert_eq!(hex_digits(""), (true, false));
    }

    #[test]
    fn canonical_values_are_borrowed_not_copied() {
        let borrowed = |kind, raw: &str| matches!(normalise(kind, raw), Ok(Cow::Borrowed(_)));
        assert!(borrowed(IocKind::Sha256, &"ab".repeat(32)));
        assert!(!borrowed(IocKind::Sha256, &"AB".repeat(32)));
        assert!(borrowed(IocKind::Ipv4, "198.51.100.7/32"));
        assert!(borrowed(IocKind::Domain, "a.example."));
        assert!(!borrowed(IocKind::Domain, "A.example"));
        assert!(borrowed(IocKind::Url, " http://x/y "));
    }

    /// The domain rules as first written (split into labels after lower-casing), which the
    /// one-pass check must agree with.
    fn domain_by_labels(raw: &str) -> Option<String> {
        let raw = raw.trim();
        let name = raw.strip_suffix('.').unwrap_or(raw);
        let ascii_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if name.is_empty() || !ascii_ok {
            return None;
        }
        let ascii = name.to_ascii_lowercase();
        let labels_ok = ascii.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
        let numeric_tld = ascii
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
        (labels_ok && ascii.len() <= 253 && !numeric_tld).then_some(ascii)
    }

    proptest! {
        #[test]
        fn the_one_pass_domain_check_agrees_with_the_label_rules(
            name in prop_oneof![
                "[a-zA-Z0-9._/ %-]{0,12}",
                "([a-zA-Z0-9_-]{0,70}\\.){0,5}[a-zA-Z0-9-]{0,4}\\.?",
                "([a-z]{60,63}\\.){3,4}[a-z0-9]{1,9}",
            ]
        ) {
            let ours = Ioc::new(IocKind::Domain, &name).ok().map(|ioc| ioc.value);
            prop_assert_eq!(ours, domain_by_labels(&name));
        }
    }

    proptest! {
        /// Keeping the parsed text is only right if every text std accepts is canonical.
        #[test]
        fn an_accepted_ipv4_text_is_its_display_form(
            octets in proptest::collection::vec(0u16..300, 4),
            zeros in proptest::collection::vec(0usize..3, 4),
        ) {
            let text: Vec<String> = octets
                .iter()
                .zip(&zeros)
                .map(|(o, z)| format!("{}{o}", "0".repeat(*z)))
                .collect();
            let text = text.join(".");
            if let Ok(ioc) = Ioc::new(IocKind::Ipv4, &text) {
                let parsed: std::net::Ipv4Addr = ioc.value.parse().expect("valid");
                prop_assert_eq!(ioc.value, parsed.to_string());
            }
        }
    }
}
