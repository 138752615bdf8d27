//! Generates the deterministic test fixtures under `fixtures/`: an OpenCTI 6.x live-stream capture
//! (SSE text and NDJSON), a small capture for fast tests, a STIX 2.1 bundle, and for each the
//! expected final live IOC set and a summary of what was generated.
//!
//! Run from anywhere: `cargo run --example gen_fixtures`. The output depends only on the fixed seeds
//! below (the PRNG is our own SplitMix64, so no dependency update can change it): re-running it
//! rewrites identical files.
//!
//! The generator never parses a pattern. It builds each one from a template and records at the same
//! time what a correct classifier must make of it (one normalised IOC, or a skip reason); the
//! expected live set is computed from that knowledge and the sequence of events. See
//! `fixtures/README.md` for the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::DateTime;
use iocsync::ioc::IocKind;
use iocsync::skip::SkipReason;

/// OpenCTI's property extension on every object: internal id, score, main_observable_type…
const EXT_OCTI: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";
/// OpenCTI's extension on observables (SCOs), holding their score.
const EXT_SCO: &str = "extension-definition--f93e2c80-4231-4f9a-af8b-95c9bd566a82";
const SEED_STREAM: u64 = 20_250_310;
const SEED_SMALL: u64 = 41;
const SEED_BUNDLE: u64 = 2_021;
/// Start of the live part of the captures: 2025-03-10T08:00:00Z.
const LIVE_START_MS: i64 = 1_741_593_600_000;
/// 2030-01-01T00:00:00Z: every `valid_until` is later, so nothing in the fixtures ever expires.
const VALID_UNTIL_MIN_MS: i64 = 1_893_456_000_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// The big capture holds at least this many events besides heartbeats.
const STREAM_TARGET_EVENTS: usize = 2_150;
/// Objects replayed by the `recover` phase at the start of the big capture.
const STREAM_INIT_OBJECTS: usize = 110;

const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
const EMPTY_SHA1: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The skip codes the summaries report, in this order (the codes of `SkipReason`).
const SUMMARY_REASONS: [SkipReason; 12] = [
    SkipReason::NotIndicator,
    SkipReason::NotStix,
    SkipReason::Invalid,
    SkipReason::Compound,
    SkipReason::Qualified,
    SkipReason::UnsupportedObject,
    SkipReason::UnsupportedOperator,
    SkipReason::EmptyFileHash,
    SkipReason::CidrRange,
    SkipReason::MalformedEvent,
    SkipReason::MissingPattern,
    SkipReason::InvalidValue,
];

// ------------------------------------------------------------------------------------------------
// PRNG

/// SplitMix64: tiny, good enough for test data, and frozen (unlike `StdRng`, whose algorithm may
/// change between `rand` releases and would silently rewrite every fixture).
struct Prng(u64);

impl Prng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` is always a non-zero constant or a non-empty length here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }

    /// A lower-case alphanumeric label starting with a letter (DGA-looking domain labels).
    fn alnum(&mut self, len: usize) -> String {
        let mut s = String::from(char::from(b'a' + self.below(26) as u8));
        for _ in 1..len {
            s.push(char::from(
                b"abcdefghijklmnopqrstuvwxyz0123456789"[self.below(36) as usize],
            ));
        }
        s
    }

    /// A UUID with the given version nibble (OpenCTI standard ids are v5, internal ids v4).
    fn uuid(&mut self, version: u8) -> String {
        let mut b = [0u8; 16];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        b[6] = (b[6] & 0x0f) | (version << 4);
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Ordered JSON

/// A JSON value that keeps key order, so objects print in the order OpenCTI's `JSON.stringify`
/// writes them (serde_json's default map sorts keys).
#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl From<&str> for J {
    fn from(s: &str) -> J {
        J::Str(s.to_string())
    }
}
impl From<String> for J {
    fn from(s: String) -> J {
        J::Str(s)
    }
}
impl From<&String> for J {
    fn from(s: &String) -> J {
        J::Str(s.clone())
    }
}
impl From<i64> for J {
    fn from(n: i64) -> J {
        J::Int(n)
    }
}
impl From<usize> for J {
    fn from(n: usize) -> J {
        J::Int(n as i64)
    }
}
impl From<bool> for J {
    fn from(b: bool) -> J {
        J::Bool(b)
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> J {
        J::Arr(v)
    }
}

macro_rules! obj {
    ($($k:expr => $v:expr),* $(,)?) => {
        J::Obj(vec![$(($k.to_string(), J::from($v))),*])
    };
}

fn strs<S: AsRef<str>>(xs: &[S]) -> J {
    J::Arr(xs.iter().map(|s| J::from(s.as_ref())).collect())
}

impl J {
    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut J> {
        match self {
            J::Obj(m) => m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(J::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Replaces the value of `key` in place, or appends the key (as JS property assignment does).
    fn set(&mut self, key: &str, value: impl Into<J>) {
        if let J::Obj(m) = self {
            let value = value.into();
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_string(), value)),
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let J::Obj(m) = self {
            m.retain(|(k, _)| k != key);
        }
    }

    fn ext(&self) -> Option<&J> {
        self.get("extensions")?.get(EXT_OCTI)
    }

    fn ext_mut(&mut self) -> Option<&mut J> {
        self.get_mut("extensions")?.get_mut(EXT_OCTI)
    }

    fn dump(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0);
        out
    }

    fn pretty(&self, indent: usize) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(indent), 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, depth: usize) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(n) => {
                let _ = write!(out, "{n}");
            }
            J::Str(s) => write_json_str(out, s),
            J::Arr(xs) if xs.is_empty() => out.push_str("[]"),
            J::Obj(m) if m.is_empty() => out.push_str("{}"),
            J::Arr(xs) => {
                out.push('[');
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, indent, depth + 1);
                    x.write(out, indent, depth + 1);
                }
                newline(out, indent, depth);
                out.push(']');
            }
            J::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, indent, depth + 1);
                    write_json_str(out, k);
                    out.push_str(if indent.is_some() { ": " } else { ":" });
                    v.write(out, indent, depth + 1);
                }
                newline(out, indent, depth);
                out.push('}');
            }
        }
    }
}

fn newline(out: &mut String, indent: Option<usize>, depth: usize) {
    if let Some(n) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * depth));
    }
}

/// Escapes like `JSON.stringify`: quotes, backslashes and control characters only.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 6902 patch from `old` to `new`, walking keys the way fast-json-patch's `compare` does (the
/// library OpenCTI builds `context.patch` / `reverse_patch` with): removals and replacements over
/// the old keys in reverse order, then additions.
fn diff(old: &J, new: &J, path: &str, ops: &mut Vec<J>) {
    let pointer = |key: &str| format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
    match (old, new) {
        (J::Obj(o), J::Obj(n)) => {
            let mut deleted = false;
            for (k, ov) in o.iter().rev() {
                match n.iter().find(|(nk, _)| nk == k) {
                    Some((_, nv)) => diff_child(ov, nv, &pointer(k), ops),
                    None => {
                        ops.push(obj! {"op" => "remove", "path" => pointer(k)});
                        deleted = true;
                    }
                }
            }
            if !deleted && o.len() == n.len() {
                return;
            }
            for (k, nv) in n {
                if !o.iter().any(|(ok, _)| ok == k) {
                    ops.push(obj! {"op" => "add", "path" => pointer(k), "value" => nv.clone()});
                }
            }
        }
        (J::Arr(o), J::Arr(n)) => {
            let mut deleted = false;
            for i in (0..o.len()).rev() {
                match n.get(i) {
                    Some(nv) => diff_child(&o[i], nv, &pointer(&i.to_string()), ops),
                    None => {
                        ops.push(obj! {"op" => "remove", "path" => pointer(&i.to_string())});
                        deleted = true;
                    }
                }
            }
            if !deleted && o.len() == n.len() {
                return;
            }
            for (i, nv) in n.iter().enumerate().skip(o.len()) {
                ops.push(
                    obj! {"op" => "add", "path" => pointer(&i.to_string()), "value" => nv.clone()},
                );
            }
        }
        _ => {}
    }
}

fn diff_child(ov: &J, nv: &J, path: &str, ops: &mut Vec<J>) {
    match (ov, nv) {
        (J::Obj(_), J::Obj(_)) | (J::Arr(_), J::Arr(_)) => diff(ov, nv, path, ops),
        _ if ov != nv => ops.push(obj! {"op" => "replace", "path" => path, "value" => nv.clone()}),
        _ => {}
    }
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// Values and pattern templates

const WORDS: &[&str] = &[
    "secure", "login", "update", "cdn", "mail", "portal", "account", "verify", "cloud", "sync",
    "files", "docs", "office", "micro", "data", "api", "static", "track", "pay", "bank", "wallet",
    "support", "service", "online", "web", "app", "shop", "news", "media", "stat", "img", "get",
    "free", "best", "global", "smart", "fast", "safe", "my", "drive", "share", "auth", "id",
];
const TLDS: &[&str] = &[
    "com", "net", "org", "info", "xyz", "top", "ru", "cn", "io", "biz", "club", "online", "site",
    "live", "su", "cc", "pw", "me", "co", "shop",
];
const SUBDOMAINS: &[&str] = &[
    "www", "mail", "cdn", "api", "update", "ns1", "c2", "dl", "m", "login", "secure", "files",
];
const LABELS: &[&str] = &[
    "malicious-activity",
    "c2",
    "botnet",
    "phishing",
    "malware",
    "ransomware",
    "stealer",
    "loader",
    "exploit",
    "scanner",
];
const MALWARE: &[&str] = &[
    "Emotet",
    "QakBot",
    "Cobalt Strike",
    "AgentTesla",
    "RedLine Stealer",
    "Mirai",
    "IcedID",
    "AsyncRAT",
    "Lumma Stealer",
    "Remcos",
    "njRAT",
    "Formbook",
    "SmokeLoader",
    "Sliver",
];
const SOURCES: &[&str] = &[
    "AlienVault",
    "abuse.ch",
    "CIRCL",
    "CERT-FR",
    "Filigran",
    "ThreatFox",
];

/// What a correct classifier makes of an indicator's current state.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// One IOC: its kind and its normalised value.
    Ioc(IocKind, String),
    /// No IOC, for this reason.
    Skip(SkipReason),
}

/// A pattern built from a template, with its known outcome.
struct Pat {
    /// `None` for the "indicator without pattern" case.
    pattern: Option<String>,
    pattern_type: &'static str,
    outcome: Outcome,
    /// OpenCTI's `main_observable_type`.
    observable: &'static str,
    name: String,
}

fn gen_label(r: &mut Prng) -> String {
    let a = r.pick(WORDS);
    let b = r.pick(WORDS);
    match r.below(4) {
        0 => format!("{a}{b}"),
        1 => format!("{a}-{b}"),
        2 => format!("{a}{}", r.range(1, 999)),
        _ => {
            let len = r.range(7, 13) as usize;
            r.alnum(len)
        }
    }
}

fn gen_domain(r: &mut Prng) -> String {
    let label = gen_label(r);
    format!("{label}.{}", r.pick(TLDS))
}

fn gen_hostname(r: &mut Prng) -> String {
    let sub = r.pick(SUBDOMAINS);
    let domain = gen_domain(r);
    if r.chance(0.2) {
        format!("{sub}{}.{domain}", r.range(1, 9))
    } else {
        format!("{sub}.{domain}")
    }
}

/// A public-looking IPv4 address (no private, loopback, multicast or documentation ranges).
fn gen_ipv4(r: &mut Prng) -> String {
    loop {
        let a = r.range(1, 223);
        let b = r.range(0, 255);
        if matches!(a, 10 | 100 | 127 | 169 | 198 | 203) || (a == 172 || a == 192) && b < 170 {
            continue;
        }
        return format!("{a}.{b}.{}.{}", r.range(0, 255), r.range(1, 254));
    }
}

/// An IPv6 address in its canonical (RFC 5952) text form, from real allocation prefixes.
fn gen_ipv6(r: &mut Prng) -> String {
    const PREFIXES: [u16; 14] = [
        0x2a00, 0x2a01, 0x2a02, 0x2a03, 0x2a05, 0x2a06, 0x2001, 0x2400, 0x2600, 0x2604, 0x2607,
        0x2620, 0x2804, 0x2c0f,
    ];
    let mut seg = [0u16; 8];
    seg[0] = *r.pick(&PREFIXES);
    for s in seg.iter_mut().take(4).skip(1) {
        *s = r.below(0x10000) as u16;
    }
    match r.below(3) {
        0 => seg[7] = r.range(1, 0xffff) as u16,
        1 => {
            for s in seg.iter_mut().skip(4) {
                *s = r.below(0x10000) as u16;
            }
        }
        _ => {
            seg[6] = r.below(0x10000) as u16;
            seg[7] = r.range(1, 0xffff) as u16;
        }
    }
    Ipv6Addr::from(seg).to_string()
}

fn gen_url(r: &mut Prng) -> String {
    let scheme = if r.chance(0.6) { "http" } else { "https" };
    let host = match r.below(10) {
        0 | 1 => gen_ipv4(r),
        2..=5 => gen_domain(r),
        _ => gen_hostname(r),
    };
    let port = if r.chance(0.15) {
        format!(":{}", r.pick(&[8080, 8443, 81, 8000, 3000, 4444]))
    } else {
        String::new()
    };
    let word = r.pick(WORDS);
    let path = match r.below(9) {
        0 => format!(
            "/{word}/{}.php",
            r.pick(&["gate", "panel", "admin", "login", "index"])
        ),
        1 => format!(
            "/bins/{}",
            r.pick(&["mozi.m", "sora.x86", "x86_64", "arm7", "mips"])
        ),
        2 => format!("/{}.exe", r.alnum(8)),
        3 => format!("/invoice_{}.zip", r.range(1000, 99999)),
        4 => format!("/wp-content/uploads/2025/0{}/{word}.js", r.range(1, 3)),
        5 => format!("/api/v{}/{word}?id={}", r.range(1, 3), r.hex(8)),
        6 => "/".to_string(),
        7 => format!("/{word}/{}/", r.hex(6)),
        _ => format!(
            "/{word}.html?ref={}&uid={}",
            r.alnum(5),
            r.range(100, 99999)
        ),
    };
    format!("{scheme}://{host}{port}{path}")
}

/// A fresh normalised value of the kind.
fn gen_value(r: &mut Prng, kind: IocKind) -> String {
    match kind {
        IocKind::Sha256 => r.hex(64),
        IocKind::Sha1 => r.hex(40),
        IocKind::Md5 => r.hex(32),
        IocKind::Ipv4 => gen_ipv4(r),
        IocKind::Ipv6 => gen_ipv6(r),
        IocKind::Domain => gen_domain(r),
        IocKind::Hostname => gen_hostname(r),
        IocKind::Url => gen_url(r),
    }
}

/// Escapes a value for a STIX string literal (only `\` and `'` are escaped in STIX patterning).
fn stix_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

