//! Lexical rules of STIX patterning: whitespace and comments, keywords, identifiers, and every
//! literal kind, with the exact token boundaries of the reference ANTLR lexer (maximal munch:
//! `ANDx` is an identifier, `5SECONDS` is `5` then `SECONDS`, `007` is three tokens and so invalid).

use super::error::{fail, PResult};
use std::borrow::Cow;

// Keywords of the reference lexer: a bare identifier spelled like one is lexed as the keyword,
// so it can never be an object type or an unquoted property name (`LAST` is reserved although the
// grammar never uses it).

/// Whether `s` is spelled exactly like a keyword (keywords are case-sensitive).
pub(crate) fn is_keyword(s: &str) -> bool {
    // A match compiles to a length switch plus one comparison: this runs for every identifier.
    matches!(
        s,
        "AND"
            | "OR"
            | "NOT"
            | "FOLLOWEDBY"
            | "LIKE"
            | "MATCHES"
            | "ISSUPERSET"
            | "ISSUBSET"
            | "EXISTS"
            | "LAST"
            | "IN"
            | "START"
            | "STOP"
            | "SECONDS"
            | "true"
            | "false"
            | "WITHIN"
            | "REPEATS"
            | "TIMES"
    )
}

/// Bytes that continue an identifier (`IdentifierWithHyphen`): a keyword followed by one of these
/// is part of a longer identifier, not the keyword.
fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `c` is in the grammar's `WS` set (ASCII blanks plus the Unicode spaces it lists).
fn is_unicode_ws(c: char) -> bool {
    matches!(
        c,
        '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Skips whitespace, `/* … */` and `// …` comments. Never fails: an unterminated `/*` is left in
/// place, and the next token parser reports it.
#[inline]
pub(crate) fn ws(i: &str) -> &str {
    // Called between every two tokens, usually with nothing to skip: decide that inline.
    match i.as_bytes().first() {
        Some(b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | b'/') => skip_ws(i),
        Some(&b) if b >= 0x80 => skip_ws(i),
        _ => i,
    }
}

/// The loop behind [`ws`].
fn skip_ws(i: &str) -> &str {
    let bytes = i.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => pos += 1,
            b'/' if bytes.get(pos + 1) == Some(&b'*') => {
                // The closing `*/` may not reuse the opening `*` (`/*/` is not a comment).
                match i[pos + 2..].find("*/") {
                    Some(end) => pos += 2 + end + 2,
                    None => break,
                }
            }
            b'/' if bytes.get(pos + 1) == Some(&b'/') => {
                pos += 2;
                while pos < bytes.len() && bytes[pos] != b'\n' && bytes[pos] != b'\r' {
                    pos += 1;
                }
            }
            b if b < 0x80 => break,
            _ => match i[pos..].chars().next() {
                Some(c) if is_unicode_ws(c) => pos += c.len_utf8(),
                _ => break,
            },
        }
    }
    &i[pos..]
}

/// Matches `word` when it is a whole token (not followed by an identifier byte).
pub(crate) fn keyword<'a>(i: &'a str, word: &str) -> Option<&'a str> {
    let rest = i.strip_prefix(word)?;
    match rest.as_bytes().first() {
        Some(&b) if is_ident_continue(b) => None,
        _ => Some(rest),
    }
}

/// Like [`keyword`], but a missing keyword is an error.
pub(crate) fn expect_keyword<'a>(
    i: &'a str,
    word: &'static str,
    message: &'static str,
) -> PResult<'a, ()> {
    match keyword(i, word) {
        Some(rest) => Ok((rest, ())),
        None => fail(i, message),
    }
}

/// Expects the single byte `c`.
pub(crate) fn symbol<'a>(i: &'a str, c: u8, message: &'static str) -> PResult<'a, ()> {
    if i.as_bytes().first() == Some(&c) {
        Ok((&i[1..], ()))
    } else {
        fail(i, message)
    }
}

/// Length of the run of bytes at the start of `i` that satisfy `pred`.
#[inline]
fn run_len(i: &str, pred: impl Fn(u8) -> bool) -> usize {
    i.bytes().position(|b| !pred(b)).unwrap_or(i.len())
}

/// An object type: `[a-zA-Z_][a-zA-Z0-9_-]*`, not a keyword.
pub(crate) fn object_type(i: &str) -> PResult<'_, &str> {
    match i.as_bytes().first() {
        Some(&b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return fail(i, "expected object type"),
    }
    let (name, rest) = i.split_at(run_len(i, is_ident_continue));
    if is_keyword(name) {
        return fail(i, "expected object type, found a keyword");
    }
    Ok((rest, name))
}

