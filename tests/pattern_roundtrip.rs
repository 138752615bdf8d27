//! Property tests: random syntax trees (every operator, literal kind, qualifier, path step and
//! string escape) print to text that parses back to the same tree; and arbitrary or mutated input
//! never makes the parser panic.

use iocsync::pattern::{
    parse, BoolOp, CompareOp, Comparison, ComparisonExpr, ComparisonKind, Literal, LiteralValue,
    ObjectPath, ObservationExpr, ObservationKind, ObservationOp, PathStep, Pattern, Qualifier,
    QualifierKind, Span, StringOp, Test,
};
use proptest::prelude::*;

const KEYWORDS: [&str; 19] = [
    "AND",
    "OR",
    "NOT",
    "FOLLOWEDBY",
    "LIKE",
    "MATCHES",
    "ISSUPERSET",
    "ISSUBSET",
    "EXISTS",
    "LAST",
    "IN",
    "START",
    "STOP",
    "SECONDS",
    "true",
    "false",
    "WITHIN",
    "REPEATS",
    "TIMES",
];

fn lit(value: LiteralValue) -> Literal {
    Literal {
        value,
        span: Span::default(),
    }
}

fn object_type() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_-]{0,8}".prop_filter("keyword", |s| !KEYWORDS.contains(&s.as_str()))
}

/// Property names: bare identifiers, keywords and arbitrary text (printed quoted, with escapes).
/// Never `hashes`, whose values the semantic check constrains.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        proptest::sample::select(KEYWORDS.to_vec()).prop_map(str::to_owned),
        "[a-z'\\\\ \n.\\[\\]-]{0,6}",
        "\\PC{0,6}",
    ]
    .prop_filter("hashes", |s| s != "hashes")
}

fn path() -> impl Strategy<Value = ObjectPath<'static>> {
    let step = prop_oneof![
        key().prop_map(|k| PathStep::Key(k.into())),
        any::<i64>().prop_map(PathStep::Index),
        Just(PathStep::AnyIndex),
    ];
    (object_type(), key(), proptest::collection::vec(step, 0..4)).prop_map(
        |(object_type, property, steps)| ObjectPath {
            object_type: object_type.into(),
            property: property.into(),
            steps,
            span: Span::default(),
        },
    )
}

const TIMESTAMP: &str = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]{1,6})?Z";

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z'\\\\ \n/*%.]{0,10}", "\\PC{0,10}", any::<String>()]
}

fn literal() -> impl Strategy<Value = Literal<'static>> {
    prop_oneof![
        any::<i64>().prop_map(|n| LiteralValue::Int(n.to_string().into())),
        "-?[1-9][0-9]{19,30}".prop_map(|s| LiteralValue::Int(s.into())),
        "-?[0-9]{0,3}\\.[0-9]{1,4}".prop_map(|s| LiteralValue::Float(s.into())),
        string_value().prop_map(|s| LiteralValue::Str(s.into())),
        any::<bool>().prop_map(LiteralValue::Bool),
        "([0-9a-f]{2}){0,8}".prop_map(|s| LiteralValue::Hex(s.into())),
        "([A-Za-z0-9+/]{4}){0,3}([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"
            .prop_map(|s| LiteralValue::Binary(s.into())),
        TIMESTAMP.prop_map(|s| LiteralValue::Timestamp(s.into())),
    ]
    .prop_map(lit)
}

fn test() -> impl Strategy<Value = Test<'static>> {
    let compare_op = proptest::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Neq,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
    ]);
    let string_op = proptest::sample::select(vec![
        StringOp::Like,
        StringOp::Matches,
        StringOp::IsSubset,
        StringOp::IsSuperset,
    ]);
    prop_oneof![
        (path(), any::<bool>(), compare_op, literal()).prop_map(|(path, negated, op, value)| {
            // Ordering operators take no booleans: compare those with `=` instead.
            let op = if op.is_ordering() && matches!(value.value, LiteralValue::Bool(_)) {
                CompareOp::Eq
            } else {
                op
            };
            Test::Compare {
                path,
                negated,
                op,
                value,
            }
        }),
        (
            path(),
            any::<bool>(),
            proptest::collection::vec(literal(), 0..4)
        )
            .prop_map(|(path, negated, set)| Test::In { path, negated, set }),
        (path(), any::<bool>(), string_op, string_value()).prop_map(|(path, negated, op, s)| {
            Test::StringMatch {
                path,
                negated,
                op,
                value: lit(LiteralValue::Str(s.into())),
            }
        }),
        (any::<bool>(), path()).prop_map(|(negated, path)| Test::Exists { negated, path }),
    ]
}

fn cmp(kind: ComparisonKind) -> ComparisonExpr {
    ComparisonExpr {
        kind,
        span: Span::default(),
    }
}