fn observable_type(kind: IocKind) -> &'static str {
    match kind {
        IocKind::Sha256 | IocKind::Sha1 | IocKind::Md5 => "StixFile",
        IocKind::Ipv4 => "IPv4-Addr",
        IocKind::Ipv6 => "IPv6-Addr",
        IocKind::Domain => "Domain-Name",
        IocKind::Hostname => "Hostname",
        IocKind::Url => "Url",
    }
}

/// An IOC pattern with an exact spelling: `path` is the object path, `literal` the value as written
/// between the quotes (before escaping), `value` the normalised value the classifier must yield.
fn spelled_pat(kind: IocKind, value: &str, path: &str, literal: &str) -> Pat {
    Pat {
        pattern: Some(format!("[{path} = '{}']", stix_escape(literal))),
        pattern_type: "stix",
        outcome: Outcome::Ioc(kind, value.to_string()),
        observable: observable_type(kind),
        name: literal.trim().to_string(),
    }
}

fn case_variant(r: &mut Prng, value: &str) -> String {
    if r.chance(0.15) {
        value.to_uppercase()
    } else {
        value.to_string()
    }
}

/// An IOC pattern for `value` in one of the spellings OpenCTI and other producers use.
fn live_pat(r: &mut Prng, kind: IocKind, value: &str) -> Pat {
    let hash_key = |r: &mut Prng, common: &'static str, others: &[&'static str]| -> &'static str {
        if r.chance(0.6) {
            common
        } else {
            others[r.below(others.len() as u64) as usize]
        }
    };
    let (path, literal) = match kind {
        IocKind::Sha256 => {
            let key = hash_key(
                r,
                "'SHA-256'",
                &["SHA256", "sha256", "'sha-256'", "'SHA256'"],
            );
            (format!("file:hashes.{key}"), case_variant(r, value))
        }
        IocKind::Sha1 => {
            let key = hash_key(r, "'SHA-1'", &["SHA1", "sha1", "'sha-1'"]);
            (format!("file:hashes.{key}"), case_variant(r, value))
        }
        IocKind::Md5 => {
            let key = hash_key(r, "MD5", &["'MD5'", "md5"]);
            (format!("file:hashes.{key}"), case_variant(r, value))
        }
        IocKind::Ipv4 => {
            let lit = if r.chance(0.15) {
                format!("{value}/32")
            } else {
                value.to_string()
            };
            ("ipv4-addr:value".to_string(), lit)
        }
        IocKind::Ipv6 => {
            let lit = match r.below(7) {
                0 => value.to_uppercase(),
                1 => format!("{value}/128"),
                _ => value.to_string(),
            };
            ("ipv6-addr:value".to_string(), lit)
        }
        IocKind::Domain | IocKind::Hostname => {
            let lit = match r.below(10) {
                0 => value.to_uppercase(),
                1 => format!("{value}."),
                2 => {
                    let mut c = value.chars();
                    let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or('x');
                    format!("{first}{}.", c.as_str())
                }
                _ => value.to_string(),
            };
            let path = if kind == IocKind::Domain {
                "domain-name:value"
            } else {
                "hostname:value"
            };
            (path.to_string(), lit)
        }
        IocKind::Url => {
            let lit = match r.below(12) {
                0 => format!(" {value} "),
                1 => format!("  {value}"),
                _ => value.to_string(),
            };
            ("url:value".to_string(), lit)
        }
    };
    spelled_pat(kind, value, &path, &literal)
}

