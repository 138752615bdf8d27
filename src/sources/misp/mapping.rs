//! MISP attribute → the indicator state iocsync pushes: the type mapping of protocols.md §5
//! (composite types included, `stix2-pattern` through our STIX grammar), the `to_ids` rule, soft
//! deletions, disabled feeds, and the metadata sent along (event title, comment, tags, links back).

use super::wire::Attribute;
use crate::ioc::{Ioc, IocKind};
use crate::model::{IndicatorState, IocMeta};
use crate::remote::join_url;
use crate::skip::SkipReason;

/// Every MISP type iocsync turns into IOCs (the default `type` filter of a poll).
pub const SUPPORTED_TYPES: &[&str] = &[
    "md5",
    "sha1",
    "sha256",
    "filename|md5",
    "filename|sha1",
    "filename|sha256",
    "malware-sample",
    "ip-src",
    "ip-dst",
    "ip-src|port",
    "ip-dst|port",
    "domain",
    "hostname",
    "domain|ip",
    "hostname|port",
    "url",
    "stix2-pattern",
];

/// What mapping needs besides the attribute.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// `misp.only_to_ids`.
    pub only_to_ids: bool,
    /// Expand a `stix2-pattern` that is only an OR of equalities (`pipeline.expand_or`), with
    /// this member cap (`pipeline.expand_max`); `None`: no expansion.
    pub expand: Option<usize>,
    /// The MISP base URL, for links back to the event.
    pub base_url: String,
}

/// Why an attribute yields nothing, decided before its value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The attribute is live and may yield IOCs.
    Open,
    /// Soft-deleted: remove what it held (not a skip).
    Deleted,
    /// Held back for this reason (also removes what it held).
    Skip(SkipReason),
}

/// The checks that do not need the value, in the order they are counted: deleted, disabled feed,
/// unsupported type, `to_ids` off.
pub fn gate(attr: &Attribute, from_disabled_feed: bool, opts: &MapOptions) -> Gate {
    if attr.deleted {
        Gate::Deleted
    } else if from_disabled_feed {
        Gate::Skip(SkipReason::IgnoredDisabledFeed)
    } else if !SUPPORTED_TYPES.contains(&attr.kind.as_str()) {
        Gate::Skip(SkipReason::UnsupportedType)
    } else if opts.only_to_ids && !attr.to_ids {
        Gate::Skip(SkipReason::NotToIds)
    } else {
        Gate::Open
    }
}

