//! Why an event or an indicator did not become an IOC: one enum with a stable snake_case code per
//! reason, shared by the classifier, every source, the metrics, the logs and the dead-letter file.

use serde::{Deserialize, Serialize};

/// A named reason for not turning something into an IOC. The `code()` strings are part of the
/// user-facing contract (metrics labels, `iocsync parse`, run summaries): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The pattern text is not a syntactically or semantically valid STIX 2.1 pattern.
    Invalid,
    /// The pattern has more than one comparison or observation (AND, OR, FOLLOWEDBY, IN…).
    Compound,
    /// The observation carries a qualifier (WITHIN, REPEATS, START/STOP).
    Qualified,
    /// The comparison's object path is not one we turn into an IOC (e.g. `email-addr:value`).
    UnsupportedObject,
    /// The comparison uses an operator other than `=` (`!=`, `LIKE`, `MATCHES`, `NOT =`, `EXISTS`…).
    UnsupportedOperator,
    /// The compared value is not a valid value for its IOC type (bad hex, bad address…).
    InvalidValue,
    /// A CIDR wider than a single address: no sink we feed accepts ranges.
    CidrRange,
    /// The hash of the empty file: it would match every empty file.
    EmptyFileHash,
    /// The indicator's `pattern_type` is not `stix` (sigma, yara, snort…).
    NotStix,
    /// The object is not an indicator (identity, marking, relationship…).
    NotIndicator,
    /// The indicator has no `pattern` field.
    MissingPattern,
    /// The event could not be read at all (bad JSON, missing `data`, missing `id`).
    MalformedEvent,
    /// A MISP attribute type that has no IOC equivalent (email, ssdeep, sha512, yara…).
    UnsupportedType,
    /// A MISP attribute that belongs to a feed listed in `misp.disabled_feeds`.
    IgnoredDisabledFeed,
    /// A MISP attribute whose `to_ids` flag is off (and `misp.only_to_ids` is on).
    NotToIds,
    /// The indicator's `valid_until` has passed (unless `pipeline.keep_expired` is on): it is not
    /// pushed, and what it held is removed when it expires.
    Expired,
    /// An OR / IN expansion (`pipeline.expand_or`) that names more members than
    /// `pipeline.expand_max`: skipped whole rather than trimmed.
    TooManyMembers,
}

impl SkipReason {
    /// Every reason, in declaration order (for metrics pre-registration and docs).
    pub const ALL: [SkipReason; 17] = [
        SkipReason::Invalid,
        SkipReason::Compound,
        SkipReason::Qualified,
        SkipReason::UnsupportedObject,
        SkipReason::UnsupportedOperator,
        SkipReason::InvalidValue,
        SkipReason::CidrRange,
        SkipReason::EmptyFileHash,
        SkipReason::NotStix,
        SkipReason::NotIndicator,
        SkipReason::MissingPattern,
        SkipReason::MalformedEvent,
        SkipReason::UnsupportedType,
        SkipReason::IgnoredDisabledFeed,
        SkipReason::NotToIds,
        SkipReason::Expired,
        SkipReason::TooManyMembers,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::Invalid => "invalid",
            SkipReason::Compound => "compound",
            SkipReason::Qualified => "qualified",
            SkipReason::UnsupportedObject => "unsupported_object",
            SkipReason::UnsupportedOperator => "unsupported_operator",
            SkipReason::InvalidValue => "invalid_value",
            SkipReason::CidrRange => "cidr_range",
            SkipReason::EmptyFileHash => "empty_file_hash",
            SkipReason::NotStix => "not_stix",
            SkipReason::NotIndicator => "not_indicator",
            SkipReason::MissingPattern => "missing_pattern",
            SkipReason::MalformedEvent => "malformed_event",
            SkipReason::UnsupportedType => "unsupported_type",
            SkipReason::IgnoredDisabledFeed => "ignored_disabled_feed",
            SkipReason::NotToIds => "not_to_ids",
            SkipReason::Expired => "expired",
            SkipReason::TooManyMembers => "too_many_members",
        }
    }

    /// Parses a code back (run history is stored with codes).
    pub fn from_code(code: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for reason in SkipReason::ALL {
            assert_eq!(SkipReason::from_code(reason.code()), Some(reason));
            let json = serde_json::to_string(&reason).expect("serialize");
            assert_eq!(json, format!("\"{}\"", reason.code()));
        }
    }
}