/// A property name: an identifier without hyphen (not a keyword) or a quoted string.
pub(crate) fn property_name(i: &str) -> PResult<'_, Cow<'_, str>> {
    match i.as_bytes().first() {
        Some(b'\'') => string_literal(i),
        Some(&b) if b.is_ascii_alphabetic() || b == b'_' => {
            let (name, rest) = i.split_at(run_len(i, |b| b.is_ascii_alphanumeric() || b == b'_'));
            if rest.as_bytes().first() == Some(&b'-') {
                // The reference lexer would read `SHA-256` as one hyphenated identifier, which
                // no property position accepts.
                return fail(
                    i,
                    "'-' is not allowed in an unquoted property name (quote it: 'SHA-256')",
                );
            }
            if is_keyword(name) {
                return fail(i, "expected property name, found a keyword (quote it)");
            }
            Ok((rest, Cow::Borrowed(name)))
        }
        _ => fail(i, "expected property name"),
    }
}

/// Position of the first `'` or `\\` in `bytes`. Strings are the longest tokens (hashes, URLs), so
/// this looks at eight bytes per step: a byte equal to the target becomes zero after XOR, and
/// `(x - 0x01…) & !x & 0x80…` flags the lowest zero byte exactly.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits =
            zero_bytes(w ^ (ONES * u64::from(b'\''))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\'' || b == b'\\')
        .map(|p| offset + p)
}

/// `'…'` with the `\'` and `\\` escapes only; raw newlines are allowed. Returns the unescaped text,
/// borrowed from `i` when there was nothing to unescape.
pub(crate) fn string_literal(i: &str) -> PResult<'_, Cow<'_, str>> {
    let Some(body) = i.strip_prefix('\'') else {
        return fail(i, "expected string literal");
    };
    let bytes = body.as_bytes();
    // Fast path: no escape before the closing quote, so the content is one slice.
    let mut pos = match find_quote_or_backslash(bytes) {
        None => return fail(i, "unterminated string literal"),
        Some(p) if bytes[p] == b'\'' => return Ok((&body[p + 1..], Cow::Borrowed(&body[..p]))),
        Some(p) => p,
    };
    let mut out = String::with_capacity(body.len().min(256));
    out.push_str(&body[..pos]);
    loop {
        match bytes.get(pos) {
            None => return fail(i, "unterminated string literal"),
            Some(b'\'') => return Ok((&body[pos + 1..], Cow::Owned(out))),
            Some(b'\\') => match bytes.get(pos + 1) {
                Some(&c @ (b'\'' | b'\\')) => {
                    out.push(char::from(c));
                    pos += 2;
                }
                _ => {
                    return fail(
                        &body[pos..],
                        "invalid escape in string literal (only \\' and \\\\ are allowed)",
                    )
                }
            },
            Some(_) => {
                let run = find_quote_or_backslash(&bytes[pos..]).unwrap_or(bytes.len() - pos);
                out.push_str(&body[pos..pos + run]);
                pos += run;
            }
        }
    }
}

/// A number token as the reference lexer reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number<'a> {
    /// The text without a leading `+` (keeps a leading `-`).
    pub text: &'a str,
    /// Whether it had a leading `-`.
    pub negative: bool,
    /// Whether it has a fractional part (`FloatPosLiteral`/`FloatNegLiteral`).
    pub float: bool,
}

/// `[+-]? ('0' | [1-9][0-9]*)` or `[+-]? [0-9]* '.' [0-9]+`.
pub(crate) fn number(i: &str) -> PResult<'_, Number<'_>> {
    let bytes = i.as_bytes();
    let (negative, sign_len) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let digits = bytes[sign_len..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let after = sign_len + digits;
    let frac = if bytes.get(after) == Some(&b'.') {
        bytes[after + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    } else {
        0
    };
    // Text keeps the `-` but drops a `+`: `+5` and `5` are the same literal.
    let start = if negative { 0 } else { sign_len };
    if frac > 0 {
        // Leading zeros are fine in floats (`00.5` is one FloatPosLiteral token).
        let end = after + 1 + frac;
        return Ok((
            &i[end..],
            Number {
                text: &i[start..end],
                negative,
                float: true,
            },
        ));
    }
    if digits == 0 {
        return fail(i, "expected number");
    }
    if digits > 1 && bytes[sign_len] == b'0' {
        return fail(i, "leading zeros are not allowed in an integer");
    }
    Ok((
        &i[after..],
        Number {
            text: &i[start..after],
            negative,
            float: false,
        },
    ))
}

/// `h'…'`: an even number of hex digits (possibly none). Returns them lower-cased (borrowed from
/// `i` when they already are).
pub(crate) fn hex_literal(i: &str) -> PResult<'_, Cow<'_, str>> {
    let body = &i[2..];
    let digits = body.bytes().take_while(u8::is_ascii_hexdigit).count();
    if body.as_bytes().get(digits) != Some(&b'\'') {
        return fail(&body[digits..], "expected hex digit or closing quote");
    }
    if digits % 2 != 0 {
        return fail(i, "hex literal needs an even number of digits");
    }
    let hex = &body[..digits];
    let hex = if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(hex.to_ascii_lowercase())
    } else {
        Cow::Borrowed(hex)
    };
    Ok((&body[digits + 1..], hex))
}

/// `b'…'`: strict, padded, non-empty base64. Returns the text between the quotes.
pub(crate) fn binary_literal(i: &str) -> PResult<'_, &str> {
    let body = &i[2..];
    let bytes = body.as_bytes();
    let chars = bytes
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        .count();
    let pad = bytes[chars..].iter().take_while(|&&b| b == b'=').count();
    let end = chars + pad;
    if bytes.get(end) != Some(&b'\'') {
        return fail(&body[end..], "expected base64 character or closing quote");
    }
    let well_formed = match pad {
        0 => chars > 0 && chars % 4 == 0,
        1 => chars % 4 == 3,
        2 => chars % 4 == 2,
        _ => false,
    };
    if !well_formed {
        return fail(
            i,
            "invalid base64 in binary literal (must be non-empty and padded)",
        );
    }
    Ok((&body[end + 1..], &body[..end]))
}

