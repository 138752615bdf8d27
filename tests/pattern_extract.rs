//! Classification of patterns into IOCs or skip reasons: every supported path spelling, every
//! skip reason, expansion of OR/IN patterns, `extract_str` and the `iocsync parse` report line.

use iocsync::ioc::{Ioc, IocKind};
use iocsync::pattern::{
    extract_ioc, extract_iocs, extract_str, extract_str_max, parse, report, DEFAULT_EXPAND_MAX,
};
use iocsync::skip::SkipReason;

const MD5: &str = "e99a18c428cb38d5f260853678922e03";
const MD5_B: &str = "0cc175b9c0f1b6a831c399e269772661";
const SHA1: &str = "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed";
const SHA256: &str = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3";
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

fn ioc(kind: IocKind, value: &str) -> Ioc {
    Ioc {
        kind,
        value: value.to_owned(),
    }
}

fn one(input: &str) -> Result<Ioc, SkipReason> {
    extract_ioc(&parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}")))
}

fn expanded(input: &str) -> Result<Vec<Ioc>, SkipReason> {
    extract_iocs(&parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}")))
}

#[test]
fn every_hash_spelling() {
    let spellings = [
        ("MD5", IocKind::Md5, MD5),
        ("'MD5'", IocKind::Md5, MD5),
        ("md5", IocKind::Md5, MD5),
        ("'md5'", IocKind::Md5, MD5),
        ("SHA1", IocKind::Sha1, SHA1),
        ("'SHA1'", IocKind::Sha1, SHA1),
        ("sha1", IocKind::Sha1, SHA1),
        ("'SHA-1'", IocKind::Sha1, SHA1),
        ("'sha-1'", IocKind::Sha1, SHA1),
        ("SHA256", IocKind::Sha256, SHA256),
        ("'SHA256'", IocKind::Sha256, SHA256),
        ("sha256", IocKind::Sha256, SHA256),
        ("'SHA-256'", IocKind::Sha256, SHA256),
        ("'sha-256'", IocKind::Sha256, SHA256),
        ("'Sha-256'", IocKind::Sha256, SHA256),
    ];
    for (key, kind, value) in spellings {
        for prop in ["hashes", "'hashes'"] {
            let upper = value.to_ascii_uppercase();
            let input = format!("[file:{prop}.{key} = '{upper}']");
            assert_eq!(one(&input), Ok(ioc(kind, value)), "{input}");
        }
    }
}

#[test]
fn every_supported_value_path() {
    assert_eq!(
        one("[ipv4-addr:value = '10.1.2.3']"),
        Ok(ioc(IocKind::Ipv4, "10.1.2.3"))
    );
    assert_eq!(
        one("[ipv4-addr:value = '10.1.2.3/32']"),
        Ok(ioc(IocKind::Ipv4, "10.1.2.3"))
    );
    assert_eq!(
        one("[ipv6-addr:value = '2001:DB8::0:1']"),
        Ok(ioc(IocKind::Ipv6, "2001:db8::1"))
    );
    assert_eq!(
        one("[ipv6-addr:value = '::1/128']"),
        Ok(ioc(IocKind::Ipv6, "::1"))
    );
    assert_eq!(
        one("[domain-name:value = 'WWW.Example.org.']"),
        Ok(ioc(IocKind::Domain, "www.example.org"))
    );
    assert_eq!(
        one("[domain-name:value = 'пример.рф']"),
        Ok(ioc(IocKind::Domain, "xn--e1afmkfd.xn--p1ai"))
    );
    assert_eq!(
        one("[hostname:value = 'Mail.Example.org']"),
        Ok(ioc(IocKind::Hostname, "mail.example.org"))
    );
    assert_eq!(
        one("[url:value = ' http://x.example/a b']"),
        Err(SkipReason::InvalidValue)
    );
    assert_eq!(
        one("[url:value = ' http://x.example/A?b=1 ']"),
        Ok(ioc(IocKind::Url, "http://x.example/A?b=1"))
    );
    // Parentheses at either level are transparent.
    assert_eq!(
        one("(([(url:value = 'http://x.example/')]))"),
        Ok(ioc(IocKind::Url, "http://x.example/"))
    );
}