/// A pattern that must be skipped for `reason`.
fn skip_pat(r: &mut Prng, reason: SkipReason) -> Pat {
    use SkipReason as S;
    let ip = gen_ipv4(r);
    let ip2 = gen_ipv4(r);
    let dom = gen_domain(r);
    let dom2 = gen_domain(r);
    let url = gen_url(r);
    let (md5, sha1, sha256) = (r.hex(32), r.hex(40), r.hex(64));
    let n = r.range(1000, 99999);
    let mut pattern_type = "stix";
    let (pattern, observable): (Option<String>, &'static str) = match reason {
        S::Compound => match r.below(6) {
            0 => (
                format!("[ipv4-addr:value = '{ip}'] AND [domain-name:value = '{dom}']"),
                "IPv4-Addr",
            ),
            1 => (
                format!("[file:hashes.MD5 = '{md5}' OR file:hashes.'SHA-256' = '{sha256}']"),
                "StixFile",
            ),
            2 => (
                format!("[ipv4-addr:value = '{ip}' OR ipv4-addr:value = '{ip2}']"),
                "IPv4-Addr",
            ),
            3 => (
                format!("[domain-name:value IN ('{dom}', '{dom2}')]"),
                "Domain-Name",
            ),
            4 => (
                format!("[url:value = '{url}'] FOLLOWEDBY [domain-name:value = '{dom}']"),
                "Url",
            ),
            _ => (
                format!("([ipv4-addr:value = '{ip}'] OR [ipv4-addr:value = '{ip2}'])"),
                "IPv4-Addr",
            ),
        }
        .into_some(),
        S::Qualified => match r.below(3) {
            0 => (
                format!("[ipv4-addr:value = '{ip}'] WITHIN 300 SECONDS"),
                "IPv4-Addr",
            ),
            1 => (
                format!("[domain-name:value = '{dom}'] REPEATS 5 TIMES"),
                "Domain-Name",
            ),
            _ => (
                format!(
                    "[url:value = '{url}'] START t'2025-01-01T00:00:00Z' STOP t'2025-06-30T00:00:00Z'"
                ),
                "Url",
            ),
        }
        .into_some(),
        S::UnsupportedObject => match r.below(11) {
            0 => (
                format!("[email-addr:value = 'billing@{dom}']"),
                "Email-Addr",
            ),
            1 => (
                format!("[process:command_line = 'powershell.exe -nop -w hidden -enc {}']", r.hex(24)),
                "Process",
            ),
            2 => (
                format!("[x509-certificate:hashes.'SHA-1' = '{sha1}']"),
                "X509-Certificate",
            ),
            3 => (format!("[file:name = 'invoice_{n}.pdf.exe']"), "StixFile"),
            4 => (format!("[mutex:name = 'Mtx_{}']", r.hex(8)), "Mutex"),
            // Backslashes are escaped in STIX literals: `\\` is one backslash.
            5 => (
                "[windows-registry-key:key = 'HKEY_CURRENT_USER\\\\Software\\\\Microsoft\\\\Windows\\\\CurrentVersion\\\\Run']"
                    .to_string(),
                "Windows-Registry-Key",
            ),
            6 => ("[network-traffic:dst_port = 4444]".to_string(), "Network-Traffic"),
            7 => (
                format!(
                    "[mac-addr:value = '00:1a:2b:{}:{}:{}']",
                    r.hex(2),
                    r.hex(2),
                    r.hex(2)
                ),
                "Mac-Addr",
            ),
            8 => (
                format!("[file:hashes.'SHA-512' = '{}']", r.hex(128)),
                "StixFile",
            ),
            9 => (
                format!("[autonomous-system:number = {}]", r.range(64512, 65534)),
                "Autonomous-System",
            ),
            _ => (
                format!("[email-message:subject = 'Invoice {n} overdue']"),
                "Email-Message",
            ),
        }
        .into_some(),
        S::UnsupportedOperator => match r.below(5) {
            0 => (format!("[domain-name:value != '{dom}']"), "Domain-Name"),
            1 => (format!("[url:value LIKE '%{dom}%']"), "Url"),
            2 => (format!("[url:value MATCHES '^https?://{dom}/']"), "Url"),
            3 => (format!("[ipv4-addr:value NOT = '{ip}']"), "IPv4-Addr"),
            _ => {
                let net = ip.rsplit_once('.').map(|(a, _)| a).unwrap_or("198.51.100");
                (
                    format!("[ipv4-addr:value ISSUBSET '{net}.0/24']"),
                    "IPv4-Addr",
                )
            }
        }
        .into_some(),
        S::EmptyFileHash => {
            let (key, hash) = *r.pick(&[
                ("MD5", EMPTY_MD5),
                ("'SHA-1'", EMPTY_SHA1),
                ("SHA1", EMPTY_SHA1),
                ("'SHA-256'", EMPTY_SHA256),
                ("SHA256", EMPTY_SHA256),
            ]);
            let lit = case_variant(r, hash);
            (format!("[file:hashes.{key} = '{lit}']"), "StixFile").into_some()
        }
        S::CidrRange => {
            let mut parts = ip.split('.');
            let (a, b, c) = (
                parts.next().unwrap_or("45"),
                parts.next().unwrap_or("9"),
                parts.next().unwrap_or("20"),
            );
            match r.below(4) {
                0 => (format!("[ipv4-addr:value = '{a}.{b}.{c}.0/24']"), "IPv4-Addr"),
                1 => (format!("[ipv4-addr:value = '{a}.{b}.0.0/16']"), "IPv4-Addr"),
                2 => (
                    format!("[ipv4-addr:value = '{a}.{b}.{c}.{}/28']", r.range(0, 15) * 16),
                    "IPv4-Addr",
                ),
                _ => {
                    let v6 = gen_ipv6(r);
                    let prefix: Vec<&str> = v6.split(':').take(3).collect();
                    (
                        format!("[ipv6-addr:value = '{}::/48']", prefix.join(":")),
                        "IPv6-Addr",
                    )
                }
            }
            .into_some()
        }
        S::NotStix => {
            let (ty, body, obs) = match r.below(5) {
                0 => (
                    "sigma",
                    format!(
                        "title: Suspicious Encoded PowerShell Command Line\nid: {}\nstatus: experimental\nlogsource:\n  category: process_creation\n  product: windows\ndetection:\n  selection:\n    CommandLine|contains: ' -enc '\n    ParentImage|endswith: '\\winword.exe'\n  condition: selection\nlevel: high\n",
                        r.uuid(4)
                    ),
                    "Unknown",
                ),
                1 => (
                    "yara",
                    format!(
                        "rule {}_{} {{\n\tmeta:\n\t\tauthor = \"CERT-FR\"\n\tstrings:\n\t\t$a = \"{dom}\" ascii wide\n\t\t$b = {{ {} }}\n\tcondition:\n\t\tuint16(0) == 0x5A4D and all of them\n}}",
                        r.pick(MALWARE).replace(' ', "_"),
                        r.hex(6),
                        r.hex(16)
                    ),
                    "StixFile",
                ),
                2 => (
                    "snort",
                    format!(
                        "alert tcp $HOME_NET any -> {ip} 443 (msg:\"ET MALWARE {} CnC Beacon\"; flow:established,to_server; sid:{}; rev:1;)",
                        r.pick(MALWARE),
                        r.range(2_000_000, 2_099_999)
                    ),
                    "Network-Traffic",
                ),
                3 => (
                    "suricata",
                    format!(
                        "alert dns any any -> any any (msg:\"ET DNS Query to {dom}\"; dns.query; content:\"{dom}\"; nocase; sid:{}; rev:2;)",
                        r.range(2_100_000, 2_199_999)
                    ),
                    "Domain-Name",
                ),
                _ => ("pcre", format!("/{}\\/gate\\.php/i", dom.replace('.', "\\.")), "Url"),
            };
            pattern_type = ty;
            (Some(body), obs)
        }
        S::MissingPattern => (None, "IPv4-Addr"),
        S::Invalid => match r.below(6) {
            0 => (format!("[ipv4-addr:value = '{ip}'"), "IPv4-Addr"),
            1 => (format!("[file:hashes.SHA-256 = '{sha256}']"), "StixFile"),
            2 => (format!("[domain-name:value = \"{dom}\"]"), "Domain-Name"),
            3 => (
                format!("[ipv4-addr:value = '{ip}'] and [ipv4-addr:value = '{ip2}']"),
                "IPv4-Addr",
            ),
            4 => (format!("ipv4-addr:value = '{ip}'"), "IPv4-Addr"),
            _ => (format!("[url:value = '{url}'] WITHIN SECONDS"), "Url"),
        }
        .into_some(),
        S::InvalidValue => match r.below(3) {
            0 => {
                let base = ip.rsplit_once('.').map(|(a, _)| a).unwrap_or("45.9.20");
                (
                    format!("[ipv4-addr:value = '{base}.{}']", r.range(256, 999)),
                    "IPv4-Addr",
                )
            }
            1 => (
                format!("[ipv6-addr:value = '2a03:2880:f10c::{}']", r.range(0x10000, 0xfffff)),
                "IPv6-Addr",
            ),
            _ => (
                format!("[ipv4-addr:value = '{ip}.{}']", r.range(1, 254)),
                "IPv4-Addr",
            ),
        }
        .into_some(),
        // Not produced by this generator (MISP-only reasons).
        _ => (Some(format!("[ipv4-addr:value = '{ip}'")), "IPv4-Addr"),
    };
    let name = match (&pattern, pattern_type) {
        (Some(p), "stix") => p.clone(),
        (Some(_), ty) => format!("{} {} rule {}", r.pick(MALWARE), ty, r.hex(4)),
        (None, _) => ip.clone(),
    };
    let reason = if matches!(
        reason,
        S::UnsupportedType | S::IgnoredDisabledFeed | S::NotToIds
    ) {
        S::Invalid
    } else {
        reason
    };
    Pat {
        pattern,
        pattern_type,
        outcome: Outcome::Skip(reason),
        observable,
        name,
    }
}

