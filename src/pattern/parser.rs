//! The STIX 2.1 pattern grammar as nom parsers, building the [`ast`](super::ast) with spans.
//!
//! The grammar is LL(1) once tokens are known, so every choice is made on the next byte or
//! keyword and nothing backtracks: each byte is looked at a bounded number of times and the parse
//! is linear in the input. Parentheses (at both levels) and qualifiers, counted together, may nest
//! at most [`MAX_NESTING`] deep; deeper input is rejected with an error instead of overflowing the
//! stack.
//!
//! ```text
//! pattern      := obs_fby EOF
//! obs_fby      := obs_or  ("FOLLOWEDBY" obs_or)*
//! obs_or       := obs_and ("OR" obs_and)*
//! obs_and      := obs_qual ("AND" obs_qual)*
//! obs_qual     := obs_primary qualifier*
//! obs_primary  := "[" cmp_or "]" | "(" obs_fby ")"
//! qualifier    := "WITHIN" pos-number "SECONDS" | "REPEATS" pos-int "TIMES"
//!               | "START" timestamp "STOP" timestamp
//! cmp_or       := cmp_and ("OR" cmp_and)*
//! cmp_and      := cmp_primary ("AND" cmp_primary)*
//! cmp_primary  := "(" cmp_or ")" | ["NOT"] "EXISTS" path
//!               | path ["NOT"] (("="|"=="|"!="|"<>") literal | ("<"|"<="|">"|">=") orderable
//!                              | "IN" "(" [literal ("," literal)*] ")"
//!                              | ("LIKE"|"MATCHES"|"ISSUBSET"|"ISSUPERSET") string)
//! path         := object-type ":" (ident | string) ("." (ident | string) | "[" int|"*" "]")*
//! ```

use super::ast::{
    BoolOp, CompareOp, Comparison, ComparisonExpr, ComparisonKind, Literal, LiteralValue,
    ObjectPath, ObservationExpr, ObservationKind, ObservationOp, PathStep, Pattern, Qualifier,
    QualifierKind, Span, StringOp, Test,
};
use super::error::{fail, PErr, PResult, ParseError};
use super::lex::{
    binary_literal, expect_keyword, hex_literal, keyword, number, object_type, property_name,
    string_literal, symbol, timestamp_literal, ws,
};
use super::semantic;
use std::borrow::Cow;

/// How deep the tree may nest: parentheses at both levels plus qualifiers (each qualifier wraps
/// the observation in one more node) count together. Real patterns rarely exceed 4; the limit
/// keeps recursion in parsing, printing, classifying and dropping the tree bounded.
pub const MAX_NESTING: u32 = 64;

/// What every parser needs to turn a remaining-input slice into an offset.
#[derive(Clone, Copy)]
struct Cx {
    /// Length of the whole input.
    len: usize,
}

impl Cx {
    /// Offset of the start of `rest`.
    fn at(self, rest: &str) -> usize {
        self.len - rest.len()
    }

    /// The span from offset `start` to the start of `rest`.
    fn span(self, start: usize, rest: &str) -> Span {
        Span::new(start, self.at(rest))
    }
}

/// Parses and validates a whole pattern (syntax and the reference semantic checks).
pub fn parse(input: &str) -> Result<Pattern<'_>, ParseError> {
    let cx = Cx { len: input.len() };
    let result = obs_fby(cx, ws(input), 0).and_then(|(rest, root)| {
        let rest = ws(rest);
        if rest.is_empty() {
            Ok((rest, Pattern { root }))
        } else {
            fail(
                rest,
                "expected 'AND', 'OR', 'FOLLOWEDBY', a qualifier or end of input",
            )
        }
    });
    match result {
        Ok((_, pattern)) => Ok(pattern),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.into_public(input.len())),
        // Only streaming parsers return Incomplete; none is used, but stay total.
        Err(nom::Err::Incomplete(_)) => Err(ParseError {
            offset: input.len(),
            message: "unexpected end of input".to_owned(),
        }),
    }
}

