//! Parse errors: the public [`ParseError`] (message + byte offset) and the parser's internal error.

use std::borrow::Cow;

/// Why a pattern is not valid, and where: `offset` is a byte offset into the input.
///
/// Displays as `"<message> at offset <offset>"`, e.g. `expected ']' at offset 37`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ParseError {
    /// Byte offset of the offending input (the input length when the input ended too early).
    pub offset: usize,
    /// What was expected or what is wrong, without the offset.
    pub message: String,
}

/// The parser's error: where (as the length of the unparsed rest, so no base pointer is needed)
/// and what. Cheap to build: messages are static except for the rare semantic ones.
#[derive(Debug, Clone)]
pub(crate) struct PErr {
    /// Length of the input remaining at the error position.
    pub rest_len: usize,
    /// The message, without the offset.
    pub message: Cow<'static, str>,
}

impl PErr {
    /// An error at the start of `rest`.
    pub(crate) fn at(rest: &str, message: impl Into<Cow<'static, str>>) -> PErr {
        PErr {
            rest_len: rest.len(),
            message: message.into(),
        }
    }

    /// The public error, given the length of the whole input.
    pub(crate) fn into_public(self, input_len: usize) -> ParseError {
        ParseError {
            offset: input_len.saturating_sub(self.rest_len),
            message: self.message.into_owned(),
        }
    }
}

impl<'a> nom::error::ParseError<&'a str> for PErr {
    fn from_error_kind(input: &'a str, kind: nom::error::ErrorKind) -> PErr {
        PErr::at(input, format!("unexpected input ({})", kind.description()))
    }

    fn append(_input: &'a str, _kind: nom::error::ErrorKind, other: PErr) -> PErr {
        // The innermost error is the precise one; outer combinators add nothing useful.
        other
    }
}

/// The parser's result type.
pub(crate) type PResult<'a, T> = nom::IResult<&'a str, T, PErr>;

/// A non-recoverable parse error at the start of `rest`: the grammar is parsed without
/// backtracking, so every error is final.
pub(crate) fn fail<T>(rest: &str, message: impl Into<Cow<'static, str>>) -> PResult<'_, T> {
    Err(nom::Err::Failure(PErr::at(rest, message)))
}