/// Lets each template arm return `(String, &str)` while the enclosing match wants an optional
/// pattern.
trait IntoSome {
    fn into_some(self) -> (Option<String>, &'static str);
}
impl IntoSome for (String, &'static str) {
    fn into_some(self) -> (Option<String>, &'static str) {
        (Some(self.0), self.1)
    }
}

/// The skip reasons random skipped indicators are drawn from (compound and not_stix are the most
/// common in real OpenCTI data, so they weigh double).
const SKIP_MIX: [SkipReason; 12] = [
    SkipReason::Compound,
    SkipReason::Compound,
    SkipReason::Qualified,
    SkipReason::UnsupportedObject,
    SkipReason::UnsupportedOperator,
    SkipReason::EmptyFileHash,
    SkipReason::CidrRange,
    SkipReason::NotStix,
    SkipReason::NotStix,
    SkipReason::MissingPattern,
    SkipReason::Invalid,
    SkipReason::InvalidValue,
];

fn random_kind(r: &mut Prng) -> IocKind {
    match r.below(100) {
        0..25 => IocKind::Ipv4,
        25..40 => IocKind::Domain,
        40..60 => IocKind::Url,
        60..75 => IocKind::Sha256,
        75..83 => IocKind::Md5,
        83..90 => IocKind::Sha1,
        90..95 => IocKind::Hostname,
        _ => IocKind::Ipv6,
    }
}

// ------------------------------------------------------------------------------------------------
// STIX objects as OpenCTI 6.x serialises them

/// The fixed cast: authors, markings, and the users whose actions produce events.
struct World {
    identities: Vec<J>,
    markings: Vec<J>,
    /// `(user id, group id)` of the users acting (two connectors and an analyst).
    users: Vec<(String, String)>,
}

fn octi_ext(r: &mut Prng, entity_type: &str, now: i64, creator: &str) -> J {
    obj! {
        "extension_type" => "property-extension",
        "id" => r.uuid(4),
        "type" => entity_type,
        "created_at" => iso(now),
        "updated_at" => iso(now),
        "is_inferred" => false,
        "creator_ids" => strs(&[creator]),
    }
}

fn world(r: &mut Prng, t0: i64) -> World {
    let users: Vec<(String, String)> = (0..3).map(|_| (r.uuid(4), r.uuid(4))).collect();
    let admin = users[2].0.clone();
    let identities = SOURCES
        .iter()
        .map(|name| {
            let ext = octi_ext(r, "Organization", t0, &admin);
            obj! {
                "id" => format!("identity--{}", r.uuid(5)),
                "spec_version" => "2.1",
                "identity_class" => "organization",
                "name" => *name,
                "description" => format!("{name} threat intelligence feed"),
                "created" => iso(t0),
                "modified" => iso(t0),
                "revoked" => false,
                "confidence" => 100i64,
                "lang" => "en",
                "type" => "identity",
                "extensions" => obj! {EXT_OCTI => ext},
            }
        })
        .collect();
    // The TLP 2.0 markings OpenCTI ships with, under their well-known ids.
    let tlp = [
        (
            "94868c89-83c2-464b-929b-a1a8aa3c8487",
            "TLP:CLEAR",
            "#ffffff",
            1i64,
        ),
        (
            "34098fce-860f-48ae-8e50-ebd3cc5e41da",
            "TLP:GREEN",
            "#2e7d32",
            2,
        ),
        (
            "f88d31f6-486f-44da-b317-01333bde0b82",
            "TLP:AMBER",
            "#d84315",
            3,
        ),
        (
            "5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
            "TLP:RED",
            "#c62828",
            4,
        ),
    ];
    let markings = tlp
        .iter()
        .map(|(id, name, color, order)| {
            let mut ext = octi_ext(r, "Marking-Definition", t0, &admin);
            ext.set("creator_ids", J::Arr(vec![]));
            obj! {
                "id" => format!("marking-definition--{id}"),
                "spec_version" => "2.1",
                "created" => iso(t0),
                "definition_type" => "TLP",
                "name" => *name,
                "x_opencti_order" => *order,
                "x_opencti_color" => *color,
                "type" => "marking-definition",
                "extensions" => obj! {EXT_OCTI => ext},
            }
        })
        .collect();
    World {
        identities,
        markings,
        users,
    }
}

fn pick_refs(r: &mut Prng, w: &World) -> (String, String) {
    let by = r
        .pick(&w.identities)
        .str_of("id")
        .unwrap_or_default()
        .to_string();
    // GREEN and AMBER dominate real feeds.
    let m = match r.below(20) {
        0..3 => 0,
        3..13 => 1,
        13..19 => 2,
        _ => 3,
    };
    let marking = w.markings[m].str_of("id").unwrap_or_default().to_string();
    (by, marking)
}

/// An indicator as OpenCTI 6.x puts it on the stream (`with_ext: false` gives a plain STIX 2.1
/// indicator from another producer, used in the bundle).
fn indicator(r: &mut Prng, w: &World, now: i64, pat: &Pat, with_ext: bool) -> J {
    let (by, marking) = pick_refs(r, w);
    let created = now - r.range(0, 20 * DAY_MS);
    let creator = r.pick(&w.users).0.clone();
    let mut o = obj! {
        "id" => format!("indicator--{}", r.uuid(5)),
        "spec_version" => "2.1",
        "type" => "indicator",
    };
    if with_ext {
        let mut ext = octi_ext(r, "Indicator", now, &creator);
        ext.set("score", r.range(20, 100));
        ext.set("main_observable_type", pat.observable);
        ext.set("detection", r.chance(0.2));
        o.set("extensions", obj! {EXT_OCTI => ext});
    }
    o.set("created", iso(created));
    o.set("modified", iso(now));
    o.set("revoked", false);
    o.set("confidence", *r.pick(&[50i64, 75, 80, 85, 90, 100]));
    let l1 = *r.pick(LABELS);
    let l2 = *r.pick(LABELS);
    let labels = if r.chance(0.4) && l1 != l2 {
        vec![l1, l2]
    } else {
        vec![l1]
    };
    o.set("labels", strs(&labels));
    o.set("name", pat.name.clone());
    if r.chance(0.4) {
        let family = r.pick(MALWARE);
        let text = match r.below(3) {
            0 => format!(
                "botnet_cc: {family} C2 (confidence level: {}%)",
                r.range(50, 100)
            ),
            1 => format!("payload_delivery: {family} distribution"),
            _ => format!("Observed in {family} campaign"),
        };
        o.set("description", text);
    }
    if let Some(p) = &pat.pattern {
        o.set("pattern", p.as_str());
    }
    o.set("pattern_type", pat.pattern_type);
    o.set("valid_from", iso(created));
    let until = VALID_UNTIL_MIN_MS + r.range(0, 700) * DAY_MS + r.range(0, DAY_MS);
    o.set("valid_until", iso(until));
    if r.chance(0.3) {
        let phase = *r.pick(&[
            "command-and-control",
            "initial-access",
            "execution",
            "exfiltration",
        ]);
        o.set(
            "kill_chain_phases",
            vec![obj! {"kill_chain_name" => "mitre-attack", "phase_name" => phase}],
        );
    }
    o.set("created_by_ref", by);
    o.set("object_marking_refs", strs(&[marking]));
    if r.chance(0.2) {
        let url = format!(
            "https://threatfox.abuse.ch/ioc/{}/",
            r.range(1_000_000, 1_499_999)
        );
        o.set(
            "external_references",
            vec![obj! {"source_name" => "ThreatFox", "url" => url}],
        );
    }
    o
}

/// The observable (SCO) matching an IOC, as OpenCTI streams it.
fn observable(r: &mut Prng, w: &World, now: i64, kind: IocKind, value: &str) -> J {
    let (ty, octi_ty) = match kind {
        IocKind::Sha256 | IocKind::Sha1 | IocKind::Md5 => ("file", "StixFile"),
        IocKind::Ipv4 => ("ipv4-addr", "IPv4-Addr"),
        IocKind::Ipv6 => ("ipv6-addr", "IPv6-Addr"),
        IocKind::Domain => ("domain-name", "Domain-Name"),
        IocKind::Hostname => ("hostname", "Hostname"),
        IocKind::Url => ("url", "Url"),
    };
    let (_, marking) = pick_refs(r, w);
    let creator = r.pick(&w.users).0.clone();
    let mut o = obj! {"id" => format!("{ty}--{}", r.uuid(5)), "spec_version" => "2.1"};
    match kind {
        IocKind::Sha256 => o.set("hashes", obj! {"SHA-256" => value}),
        IocKind::Sha1 => o.set("hashes", obj! {"SHA-1" => value}),
        IocKind::Md5 => o.set("hashes", obj! {"MD5" => value}),
        _ => o.set("value", value),
    }
    o.set("type", ty);
    o.set("object_marking_refs", strs(&[marking]));
    let ext = octi_ext(r, octi_ty, now, &creator);
    let sco = obj! {"extension_type" => "property-extension", "score" => r.range(20, 100)};
    o.set("extensions", obj! {EXT_OCTI => ext, EXT_SCO => sco});
    o
}

fn malware(r: &mut Prng, w: &World, now: i64, name: &str) -> J {
    let (by, marking) = pick_refs(r, w);
    let creator = r.pick(&w.users).0.clone();
    let ext = octi_ext(r, "Malware", now, &creator);
    let kind = *r.pick(&[
        "trojan",
        "ransomware",
        "bot",
        "remote-access-trojan",
        "spyware",
    ]);
    obj! {
        "id" => format!("malware--{}", r.uuid(5)),
        "spec_version" => "2.1",
        "type" => "malware",
        "extensions" => obj! {EXT_OCTI => ext},
        "created" => iso(now - 400 * DAY_MS),
        "modified" => iso(now),
        "revoked" => false,
        "confidence" => 100i64,
        "lang" => "en",
        "name" => name,
        "description" => format!("{name} is a malware family tracked since {}.", r.range(2014, 2023)),
        "is_family" => true,
        "malware_types" => strs(&[kind]),
        "created_by_ref" => by,
        "object_marking_refs" => strs(&[marking]),
    }
}

fn relationship(r: &mut Prng, w: &World, now: i64, rel: &str, src: &J, dst: &J) -> J {
    let (by, _) = pick_refs(r, w);
    let creator = r.pick(&w.users).0.clone();
    let mut ext = octi_ext(r, rel, now, &creator);
    let internal = |o: &J| {
        o.ext()
            .and_then(|e| e.str_of("id"))
            .unwrap_or_default()
            .to_string()
    };
    ext.set("source_ref", internal(src));
    ext.set("source_type", entity_type(src));
    ext.set("target_ref", internal(dst));
    ext.set("target_type", entity_type(dst));
    let markings = src
        .get("object_marking_refs")
        .cloned()
        .unwrap_or(J::Arr(vec![]));
    obj! {
        "id" => format!("relationship--{}", r.uuid(5)),
        "spec_version" => "2.1",
        "type" => "relationship",
        "extensions" => obj! {EXT_OCTI => ext},
        "created" => iso(now),
        "modified" => iso(now),
        "relationship_type" => rel,
        "revoked" => false,
        "confidence" => 75i64,
        "lang" => "en",
        "source_ref" => src.str_of("id").unwrap_or_default(),
        "target_ref" => dst.str_of("id").unwrap_or_default(),
        "created_by_ref" => by,
        "object_marking_refs" => markings,
    }
}

fn report(r: &mut Prng, w: &World, now: i64, refs: &[String]) -> J {
    let (by, marking) = pick_refs(r, w);
    let creator = r.pick(&w.users).0.clone();
    let ext = octi_ext(r, "Report", now, &creator);
    let name = format!("{} activity update #{}", r.pick(MALWARE), r.range(10, 400));
    obj! {
        "id" => format!("report--{}", r.uuid(5)),
        "spec_version" => "2.1",
        "type" => "report",
        "extensions" => obj! {EXT_OCTI => ext},
        "created" => iso(now),
        "modified" => iso(now),
        "revoked" => false,
        "confidence" => 80i64,
        "lang" => "en",
        "name" => name,
        "description" => "Indicators shared with the community this week.",
        "report_types" => strs(&["threat-report"]),
        "published" => iso(now),
        "object_refs" => strs(refs),
        "created_by_ref" => by,
        "object_marking_refs" => strs(&[marking]),
    }
}

/// OpenCTI's entity type name of an object, as its stream messages spell it.
fn entity_type(o: &J) -> String {
    match o.ext().and_then(|e| e.str_of("type")) {
        Some("StixFile") => "File".to_string(),
        Some(t) => t.to_string(),
        None => o.str_of("type").unwrap_or("Unknown").to_string(),
    }
}

/// The representative name of an object (name, else value, else first hash).
fn entity_name(o: &J) -> String {
    if let Some(n) = o.str_of("name").or_else(|| o.str_of("value")) {
        return n.to_string();
    }
    if let Some(J::Obj(h)) = o.get("hashes") {
        if let Some((_, J::Str(v))) = h.first() {
            return v.clone();
        }
    }
    o.str_of("id").unwrap_or("-").to_string()
}

fn create_message(o: &J) -> String {
    format!("creates a {} `{}`", entity_type(o), entity_name(o))
}

fn relation_message(verb: &str, rel: &str, src: &J, dst: &J) -> String {
    format!(
        "{verb} the relation {rel} from `{}` ({}) to `{}` ({})",
        entity_name(src),
        entity_type(src),
        entity_name(dst),
        entity_type(dst)
    )
}

fn is_revoked(o: &J) -> bool {
    matches!(o.get("revoked"), Some(J::Bool(true)))
}

// ------------------------------------------------------------------------------------------------
// The stream model

/// How an event is laid out on the SSE wire (the server always uses `Lf`; the others exercise the
/// parser).
#[derive(Clone, Copy, PartialEq)]
enum Style {
    Lf,
    /// Every line ends with CRLF.
    Crlf,
    /// A `: keep-alive` comment line precedes the event.
    Comment,
    /// The data JSON is split over three `data:` lines.
    MultiLine,
    /// `data:{…}` without the optional space.
    NoSpace,
}

enum Data {
    Json(J),
    /// Written verbatim: not valid JSON.
    Raw(String),
}

struct Ev {
    id: Option<String>,
    topic: String,
    data: Data,
    style: Style,
}

/// An indicator as the model knows it.
struct Ind {
    obj: J,
    outcome: Outcome,
    /// False once deleted (or merged away).
    present: bool,
}

impl Ind {
    fn live(&self) -> Option<(IocKind, &str)> {
        match &self.outcome {
            Outcome::Ioc(k, v) if self.present && !is_revoked(&self.obj) => Some((*k, v.as_str())),
            _ => None,
        }
    }
}

/// A capture being generated: the events, and the model of every indicator's state.
struct Stream {
    name: &'static str,
    seed: u64,
    r: Prng,
    world: World,
    now: i64,
    last_ms: i64,
    seq: u32,
    last_id: String,
    events: Vec<Ev>,
    /// Data events since the last heartbeat, and the count that triggers the next one.
    since_hb: usize,
    next_hb: usize,
    auto_heartbeat: bool,
    /// While true, creates are `recover` replays (origin referer `init`, no `type`/`scope`).
    init_phase: bool,
    pending_style: Option<Style>,
    model: BTreeMap<String, Ind>,
    /// Indicator ids in first-seen order (for deterministic random picks).
    order: Vec<String>,
    /// Indicators owned by a scripted scenario: random actions leave them alone.
    protected: BTreeSet<String>,
    /// Objects already sent on this connection (the server's dependency cache).
    sent: BTreeSet<String>,
    /// based-on / indicates relationships by indicator id, deleted with their indicator.
    relations: Vec<(String, J, String)>,
    malware: Vec<J>,
    skips: BTreeMap<SkipReason, usize>,
    created: BTreeSet<String>,
    init_events: usize,
    dependency_events: usize,
    merged_away: usize,
}

impl Stream {
    fn new(name: &'static str, seed: u64, start_ms: i64, auto_heartbeat: bool) -> Stream {
        let mut r = Prng(seed);
        let world = world(&mut r, start_ms - 500 * DAY_MS);
        Stream {
            name,
            seed,
            r,
            world,
            now: start_ms,
            last_ms: 0,
            seq: 0,
            last_id: String::new(),
            events: Vec::new(),
            since_hb: 0,
            next_hb: 50,
            auto_heartbeat,
            init_phase: false,
            pending_style: None,
            model: BTreeMap::new(),
            order: Vec::new(),
            protected: BTreeSet::new(),
            sent: BTreeSet::new(),
            relations: Vec::new(),
            malware: Vec::new(),
            skips: BTreeMap::new(),
            created: BTreeSet::new(),
            init_events: 0,
            dependency_events: 0,
            merged_away: 0,
        }
    }

    // --- ids, time, wire -------------------------------------------------------------------------

    /// Moves the clock to the next operation; a few operations land in the same millisecond, which
    /// gives Redis-style ids with a sequence above 0.
    fn advance(&mut self) {
        if self.init_phase {
            self.now += self.r.range(5 * HOUR_MS, 11 * HOUR_MS);
        } else if !self.r.chance(0.03) {
            self.now += self.r.range(40, 5_000);
        }
    }

    fn new_id(&mut self) -> String {
        if self.now <= self.last_ms {
            self.seq += 1;
        } else {
            self.last_ms = self.now;
            self.seq = 0;
        }
        format!("{}-{}", self.last_ms, self.seq)
    }

    fn emit(&mut self, id: Option<String>, topic: &str, data: Data) {
        let style = match &data {
            Data::Json(J::Obj(_)) => self.pending_style.take().unwrap_or(Style::Lf),
            _ => Style::Lf,
        };
        if let Some(id) = &id {
            self.last_id = id.clone();
        }
        self.events.push(Ev {
            id,
            topic: topic.to_string(),
            data,
            style,
        });
        self.since_hb += 1;
    }