/// Parses `operand (KEYWORD operand)*` at observation level.
#[inline]
fn obs_list<'a>(
    cx: Cx,
    i: &'a str,
    depth: u32,
    op: ObservationOp,
    operand: impl Fn(Cx, &'a str, u32) -> PResult<'a, ObservationExpr<'a>>,
) -> PResult<'a, ObservationExpr<'a>> {
    let (mut rest, first) = operand(cx, i, depth)?;
    // Most patterns have no operator at this level: allocate the list only when one shows up.
    let Some(mut k) = keyword(ws(rest), op.as_str()) else {
        return Ok((rest, first));
    };
    let mut operands = vec![first];
    loop {
        let (r, next) = operand(cx, ws(k), depth)?;
        operands.push(next);
        rest = r;
        match keyword(ws(rest), op.as_str()) {
            Some(next_k) => k = next_k,
            None => break,
        }
    }
    let span = Span::new(
        operands.first().map_or(0, |o| o.span.start),
        operands.last().map_or(0, |o| o.span.end),
    );
    Ok((
        rest,
        ObservationExpr {
            kind: ObservationKind::Compound { op, operands },
            span,
        },
    ))
}

fn obs_fby(cx: Cx, i: &str, depth: u32) -> PResult<'_, ObservationExpr<'_>> {
    obs_list(cx, i, depth, ObservationOp::FollowedBy, obs_or)
}

#[inline]
fn obs_or(cx: Cx, i: &str, depth: u32) -> PResult<'_, ObservationExpr<'_>> {
    obs_list(cx, i, depth, ObservationOp::Or, obs_and)
}

#[inline]
fn obs_and(cx: Cx, i: &str, depth: u32) -> PResult<'_, ObservationExpr<'_>> {
    obs_list(cx, i, depth, ObservationOp::And, obs_qualified)
}

/// An observation followed by any qualifiers, with the reference's duplicate check: the same
/// qualifier kind twice in a chain applied directly to a `[...]` observation is an error (on a
/// parenthesised group the reference does not check, so neither does this).
fn obs_qualified(cx: Cx, i: &str, depth: u32) -> PResult<'_, ObservationExpr<'_>> {
    let (mut rest, mut expr) = obs_primary(cx, i, depth)?;
    let check_duplicates = matches!(expr.kind, ObservationKind::Observation(_));
    let mut seen = 0u8;
    let mut level = depth;
    loop {
        let j = ws(rest);
        let Some((r, qualifier)) = qualifier(cx, j)? else {
            break;
        };
        // Each qualifier wraps the tree one level deeper: it counts against the nesting limit.
        level = deeper(j, level)?;
        if check_duplicates {
            let bit = qualifier.kind.bit();
            if seen & bit != 0 {
                return fail(
                    j,
                    format!(
                        "duplicate {} qualifier on one observation",
                        qualifier.kind.keyword()
                    ),
                );
            }
            seen |= bit;
        }
        let span = Span::new(expr.span.start, qualifier.span.end);
        expr = ObservationExpr {
            kind: ObservationKind::Qualified {
                base: Box::new(expr),
                qualifier,
            },
            span,
        };
        rest = r;
    }
    Ok((rest, expr))
}

/// A qualifier if one starts here (`None` when the next token is not a qualifier keyword).
fn qualifier(cx: Cx, i: &str) -> Result<Option<(&str, Qualifier<'_>)>, nom::Err<PErr>> {
    let start = cx.at(i);
    let (rest, kind) = if let Some(k) = keyword(i, "WITHIN") {
        let k = ws(k);
        let (r, n) = number(k).map_err(|_| within_error(k))?;
        if n.negative {
            return Err(within_error(k));
        }
        let (r, ()) = expect_keyword(ws(r), "SECONDS", "expected 'SECONDS'")?;
        let seconds = Cow::Borrowed(n.text);
        (r, QualifierKind::Within { seconds })
    } else if let Some(k) = keyword(i, "REPEATS") {
        let k = ws(k);
        let (r, times) = positive_int(k, "expected positive integer after REPEATS")?;
        let (r, ()) = expect_keyword(ws(r), "TIMES", "expected 'TIMES'")?;
        (r, QualifierKind::Repeats { times })
    } else if let Some(k) = keyword(i, "START") {
        let k = ws(k);
        let (r, start_ts) = timestamp(k)?;
        let (r, ()) = expect_keyword(ws(r), "STOP", "expected 'STOP'")?;
        let (r, stop_ts) = timestamp(ws(r))?;
        (
            r,
            QualifierKind::StartStop {
                start: Cow::Borrowed(start_ts),
                stop: Cow::Borrowed(stop_ts),
            },
        )
    } else {
        return Ok(None);
    };
    Ok(Some((
        rest,
        Qualifier {
            kind,
            span: cx.span(start, rest),
        },
    )))
}