/// The indicator state of one attribute. Empty `iocs` with no skip removes whatever the attribute
/// held in the sinks; a skip removes it too and is counted under its reason.
pub fn map_attribute(
    attr: &Attribute,
    from_disabled_feed: bool,
    opts: &MapOptions,
) -> IndicatorState {
    let meta = meta_of(attr, opts);
    let (iocs, skip) = match gate(attr, from_disabled_feed, opts) {
        Gate::Deleted => (Vec::new(), None),
        Gate::Skip(reason) => (Vec::new(), Some(reason)),
        Gate::Open => match iocs_of(&attr.kind, &attr.value, opts.expand) {
            Ok(iocs) => (iocs, None),
            Err(reason) => (Vec::new(), Some(reason)),
        },
    };
    IndicatorState {
        id: attr.uuid.clone(),
        iocs,
        skip,
        meta,
        // The attribute's timestamp orders its versions: a re-delivered older one changes nothing.
        version: chrono::DateTime::from_timestamp(attr.timestamp, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }
}

/// The part of a composite value before / after the first `|`.
fn halves(value: &str) -> (&str, Option<&str>) {
    match value.split_once('|') {
        Some((a, b)) => (a, Some(b)),
        None => (value, None),
    }
}

/// An address of either family; a `/len` suffix is handled by [`Ioc::new`].
fn ip(raw: &str) -> Result<Ioc, SkipReason> {
    let address = raw.trim().split('/').next().unwrap_or_default();
    if address.contains(':') {
        Ioc::new(IocKind::Ipv6, raw)
    } else {
        Ioc::new(IocKind::Ipv4, raw)
    }
}

/// The IOCs of a supported type's value, or why there are none.
pub fn iocs_of(kind: &str, value: &str, expand: Option<usize>) -> Result<Vec<Ioc>, SkipReason> {
    let one = |r: Result<Ioc, SkipReason>| r.map(|ioc| vec![ioc]);
    match kind {
        "md5" => one(Ioc::new(IocKind::Md5, value)),
        "sha1" => one(Ioc::new(IocKind::Sha1, value)),
        "sha256" => one(Ioc::new(IocKind::Sha256, value)),
        "filename|md5" | "malware-sample" => {
            one(Ioc::new(IocKind::Md5, halves(value).1.unwrap_or_default()))
        }
        "filename|sha1" => one(Ioc::new(IocKind::Sha1, halves(value).1.unwrap_or_default())),
        "filename|sha256" => one(Ioc::new(
            IocKind::Sha256,
            halves(value).1.unwrap_or_default(),
        )),
        "ip-src" | "ip-dst" => one(ip(value)),
        "ip-src|port" | "ip-dst|port" => one(ip(halves(value).0)),
        "domain" | "hostname" => one(Ioc::new(IocKind::Domain, value)),
        "hostname|port" => one(Ioc::new(IocKind::Domain, halves(value).0)),
        "url" => one(Ioc::new(IocKind::Url, value)),
        "domain|ip" => {
            let (domain, address) = halves(value);
            // Keep whichever half is valid; report the first problem when neither is.
            let results = [
                Ioc::new(IocKind::Domain, domain),
                ip(address.unwrap_or_default()),
            ];
            let first_err = results.iter().find_map(|r| r.as_ref().err().copied());
            let iocs: Vec<Ioc> = results.into_iter().filter_map(Result::ok).collect();
            match (iocs.is_empty(), first_err) {
                (true, Some(reason)) => Err(reason),
                _ => Ok(iocs),
            }
        }
        "stix2-pattern" => crate::pattern::extract_str_max(value.trim(), expand),
        _ => Err(SkipReason::UnsupportedType),
    }
}

/// Metadata: the event title as the name, the comment as the description, tags as labels, and
/// links back to the event.
fn meta_of(attr: &Attribute, opts: &MapOptions) -> IocMeta {
    let mut labels: Vec<String> = attr.tags.iter().map(|t| t.name.clone()).collect();
    labels.sort();
    labels.dedup();
    let event_id = attr.event_id.as_deref().or(attr.event.id.as_deref());
    IocMeta {
        name: attr.event.info.clone(),
        description: attr.comment.clone(),
        pattern: Some(format!("{}|{}", attr.kind, attr.value.trim())),
        valid_from: attr.first_seen.clone(),
        labels,
        source_internal_id: attr.id.clone(),
        source_url: match event_id {
            Some(id) if !opts.base_url.is_empty() => {
                Some(join_url(&opts.base_url, &format!("events/view/{id}")))
            }
            _ => None,
        },
        ..IocMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::misp::wire::{EventRef, TagRef};

    const SHA256: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    fn attr(kind: &str, value: &str) -> Attribute {
        Attribute {
            id: Some("41".into()),
            event_id: Some("7".into()),
            uuid: "5e0f1d2c-0000-4000-8000-000000000001".into(),
            kind: kind.into(),
            category: Some("Network activity".into()),
            value: value.into(),
            to_ids: true,
            deleted: false,
            timestamp: 1_700_000_000,
            comment: Some("C2".into()),
            first_seen: None,
            event: EventRef {
                id: Some("7".into()),
                info: Some("Botnet X".into()),
                ..EventRef::default()
            },
            tags: vec![
                TagRef {
                    id: Some("2".into()),
                    name: "tlp:white".into(),
                },
                TagRef {
                    id: Some("1".into()),
                    name: "osint".into(),
                },
            ],
        }
    }

    fn opts() -> MapOptions {
        MapOptions {
            only_to_ids: true,
            expand: None,
            base_url: "https://misp.example/".into(),
        }
    }

    fn values(kind: &str, value: &str) -> Result<Vec<(String, String)>, SkipReason> {
        iocs_of(kind, value, None).map(|v| {
            v.into_iter()
                .map(|i| (i.kind.as_str().to_string(), i.value))
                .collect()
        })
    }

    fn pair(kind: &str, value: &str) -> Vec<(String, String)> {
        vec![(kind.to_string(), value.to_string())]
    }

    #[test]
    fn simple_and_composite_types() {
        assert_eq!(
            values("sha256", &SHA256.to_uppercase()),
            Ok(pair("sha256", SHA256))
        );
        assert_eq!(
            values("filename|sha256", &format!("evil.exe|{SHA256}")),
            Ok(pair("sha256", SHA256))
        );
        assert_eq!(
            values("malware-sample", "a.zip|0800fc577294c34e0b28ad2839435945"),
            Ok(pair("md5", "0800fc577294c34e0b28ad2839435945"))
        );
        assert_eq!(
            values("ip-dst", "10.0.0.1/32"),
            Ok(pair("ipv4", "10.0.0.1"))
        );
        assert_eq!(
            values("ip-src", "2001:DB8::1"),
            Ok(pair("ipv6", "2001:db8::1"))
        );
        assert_eq!(
            values("ip-dst|port", "1.2.3.4|443"),
            Ok(pair("ipv4", "1.2.3.4"))
        );
        assert_eq!(
            values("ip-src|port", "2001:db8::2|53"),
            Ok(pair("ipv6", "2001:db8::2"))
        );
        assert_eq!(
            values("hostname|port", "C2.Example.com.|8080"),
            Ok(pair("domain", "c2.example.com"))
        );
        assert_eq!(
            values("url", " http://x.example/a?b=1 "),
            Ok(pair("url", "http://x.example/a?b=1"))
        );
        assert_eq!(
            values("domain|ip", "evil.example|5.6.7.8"),
            Ok(vec![
                ("domain".into(), "evil.example".into()),
                ("ipv4".into(), "5.6.7.8".into())
            ])
        );
        // One bad half keeps the other.
        assert_eq!(
            values("domain|ip", "evil.example|nope"),
            Ok(pair("domain", "evil.example"))
        );
    }

    #[test]
    fn skips_name_their_reason() {
        assert_eq!(values("ip-dst", "10.0.0.0/8"), Err(SkipReason::CidrRange));
        assert_eq!(
            values("md5", "d41d8cd98f00b204e9800998ecf8427e"),
            Err(SkipReason::EmptyFileHash)
        );
        assert_eq!(values("sha1", "xyz"), Err(SkipReason::InvalidValue));
        assert_eq!(
            values("filename|md5", "no-hash-here"),
            Err(SkipReason::InvalidValue)
        );
        assert_eq!(
            values("domain|ip", "bad domain|nope"),
            Err(SkipReason::InvalidValue)
        );
        assert_eq!(
            values("email-src", "a@b.c"),
            Err(SkipReason::UnsupportedType)
        );
    }

    #[test]
    fn stix2_patterns_go_through_the_grammar() {
        assert_eq!(
            values("stix2-pattern", "[domain-name:value = 'Evil.Example']"),
            Ok(pair("domain", "evil.example"))
        );
        assert_eq!(
            values(
                "stix2-pattern",
                "[ipv4-addr:value = '1.1.1.1'] AND [ipv4-addr:value = '2.2.2.2']"
            ),
            Err(SkipReason::Compound)
        );
        assert_eq!(values("stix2-pattern", "[broken"), Err(SkipReason::Invalid));
    }

    #[test]
    fn gates_in_counting_order() {
        let o = opts();
        let mut a = attr("email-src", "a@b.c");
        a.to_ids = false;
        assert_eq!(
            gate(&a, true, &o),
            Gate::Skip(SkipReason::IgnoredDisabledFeed)
        );
        assert_eq!(gate(&a, false, &o), Gate::Skip(SkipReason::UnsupportedType));
        a.kind = "ip-dst".into();
        assert_eq!(gate(&a, false, &o), Gate::Skip(SkipReason::NotToIds));
        let lenient = MapOptions {
            only_to_ids: false,
            ..opts()
        };
        assert_eq!(gate(&a, false, &lenient), Gate::Open);
        a.deleted = true;
        assert_eq!(gate(&a, true, &o), Gate::Deleted);
    }

    #[test]
    fn maps_state_and_metadata() {
        let s = map_attribute(&attr("ip-dst", "1.2.3.4"), false, &opts());
        assert_eq!(s.id, "5e0f1d2c-0000-4000-8000-000000000001");
        assert_eq!(s.skip, None);
        assert_eq!(
            s.iocs,
            vec![Ioc::new(IocKind::Ipv4, "1.2.3.4").expect("ip")]
        );
        assert_eq!(s.meta.name.as_deref(), Some("Botnet X"));
        assert_eq!(s.meta.description.as_deref(), Some("C2"));
        assert_eq!(s.meta.labels, ["osint", "tlp:white"]);
        assert_eq!(s.meta.pattern.as_deref(), Some("ip-dst|1.2.3.4"));
        assert_eq!(s.meta.source_internal_id.as_deref(), Some("41"));
        assert_eq!(
            s.meta.source_url.as_deref(),
            Some("https://misp.example/events/view/7")
        );

        let mut deleted = attr("ip-dst", "deleted");
        deleted.deleted = true;
        let s = map_attribute(&deleted, false, &opts());
        assert!(s.iocs.is_empty() && s.skip.is_none(), "{s:?}");

        let s = map_attribute(&attr("ip-dst", "10.0.0.0/8"), false, &opts());
        assert_eq!(s.skip, Some(SkipReason::CidrRange));
    }
}