#[test]
fn every_skip_reason() {
    let cases = [
        ("[ipv4-addr:value = '10.0.0.1' OR ipv4-addr:value = '10.0.0.2']", SkipReason::Compound),
        ("[ipv4-addr:value = '10.0.0.1'] AND [url:value = 'x']", SkipReason::Compound),
        ("[ipv4-addr:value = '10.0.0.1'] FOLLOWEDBY [url:value = 'x']", SkipReason::Compound),
        ("[ipv4-addr:value IN ('10.0.0.1')]", SkipReason::Compound),
        ("[ipv4-addr:value = '10.0.0.1'] WITHIN 5 SECONDS", SkipReason::Qualified),
        ("[ipv4-addr:value = '10.0.0.1'] REPEATS 5 TIMES", SkipReason::Qualified),
        (
            "[ipv4-addr:value = '10.0.0.1'] START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:00Z'",
            SkipReason::Qualified,
        ),
        ("[email-addr:value = 'a@b.example']", SkipReason::UnsupportedObject),
        ("[file:hashes.'SHA-512' = '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000']", SkipReason::UnsupportedObject),
        ("[file:name = 'x']", SkipReason::UnsupportedObject),
        ("[artifact:hashes.MD5 = 'e99a18c428cb38d5f260853678922e03']", SkipReason::UnsupportedObject),
        ("[ipv4-addr:value != '10.0.0.1']", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value NOT = '10.0.0.1']", SkipReason::UnsupportedOperator),
        ("[url:value LIKE 'http://%']", SkipReason::UnsupportedOperator),
        ("[url:value MATCHES '^http']", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value ISSUBSET '10.0.0.0/8']", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value ISSUPERSET '10.0.0.0/8']", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value > '10.0.0.1']", SkipReason::UnsupportedOperator),
        ("[EXISTS url:value]", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value NOT IN ('10.0.0.1')]", SkipReason::UnsupportedOperator),
        ("[ipv4-addr:value = 'example.com']", SkipReason::InvalidValue),
        ("[ipv4-addr:value = 167772161]", SkipReason::InvalidValue),
        ("[ipv6-addr:value = '10.0.0.1']", SkipReason::InvalidValue),
        ("[domain-name:value = 'a b.example']", SkipReason::InvalidValue),
        ("[ipv4-addr:value = '10.0.0.0/8']", SkipReason::CidrRange),
        ("[ipv6-addr:value = 'fe80::/10']", SkipReason::CidrRange),
        (
            "[file:hashes.MD5 = 'D41D8CD98F00B204E9800998ECF8427E']",
            SkipReason::EmptyFileHash,
        ),
    ];
    for (input, reason) in cases {
        assert_eq!(one(input), Err(reason), "{input}");
        assert_eq!(extract_str(input, false), Err(reason), "{input}");
    }
    assert_eq!(
        extract_str("[file:hashes.MD5 = 'abc']", false),
        Err(SkipReason::Invalid)
    );
    assert_eq!(extract_str("not a pattern", true), Err(SkipReason::Invalid));
}

