//! The typed syntax tree of a STIX 2.1 pattern, with the byte span of every node.
//!
//! The tree keeps exactly what the text says, minus layout: explicit parentheses stay as `Group`
//! nodes (they change what a qualifier applies to), runs of the same boolean operator become one
//! n-ary node (the operators are associative, and the grammar is left-associative), and literals
//! keep a canonical form (no `+` sign, lower-case hex, unescaped strings).
//!
//! Equality ignores spans (see [`Span`]): two patterns are equal when they mean the same thing
//! written the same way, whatever their whitespace, comments or quoting of keys.
//!
//! Text in the tree borrows from the parsed input wherever it appears there verbatim (names,
//! numbers, strings without escapes, timestamps), and is owned only where the canonical form
//! differs (an unescaped string, upper-case hex digits): a typical single comparison then
//! allocates one node instead of five small strings as well.

use std::borrow::Cow;

/// A byte range `start..end` in the parsed input.
///
/// `Span` compares equal to every other `Span`, so that `PartialEq` on the tree is structural: a
/// re-parsed canonical print equals the original tree. Use [`Span::same_range`] to compare ranges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    /// Offset of the node's first byte.
    pub start: usize,
    /// Offset just past the node's last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// Whether both spans cover the same bytes (the real comparison `==` does not make).
    pub fn same_range(self, other: Span) -> bool {
        self.start == other.start && self.end == other.end
    }
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

impl Eq for Span {}

/// The root of a parsed pattern: one observation expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern<'a> {
    /// The whole expression.
    pub root: ObservationExpr<'a>,
}

/// An observation expression with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationExpr<'a> {
    /// What it is.
    pub kind: ObservationKind<'a>,
    /// Where it is.
    pub span: Span,
}

/// The shapes of an observation expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservationKind<'a> {
    /// `[ comparison-expression ]`.
    Observation(ComparisonExpr<'a>),
    /// `( observation-expression )`.
    Group(Box<ObservationExpr<'a>>),
    /// An expression followed by one qualifier; a chain of qualifiers nests, innermost first.
    Qualified {
        /// What the qualifier applies to: an `Observation`, a `Group` or another `Qualified`.
        base: Box<ObservationExpr<'a>>,
        /// The qualifier.
        qualifier: Qualifier<'a>,
    },
    /// Two or more operands joined by the same operator. An operand is never a `Compound` with the
    /// same or a looser operator (that needs a `Group`).
    Compound {
        /// The operator joining every pair of operands.
        op: ObservationOp,
        /// The operands, in order (at least two).
        operands: Vec<ObservationExpr<'a>>,
    },
}

/// Observation-level operators, loosest first (`Ord` follows binding strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObservationOp {
    /// `FOLLOWEDBY`.
    FollowedBy,
    /// `OR`.
    Or,
    /// `AND`.
    And,
}

impl ObservationOp {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationOp::FollowedBy => "FOLLOWEDBY",
            ObservationOp::Or => "OR",
            ObservationOp::And => "AND",
        }
    }
}

/// A qualifier with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualifier<'a> {
    /// Which qualifier, with its arguments.
    pub kind: QualifierKind<'a>,
    /// From the keyword to the end of its last argument.
    pub span: Span,
}

/// The three qualifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QualifierKind<'a> {
    /// `WITHIN n SECONDS`; `seconds` is the number as written without a `+` (int or float).
    Within {
        /// The positive int or float, canonical text.
        seconds: Cow<'a, str>,
    },
    /// `REPEATS n TIMES`.
    Repeats {
        /// The count.
        times: u64,
    },
    /// `START t'…' STOP t'…'`; both are the timestamp text between the quotes.
    StartStop {
        /// The start timestamp (`YYYY-MM-DDTHH:MM:SS[.frac]Z`).
        start: Cow<'a, str>,
        /// The stop timestamp.
        stop: Cow<'a, str>,
    },
}

impl QualifierKind<'_> {
    /// A small number per kind, for the duplicate-qualifier check.
    pub(crate) fn bit(&self) -> u8 {
        match self {
            QualifierKind::Within { .. } => 1,
            QualifierKind::Repeats { .. } => 2,
            QualifierKind::StartStop { .. } => 4,
        }
    }

    /// The keyword that starts the qualifier.
    pub fn keyword(&self) -> &'static str {
        match self {
            QualifierKind::Within { .. } => "WITHIN",
            QualifierKind::Repeats { .. } => "REPEATS",
            QualifierKind::StartStop { .. } => "START",
        }
    }
}

/// A comparison expression (the inside of `[...]`) with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComparisonExpr<'a> {
    /// What it is.
    pub kind: ComparisonKind<'a>,
    /// Where it is.
    pub span: Span,
}

