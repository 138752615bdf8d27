//! Table tests of the STIX 2.1 grammar: each rule and lexical edge of protocols.md §4, valid and
//! invalid, with the error offsets and messages; the shape of the tree (precedence, associativity,
//! qualifier binding, spans); nesting limits and adversarial input.

use iocsync::pattern::{
    parse, BoolOp, CompareOp, ComparisonKind, LiteralValue, ObservationKind, ObservationOp,
    PathStep, Pattern, QualifierKind, StringOp, Test, MAX_NESTING,
};
use std::time::{Duration, Instant};

fn ok(input: &str) -> Pattern<'_> {
    parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
}

/// Asserts the error message and offset.
fn err(input: &str, message: &str, offset: usize) {
    match parse(input) {
        Ok(p) => panic!("{input:?} should not parse, got {p:?}"),
        Err(e) => {
            assert_eq!(
                (e.message.as_str(), e.offset),
                (message, offset),
                "input {input:?}"
            );
            assert_eq!(e.to_string(), format!("{message} at offset {offset}"));
        }
    }
}

/// The single test inside `[...]`.
fn single_test<'p, 'a>(p: &'p Pattern<'a>) -> &'p Test<'a> {
    let ObservationKind::Observation(cmp) = &p.root.kind else {
        panic!("not a single observation: {p:?}")
    };
    let ComparisonKind::Test(c) = &cmp.kind else {
        panic!("not a single test: {cmp:?}")
    };
    &c.test
}

fn value_of(input: &str) -> LiteralValue<'_> {
    match single_test(&ok(input)) {
        Test::Compare { value, .. } => value.value.clone(),
        other => panic!("not a comparison: {other:?}"),
    }
}

#[test]
fn error_messages_name_the_expected_token_and_offset() {
    err("[file:name = 'x' ", "expected ']'", 17);
    err("[file:name = 'x' AND file:size = 37", "expected ']'", 35);
    err("[file:name 'x']", "expected comparison operator", 11);
    err("[file:name = ]", "expected literal", 13);
    err("[file:name = 'x'] AND", "expected '[' or '('", 21);
    err("file:name = 'x'", "expected '[' or '('", 0);
    err("", "expected '[' or '('", 0);
    err(
        "[file:name = 'x'] [a:b = 1]",
        "expected 'AND', 'OR', 'FOLLOWEDBY', a qualifier or end of input",
        18,
    );
    err("[file = 'x']", "expected ':' after object type", 6);
    err(
        "[NOT file:name = 'x']",
        "expected 'EXISTS' (NOT goes after the object path)",
        5,
    );
    err("[a:b IN (1,)]", "expected literal", 11);
    err("[a:b IN (1 2)]", "expected ',' or ')'", 11);
    err(
        "[a:b = 'x\\y']",
        "invalid escape in string literal (only \\' and \\\\ are allowed)",
        9,
    );
    err("[a:b = 'x]", "unterminated string literal", 7);
    err(
        "[a:b = 012]",
        "leading zeros are not allowed in an integer",
        7,
    );
    err(
        "[a:b < true]",
        "expected orderable literal (booleans only compare with = and !=)",
        7,
    );
    err("[a:b] ", "expected comparison operator", 4);
    err("[a:b = 1] WITHIN 5", "expected 'SECONDS'", 18);
    err(
        "[a:b = 1] REPEATS x TIMES",
        "expected positive integer after REPEATS",
        18,
    );
    err(
        "[a:b = 1] START t'2020-01-01T00:00:00Z'",
        "expected 'STOP'",
        39,
    );
}

#[test]
fn semantic_errors_point_at_the_offending_part() {
    err(
        "[a:b = 1] WITHIN 1 SECONDS WITHIN 2 SECONDS",
        "duplicate WITHIN qualifier on one observation",
        27,
    );
    err(
        "[file:hashes.MD5 = 'abc']",
        "'abc' is not a valid MD5 hash",
        19,
    );
    err(
        "[file:hashes.'SHA-256' = 'abc' OR file:name = 'x']",
        "'abc' is not a valid SHA-256 hash",
        25,
    );
    err(
        "[file:hashes.MD5 IN ('e99a18c428cb38d5f260853678922e03', 'x')]",
        "'x' is not a valid MD5 hash",
        57,
    );
}