    /// Heartbeats carry the last id and its time, like `sseMiddleware.js`'s `heartTimer`.
    fn heartbeat(&mut self) {
        self.since_hb = 0;
        self.next_hb = self.r.range(44, 56) as usize;
        self.events.push(Ev {
            id: Some(self.last_id.clone()),
            topic: "heartbeat".to_string(),
            data: Data::Json(J::Str(iso(self.last_ms))),
            style: Style::Lf,
        });
    }

    fn after_op(&mut self) {
        if self.auto_heartbeat && self.since_hb >= self.next_hb {
            self.heartbeat();
        }
    }

    fn connected(&mut self) {
        let first = LIVE_START_MS - 400 * DAY_MS;
        let last = LIVE_START_MS - 1_500;
        let info = obj! {
            "lastEventId" => format!("{last}-0"),
            "firstEventId" => format!("{first}-0"),
            "firstEventDate" => iso(first),
            "lastEventDate" => iso(last),
            "streamSize" => self.r.range(1_500_000, 2_500_000),
            "connectionId" => self.r.uuid(4),
        };
        self.events.push(Ev {
            id: None,
            topic: "connected".to_string(),
            data: Data::Json(info),
            style: Style::Lf,
        });
    }

    fn origin(&mut self) -> J {
        let (user, group) = self.r.pick(&self.world.users).clone();
        obj! {
            "socket" => "query",
            "ip" => format!("::ffff:172.19.0.{}", self.r.range(5, 12)),
            "user_id" => user.clone(),
            "group_ids" => strs(&[group]),
            "organization_ids" => J::Arr(vec![]),
            "applicant_id" => user,
        }
    }

    fn live_envelope(
        &mut self,
        topic: &str,
        message: String,
        data: J,
        ctx: Option<J>,
        id: &str,
    ) -> J {
        let origin = self.origin();
        let mut e = obj! {
            "version" => "4",
            "type" => topic,
            "scope" => "external",
            "message" => message,
            "origin" => origin,
            "data" => data,
        };
        if let Some(c) = ctx {
            e.set("context", c);
        }
        e.set("event_id", id);
        e
    }

    /// Sends the author and markings an object references, the first time, under the triggering
    /// event's id (what the server's `resolveAndPublishMissingRefs` does).
    fn send_deps(&mut self, id: &str, o: &J) {
        let mut refs: Vec<String> = o
            .str_of("created_by_ref")
            .map(str::to_string)
            .into_iter()
            .collect();
        if let Some(J::Arr(ms)) = o.get("object_marking_refs") {
            refs.extend(ms.iter().filter_map(|m| match m {
                J::Str(s) => Some(s.clone()),
                _ => None,
            }));
        }
        for rid in refs {
            if self.sent.contains(&rid) {
                continue;
            }
            let found = self
                .world
                .identities
                .iter()
                .chain(self.world.markings.iter())
                .find(|x| x.str_of("id") == Some(rid.as_str()))
                .cloned();
            if let Some(dep) = found {
                let data = obj! {
                    "data" => dep.clone(),
                    "message" => create_message(&dep),
                    "origin" => obj! {"referer" => "dependencies"},
                    "version" => "4",
                };
                self.emit(Some(id.to_string()), "create", Data::Json(data));
                self.dependency_events += 1;
                self.count_skip(SkipReason::NotIndicator);
            }
            self.sent.insert(rid);
        }
    }

    fn count_skip(&mut self, reason: SkipReason) {
        *self.skips.entry(reason).or_default() += 1;
    }

    /// Records a create/update/merge of `o`: counts its skip, updates the model.
    fn account(&mut self, o: J, outcome: Option<Outcome>) {
        let Some(outcome) = outcome else {
            self.count_skip(SkipReason::NotIndicator);
            return;
        };
        let Some(id) = o.str_of("id").map(str::to_string) else {
            return;
        };
        if let Outcome::Skip(reason) = &outcome {
            // A revoked indicator is a removal, whatever its pattern.
            if !is_revoked(&o) {
                self.count_skip(*reason);
            }
        }
        if !self.model.contains_key(&id) {
            self.order.push(id.clone());
        }
        self.model.insert(
            id,
            Ind {
                obj: o,
                outcome,
                present: true,
            },
        );
    }

    // --- operations ------------------------------------------------------------------------------

    /// Emits a create of `o` (an indicator when `outcome` is set) with its dependencies.
    fn create(&mut self, o: J, outcome: Option<Outcome>, message: String) {
        self.advance();
        let id = self.new_id();
        self.send_deps(&id, &o);
        let data = if self.init_phase {
            self.init_events += 1;
            obj! {
                "data" => o.clone(),
                "message" => message,
                "origin" => obj! {"referer" => "init"},
                "version" => "4",
            }
        } else {
            self.live_envelope("create", message, o.clone(), None, &id)
        };
        self.emit(Some(id.clone()), "create", Data::Json(data));
        self.sent
            .insert(o.str_of("id").unwrap_or_default().to_string());
        if outcome.is_some() {
            if let Some(sid) = o.str_of("id") {
                self.created.insert(sid.to_string());
            }
        }
        self.account(o, outcome);
        self.after_op();
    }

    fn new_indicator(&mut self, pat: &Pat) -> J {
        indicator(&mut self.r, &self.world, self.now, pat, true)
    }

    /// Creates an indicator for `pat`; returns its id.
    fn create_indicator(&mut self, pat: &Pat) -> String {
        let o = self.new_indicator(pat);
        let id = o.str_of("id").unwrap_or_default().to_string();
        let msg = create_message(&o);
        self.create(o, Some(pat.outcome.clone()), msg);
        id
    }

    /// Creates a live indicator of `value`, spelled unlike `unlike`'s pattern when given (OpenCTI
    /// dedupes identical patterns into one indicator, so co-holders differ in spelling).
    fn create_live(&mut self, kind: IocKind, value: &str, unlike: Option<&str>) -> String {
        let other = unlike
            .and_then(|id| self.model.get(id))
            .and_then(|i| i.obj.str_of("pattern"))
            .map(str::to_string);
        let mut pat = live_pat(&mut self.r, kind, value);
        for _ in 0..20 {
            if pat.pattern != other {
                break;
            }
            pat = live_pat(&mut self.r, kind, value);
        }
        let id = self.create_indicator(&pat);
        self.protected.insert(id.clone());
        id
    }

    fn touch(&self, o: &mut J) {
        let now = iso(self.now);
        o.set("modified", now.clone());
        if let Some(e) = o.ext_mut() {
            e.set("updated_at", now);
        }
    }

    fn emit_change(
        &mut self,
        topic: &str,
        prev: J,
        next: J,
        outcome: Outcome,
        message: String,
        sources: Option<Vec<J>>,
    ) {
        let id = self.new_id();
        self.send_deps(&id, &next);
        let mut patch = Vec::new();
        diff(&prev, &next, "", &mut patch);
        let mut reverse = Vec::new();
        diff(&next, &prev, "", &mut reverse);
        let mut ctx = obj! {"patch" => patch, "reverse_patch" => reverse};
        if let Some(s) = sources {
            ctx.set("sources", s);
        }
        let data = self.live_envelope(topic, message, next.clone(), Some(ctx), &id);
        self.emit(Some(id), topic, Data::Json(data));
        self.account(next, Some(outcome));
        self.after_op();
    }

    /// Updates indicator `id` with `change`; `outcome` is its new outcome when the pattern changes.
    fn update(
        &mut self,
        id: &str,
        message: String,
        outcome: Option<Outcome>,
        change: impl FnOnce(&mut J),
    ) {
        let Some(ind) = self.model.get(id) else {
            return;
        };
        let prev = ind.obj.clone();
        let outcome = outcome.unwrap_or_else(|| ind.outcome.clone());
        self.advance();
        let mut next = prev.clone();
        change(&mut next);
        self.touch(&mut next);
        self.emit_change("update", prev, next, outcome, message, None);
    }

    fn set_score(&mut self, id: &str, score: i64) {
        self.update(id, format!("replaces `{score}` in `Score`"), None, |o| {
            if let Some(e) = o.ext_mut() {
                e.set("score", score);
            }
        });
    }

    fn set_revoked(&mut self, id: &str, revoked: bool) {
        self.update(
            id,
            format!("replaces `{revoked}` in `Revoked`"),
            None,
            |o| {
                o.set("revoked", revoked);
            },
        );
    }

    fn set_pattern(&mut self, id: &str, pat: &Pat) {
        let Some(p) = pat.pattern.clone() else {
            return;
        };
        let name = pat.name.clone();
        let observable = pat.observable;
        self.update(
            id,
            format!("replaces `{p}` in `Pattern`"),
            Some(pat.outcome.clone()),
            |o| {
                o.set("pattern", p);
                o.set("name", name);
                if let Some(e) = o.ext_mut() {
                    e.set("main_observable_type", observable);
                }
            },
        );
    }

    fn delete(&mut self, id: &str) {
        let Some(ind) = self.model.get_mut(id) else {
            return;
        };
        if !ind.present {
            return;
        }
        ind.present = false;
        let o = ind.obj.clone();
        self.advance();
        let msg = format!("deletes a {} `{}`", entity_type(&o), entity_name(&o));
        self.emit_delete(o, msg);
        // Deleting an entity deletes its relationships: one delete event each, same millisecond.
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relations)
            .into_iter()
            .partition(|(src, _, _)| src == id);
        self.relations = kept;
        for (_, rel, msg) in gone {
            self.emit_delete(rel, msg);
        }
        self.after_op();
    }

    fn emit_delete(&mut self, o: J, message: String) {
        let id = self.new_id();
        let data = self.live_envelope("delete", message, o, None, &id);
        self.emit(Some(id), "delete", Data::Json(data));
    }

    /// OpenCTI merges `sources` into `target`: one `merge` event for the target, whose
    /// `context.sources` holds the merged objects; the sources disappear without delete events.
    fn merge(&mut self, target: &str, sources: &[String]) {
        let Some(t) = self.model.get(target) else {
            return;
        };
        let prev = t.obj.clone();
        let outcome = t.outcome.clone();
        let mut gone = Vec::new();
        for s in sources {
            if let Some(ind) = self.model.get_mut(s) {
                ind.present = false;
                gone.push(ind.obj.clone());
            }
        }
        self.merged_away += gone.len();
        self.advance();
        let mut next = prev.clone();
        let mut labels: Vec<J> = match next.get("labels") {
            Some(J::Arr(l)) => l.clone(),
            _ => Vec::new(),
        };
        for s in &gone {
            if let Some(J::Arr(l)) = s.get("labels") {
                for x in l {
                    if !labels.contains(x) {
                        labels.push(x.clone());
                    }
                }
            }
        }
        next.set("labels", labels);
        let ids: Vec<String> = gone
            .iter()
            .filter_map(|s| s.str_of("id").map(str::to_string))
            .collect();
        if let Some(e) = next.ext_mut() {
            e.set("stix_ids", strs(&ids));
        }
        self.touch(&mut next);
        let names: Vec<String> = gone.iter().map(entity_name).collect();
        let msg = format!(
            "merges Indicator `{}` in `{}`",
            names.join(", "),
            entity_name(&prev)
        );
        self.emit_change("merge", prev, next, outcome, msg, Some(gone));
    }

    // --- random activity -------------------------------------------------------------------------

    /// A random unprotected indicator satisfying `pred`.
    fn pick_indicator(&mut self, pred: impl Fn(&Ind) -> bool) -> Option<String> {
        let candidates: Vec<&String> = self
            .order
            .iter()
            .filter(|id| !self.protected.contains(*id))
            .filter(|id| self.model.get(*id).is_some_and(&pred))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.r.below(candidates.len() as u64) as usize;
        Some(candidates[i].clone())
    }

