//! Reading SentinelOne for reconcile: every IOC in the configured scope, page by page (cursor
//! paging through the `s1` client); an IOC is iocsync's when its `externalId` is an indicator id
//! (what the sink writes there), and its validity is compared the way the sink computes it (the
//! indicator's `valid_until` capped at S1's maximum per type from the time it was written).

use super::compare::{unix_seconds, Expectation, RemoteEntry};
use crate::ioc::IocKind;
use crate::model::IocMeta;
use crate::remote::RemoteFailure;
use crate::sinks::sentinelone::item::{truncate_chars, MAX_DESCRIPTION_CHARS};
use crate::sinks::sentinelone::{ListQuery, PagesEnd, RemoteIoc, S1Type, SentinelOneClient};
use crate::sinks::SinkError;
use std::ops::ControlFlow;

/// Slack when comparing validity: the cap is computed from the sink's clock at write time, S1
/// stamps `updatedAt` a moment later.
const VALIDITY_SLACK_SECS: i64 = 300;

/// True for what iocsync writes as `externalId`: a STIX indicator id (`indicator--<uuid>`) or a
/// MISP attribute uuid.
pub fn is_indicator_id(s: &str) -> bool {
    let uuid = s.strip_prefix("indicator--").unwrap_or(s);
    uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// How the S1 sink derives what it writes.
pub struct S1Expectation;

impl Expectation for S1Expectation {
    fn description(&self, meta: &IocMeta) -> Option<String> {
        Some(
            meta.description
                .as_deref()
                .filter(|d| !d.trim().is_empty())
                .map(|d| truncate_chars(d, MAX_DESCRIPTION_CHARS))
                .unwrap_or_default(),
        )
    }

    fn validity_matches(&self, valid_until: Option<i64>, entry: &RemoteEntry) -> bool {
        // No end recorded: the sink let S1 (or its default days) choose.
        let Some(wanted) = valid_until else {
            return true;
        };
        let Some(got) = unix_seconds(entry.valid_until.as_deref()) else {
            return false;
        };
        let cap_days = entry
            .kind
            .map(|k| S1Type::from_kind(k).max_valid_days())
            .unwrap_or(180);
        let written = unix_seconds(entry.written_at.as_deref());
        let expected = match written {
            Some(at) => wanted.min(at + cap_days * 86_400),
            None => wanted,
        };
        (got - expected).abs() <= VALIDITY_SLACK_SECS
    }
}

/// One S1 IOC as a reconcile entry.
pub fn entry_of(ioc: RemoteIoc) -> RemoteEntry {
    let type_name = ioc.kind.unwrap_or_default();
    let kind = S1Type::from_name(&type_name).map(kind_of);
    RemoteEntry {
        kind,
        marker: ioc.external_id.filter(|e| is_indicator_id(e)),
        type_name,
        value: ioc.value.unwrap_or_default(),
        remote_id: ioc.uuid,
        description: ioc.description,
        valid_until: ioc.valid_until,
        written_at: ioc.updated_at.or(ioc.creation_time),
    }
}

/// The state's kind for an S1 type (`DNS` is a domain).
pub fn kind_of(t: S1Type) -> IocKind {
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

/// Streams every IOC in scope to `on_entry`, a page (1,000) at a time.
pub async fn stream(
    client: &SentinelOneClient,
    mut on_entry: impl FnMut(RemoteEntry),
) -> Result<(), SinkError> {
    let q = ListQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let end = client
        .list_pages(&q, |page| {
            page.data.into_iter().map(entry_of).for_each(&mut on_entry);
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| e.to_sink_error())?;
    match end {
        PagesEnd::Complete | PagesEnd::Stopped => Ok(()),
        PagesEnd::RepeatedCursor => Err(SinkError::Http {
            sink: crate::sinks::sentinelone::error::SINK,
            endpoint: client.endpoint_url().to_string(),
            status: 200,
            message: "S1 repeated a paging cursor: the listing is incomplete, nothing compared"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_indicator_ids_are_iocsync_markers() {
        assert!(is_indicator_id(
            "indicator--0b1c2d3e-0000-4000-8000-000000000001"
        ));
        assert!(is_indicator_id("5a5b5c5d-0000-4000-8000-00000000000a"));
        assert!(!is_indicator_id("ticket-1234"));
        assert!(!is_indicator_id("indicator--not-a-uuid"));
        assert!(!is_indicator_id(""));
    }

    #[test]
    fn validity_is_compared_after_s1_cap() {
        let mut e = RemoteEntry {
            kind: Some(IocKind::Ipv4),
            type_name: "IPV4".into(),
            value: "10.0.0.1".into(),
            marker: None,
            remote_id: None,
            description: None,
            valid_until: Some("2025-01-31T00:00:00Z".into()),
            written_at: Some("2025-01-01T00:00:00Z".into()),
        };
        let far = unix_seconds(Some("2030-01-01T00:00:00Z"));
        // Capped at 30 days after the write.
        assert!(S1Expectation.validity_matches(far, &e));
        e.valid_until = Some("2025-01-20T00:00:00Z".into());
        assert!(!S1Expectation.validity_matches(far, &e));
        assert!(S1Expectation.validity_matches(None, &e));
    }
}