fn within_error(i: &str) -> nom::Err<PErr> {
    nom::Err::Failure(PErr::at(
        i,
        "expected positive number of seconds after WITHIN",
    ))
}

/// A `t'…'` literal where the grammar wants one (START/STOP).
fn timestamp(i: &str) -> PResult<'_, &str> {
    if i.starts_with("t'") {
        timestamp_literal(i)
    } else {
        fail(i, "expected timestamp literal t'…'")
    }
}

/// `IntPosLiteral` as a `u64` (a `+` is allowed, a `-` or a fraction is not).
fn positive_int<'a>(i: &'a str, message: &'static str) -> PResult<'a, u64> {
    match number(i) {
        Ok((r, n)) if !n.negative && !n.float => match n.text.parse::<u64>() {
            Ok(v) => Ok((r, v)),
            Err(_) => fail(i, "integer out of range"),
        },
        _ => fail(i, message),
    }
}

/// Checks and bumps the nesting depth before descending into a parenthesised group.
fn deeper(i: &str, depth: u32) -> Result<u32, nom::Err<PErr>> {
    if depth >= MAX_NESTING {
        Err(nom::Err::Failure(PErr::at(
            i,
            format!("nesting deeper than {MAX_NESTING} levels (parentheses and qualifiers)"),
        )))
    } else {
        Ok(depth + 1)
    }
}

fn obs_primary(cx: Cx, i: &str, depth: u32) -> PResult<'_, ObservationExpr<'_>> {
    let start = cx.at(i);
    match i.as_bytes().first() {
        Some(b'[') => {
            let (r, cmp) = cmp_or(cx, ws(&i[1..]), depth)?;
            let r = ws(r);
            let (r, ()) = symbol(r, b']', "expected ']'")?;
            Ok((
                r,
                ObservationExpr {
                    kind: ObservationKind::Observation(cmp),
                    span: cx.span(start, r),
                },
            ))
        }
        Some(b'(') => {
            let inner_depth = deeper(i, depth)?;
            let (r, inner) = obs_fby(cx, ws(&i[1..]), inner_depth)?;
            let r = ws(r);
            let (r, ()) = symbol(r, b')', "expected ')'")?;
            Ok((
                r,
                ObservationExpr {
                    kind: ObservationKind::Group(Box::new(inner)),
                    span: cx.span(start, r),
                },
            ))
        }
        _ => fail(i, "expected '[' or '('"),
    }
}

/// Parses `operand (KEYWORD operand)*` inside brackets.
#[inline]
fn cmp_list<'a>(
    cx: Cx,
    i: &'a str,
    depth: u32,
    op: BoolOp,
    operand: impl Fn(Cx, &'a str, u32) -> PResult<'a, ComparisonExpr<'a>>,
) -> PResult<'a, ComparisonExpr<'a>> {
    let (mut rest, first) = operand(cx, i, depth)?;
    let j = ws(rest);
    let Some(mut k) = keyword(j, op.as_str()) else {
        return Ok((rest, first));
    };
    let mut operands = vec![first];
    loop {
        let (r, next) = operand(cx, ws(k), depth)?;
        operands.push(next);
        rest = r;
        match keyword(ws(rest), op.as_str()) {
            Some(next_k) => k = next_k,
            None => break,
        }
    }
    let span = Span::new(
        operands.first().map_or(0, |o| o.span.start),
        operands.last().map_or(0, |o| o.span.end),
    );
    Ok((
        rest,
        ComparisonExpr {
            kind: ComparisonKind::Compound { op, operands },
            span,
        },
    ))
}

fn cmp_or(cx: Cx, i: &str, depth: u32) -> PResult<'_, ComparisonExpr<'_>> {
    cmp_list(cx, i, depth, BoolOp::Or, cmp_and)
}