/// `t'YYYY-MM-DDTHH:MM:SS[.frac]Z'` with the grammar's field ranges (second may be 60). Returns
/// the text between the quotes.
pub(crate) fn timestamp_literal(i: &str) -> PResult<'_, &str> {
    let body = &i[2..];
    let b = body.as_bytes();
    let digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
    let is = |k: usize, c: u8| b.get(k) == Some(&c);
    let two = |k: usize| u32::from(b[k] - b'0') * 10 + u32::from(b[k + 1] - b'0');
    let shape = (0..4).all(digit)
        && is(4, b'-')
        && digit(5)
        && digit(6)
        && is(7, b'-')
        && digit(8)
        && digit(9)
        && is(10, b'T')
        && digit(11)
        && digit(12)
        && is(13, b':')
        && digit(14)
        && digit(15)
        && is(16, b':')
        && digit(17)
        && digit(18);
    if !shape {
        return fail(body, "expected timestamp 'YYYY-MM-DDTHH:MM:SS[.frac]Z'");
    }
    let (month, day, hour, minute, second) = (two(5), two(8), two(11), two(14), two(17));
    let ranges_ok = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !ranges_ok {
        return fail(body, "timestamp field out of range");
    }
    let mut end = 19;
    if is(end, b'.') {
        let frac = b[end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if frac == 0 {
            return fail(&body[end + 1..], "expected digit in timestamp fraction");
        }
        end += 1 + frac;
    }
    if !is(end, b'Z') {
        return fail(&body[end..], "expected 'Z' in timestamp");
    }
    if !is(end + 1, b'\'') {
        return fail(&body[end + 1..], "expected closing quote of timestamp");
    }
    Ok((&body[end + 2..], &body[..end + 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_skips_comments_and_unicode_spaces() {
        assert_eq!(ws(" \t/* a */ // b\n\u{a0}\u{3000}x"), "x");
        assert_eq!(ws("/* open"), "/* open");
        assert_eq!(ws("/*/ x"), "/*/ x");
        assert_eq!(ws("/**/x"), "x");
    }

    #[test]
    fn keyword_needs_a_token_boundary() {
        assert_eq!(keyword("AND [", "AND"), Some(" ["));
        assert_eq!(keyword("AND[", "AND"), Some("["));
        assert_eq!(keyword("ANDx", "AND"), None);
        assert_eq!(keyword("AND-x", "AND"), None);
        assert_eq!(keyword("and", "AND"), None);
    }

    #[test]
    fn numbers_follow_the_reference_lexer() {
        let n = number("+5]").expect("int").1;
        assert_eq!((n.text, n.negative, n.float), ("5", false, false));
        let n = number("-00.50x").expect("float").1;
        assert_eq!((n.text, n.negative, n.float), ("-00.50", true, true));
        assert_eq!(number("5.]").expect("int then dot").0, ".]");
        assert!(number("007").is_err());
        assert!(number("-").is_err());
        assert!(number(".").is_err());
    }

    #[test]
    fn finds_the_first_quote_or_backslash_at_any_position() {
        for len in 0..20 {
            for at in 0..len {
                for c in [b'\'', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = c;
                    if at + 1 < len {
                        bytes[len - 1] = b'\'';
                    }
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at), "{len} {at}");
                }
            }
            // High bytes (UTF-8) and near-misses are not matches.
            let bytes: Vec<u8> = (0..len).map(|k| [0xe2, b'&', b'[', 0x80][k % 4]).collect();
            assert_eq!(find_quote_or_backslash(&bytes), None);
        }
    }

    #[test]
    fn strings_unescape_only_quote_and_backslash() {
        assert_eq!(
            string_literal(r"'a\'b\\c'x").expect("ok"),
            ("x", Cow::Owned(r"a'b\c".to_owned()))
        );
        assert_eq!(
            string_literal("'multi\nline'").expect("ok").1,
            "multi\nline"
        );
        assert!(string_literal(r"'a\nb'").is_err());
        assert!(string_literal("'open").is_err());
        assert!(string_literal(r"'open\'").is_err());
    }
}
