//! Tests of the Sekoia sink's batch logic that need no server.

use super::*;
use crate::ioc::Ioc;
use crate::model::IocMeta;

fn change(value: &str, indicator: &str) -> Change {
    Change {
        intent_id: 1,
        op: ChangeOp::Create,
        ioc: Ioc {
            kind: IocKind::Domain,
            value: value.into(),
        },
        indicator_id: indicator.into(),
        remote_id: None,
        meta: IocMeta::default(),
    }
}

fn item(value: &str) -> ImportItem {
    ImportItem {
        value: value.into(),
        valid_from: None,
    }
}

fn fields(valid_until: Option<&str>) -> DefaultFields {
    DefaultFields {
        description: "d [iocsync]".into(),
        valid_until: valid_until.map(str::to_string),
        kill_chain_phases: Vec::new(),
    }
}

fn remote(id: &str, value: &str, description: Option<&str>) -> RemoteIndicator {
    RemoteIndicator {
        id: Some(id.into()),
        x_inthreat_short_display: Some(value.into()),
        description: description.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn named_values_must_be_quoted_whole() {
    let msg = "Invalid indicators: 'b.A.example', \"x..y\" (code 400)";
    assert!(is_named(IocKind::Domain, "b.a.example", msg));
    assert!(is_named(IocKind::Domain, "x..y", msg));
    assert!(!is_named(IocKind::Domain, "a.example", msg));
    assert!(!is_named(IocKind::Url, "http://X/", "bad: 'http://x/'"));
}

#[test]
fn created_ids_are_matched_and_foreign_ones_dropped() {
    let (a, b, c) = (
        change("a.example", "i--a"),
        change("b.example", "i--b"),
        change("c.example", "i--c"),
    );
    let changes = [&a, &b, &c];
    let sent = [item("a.example"), item("b.example"), item("c.example")];
    let got = [
        // Out of order, and c merged into another source's indicator.
        remote("indicator--b", "b.example", Some("x [iocsync]")),
        remote("indicator--a", "A.example", None),
        remote("indicator--c", "c.example", Some("from someone else")),
    ];
    assert_eq!(
        match_created(&changes, &sent, &got, "[iocsync]"),
        [
            Some("indicator--a".to_string()),
            Some("indicator--b".to_string()),
            None
        ]
    );
    assert_eq!(
        match_created(&changes, &sent, &[], "[iocsync]"),
        [None, None, None]
    );
    // The documented answer: values and results, no ids.
    let documented: Vec<RemoteIndicator> = ["a.example", "b.example", "c.example"]
        .iter()
        .map(|v| RemoteIndicator {
            value: Some((*v).into()),
            ..Default::default()
        })
        .collect();
    assert_eq!(
        match_created(&changes, &sent, &documented, "[iocsync]"),
        [None, None, None]
    );
}

#[test]
fn calls_group_equal_default_fields_in_order() {
    let f = [
        fields(Some("2025-01-02T00:00:00Z")),
        fields(None),
        fields(Some("2025-01-02T00:00:00Z")),
        fields(None),
        fields(Some("2025-01-02T00:00:00Z")),
    ];
    assert_eq!(import_calls(&f, 100), [vec![0, 2, 4], vec![1, 3]]);
    assert_eq!(import_calls(&f, 2), [vec![0, 2], vec![4], vec![1, 3]]);
    assert!(import_calls(&[], 100).is_empty());
}