#[inline]
fn cmp_and(cx: Cx, i: &str, depth: u32) -> PResult<'_, ComparisonExpr<'_>> {
    cmp_list(cx, i, depth, BoolOp::And, cmp_primary)
}

fn cmp_primary(cx: Cx, i: &str, depth: u32) -> PResult<'_, ComparisonExpr<'_>> {
    let start = cx.at(i);
    if i.as_bytes().first() == Some(&b'(') {
        let inner_depth = deeper(i, depth)?;
        let (r, inner) = cmp_or(cx, ws(&i[1..]), inner_depth)?;
        let r = ws(r);
        let (r, ()) = symbol(r, b')', "expected ')'")?;
        return Ok((
            r,
            ComparisonExpr {
                kind: ComparisonKind::Group(Box::new(inner)),
                span: cx.span(start, r),
            },
        ));
    }
    let (rest, test) = test(cx, i)?;
    semantic::check_test(&test, cx.len).map_err(nom::Err::Failure)?;
    let span = cx.span(start, rest);
    Ok((
        rest,
        ComparisonExpr {
            kind: ComparisonKind::Test(Box::new(Comparison { test, span })),
            span,
        },
    ))
}

/// One property test (without the semantic check).
fn test(cx: Cx, i: &str) -> PResult<'_, Test<'_>> {
    // Prefix form: [NOT] EXISTS path. A NOT here can only introduce EXISTS.
    let (after_not, negated) = match keyword(i, "NOT") {
        Some(k) => (ws(k), true),
        None => (i, false),
    };
    if let Some(k) = keyword(after_not, "EXISTS") {
        let (r, path) = object_path(cx, ws(k))?;
        return Ok((r, Test::Exists { negated, path }));
    }
    if negated {
        return fail(
            after_not,
            "expected 'EXISTS' (NOT goes after the object path)",
        );
    }

    let (r, path) = object_path(cx, i)?;
    let r = ws(r);
    let (r, negated) = match keyword(r, "NOT") {
        Some(k) => (ws(k), true),
        None => (r, false),
    };
    let b = r.as_bytes();
    let compare = |len: usize, op: CompareOp| Some((len, op));
    let symbolic = match (b.first(), b.get(1)) {
        (Some(b'='), Some(b'=')) => compare(2, CompareOp::Eq),
        (Some(b'='), _) => compare(1, CompareOp::Eq),
        (Some(b'!'), Some(b'=')) => compare(2, CompareOp::Neq),
        (Some(b'<'), Some(b'>')) => compare(2, CompareOp::Neq),
        (Some(b'<'), Some(b'=')) => compare(2, CompareOp::Le),
        (Some(b'<'), _) => compare(1, CompareOp::Lt),
        (Some(b'>'), Some(b'=')) => compare(2, CompareOp::Ge),
        (Some(b'>'), _) => compare(1, CompareOp::Gt),
        _ => None,
    };
    if let Some((len, op)) = symbolic {
        let (r, value) = literal(cx, ws(&r[len..]))?;
        if op.is_ordering() && matches!(value.value, LiteralValue::Bool(_)) {
            return Err(nom::Err::Failure(PErr {
                rest_len: cx.len - value.span.start,
                message: "expected orderable literal (booleans only compare with = and !=)".into(),
            }));
        }
        return Ok((
            r,
            Test::Compare {
                path,
                negated,
                op,
                value,
            },
        ));
    }
    if let Some(k) = keyword(r, "IN") {
        let (r, set) = set_literal(cx, ws(k))?;
        return Ok((r, Test::In { path, negated, set }));
    }
    let string_op = [
        ("LIKE", StringOp::Like),
        ("MATCHES", StringOp::Matches),
        ("ISSUBSET", StringOp::IsSubset),
        ("ISSUPERSET", StringOp::IsSuperset),
    ]
    .into_iter()
    .find_map(|(word, op)| keyword(r, word).map(|k| (k, op)));
    if let Some((k, op)) = string_op {
        let k = ws(k);
        let start = cx.at(k);
        let (r, s) = string_literal(k)?;
        let value = Literal {
            value: LiteralValue::Str(s),
            span: cx.span(start, r),
        };
        return Ok((
            r,
            Test::StringMatch {
                path,
                negated,
                op,
                value,
            },
        ));
    }
    fail(r, "expected comparison operator")
}