/// Wraps an operand in a group when printing it bare would re-associate it.
fn cmp_operand(op: BoolOp, e: ComparisonExpr) -> ComparisonExpr {
    match &e.kind {
        ComparisonKind::Compound { op: inner, .. } if *inner <= op => {
            cmp(ComparisonKind::Group(Box::new(e)))
        }
        _ => e,
    }
}

fn comparison_expr() -> impl Strategy<Value = ComparisonExpr<'static>> {
    let leaf = test().prop_map(|test| {
        cmp(ComparisonKind::Test(Box::new(Comparison {
            test,
            span: Span::default(),
        })))
    });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|e| cmp(ComparisonKind::Group(Box::new(e)))),
            (
                proptest::sample::select(vec![BoolOp::And, BoolOp::Or]),
                proptest::collection::vec(inner, 2..4)
            )
                .prop_map(|(op, operands)| cmp(ComparisonKind::Compound {
                    op,
                    operands: operands.into_iter().map(|o| cmp_operand(op, o)).collect(),
                })),
        ]
    })
}

fn obs(kind: ObservationKind) -> ObservationExpr {
    ObservationExpr {
        kind,
        span: Span::default(),
    }
}

fn qualifier() -> impl Strategy<Value = Qualifier<'static>> {
    prop_oneof![
        prop_oneof!["0|[1-9][0-9]{0,5}", "[0-9]{0,2}\\.[0-9]{1,3}"].prop_map(|seconds| {
            QualifierKind::Within {
                seconds: seconds.into(),
            }
        }),
        any::<u64>().prop_map(|times| QualifierKind::Repeats { times }),
        (TIMESTAMP, TIMESTAMP).prop_map(|(start, stop)| QualifierKind::StartStop {
            start: start.into(),
            stop: stop.into()
        }),
    ]
    .prop_map(|kind| Qualifier {
        kind,
        span: Span::default(),
    })
}

/// The qualifier kinds already applied directly to a bracketed observation, or `None` when the
/// chain starts at a group (where duplicates are allowed).
fn chain_kinds(e: &ObservationExpr) -> Option<Vec<String>> {
    match &e.kind {
        ObservationKind::Observation(_) => Some(Vec::new()),
        ObservationKind::Qualified { base, qualifier } => chain_kinds(base).map(|mut v| {
            v.push(qualifier.kind.keyword().to_owned());
            v
        }),
        _ => None,
    }
}

fn qualify(
    base: ObservationExpr<'static>,
    qualifier: Qualifier<'static>,
) -> ObservationExpr<'static> {
    let needs_group = matches!(base.kind, ObservationKind::Compound { .. })
        || chain_kinds(&base)
            .is_some_and(|kinds| kinds.iter().any(|k| k == qualifier.kind.keyword()));
    let base = if needs_group {
        obs(ObservationKind::Group(Box::new(base)))
    } else {
        base
    };
    obs(ObservationKind::Qualified {
        base: Box::new(base),
        qualifier,
    })
}

fn obs_operand(op: ObservationOp, e: ObservationExpr) -> ObservationExpr {
    match &e.kind {
        ObservationKind::Compound { op: inner, .. } if *inner <= op => {
            obs(ObservationKind::Group(Box::new(e)))
        }
        _ => e,
    }
}

fn pattern() -> impl Strategy<Value = Pattern<'static>> {
    let leaf = comparison_expr().prop_map(|c| obs(ObservationKind::Observation(c)));
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|e| obs(ObservationKind::Group(Box::new(e)))),
            (inner.clone(), qualifier()).prop_map(|(base, q)| qualify(base, q)),
            (
                proptest::sample::select(vec![
                    ObservationOp::And,
                    ObservationOp::Or,
                    ObservationOp::FollowedBy
                ]),
                proptest::collection::vec(inner, 2..4)
            )
                .prop_map(|(op, operands)| obs(ObservationKind::Compound {
                    op,
                    operands: operands.into_iter().map(|o| obs_operand(op, o)).collect(),
                })),
        ]
    })
    .prop_map(|root| Pattern { root })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(p in pattern()) {
        let printed = p.to_string();
        let parsed = parse(&printed);
        prop_assert!(parsed.is_ok(), "{printed:?}: {parsed:?}");
        let parsed = parsed.expect("checked");
        prop_assert_eq!(&parsed, &p, "{}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn mutated_patterns_never_panic(p in pattern(), at in any::<prop::sample::Index>(), junk in "[\\[\\]()'\\\\:.=<>!*/ a-zA-Z0-9-]{0,3}") {
        let text = p.to_string();
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mutated = format!("{}{}{}", &text[..cut], junk, &text[cut..]);
        let _ = parse(&mutated);
        let _ = parse(&text[..cut]);
    }
}
