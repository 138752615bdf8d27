//! STIX 2.1 patterning: grammar, AST, printing and classification.
//!
//! - [`parse`] reads the complete STIX 2.1 pattern grammar (`STIXPattern.g4` of
//!   oasis-open/cti-stix2-json-schemas, with the lexer's exact token rules) into a typed
//!   [`Pattern`] with byte spans, and runs the semantic checks of the reference validator
//!   `stix2-patterns` (duplicate qualifier kind, hash value form). It never panics, runs in
//!   linear time, and rejects parentheses and qualifiers nested deeper than [`MAX_NESTING`].
//! - `Display` on the tree prints a canonical pattern that parses back to an equal tree.
//! - [`extract_ioc`] / [`extract_iocs`] turn a pattern into IOCs or a [`SkipReason`];
//!   [`report`] is one line of `iocsync parse`, and [`write_reports`] streams the command's
//!   output (one JSON line per input line) from a reader to a writer.
//!
//! The grammar functions are nom parsers (`fn(&str) -> IResult<&str, T, PErr>`, every error a
//! `nom::Err::Failure`, i.e. cut): the grammar is LL(1), so each choice is dispatched on the next
//! byte or keyword instead of trying `alt` branches, which keeps parsing linear and lets every
//! error name the token that was expected. Files: `lex` (tokens), `parser` (grammar), `ast`,
//! `print` (canonical `Display`), `semantic` (hash check), `extract`, `error`, `report`
//! (`iocsync parse` output).
//!
//! Known, deliberate differences from `stix2-patterns` (2.1.2):
//! - it rejects any pattern that does not start with `[` after `(`/whitespace, so a leading
//!   comment makes it fail; comments are skipped everywhere here, as the grammar says;
//! - it rejects every `IN (…)` on a hash key (it checks the set's text as one hash); here each
//!   member is checked;
//! - it crashes on the empty string, on a negative list index (`[-1]`) and on a hash path ending
//!   in a list index (`file:hashes[0]`); the empty string is invalid here, the others valid
//!   (negative indexes are in the grammar) and not hash-checked;
//! - list indexes and `REPEATS` counts beyond 64 bits are errors here.

mod ast;
mod error;
mod extract;
mod lex;
mod parser;
mod print;
mod report;
mod semantic;

pub use ast::{
    BoolOp, CompareOp, Comparison, ComparisonExpr, ComparisonKind, Literal, LiteralValue,
    ObjectPath, ObservationExpr, ObservationKind, ObservationOp, PathStep, Pattern, Qualifier,
    QualifierKind, Span, StringOp, Test,
};
pub use error::ParseError;
pub use extract::{
    extract_ioc, extract_iocs, extract_iocs_max, supported_kind, DEFAULT_EXPAND_MAX,
};
pub use parser::{parse, MAX_NESTING};
pub use report::{
    default_threads, report, write_arg_reports, write_report, write_report_bytes, write_reports,
    ParseReport, StreamError, BLOCK_BYTES, EMPTY_PATTERN,
};

use crate::ioc::Ioc;
use crate::skip::SkipReason;

/// Parses and classifies in one step. A parse error is [`SkipReason::Invalid`]. Without `expand`
/// the result holds exactly one IOC; with it, see [`extract_iocs`] (default member cap).
pub fn extract_str(input: &str, expand: bool) -> Result<Vec<Ioc>, SkipReason> {
    extract_str_max(input, expand.then_some(DEFAULT_EXPAND_MAX))
}

/// Like [`extract_str`]; `expand_max` is `None` for no expansion, else the member cap of
/// [`extract_iocs_max`] (`pipeline.expand_max`).
pub fn extract_str_max(input: &str, expand_max: Option<usize>) -> Result<Vec<Ioc>, SkipReason> {
    let pattern = parse(input).map_err(|_| SkipReason::Invalid)?;
    match expand_max {
        Some(max) => extract_iocs_max(&pattern, max),
        None => extract_ioc(&pattern).map(|ioc| vec![ioc]),
    }
}