/// `( )` or `( literal (, literal)* )`.
fn set_literal(cx: Cx, i: &str) -> PResult<'_, Vec<Literal<'_>>> {
    let (r, ()) = symbol(i, b'(', "expected '(' after IN")?;
    let mut r = ws(r);
    let mut set = Vec::new();
    if let Some(after) = r.strip_prefix(')') {
        return Ok((after, set));
    }
    loop {
        let (after, lit) = literal(cx, r)?;
        set.push(lit);
        let after = ws(after);
        match after.as_bytes().first() {
            Some(b',') => r = ws(&after[1..]),
            Some(b')') => return Ok((&after[1..], set)),
            _ => return fail(after, "expected ',' or ')'"),
        }
    }
}

/// Any primitive literal, chosen on its first byte(s).
fn literal(cx: Cx, i: &str) -> PResult<'_, Literal<'_>> {
    let start = cx.at(i);
    let b = i.as_bytes();
    let (r, value) = match (b.first(), b.get(1)) {
        (Some(b'\''), _) => {
            let (r, s) = string_literal(i)?;
            (r, LiteralValue::Str(s))
        }
        (Some(b'h'), Some(b'\'')) => {
            let (r, s) = hex_literal(i)?;
            (r, LiteralValue::Hex(s))
        }
        (Some(b'b'), Some(b'\'')) => {
            let (r, s) = binary_literal(i)?;
            (r, LiteralValue::Binary(Cow::Borrowed(s)))
        }
        (Some(b't'), Some(b'\'')) => {
            let (r, s) = timestamp_literal(i)?;
            (r, LiteralValue::Timestamp(Cow::Borrowed(s)))
        }
        (Some(b'0'..=b'9' | b'+' | b'-' | b'.'), _) => {
            let (r, n) = number(i)?;
            let text = Cow::Borrowed(n.text);
            (
                r,
                if n.float {
                    LiteralValue::Float(text)
                } else {
                    LiteralValue::Int(text)
                },
            )
        }
        _ => {
            if let Some(r) = keyword(i, "true") {
                (r, LiteralValue::Bool(true))
            } else if let Some(r) = keyword(i, "false") {
                (r, LiteralValue::Bool(false))
            } else {
                return fail(i, "expected literal");
            }
        }
    };
    Ok((
        r,
        Literal {
            value,
            span: cx.span(start, r),
        },
    ))
}

/// `object-type ':' first-property steps*`; whitespace and comments may separate the tokens.
fn object_path(cx: Cx, i: &str) -> PResult<'_, ObjectPath<'_>> {
    let start = cx.at(i);
    let (r, object_type) = object_type(i)?;
    let (r, ()) = symbol(ws(r), b':', "expected ':' after object type")?;
    let (mut rest, property) = property_name(ws(r))?;
    let mut steps = Vec::new();
    loop {
        let j = ws(rest);
        match j.as_bytes().first() {
            Some(b'.') => {
                let (r, key) = property_name(ws(&j[1..]))?;
                steps.push(PathStep::Key(key));
                rest = r;
            }
            Some(b'[') => {
                let k = ws(&j[1..]);
                let (r, step) = if let Some(after) = k.strip_prefix('*') {
                    (after, PathStep::AnyIndex)
                } else {
                    match number(k) {
                        Ok((r, n)) if !n.float => match n.text.parse::<i64>() {
                            Ok(v) => (r, PathStep::Index(v)),
                            Err(_) => return fail(k, "list index out of range"),
                        },
                        _ => return fail(k, "expected list index (integer or '*')"),
                    }
                };
                let (r, ()) = symbol(ws(r), b']', "expected ']' after list index")?;
                steps.push(step);
                rest = r;
            }
            _ => break,
        }
    }
    Ok((
        rest,
        ObjectPath {
            object_type: Cow::Borrowed(object_type),
            property,
            steps,
            span: cx.span(start, rest),
        },
    ))
}
