//! Canonical printing of the AST: one space around operators and keywords, no comments, `=`/`!=`
//! for `==`/`<>`, property names quoted only when they must be, strings re-escaped.
//!
//! For any tree the parser produced, `parse(&p.to_string()) == Ok(p)` (spans aside). For a tree
//! built by hand, parentheses are added where an operand would otherwise re-associate, so the
//! printed text still means what the tree means.

use super::ast::{
    Comparison, ComparisonExpr, ComparisonKind, Literal, LiteralValue, ObjectPath, ObservationExpr,
    ObservationKind, PathStep, Pattern, Qualifier, QualifierKind, Test,
};
use super::lex::is_keyword;
use std::fmt::{self, Display, Formatter, Write};

impl Display for Pattern<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

impl Display for ObservationExpr<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ObservationKind::Observation(cmp) => write!(f, "[{cmp}]"),
            ObservationKind::Group(inner) => write!(f, "({inner})"),
            ObservationKind::Qualified { base, qualifier } => {
                if matches!(base.kind, ObservationKind::Compound { .. }) {
                    write!(f, "({base}) {qualifier}")
                } else {
                    write!(f, "{base} {qualifier}")
                }
            }
            ObservationKind::Compound { op, operands } => {
                for (n, operand) in operands.iter().enumerate() {
                    if n > 0 {
                        write!(f, " {} ", op.as_str())?;
                    }
                    // An operand joined by the same or a looser operator needs parentheses.
                    match &operand.kind {
                        ObservationKind::Compound { op: inner, .. } if inner <= op => {
                            write!(f, "({operand})")?
                        }
                        _ => operand.fmt(f)?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl Display for Qualifier<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            QualifierKind::Within { seconds } => write!(f, "WITHIN {seconds} SECONDS"),
            QualifierKind::Repeats { times } => write!(f, "REPEATS {times} TIMES"),
            QualifierKind::StartStop { start, stop } => {
                write!(f, "START t'{start}' STOP t'{stop}'")
            }
        }
    }
}

impl Display for ComparisonExpr<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ComparisonKind::Test(cmp) => cmp.fmt(f),
            ComparisonKind::Group(inner) => write!(f, "({inner})"),
            ComparisonKind::Compound { op, operands } => {
                for (n, operand) in operands.iter().enumerate() {
                    if n > 0 {
                        write!(f, " {} ", op.as_str())?;
                    }
                    match &operand.kind {
                        ComparisonKind::Compound { op: inner, .. } if inner <= op => {
                            write!(f, "({operand})")?
                        }
                        _ => operand.fmt(f)?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl Display for Comparison<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.test.fmt(f)
    }
}

/// `"NOT "` or nothing.
fn not(negated: bool) -> &'static str {
    if negated {
        "NOT "
    } else {
        ""
    }
}

impl Display for Test<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Test::Compare {
                path,
                negated,
                op,
                value,
            } => write!(f, "{path} {}{} {value}", not(*negated), op.as_str()),
            Test::In { path, negated, set } => {
                write!(f, "{path} {}IN (", not(*negated))?;
                for (n, lit) in set.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    lit.fmt(f)?;
                }
                f.write_char(')')
            }
            Test::StringMatch {
                path,
                negated,
                op,
                value,
            } => write!(f, "{path} {}{} {value}", not(*negated), op.as_str()),
            Test::Exists { negated, path } => write!(f, "{}EXISTS {path}", not(*negated)),
        }
    }
}

/// Whether a property name can be printed without quotes.
fn is_bare_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && !is_keyword(name)
}

/// Writes `'…'` with `\` and `'` escaped.
fn write_quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    let mut rest = s;
    while let Some(pos) = rest.find(['\'', '\\']) {
        f.write_str(&rest[..pos])?;
        f.write_char('\\')?;
        f.write_str(&rest[pos..pos + 1])?;
        rest = &rest[pos + 1..];
    }
    f.write_str(rest)?;
    f.write_char('\'')
}

/// Writes a property name, quoted only if needed.
fn write_name(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    if is_bare_name(name) {
        f.write_str(name)
    } else {
        write_quoted(f, name)
    }
}

impl Display for ObjectPath<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        write_name(f, &self.property)?;
        for step in &self.steps {
            match step {
                PathStep::Key(key) => {
                    f.write_char('.')?;
                    write_name(f, key)?;
                }
                PathStep::Index(n) => write!(f, "[{n}]")?,
                PathStep::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

impl Display for Literal<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl Display for LiteralValue<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LiteralValue::Int(text) | LiteralValue::Float(text) => f.write_str(text),
            LiteralValue::Str(s) => write_quoted(f, s),
            LiteralValue::Bool(b) => write!(f, "{b}"),
            LiteralValue::Hex(h) => write!(f, "h'{h}'"),
            LiteralValue::Binary(b) => write!(f, "b'{b}'"),
            LiteralValue::Timestamp(t) => write!(f, "t'{t}'"),
        }
    }
}