#[test]
fn expansion_of_or_and_in() {
    let md5 = |v: &str| ioc(IocKind::Md5, v);
    let ip = |v: &str| ioc(IocKind::Ipv4, v);
    assert_eq!(
        expanded(&format!(
            "[file:hashes.MD5 = '{MD5}' OR file:hashes.'SHA-1' = '{SHA1}']"
        )),
        Ok(vec![md5(MD5), ioc(IocKind::Sha1, SHA1)])
    );
    assert_eq!(
        expanded("[ipv4-addr:value = '10.0.0.1'] OR ([ipv4-addr:value = '10.0.0.2'] OR [domain-name:value = 'x.example'])"),
        Ok(vec![ip("10.0.0.1"), ip("10.0.0.2"), ioc(IocKind::Domain, "x.example")])
    );
    assert_eq!(
        expanded("[ipv4-addr:value IN ('10.0.0.1', '10.0.0.2', '10.0.0.1/32')]"),
        Ok(vec![ip("10.0.0.1"), ip("10.0.0.2")])
    );
    assert_eq!(
        expanded(&format!(
            "[file:hashes.MD5 IN ('{MD5}', '{MD5_B}') OR (url:value = 'http://a/')]"
        )),
        Ok(vec![md5(MD5), md5(MD5_B), ioc(IocKind::Url, "http://a/")])
    );
    // A single comparison expands to itself.
    assert_eq!(
        expanded("[ipv4-addr:value = '10.0.0.1']"),
        Ok(vec![ip("10.0.0.1")])
    );
    // Empty-file hashes are dropped; with nothing left, that is the reason.
    assert_eq!(
        expanded(&format!(
            "[file:hashes.MD5 = '{EMPTY_MD5}' OR file:hashes.MD5 = '{MD5}']"
        )),
        Ok(vec![md5(MD5)])
    );
    assert_eq!(
        expanded(&format!("[file:hashes.MD5 IN ('{EMPTY_MD5}')]")),
        Err(SkipReason::EmptyFileHash)
    );
    assert_eq!(
        expanded("[ipv4-addr:value IN ()]"),
        Err(SkipReason::InvalidValue)
    );
    // Any other bad member skips the whole pattern with its reason.
    assert_eq!(
        expanded("[ipv4-addr:value = '10.0.0.1' OR ipv4-addr:value = '10.0.0.0/8']"),
        Err(SkipReason::CidrRange)
    );
    assert_eq!(
        expanded("[ipv4-addr:value IN ('10.0.0.1', 5)]"),
        Err(SkipReason::InvalidValue)
    );
    // Anything but OR and = / IN on supported paths keeps extract_ioc()'s answer.
    for (input, reason) in [
        (
            "[ipv4-addr:value = '10.0.0.1' AND ipv4-addr:value = '10.0.0.2']",
            SkipReason::Compound,
        ),
        (
            "[ipv4-addr:value = '10.0.0.1'] AND [ipv4-addr:value = '10.0.0.2']",
            SkipReason::Compound,
        ),
        (
            "[ipv4-addr:value = '10.0.0.1'] FOLLOWEDBY [ipv4-addr:value = '10.0.0.2']",
            SkipReason::Compound,
        ),
        (
            "[ipv4-addr:value = '10.0.0.1' OR email-addr:value = 'a@b.example']",
            SkipReason::Compound,
        ),
        (
            "[ipv4-addr:value = '10.0.0.1' OR ipv4-addr:value != '10.0.0.2']",
            SkipReason::Compound,
        ),
        (
            "([ipv4-addr:value = '10.0.0.1'] OR [ipv4-addr:value = '10.0.0.2']) WITHIN 5 SECONDS",
            SkipReason::Qualified,
        ),
        (
            "[ipv4-addr:value NOT IN ('10.0.0.1')]",
            SkipReason::UnsupportedOperator,
        ),
        (
            "[email-addr:value IN ('a@b.example')]",
            SkipReason::UnsupportedObject,
        ),
    ] {
        assert_eq!(expanded(input), Err(reason), "{input}");
    }
    // extract_str honours the flag.
    let or = "[ipv4-addr:value = '10.0.0.1'] OR [ipv4-addr:value = '10.0.0.2']";
    assert_eq!(extract_str(or, false), Err(SkipReason::Compound));
    assert_eq!(extract_str(or, true).map(|v| v.len()), Ok(2));
    assert_eq!(
        extract_str("[ipv4-addr:value = '10.0.0.1']", false),
        Ok(vec![ip("10.0.0.1")])
    );
}