#[test]
fn observation_operators_have_precedence_and_associativity() {
    // FOLLOWEDBY is loosest, then OR, then AND.
    let p = ok("[a:a = 1] AND [a:b = 1] OR [a:c = 1] FOLLOWEDBY [a:d = 1] OR [a:e = 1]");
    let ObservationKind::Compound { op, operands } = &p.root.kind else {
        panic!("{p:?}")
    };
    assert_eq!(*op, ObservationOp::FollowedBy);
    assert_eq!(operands.len(), 2);
    let ObservationKind::Compound { op, operands: ors } = &operands[0].kind else {
        panic!()
    };
    assert_eq!(*op, ObservationOp::Or);
    assert!(matches!(
        &ors[0].kind,
        ObservationKind::Compound { op: ObservationOp::And, operands } if operands.len() == 2
    ));
    // Left associativity: a run of one operator is one n-ary node in source order.
    let p = ok("[a:a = 1] OR [a:b = 2] OR [a:c = 3]");
    let ObservationKind::Compound { operands, .. } = &p.root.kind else {
        panic!()
    };
    assert_eq!(operands.len(), 3);
    assert_eq!(operands[2].to_string(), "[a:c = 3]");
    // Parentheses stay as groups.
    let p = ok("[a:a = 1] AND ([a:b = 1] OR [a:c = 1])");
    let ObservationKind::Compound { operands, .. } = &p.root.kind else {
        panic!()
    };
    assert!(matches!(operands[1].kind, ObservationKind::Group(_)));
}

#[test]
fn comparison_operators_have_precedence() {
    let p = ok("[a:a = 1 OR a:b = 2 AND a:c = 3 OR (a:d = 4 OR a:e = 5)]");
    let ObservationKind::Observation(cmp) = &p.root.kind else {
        panic!()
    };
    let ComparisonKind::Compound { op, operands } = &cmp.kind else {
        panic!()
    };
    assert_eq!(*op, BoolOp::Or);
    assert_eq!(operands.len(), 3);
    assert!(matches!(
        operands[1].kind,
        ComparisonKind::Compound {
            op: BoolOp::And,
            ..
        }
    ));
    assert!(matches!(operands[2].kind, ComparisonKind::Group(_)));
}

#[test]
fn qualifiers_bind_tighter_than_and_or() {
    let p = ok("[a:a = 1] AND [a:b = 1] WITHIN 5 SECONDS");
    let ObservationKind::Compound { operands, .. } = &p.root.kind else {
        panic!()
    };
    assert!(matches!(operands[0].kind, ObservationKind::Observation(_)));
    let ObservationKind::Qualified { qualifier, .. } = &operands[1].kind else {
        panic!()
    };
    assert_eq!(
        qualifier.kind,
        QualifierKind::Within {
            seconds: "5".into()
        }
    );
    // A chain nests innermost first.
    let p = ok("[a:a = 1] REPEATS 2 TIMES WITHIN 1.5 SECONDS START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00.5Z'");
    let ObservationKind::Qualified { base, qualifier } = &p.root.kind else {
        panic!()
    };
    assert!(matches!(qualifier.kind, QualifierKind::StartStop { .. }));
    let ObservationKind::Qualified { base, qualifier } = &base.kind else {
        panic!()
    };
    assert_eq!(
        qualifier.kind,
        QualifierKind::Within {
            seconds: "1.5".into()
        }
    );
    let ObservationKind::Qualified { qualifier, .. } = &base.kind else {
        panic!()
    };
    assert_eq!(qualifier.kind, QualifierKind::Repeats { times: 2 });
}