    fn random_live_create(&mut self) {
        let kind = random_kind(&mut self.r);
        let value = gen_value(&mut self.r, kind);
        let pat = live_pat(&mut self.r, kind, &value);
        self.create_indicator(&pat);
    }

    fn random_skip_create(&mut self) {
        let reason = *self.r.pick(&SKIP_MIX);
        let pat = skip_pat(&mut self.r, reason);
        self.create_indicator(&pat);
    }

    fn random_action(&mut self) {
        match self.r.below(920) {
            0..550 => self.random_live_create(),
            550..640 => self.random_skip_create(),
            640..680 => self.observable_with_relation(),
            680..700 => self.malware_with_relation(),
            700..710 => self.report(),
            710..810 => match self.pick_indicator(|i| i.present) {
                Some(id) => {
                    let score = self.r.range(10, 100);
                    self.set_score(&id, score);
                }
                None => self.random_live_create(),
            },
            810..840 => match self.pick_indicator(|i| i.present) {
                Some(id) => self.random_label_update(&id),
                None => self.random_live_create(),
            },
            840..865 => match self.pick_indicator(|i| i.live().is_some()) {
                Some(id) => self.random_pattern_change(&id),
                None => self.random_live_create(),
            },
            865..880 => match self.pick_indicator(|i| i.live().is_some()) {
                Some(id) => self.set_revoked(&id, true),
                None => self.random_live_create(),
            },
            _ => match self.pick_indicator(|i| i.present) {
                Some(id) => self.delete(&id),
                None => self.random_live_create(),
            },
        }
    }

    fn filler(&mut self, n: usize) {
        for _ in 0..n {
            self.random_action();
        }
    }

    fn filler_some(&mut self) {
        let n = self.r.range(3, 12) as usize;
        self.filler(n);
    }

    fn random_label_update(&mut self, id: &str) {
        if self.r.chance(0.5) {
            let label = *self.r.pick(LABELS);
            self.update(id, format!("adds `{label}` in `Label`"), None, |o| {
                let mut labels = match o.get("labels") {
                    Some(J::Arr(l)) => l.clone(),
                    _ => Vec::new(),
                };
                if !labels.contains(&J::from(label)) {
                    labels.push(J::from(label));
                }
                o.set("labels", labels);
            });
        } else {
            let text = format!(
                "Seen in {} traffic, sinkholed {}",
                self.r.pick(MALWARE),
                iso(self.now)
            );
            self.update(
                id,
                format!("replaces `{text}` in `Description`"),
                None,
                |o| {
                    o.set("description", text);
                },
            );
        }
    }

    /// Moves an indicator to another value of its kind; one time in four the new value is already
    /// held by another live indicator (reference counting).
    fn random_pattern_change(&mut self, id: &str) {
        let Some((kind, _)) = self
            .model
            .get(id)
            .and_then(|i| i.live().map(|(k, v)| (k, v.to_string())))
        else {
            return;
        };
        let shared = if self.r.chance(0.25) {
            self.pick_indicator(|i| i.live().is_some_and(|(k, _)| k == kind))
                .and_then(|other| {
                    self.model
                        .get(&other)
                        .and_then(|i| i.live().map(|(_, v)| v.to_string()))
                })
        } else {
            None
        };
        let value = shared.unwrap_or_else(|| gen_value(&mut self.r, kind));
        let pat = live_pat(&mut self.r, kind, &value);
        self.set_pattern(id, &pat);
    }

    /// The observable behind a live indicator, and the `based-on` relationship between them.
    fn observable_with_relation(&mut self) {
        let Some(id) = self.pick_indicator(|i| i.live().is_some()) else {
            return self.random_live_create();
        };
        let Some(ind) = self.model.get(&id) else {
            return;
        };
        let Some((kind, value)) = ind.live().map(|(k, v)| (k, v.to_string())) else {
            return;
        };
        let src = ind.obj.clone();
        let sco = observable(&mut self.r, &self.world, self.now, kind, &value);
        let msg = create_message(&sco);
        self.create(sco.clone(), None, msg);
        let rel = relationship(&mut self.r, &self.world, self.now, "based-on", &src, &sco);
        let msg = relation_message("creates", "based-on", &src, &sco);
        self.create(rel.clone(), None, msg);
        self.relations
            .push((id, rel, relation_message("deletes", "based-on", &src, &sco)));
    }

    fn malware_with_relation(&mut self) {
        let Some(id) = self.pick_indicator(|i| i.present) else {
            return self.random_live_create();
        };
        let target = if self.malware.is_empty() || self.r.chance(0.3) {
            let name = *self.r.pick(MALWARE);
            let m = malware(&mut self.r, &self.world, self.now, name);
            let msg = create_message(&m);
            self.create(m.clone(), None, msg);
            self.malware.push(m.clone());
            m
        } else {
            self.r.pick(&self.malware).clone()
        };
        let Some(src) = self.model.get(&id).map(|i| i.obj.clone()) else {
            return;
        };
        let rel = relationship(
            &mut self.r,
            &self.world,
            self.now,
            "indicates",
            &src,
            &target,
        );
        let msg = relation_message("creates", "indicates", &src, &target);
        self.create(rel.clone(), None, msg);
        self.relations.push((
            id,
            rel,
            relation_message("deletes", "indicates", &src, &target),
        ));
    }

    fn report(&mut self) {
        let mut refs = Vec::new();
        for _ in 0..self.r.range(3, 8) {
            if let Some(id) = self.pick_indicator(|i| i.present) {
                if !refs.contains(&id) {
                    refs.push(id);
                }
            }
        }
        if refs.is_empty() {
            return self.random_live_create();
        }
        let rep = report(&mut self.r, &self.world, self.now, &refs);
        let msg = create_message(&rep);
        self.create(rep, None, msg);
    }

    // --- scripted cases ----------------------------------------------------------------------------

    /// Two live holders of one value (different spellings); `deletes` of them deleted, or with
    /// `revoke_first` the first is revoked instead.
    fn shared(&mut self, a: IocKind, b: IocKind, deletes: usize, revoke_first: bool) {
        let value = gen_value(&mut self.r, a);
        let first = self.create_live(a, &value, None);
        self.filler_some();
        let second = self.create_live(b, &value, Some(&first));
        self.filler_some();
        if revoke_first {
            self.set_revoked(&first, true);
        }
        if deletes >= 1 {
            self.delete(&first);
        }
        if deletes >= 2 {
            self.filler_some();
            self.delete(&second);
        }
    }

    /// A pattern change away from a value still held by another indicator: the old value stays.
    fn move_from_shared(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let a = self.create_live(kind, &value, None);
        self.filler_some();
        self.create_live(kind, &value, Some(&a));
        self.filler_some();
        let fresh = gen_value(&mut self.r, kind);
        let pat = live_pat(&mut self.r, kind, &fresh);
        self.set_pattern(&a, &pat);
    }

    fn revoke_then_restore(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let a = self.create_live(kind, &value, None);
        self.filler_some();
        self.set_revoked(&a, true);
        self.filler_some();
        self.set_revoked(&a, false);
    }

    /// An update that turns a single comparison into an OR of two: the old value must go.
    fn make_compound(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let a = self.create_live(kind, &value, None);
        self.filler_some();
        let other = gen_value(&mut self.r, kind);
        let path = match kind {
            IocKind::Ipv4 => "ipv4-addr:value",
            IocKind::Url => "url:value",
            _ => "domain-name:value",
        };
        let pattern = format!("[{path} = '{value}'] OR [{path} = '{other}']");
        let pat = Pat {
            pattern: Some(pattern.clone()),
            pattern_type: "stix",
            outcome: Outcome::Skip(SkipReason::Compound),
            observable: observable_type(kind),
            name: pattern,
        };
        self.set_pattern(&a, &pat);
    }

    /// An indicator created with a broken pattern, then fixed: it becomes live.
    fn fix_invalid(&mut self) {
        let value = gen_ipv4(&mut self.r);
        let broken = Pat {
            pattern: Some(format!("[ipv4-addr:value = '{value}'")),
            pattern_type: "stix",
            outcome: Outcome::Skip(SkipReason::Invalid),
            observable: "IPv4-Addr",
            name: value.clone(),
        };
        let a = self.create_indicator(&broken);
        self.protected.insert(a.clone());
        self.filler_some();
        let fixed = spelled_pat(IocKind::Ipv4, &value, "ipv4-addr:value", &value);
        self.set_pattern(&a, &fixed);
    }

    /// A live indicator whose pattern is edited into a syntax error: its value goes.
    fn break_pattern(&mut self) {
        let value = gen_domain(&mut self.r);
        let a = self.create_live(IocKind::Domain, &value, None);
        self.filler_some();
        let broken = Pat {
            pattern: Some(format!("[domain-name:value = '{value}'")),
            pattern_type: "stix",
            outcome: Outcome::Skip(SkipReason::Invalid),
            observable: "Domain-Name",
            name: value,
        };
        self.set_pattern(&a, &broken);
    }

    /// Duplicates of one value merged into one indicator. The sources share the target's value, so
    /// the expected live set is the same whether a consumer treats the merged-away sources as
    /// deleted (what OpenCTI means) or not.
    fn merge_duplicates(&mut self, kind: IocKind, n_sources: usize) {
        let value = gen_value(&mut self.r, kind);
        let first = self.create_live(kind, &value, None);
        let mut sources = vec![first.clone()];
        for _ in 1..n_sources {
            self.filler_some();
            sources.push(self.create_live(kind, &value, Some(&first)));
        }
        self.filler_some();
        let target = self.create_live(kind, &value, Some(&first));
        self.filler_some();
        self.merge(&target, &sources);
    }

    /// Deleted, then restored from the trash: OpenCTI sends a `create` with the same id.
    fn delete_and_restore(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let a = self.create_live(kind, &value, None);
        self.filler_some();
        self.delete(&a);
        self.filler_some();
        let Some(ind) = self.model.get(&a) else {
            return;
        };
        let (o, outcome) = (ind.obj.clone(), ind.outcome.clone());
        let msg = format!("restores a Indicator `{}`", entity_name(&o));
        self.create(o, Some(outcome), msg);
    }

    /// An update of an indicator created before the capture started: the consumer has never seen it.
    fn unseen_update(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let pat = live_pat(&mut self.r, kind, &value);
        let then = self.now - 60 * DAY_MS;
        let prev = indicator(&mut self.r, &self.world, then, &pat, true);
        self.advance();
        let mut next = prev.clone();
        let score = self.r.range(10, 100);
        if let Some(e) = next.ext_mut() {
            e.set("score", score);
        }
        self.touch(&mut next);
        if let Some(id) = prev.str_of("id") {
            self.protected.insert(id.to_string());
        }
        self.emit_change(
            "update",
            prev,
            next,
            pat.outcome,
            format!("replaces `{score}` in `Score`"),
            None,
        );
    }

    /// A delete of an indicator the consumer has never seen: nothing to remove.
    fn unseen_delete(&mut self) {
        let kind = random_kind(&mut self.r);
        let value = gen_value(&mut self.r, kind);
        let pat = live_pat(&mut self.r, kind, &value);
        let o = indicator(&mut self.r, &self.world, self.now - 90 * DAY_MS, &pat, true);
        self.advance();
        let msg = format!("deletes a Indicator `{}`", entity_name(&o));
        self.emit_delete(o, msg);
        self.after_op();
    }

    /// An indicator that arrives already revoked: never live, not a skip.
    fn created_revoked(&mut self, kind: IocKind) {
        let value = gen_value(&mut self.r, kind);
        let pat = live_pat(&mut self.r, kind, &value);
        let mut o = self.new_indicator(&pat);
        o.set("revoked", true);
        let msg = create_message(&o);
        self.create(o, Some(pat.outcome), msg);
    }