#[test]
fn report_lines_match_the_interface() {
    let json = |input: &str| serde_json::to_value(report(input)).expect("serialize");
    assert_eq!(
        json(&format!(
            "[file:hashes.'SHA-256' = '{}']",
            SHA256.to_ascii_uppercase()
        )),
        serde_json::json!({
            "pattern": format!("[file:hashes.'SHA-256' = '{}']", SHA256.to_ascii_uppercase()),
            "valid": true, "error": null,
            "ioc": {"type": "sha256", "value": SHA256}, "skip": null
        })
    );
    assert_eq!(
        json(&format!("[file:hashes.MD5 = '{EMPTY_MD5}']")),
        serde_json::json!({
            "pattern": format!("[file:hashes.MD5 = '{EMPTY_MD5}']"),
            "valid": true, "error": null, "ioc": null, "skip": "empty_file_hash"
        })
    );
    assert_eq!(
        json("[hostname:value = 'a.example'] OR [url:value = 'x']"),
        serde_json::json!({
            "pattern": "[hostname:value = 'a.example'] OR [url:value = 'x']",
            "valid": true, "error": null, "ioc": null, "skip": "compound"
        })
    );
    assert_eq!(
        json("[url:value = 'x'"),
        serde_json::json!({
            "pattern": "[url:value = 'x'", "valid": false,
            "error": "expected ']' at offset 16", "ioc": null, "skip": "invalid"
        })
    );
}

/// An `IN` of `n` distinct IPv4 addresses.
fn in_of(n: usize) -> String {
    let members: Vec<String> = (0..n)
        .map(|i| format!("'10.{}.{}.{}'", i / 65536 % 256, i / 256 % 256, i % 256))
        .collect();
    format!("[ipv4-addr:value IN ({})]", members.join(", "))
}

#[test]
fn expansion_is_capped_with_a_named_skip() {
    let ip = |v: &str| ioc(IocKind::Ipv4, v);
    // 20,000 members: skipped whole, by name, before any member is turned into an IOC.
    let huge = in_of(20_000);
    assert_eq!(expanded(&huge), Err(SkipReason::TooManyMembers));
    assert_eq!(extract_str(&huge, true), Err(SkipReason::TooManyMembers));
    assert_eq!(SkipReason::TooManyMembers.code(), "too_many_members");
    // Up to the default cap everything expands, de-duplicated.
    let at_cap = in_of(DEFAULT_EXPAND_MAX);
    assert_eq!(
        expanded(&at_cap).map(|v| v.len()),
        Ok(DEFAULT_EXPAND_MAX),
        "the default cap itself is allowed"
    );
    assert_eq!(
        expanded(&in_of(DEFAULT_EXPAND_MAX + 1)),
        Err(SkipReason::TooManyMembers)
    );
    // The cap is configurable and counts members as written: repeats count too.
    let repeated = "[ipv4-addr:value IN ('10.0.0.1', '10.0.0.1', '10.0.0.1')]";
    assert_eq!(
        extract_str_max(repeated, Some(2)),
        Err(SkipReason::TooManyMembers)
    );
    assert_eq!(extract_str_max(repeated, Some(3)), Ok(vec![ip("10.0.0.1")]));
    // Across ORs as well as inside an IN.
    let or = "[ipv4-addr:value = '10.0.0.1'] OR [ipv4-addr:value IN ('10.0.0.2', '10.0.0.3')]";
    assert_eq!(
        extract_str_max(or, Some(2)),
        Err(SkipReason::TooManyMembers)
    );
    assert_eq!(extract_str_max(or, Some(3)).map(|v| v.len()), Ok(3));
    // Without expansion the cap plays no part: a single comparison is one IOC.
    assert_eq!(
        extract_str_max("[ipv4-addr:value = '10.0.0.1']", None),
        Ok(vec![ip("10.0.0.1")])
    );
}