#[test]
fn duplicate_qualifiers_only_directly_on_a_bracketed_observation() {
    for bad in [
        "[a:b = 1] WITHIN 1 SECONDS WITHIN 2 SECONDS",
        "[a:b = 1] REPEATS 1 TIMES REPEATS 2 TIMES",
        "[a:b = 1] REPEATS 1 TIMES WITHIN 1 SECONDS REPEATS 2 TIMES",
        "[x:y = 2] AND [a:b = 1] WITHIN 1 SECONDS WITHIN 2 SECONDS",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    for good in [
        "([a:b = 1] WITHIN 1 SECONDS) WITHIN 2 SECONDS",
        // The reference does not check chains on a parenthesised group either.
        "([a:b = 1]) WITHIN 1 SECONDS WITHIN 2 SECONDS",
        "[a:b = 1] WITHIN 1 SECONDS AND [a:c = 1] WITHIN 2 SECONDS",
        "[a:b = 1] WITHIN 1 SECONDS REPEATS 2 TIMES START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:00Z'",
    ] {
        ok(good);
    }
}

#[test]
fn every_operator() {
    let cases: [(&str, CompareOp); 8] = [
        ("=", CompareOp::Eq),
        ("==", CompareOp::Eq),
        ("!=", CompareOp::Neq),
        ("<>", CompareOp::Neq),
        ("<", CompareOp::Lt),
        ("<=", CompareOp::Le),
        (">", CompareOp::Gt),
        (">=", CompareOp::Ge),
    ];
    for (spelling, expected) in cases {
        for negated in [false, true] {
            let not = if negated { "NOT " } else { "" };
            let input = format!("[a:b {not}{spelling} 1]");
            match single_test(&ok(&input)) {
                Test::Compare { op, negated: n, .. } => {
                    assert_eq!((*op, *n), (expected, negated), "{input}")
                }
                other => panic!("{other:?}"),
            }
            // No whitespace needed around symbolic operators.
            ok(&format!("[a:b{not}{spelling}1]").replace("bNOT", "b NOT"));
        }
    }
    for (word, expected) in [
        ("LIKE", StringOp::Like),
        ("MATCHES", StringOp::Matches),
        ("ISSUBSET", StringOp::IsSubset),
        ("ISSUPERSET", StringOp::IsSuperset),
    ] {
        match single_test(&ok(&format!("[a:b NOT {word} 'x']"))) {
            Test::StringMatch { op, negated, .. } => assert_eq!((*op, *negated), (expected, true)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&format!("[a:b {word} 1]")).is_err());
        assert!(parse(&format!("[a:b {} 'x']", word.to_lowercase())).is_err());
    }
    match single_test(&ok("[a:b NOT IN ()]")) {
        Test::In { negated, set, .. } => assert!(*negated && set.is_empty()),
        other => panic!("{other:?}"),
    }
    match single_test(&ok("[a:b IN(1,'x' , true)]")) {
        Test::In { set, .. } => assert_eq!(set.len(), 3),
        other => panic!("{other:?}"),
    }
    match single_test(&ok("[NOT EXISTS a:b]")) {
        Test::Exists { negated, path } => assert!(*negated && path.property == "b"),
        other => panic!("{other:?}"),
    }
    assert!(parse("[a:b EXISTS]").is_err());
    assert!(parse("[EXISTS a:b = 1]").is_err());
}

#[test]
fn literal_kinds_and_canonical_forms() {
    assert_eq!(value_of("[a:b = +5]"), LiteralValue::Int("5".into()));
    assert_eq!(value_of("[a:b = -5]"), LiteralValue::Int("-5".into()));
    assert_eq!(value_of("[a:b = 0]"), LiteralValue::Int("0".into()));
    assert_eq!(value_of("[a:b = +.5]"), LiteralValue::Float(".5".into()));
    assert_eq!(
        value_of("[a:b = -00.50]"),
        LiteralValue::Float("-00.50".into())
    );
    assert_eq!(
        value_of("[a:b = 'it\\'s \\\\ ok']"),
        LiteralValue::Str("it's \\ ok".into())
    );
    assert_eq!(
        value_of("[a:b = 'two\nlines\ttab']"),
        LiteralValue::Str("two\nlines\ttab".into())
    );
    assert_eq!(value_of("[a:b = true]"), LiteralValue::Bool(true));
    assert_eq!(value_of("[a:b = false]"), LiteralValue::Bool(false));
    assert_eq!(
        value_of("[a:b = h'0AfF']"),
        LiteralValue::Hex("0aff".into())
    );
    assert_eq!(value_of("[a:b = h'']"), LiteralValue::Hex("".into()));
    assert_eq!(
        value_of("[a:b = b'SGk=']"),
        LiteralValue::Binary("SGk=".into())
    );
    assert_eq!(
        value_of("[a:b = t'2016-02-29T23:59:60.000Z']"),
        LiteralValue::Timestamp("2016-02-29T23:59:60.000Z".into())
    );
    for bad in [
        "[a:b = 00]",
        "[a:b = 1.]",
        "[a:b = +]",
        "[a:b = .]",
        "[a:b = 1.2.3]",
        "[a:b = 'a\\tb']",
        "[a:b = h'0]",
        "[a:b = h'0g']",
        "[a:b = b'=']",
        "[a:b = b'AB=']",
        "[a:b = b'A']",
        "[a:b = t'2016-2-29T23:59:60Z']",
        "[a:b = t'2016-02-29T23:59:60z']",
        "[a:b = t'2016-02-29t23:59:60Z']",
        "[a:b = null]",
        "[a:b = falsey]",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn object_paths() {
    let p = ok("[file:extensions.'windows-pebinary-ext'.sections[*].x[-2][+3] = 1]");
    let path = single_test(&p).path();
    assert_eq!(path.object_type, "file");
    assert_eq!(path.property, "extensions");
    assert_eq!(
        path.steps,
        vec![
            PathStep::Key("windows-pebinary-ext".into()),
            PathStep::Key("sections".into()),
            PathStep::AnyIndex,
            PathStep::Key("x".into()),
            PathStep::Index(-2),
            PathStep::Index(3),
        ]
    );
    // Quoted and unquoted keys are the same key.
    assert_eq!(
        ok("[file:hashes.'MD5' = 'e99a18c428cb38d5f260853678922e03']"),
        ok("[file:hashes.MD5 = 'e99a18c428cb38d5f260853678922e03']")
    );
    err(
        "[file:hashes.SHA-256 = 'x']",
        "'-' is not allowed in an unquoted property name (quote it: 'SHA-256')",
        13,
    );
    err(
        "[a:b.AND = 1]",
        "expected property name, found a keyword (quote it)",
        5,
    );
    err("[IN:b = 1]", "expected object type, found a keyword", 1);
    err("[a:b[1.5] = 1]", "expected list index (integer or '*')", 5);
    err(
        "[a:b[99999999999999999999] = 1]",
        "list index out of range",
        5,
    );
}

#[test]
fn keywords_are_case_sensitive_and_need_boundaries() {
    ok("[a:b = 1]AND[c:d = 1]");
    ok("[a:b = 1]OR([c:d = 1])");
    ok("[a:b = 1] WITHIN 5SECONDS");
    ok("[a:b = 1] REPEATS 5TIMES");
    ok("[a:b = 1AND c:d = 2]");
    ok("[a:b IN(1)]");
    ok("[a:b LIKE'x']");
    ok("[a:and = 1]");
    ok("[and:b = 1]");
    for bad in [
        "[a:b = 1] and [c:d = 1]",
        "[a:b = 1] Or [c:d = 1]",
        "[a:b = 1] followedby [c:d = 1]",
        "[a:b = 1] WITHIN 5 seconds",
        "[a:b = 1] ANDx [c:d = 1]",
        "[a:b = 1] AND-x [c:d = 1]",
        "[a:b not = 1]",
        "[a:b INx (1)]",
        "[a:b = trueAND c:d = 1]",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn whitespace_and_comments() {
    let plain = ok("[a:b = 1] AND [c:d = 2]");
    for spaced in [
        "  [a:b = 1] AND [c:d = 2]  ",
        "\t[\na:b\r\n=\u{b}1\u{c}]AND[c:d=2]",
        "[a:b = 1]\u{a0}AND\u{2003}[c:d = 2]\u{3000}",
        "[a:b /* c */ = 1] /**/AND/* x\ny */[c:d = 2] // tail",
        "/* lead */ [a:b = 1] AND [c:d = 2]",
        "[a:b = 1] // line\nAND [c:d = 2]",
        "[ a : b = 1 ] AND [ c : d = 2 ]",
    ] {
        assert_eq!(ok(spaced), plain, "{spaced:?}");
    }
    assert!(parse("[a:b = 1] /* open").is_err());
    assert!(parse("[a:b = 1] /*/").is_err());
    assert!(parse("[a:b = 1] / [c:d = 2]").is_err());
    // Comment markers inside strings are string content.
    assert_eq!(
        value_of("[a:b = '// no /* no */']"),
        LiteralValue::Str("// no /* no */".into())
    );
}

#[test]
fn spans_cover_the_source_text() {
    let input = "  [file:name = 'x' OR a:b IN (1, 2)] WITHIN 5 SECONDS ";
    let p = ok(input);
    let text = |s: iocsync::pattern::Span| &input[s.start..s.end];
    assert_eq!(
        text(p.root.span),
        "[file:name = 'x' OR a:b IN (1, 2)] WITHIN 5 SECONDS"
    );
    let ObservationKind::Qualified { base, qualifier } = &p.root.kind else {
        panic!()
    };
    assert_eq!(text(qualifier.span), "WITHIN 5 SECONDS");
    let ObservationKind::Observation(cmp) = &base.kind else {
        panic!()
    };
    assert_eq!(text(cmp.span), "file:name = 'x' OR a:b IN (1, 2)");
    let ComparisonKind::Compound { operands, .. } = &cmp.kind else {
        panic!()
    };
    let ComparisonKind::Test(first) = &operands[0].kind else {
        panic!()
    };
    assert_eq!(text(first.span), "file:name = 'x'");
    assert_eq!(text(first.test.path().span), "file:name");
    let ComparisonKind::Test(second) = &operands[1].kind else {
        panic!()
    };
    let Test::In { set, .. } = &second.test else {
        panic!()
    };
    assert_eq!(text(set[1].span), "2");
    // Equality ignores spans, Span::same_range does not.
    assert!(p
        .root
        .span
        .same_range(iocsync::pattern::Span::new(2, input.len() - 1)));
}

#[test]
fn nesting_is_bounded() {
    let depth = MAX_NESTING as usize;
    let at_limit = format!("{}[a:b = 1]{}", "(".repeat(depth), ")".repeat(depth));
    ok(&at_limit);
    let too_deep = format!(
        "{}[a:b = 1]{}",
        "(".repeat(depth + 1),
        ")".repeat(depth + 1)
    );
    err(
        &too_deep,
        &format!("nesting deeper than {MAX_NESTING} levels (parentheses and qualifiers)"),
        depth,
    );
    let inner = format!(
        "[{}a:b = 1{}]",
        "(".repeat(depth + 1),
        ")".repeat(depth + 1)
    );
    assert!(parse(&inner).is_err());
    // Both levels share the budget.
    let mixed = format!(
        "{}[{}a:b = 1{}]{}",
        "(".repeat(depth / 2 + 1),
        "(".repeat(depth / 2),
        ")".repeat(depth / 2),
        ")".repeat(depth / 2 + 1)
    );
    assert!(parse(&mixed).is_err());
    // Qualifier chains (unbounded on a group in the reference) share the budget too.
    let chain = |n: usize| format!("([a:b = 1]){}", " REPEATS 2 TIMES".repeat(n));
    ok(&chain(depth));
    assert!(parse(&chain(depth + 1)).is_err());
}

/// Big adversarial inputs must fail (or pass) fast: nothing here may be super-linear.
#[test]
fn adversarial_inputs_are_linear() {
    let n = 200_000;
    let inputs = [
        "(".repeat(n),
        "[".repeat(n),
        format!("[a:b = '{}", "x".repeat(n)),
        format!("[a:b = '{}", "\\'".repeat(n)),
        format!("[a:b = 1] {}", "/*".repeat(n)),
        format!("[a:b IN ({}", "1,".repeat(n)),
        format!("[{}]", vec!["a:b = 1"; n / 8].join(" AND ")),
        vec!["[a:b = 1]"; n / 10].join(" OR "),
        format!("([a:b = 1]){}", " WITHIN 1 SECONDS".repeat(n / 16)),
        format!("[a:b{} = 1]", ".c".repeat(n)),
        format!("[a:b = h'{}", "0".repeat(n)),
        " ".repeat(n),
        "/* ".repeat(n),
    ];
    for input in &inputs {
        let start = Instant::now();
        let _ = parse(input);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{}… took {:?}",
            &input[..20.min(input.len())],
            start.elapsed()
        );
    }
}

#[test]
fn never_panics_on_any_byte_prefix() {
    let sample = "[file:hashes.'SHA-256' = 'a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3' OR x:y[*].z NOT IN (h'00', b'AA==', t'2020-01-01T00:00:00Z', -1.5)] WITHIN 5 SECONDS AND ([ü:v = 'ü']) // é";
    for end in (0..=sample.len()).filter(|&e| sample.is_char_boundary(e)) {
        let _ = parse(&sample[..end]);
        let _ = parse(&sample[end..]);
    }
}