    // --- malformed and unusual events --------------------------------------------------------------

    /// A create whose data line is cut short: not JSON.
    fn malformed_truncated(&mut self) {
        self.advance();
        let value = gen_domain(&mut self.r);
        let pat = live_pat(&mut self.r, IocKind::Domain, &value);
        let o = self.new_indicator(&pat);
        let id = self.new_id();
        let full = self
            .live_envelope("create", create_message(&o), o, None, &id)
            .dump();
        let mut cut = full.len() * 2 / 3;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = full.get(..cut).unwrap_or_default().to_string();
        self.emit(Some(id), "create", Data::Raw(text));
        self.count_skip(SkipReason::MalformedEvent);
        self.after_op();
    }

    /// A create whose envelope has no `data` field.
    fn malformed_no_data(&mut self) {
        self.advance();
        let id = self.new_id();
        let mut e = self.live_envelope(
            "create",
            "creates a Indicator `-`".to_string(),
            J::Null,
            None,
            &id,
        );
        e.remove("data");
        self.emit(Some(id), "create", Data::Json(e));
        self.count_skip(SkipReason::MalformedEvent);
        self.after_op();
    }

    /// A create of an indicator object without `id`.
    fn malformed_no_id(&mut self) {
        self.advance();
        let value = gen_ipv4(&mut self.r);
        let pat = live_pat(&mut self.r, IocKind::Ipv4, &value);
        let mut o = self.new_indicator(&pat);
        o.remove("id");
        let id = self.new_id();
        let e = self.live_envelope("create", create_message(&o), o, None, &id);
        self.emit(Some(id), "create", Data::Json(e));
        self.count_skip(SkipReason::MalformedEvent);
        self.after_op();
    }

    /// A topic this consumer does not know (newer servers): to be ignored, its id checkpointed.
    fn unknown_topic(&mut self) {
        self.advance();
        let id = self.new_id();
        let data = obj! {
            "version" => "4",
            "message" => "recover is not available for this stream, continuing live",
            "recover_until" => false,
        };
        self.emit(Some(id), "no-recover", Data::Json(data));
        self.after_op();
    }

    // --- results -----------------------------------------------------------------------------------

    /// The final live set as TSV lines `type<TAB>value` (sink kinds: hostname counts as domain).
    fn live_set(&self) -> BTreeSet<String> {
        self.model
            .values()
            .filter_map(Ind::live)
            .map(|(k, v)| format!("{}\t{v}", k.sink_kind().as_str()))
            .collect()
    }

    fn summary(&self) -> J {
        let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut styles = [0usize; 5];
        for ev in &self.events {
            *topics.entry(ev.topic.as_str()).or_default() += 1;
            if ev.topic != "heartbeat" {
                if let Some(id) = &ev.id {
                    *ids.entry(id.as_str()).or_default() += 1;
                }
            }
            let i = match ev.style {
                Style::Lf => 0,
                Style::Crlf => 1,
                Style::Comment => 2,
                Style::MultiLine => 3,
                Style::NoSpace => 4,
            };
            styles[i] += 1;
        }
        let live_inds = self.model.values().filter(|i| i.live().is_some()).count();
        let revoked = self
            .model
            .values()
            .filter(|i| i.present && is_revoked(&i.obj))
            .count();
        let gone = self.model.values().filter(|i| !i.present).count();
        obj! {
            "fixture" => self.name,
            "seed" => self.seed as i64,
            "events_total" => self.events.len(),
            "events_by_topic" => J::Obj(topics.into_iter().map(|(k, v)| (k.to_string(), J::from(v))).collect()),
            "init_events" => self.init_events,
            "dependency_events" => self.dependency_events,
            "ids_shared_by_several_events" => ids.values().filter(|n| **n > 1).count(),
            "sse_quirks" => obj! {
                "crlf_events" => styles[1],
                "comment_lines" => styles[2],
                "multiline_data_events" => styles[3],
                "data_without_space" => styles[4],
            },
            "indicators_created" => self.created.len(),
            "indicators_seen" => self.model.len(),
            "indicators_live" => live_inds,
            "indicators_revoked" => revoked,
            "indicators_gone" => gone,
            "indicators_merged_away" => self.merged_away,
            "skipped_by_reason" => skip_counts(&self.skips),
            "expected_live_values" => value_counts(&self.live_set()),
        }
    }
}

fn skip_counts(skips: &BTreeMap<SkipReason, usize>) -> J {
    J::Obj(
        SUMMARY_REASONS
            .iter()
            .map(|r| {
                (
                    r.code().to_string(),
                    J::from(skips.get(r).copied().unwrap_or(0)),
                )
            })
            .collect(),
    )
}

fn value_counts(live: &BTreeSet<String>) -> J {
    let kinds = ["sha256", "sha1", "md5", "url", "domain", "ipv4", "ipv6"];
    let mut o = J::Obj(Vec::new());
    for k in kinds {
        let n = live
            .iter()
            .filter(|l| l.split('\t').next() == Some(k))
            .count();
        o.set(k, n);
    }
    o.set("total", live.len());
    o
}

// ------------------------------------------------------------------------------------------------
// The captures

/// The big capture: a `recover` replay, then live traffic with every case spread through it.
fn big_stream() -> Stream {
    let init_start = LIVE_START_MS - 45 * DAY_MS;
    let mut g = Stream::new("opencti/stream", SEED_STREAM, init_start, true);
    g.connected();
    g.init_phase = true;
    for i in 0..STREAM_INIT_OBJECTS {
        match i % 11 {
            3 => g.random_skip_create(),
            7 => g.observable_with_relation(),
            _ => g.random_live_create(),
        }
    }
    g.init_phase = false;
    g.now = LIVE_START_MS;

    g.filler(40);
    g.pending_style = Some(Style::Comment);
    g.filler(30);
    for (a, b) in [
        (IocKind::Domain, IocKind::Hostname),
        (IocKind::Ipv4, IocKind::Ipv4),
        (IocKind::Sha256, IocKind::Sha256),
        (IocKind::Md5, IocKind::Md5),
        (IocKind::Url, IocKind::Url),
        (IocKind::Ipv6, IocKind::Ipv6),
    ] {
        g.shared(a, b, 1, false);
        g.filler(15);
    }
    g.pending_style = Some(Style::Crlf);
    for kind in [IocKind::Ipv4, IocKind::Domain, IocKind::Sha1, IocKind::Url] {
        g.shared(kind, kind, 2, false);
        g.filler(15);
    }
    g.shared(IocKind::Ipv4, IocKind::Ipv4, 0, true);
    g.shared(IocKind::Sha256, IocKind::Sha256, 0, true);
    g.filler(20);
    g.pending_style = Some(Style::MultiLine);
    for kind in [IocKind::Domain, IocKind::Ipv4, IocKind::Url] {
        g.move_from_shared(kind);
        g.filler(10);
    }
    g.revoke_then_restore(IocKind::Ipv4);
    g.revoke_then_restore(IocKind::Url);
    g.pending_style = Some(Style::Crlf);
    for kind in [IocKind::Ipv4, IocKind::Domain, IocKind::Url] {
        g.make_compound(kind);
        g.filler(10);
    }
    g.fix_invalid();
    g.fix_invalid();
    g.break_pattern();
    // URLs whose value holds a quote, escaped as `\'` in the pattern.
    for _ in 0..2 {
        let host = gen_domain(&mut g.r);
        let url = format!("http://{host}/it's/login.php?u={}", g.r.hex(6));
        g.create_indicator(&spelled_pat(IocKind::Url, &url, "url:value", &url));
    }
    g.filler(30);
    g.malformed_truncated();
    g.filler(40);
    g.pending_style = Some(Style::NoSpace);
    for (kind, n) in [
        (IocKind::Domain, 1),
        (IocKind::Ipv4, 2),
        (IocKind::Sha256, 1),
        (IocKind::Url, 1),
        (IocKind::Md5, 2),
        (IocKind::Hostname, 1),
    ] {
        g.merge_duplicates(kind, n);
        g.filler(12);
    }
    g.malformed_no_data();
    g.delete_and_restore(IocKind::Domain);
    g.delete_and_restore(IocKind::Sha1);
    g.pending_style = Some(Style::Crlf);
    for kind in [IocKind::Ipv4, IocKind::Sha256, IocKind::Domain] {
        g.unseen_update(kind);
        g.filler(8);
    }
    g.unseen_delete();
    g.unseen_delete();
    g.created_revoked(IocKind::Url);
    g.created_revoked(IocKind::Ipv4);
    g.filler(60);
    g.malformed_no_id();
    g.unknown_topic();
    g.pending_style = Some(Style::Crlf);
    g.filler(50);
    g.pending_style = Some(Style::Crlf);
    while g.events.iter().filter(|e| e.topic != "heartbeat").count() < STREAM_TARGET_EVENTS {
        g.random_action();
    }
    g
}