/// The shapes of a comparison expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComparisonKind<'a> {
    /// One test. Boxed because a test (path and literal) is large: every precedence level the
    /// parser passes a single comparison up through would otherwise copy it (measured: about a
    /// tenth of a short pattern's parse time went to those copies).
    Test(Box<Comparison<'a>>),
    /// `( comparison-expression )`.
    Group(Box<ComparisonExpr<'a>>),
    /// Two or more operands joined by the same operator; an operand is never a `Compound` with the
    /// same or a looser operator (that needs a `Group`).
    Compound {
        /// `AND` or `OR`.
        op: BoolOp,
        /// The operands, in order (at least two).
        operands: Vec<ComparisonExpr<'a>>,
    },
}

/// Comparison-level operators, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoolOp {
    /// `OR`.
    Or,
    /// `AND`.
    And,
}

impl BoolOp {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            BoolOp::Or => "OR",
            BoolOp::And => "AND",
        }
    }
}

/// One property test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison<'a> {
    /// The test itself.
    pub test: Test<'a>,
    /// From the path (or `NOT`/`EXISTS`) to the end of the value.
    pub span: Span,
}

/// The kinds of property test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test<'a> {
    /// `path [NOT] op literal` with `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Compare {
        /// The compared property.
        path: ObjectPath<'a>,
        /// Whether `NOT` precedes the operator.
        negated: bool,
        /// The operator.
        op: CompareOp,
        /// The value (never a bool for the ordering operators).
        value: Literal<'a>,
    },
    /// `path [NOT] IN (literal, …)`; the set may be empty.
    In {
        /// The compared property.
        path: ObjectPath<'a>,
        /// Whether `NOT` precedes `IN`.
        negated: bool,
        /// The members, in order.
        set: Vec<Literal<'a>>,
    },
    /// `path [NOT] LIKE|MATCHES|ISSUBSET|ISSUPERSET 'string'`.
    StringMatch {
        /// The compared property.
        path: ObjectPath<'a>,
        /// Whether `NOT` precedes the operator.
        negated: bool,
        /// The operator.
        op: StringOp,
        /// The string argument (unescaped), with its span.
        value: Literal<'a>,
    },
    /// `[NOT] EXISTS path`.
    Exists {
        /// Whether `NOT` precedes `EXISTS`.
        negated: bool,
        /// The property.
        path: ObjectPath<'a>,
    },
}

impl<'a> Test<'a> {
    /// The object path the test is about.
    pub fn path(&self) -> &ObjectPath<'a> {
        match self {
            Test::Compare { path, .. }
            | Test::In { path, .. }
            | Test::StringMatch { path, .. }
            | Test::Exists { path, .. } => path,
        }
    }
}

/// Equality and ordering operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=` (also written `==`).
    Eq,
    /// `!=` (also written `<>`).
    Neq,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CompareOp {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Neq => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    /// Whether the operator only takes orderable literals (not bools).
    pub fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::Neq)
    }
}

/// Operators that take one string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringOp {
    /// `LIKE`.
    Like,
    /// `MATCHES`.
    Matches,
    /// `ISSUBSET`.
    IsSubset,
    /// `ISSUPERSET`.
    IsSuperset,
}

impl StringOp {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            StringOp::Like => "LIKE",
            StringOp::Matches => "MATCHES",
            StringOp::IsSubset => "ISSUBSET",
            StringOp::IsSuperset => "ISSUPERSET",
        }
    }
}

/// `object-type:property` followed by steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath<'a> {
    /// The object type (`file`, `ipv4-addr`, …).
    pub object_type: Cow<'a, str>,
    /// The first property (unquoted if it was quoted).
    pub property: Cow<'a, str>,
    /// The steps after the first property.
    pub steps: Vec<PathStep<'a>>,
    /// From the object type to the end of the last step.
    pub span: Span,
}

/// One step after the first property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep<'a> {
    /// `.name` or `.'quoted name'` (stored unquoted and unescaped).
    Key(Cow<'a, str>),
    /// `[n]` or `[-n]`.
    Index(i64),
    /// `[*]`.
    AnyIndex,
}

/// A literal with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal<'a> {
    /// The value.
    pub value: LiteralValue<'a>,
    /// From the first byte of the literal (sign, prefix or quote) to its last.
    pub span: Span,
}

/// The literal kinds, each in a canonical form that prints back to a valid literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralValue<'a> {
    /// An integer as written, without a leading `+` (arbitrary size, like the reference grammar).
    Int(Cow<'a, str>),
    /// A float as written (`[-]digits*.digits+`), without a leading `+`.
    Float(Cow<'a, str>),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// `true` or `false`.
    Bool(bool),
    /// `h'…'`: the hex digits, lower-cased.
    Hex(Cow<'a, str>),
    /// `b'…'`: the base64 text as written (padded, validated).
    Binary(Cow<'a, str>),
    /// `t'…'`: the timestamp text between the quotes (validated).
    Timestamp(Cow<'a, str>),
}

impl LiteralValue<'_> {
    /// The string, if this is a string literal.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            LiteralValue::Str(s) => Some(s),
            _ => None,
        }
    }
}