/// The small capture: each case once, in a fixed script, for fast tests.
fn small_stream() -> Stream {
    use IocKind as K;
    let mut g = Stream::new("opencti/small", SEED_SMALL, LIVE_START_MS, false);
    g.connected();
    let v = |k: K, g: &mut Stream| gen_value(&mut g.r, k);

    // Every kind and notable spelling once; the first create brings its author and marking along
    // under the same id.
    let s256 = v(K::Sha256, &mut g);
    g.create_indicator(&spelled_pat(
        K::Sha256,
        &s256,
        "file:hashes.'SHA-256'",
        &s256,
    ));
    let s256b = v(K::Sha256, &mut g);
    let upper = s256b.to_uppercase();
    g.create_indicator(&spelled_pat(
        K::Sha256,
        &s256b,
        "file:hashes.SHA256",
        &upper,
    ));
    let md5 = v(K::Md5, &mut g);
    let md5_id = g.create_indicator(&spelled_pat(K::Md5, &md5, "file:hashes.MD5", &md5));
    let sha1 = v(K::Sha1, &mut g);
    let sha1_id = g.create_indicator(&spelled_pat(K::Sha1, &sha1, "file:hashes.'SHA-1'", &sha1));
    let ip = v(K::Ipv4, &mut g);
    let ip_id = g.create_indicator(&spelled_pat(
        K::Ipv4,
        &ip,
        "ipv4-addr:value",
        &format!("{ip}/32"),
    ));
    let ip6 = v(K::Ipv6, &mut g);
    g.pending_style = Some(Style::Crlf);
    g.create_indicator(&spelled_pat(
        K::Ipv6,
        &ip6,
        "ipv6-addr:value",
        &ip6.to_uppercase(),
    ));
    let dom = v(K::Domain, &mut g);
    g.create_indicator(&spelled_pat(
        K::Domain,
        &dom,
        "domain-name:value",
        &format!("{}.", dom.to_uppercase()),
    ));
    let host = v(K::Hostname, &mut g);
    let host_id = g.create_indicator(&spelled_pat(K::Hostname, &host, "hostname:value", &host));
    let url = v(K::Url, &mut g);
    g.create_indicator(&spelled_pat(
        K::Url,
        &url,
        "url:value",
        &format!("  {url} "),
    ));
    let quoted = format!("http://{}/it's/login.php", gen_domain(&mut g.r));
    g.create_indicator(&spelled_pat(K::Url, &quoted, "url:value", &quoted));
    g.heartbeat();

    // A value held by a domain-name and a hostname indicator; the domain one is deleted later.
    let shared = v(K::Domain, &mut g);
    let shared_a = g.create_indicator(&spelled_pat(
        K::Domain,
        &shared,
        "domain-name:value",
        &shared,
    ));
    g.create_indicator(&spelled_pat(
        K::Hostname,
        &shared,
        "hostname:value",
        &shared.to_uppercase(),
    ));
    // A value held twice, both deleted later.
    let gone = v(K::Ipv4, &mut g);
    let gone_a = g.create_indicator(&spelled_pat(K::Ipv4, &gone, "ipv4-addr:value", &gone));
    let gone_b = g.create_indicator(&spelled_pat(
        K::Ipv4,
        &gone,
        "ipv4-addr:value",
        &format!("{gone}/32"),
    ));

    // Updates: score only, pattern change, revocation, made compound.
    g.pending_style = Some(Style::MultiLine);
    g.set_score(&md5_id, 95);
    let ip_new = v(K::Ipv4, &mut g);
    g.set_pattern(
        &ip_id,
        &spelled_pat(K::Ipv4, &ip_new, "ipv4-addr:value", &ip_new),
    );
    g.set_revoked(&sha1_id, true);
    let other = v(K::Domain, &mut g);
    let compound = format!("[hostname:value = '{host}'] OR [domain-name:value = '{other}']");
    g.set_pattern(
        &host_id,
        &Pat {
            pattern: Some(compound.clone()),
            pattern_type: "stix",
            outcome: Outcome::Skip(SkipReason::Compound),
            observable: "Hostname",
            name: compound,
        },
    );

    // A merge of two spellings of one hash.
    let dup = v(K::Sha1, &mut g);
    let src = g.create_indicator(&spelled_pat(K::Sha1, &dup, "file:hashes.SHA1", &dup));
    let tgt = g.create_indicator(&spelled_pat(
        K::Sha1,
        &dup,
        "file:hashes.'sha-1'",
        &dup.to_uppercase(),
    ));
    g.merge(&tgt, &[src]);

    // One indicator per skip reason.
    g.pending_style = Some(Style::Comment);
    let mut compound_id = String::new();
    for reason in [
        SkipReason::Compound,
        SkipReason::Qualified,
        SkipReason::UnsupportedObject,
        SkipReason::UnsupportedOperator,
        SkipReason::EmptyFileHash,
        SkipReason::CidrRange,
        SkipReason::NotStix,
        SkipReason::MissingPattern,
        SkipReason::Invalid,
        SkipReason::InvalidValue,
    ] {
        let pat = skip_pat(&mut g.r, reason);
        let id = g.create_indicator(&pat);
        if reason == SkipReason::Compound {
            compound_id = id;
        }
    }

    // Non-indicators: a malware, the relationship to it, a report.
    g.pending_style = Some(Style::NoSpace);
    g.malware_with_relation();
    g.report();

    g.malformed_truncated();
    g.malformed_no_data();
    g.malformed_no_id();
    g.unknown_topic();

    g.pending_style = Some(Style::Crlf);
    g.delete(&shared_a);
    g.delete(&gone_a);
    g.delete(&gone_b);
    g.delete(&compound_id);
    g.heartbeat();
    g
}

// ------------------------------------------------------------------------------------------------
// The bundle

struct Bundle {
    json: J,
    live: BTreeSet<String>,
    summary: J,
}

/// A STIX 2.1 bundle as an OpenCTI export (most objects) mixed with plain STIX from another
/// producer (indicators without the OpenCTI extension). Every object is a create.
fn build_bundle() -> Bundle {
    let mut r = Prng(SEED_BUNDLE);
    let now = LIVE_START_MS - 5 * DAY_MS;
    let w = world(&mut r, now - 500 * DAY_MS);
    let mut objects: Vec<J> = Vec::new();
    objects.extend(w.identities.iter().take(3).cloned());
    objects.extend(w.markings.iter().cloned());
    let malware: Vec<J> = MALWARE
        .iter()
        .take(6)
        .map(|name| malware(&mut r, &w, now, name))
        .collect();
    objects.extend(malware.iter().cloned());

    let mut inds: Vec<(J, Outcome)> = Vec::new();
    let mut values: Vec<(IocKind, String)> = Vec::new();
    for _ in 0..130 {
        let kind = random_kind(&mut r);
        let reuse: Vec<&(IocKind, String)> = values.iter().filter(|(k, _)| *k == kind).collect();
        let value = if !reuse.is_empty() && r.chance(0.08) {
            r.pick(&reuse).1.clone()
        } else {
            gen_value(&mut r, kind)
        };
        values.push((kind, value.clone()));
        let pat = live_pat(&mut r, kind, &value);
        let with_ext = r.chance(0.8);
        inds.push((indicator(&mut r, &w, now, &pat, with_ext), pat.outcome));
    }
    for _ in 0..5 {
        let kind = random_kind(&mut r);
        let value = gen_value(&mut r, kind);
        let pat = live_pat(&mut r, kind, &value);
        let mut o = indicator(&mut r, &w, now, &pat, true);
        o.set("revoked", true);
        inds.push((o, pat.outcome));
    }
    for reason in SKIP_MIX.iter().chain(SKIP_MIX.iter().skip(2)) {
        let pat = skip_pat(&mut r, *reason);
        inds.push((indicator(&mut r, &w, now, &pat, true), pat.outcome));
    }

    let mut rels = Vec::new();
    let mut scos = Vec::new();
    for i in 0..10 {
        if let Some((src, Outcome::Ioc(kind, value))) = inds.get(i * 7) {
            let sco = observable(&mut r, &w, now, *kind, value);
            rels.push(relationship(&mut r, &w, now, "based-on", src, &sco));
            scos.push(sco);
        }
        if let Some((src, _)) = inds.get(i * 11 + 3) {
            let m = r.pick(&malware).clone();
            rels.push(relationship(&mut r, &w, now, "indicates", src, &m));
        }
    }
    let refs: Vec<String> = inds
        .iter()
        .step_by(6)
        .filter_map(|(o, _)| o.str_of("id").map(str::to_string))
        .collect();
    let rep = report(&mut r, &w, now, &refs);

    let mut skips: BTreeMap<SkipReason, usize> = BTreeMap::new();
    let mut live = BTreeSet::new();
    let mut live_inds = 0usize;
    for (o, outcome) in &inds {
        match outcome {
            _ if is_revoked(o) => {}
            Outcome::Ioc(k, v) => {
                live_inds += 1;
                live.insert(format!("{}\t{v}", k.sink_kind().as_str()));
            }
            Outcome::Skip(reason) => *skips.entry(*reason).or_default() += 1,
        }
    }
    let n_inds = inds.len();
    objects.extend(inds.into_iter().map(|(o, _)| o));
    objects.extend(scos);
    objects.extend(rels);
    objects.push(rep);
    let non_indicators = objects.len() - n_inds;
    *skips.entry(SkipReason::NotIndicator).or_default() += non_indicators;

    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for o in &objects {
        *by_type
            .entry(o.str_of("type").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let summary = obj! {
        "fixture" => "bundle",
        "seed" => SEED_BUNDLE as i64,
        "objects_total" => objects.len(),
        "objects_by_type" => J::Obj(by_type.into_iter().map(|(k, v)| (k, J::from(v))).collect()),
        "indicators" => n_inds,
        "indicators_live" => live_inds,
        "indicators_revoked" => 5usize,
        "skipped_by_reason" => skip_counts(&skips),
        "expected_live_values" => value_counts(&live),
    };
    let json = obj! {
        "type" => "bundle",
        "id" => format!("bundle--{}", r.uuid(4)),
        "objects" => objects,
    };
    Bundle {
        json,
        live,
        summary,
    }
}

// ------------------------------------------------------------------------------------------------
// Writers

fn sse_text(events: &[Ev]) -> String {
    let mut out = String::new();
    for ev in events {
        let nl = if ev.style == Style::Crlf {
            "\r\n"
        } else {
            "\n"
        };
        if ev.style == Style::Comment {
            out.push_str(": keep-alive");
            out.push_str(nl);
        }
        if let Some(id) = &ev.id {
            let _ = write!(out, "id: {id}{nl}");
        }
        let _ = write!(out, "event: {}{nl}", ev.topic);
        match (&ev.data, ev.style) {
            (Data::Json(J::Obj(pairs)), Style::MultiLine) if pairs.len() >= 5 => {
                // Split between top-level members: the lines joined with "\n" are the same JSON.
                let parts: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        let mut s = String::new();
                        write_json_str(&mut s, k);
                        s.push(':');
                        v.write(&mut s, None, 0);
                        s
                    })
                    .collect();
                let n = parts.len();
                let _ = write!(out, "data: {{{},{nl}", parts[..2].join(","));
                let _ = write!(out, "data: {},{nl}", parts[2..n - 2].join(","));
                let _ = write!(out, "data: {}}}{nl}", parts[n - 2..].join(","));
            }
            (data, style) => {
                let text = match data {
                    Data::Json(j) => j.dump(),
                    Data::Raw(s) => s.clone(),
                };
                let sep = if style == Style::NoSpace { "" } else { " " };
                let _ = write!(out, "data:{sep}{text}{nl}");
            }
        }
        out.push_str(nl);
    }
    out
}

fn ndjson_text(events: &[Ev]) -> String {
    let mut out = String::new();
    for ev in events {
        let line = obj! {
            "id" => ev.id.clone().map(J::Str).unwrap_or(J::Null),
            "event" => ev.topic.as_str(),
            "data" => match &ev.data {
                Data::Json(j) => j.clone(),
                Data::Raw(s) => J::Str(s.clone()),
            },
        };
        out.push_str(&line.dump());
        out.push('\n');
    }
    out
}

fn tsv(live: &BTreeSet<String>) -> String {
    live.iter().map(|l| format!("{l}\n")).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
    println!(
        "  {:<40} {:>9} bytes",
        path.strip_prefix(dir.parent().unwrap_or(dir))
            .unwrap_or(&path)
            .display(),
        text.len()
    );
    Ok(())
}

fn write_stream(dir: &Path, prefix: &str, g: &Stream) -> Result<()> {
    let live = g.live_set();
    let (sse, nd, exp, sum) = if prefix.is_empty() {
        (
            "stream.sse",
            "stream.ndjson",
            "expected-live.tsv",
            "expected-summary.json",
        )
    } else {
        (
            "small.sse",
            "small.ndjson",
            "small-expected-live.tsv",
            "small-expected-summary.json",
        )
    };
    write(dir, sse, &sse_text(&g.events))?;
    write(dir, nd, &ndjson_text(&g.events))?;
    write(dir, exp, &tsv(&live))?;
    write(dir, sum, &g.summary().pretty(2))?;
    let data_events = g.events.iter().filter(|e| e.topic != "heartbeat").count();
    println!(
        "  {}: {} events ({} besides heartbeats), {} indicators, {} expected live values",
        g.name,
        g.events.len(),
        data_events,
        g.model.len(),
        live.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let opencti = root.join("opencti");
    let bundle_dir = root.join("bundle");
    for d in [&opencti, &bundle_dir] {
        std::fs::create_dir_all(d)
            .with_context(|| format!("failed to create `{}`", d.display()))?;
    }
    println!("writing fixtures under {}", root.display());
    write_stream(&opencti, "", &big_stream())?;
    write_stream(&opencti, "small", &small_stream())?;
    let b = build_bundle();
    write(&bundle_dir, "bundle.json", &b.json.pretty(4))?;
    write(&bundle_dir, "expected-live.tsv", &tsv(&b.live))?;
    write(&bundle_dir, "expected-summary.json", &b.summary.pretty(2))?;
    println!("  bundle: {} expected live values", b.live.len());
    Ok(())
}
