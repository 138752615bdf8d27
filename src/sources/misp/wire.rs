//! MISP's JSON as it really arrives: attributes of `attributes/restSearch` and feeds of `/feeds`,
//! read leniently (ids and timestamps as strings or numbers, booleans as `true`, `"1"` or `1`,
//! optional objects missing or null), so one odd field never loses a whole page.

use serde_json::Value;

/// A string field that may arrive as a string or a number; empty strings are absent.
pub fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean as MISP versions send it: `true`, `1`, `"1"`, `"true"`.
pub fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(true),
            "0" | "false" | "no" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An integer as a number or a digit string.
pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An id that means "none" when 0 or empty (`fixed_event: 0`, `orgc_id: "0"`).
fn id_field(v: Option<&Value>) -> Option<String> {
    text(v).filter(|s| s != "0")
}

/// A tag on an attribute (or inherited from its event with `includeEventTags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRef {
    /// Tag id.
    pub id: Option<String>,
    /// Tag name (`tlp:white`, `osint:source-type="block-or-filter-list"`).
    pub name: String,
}

/// The event an attribute belongs to, as `restSearch` embeds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRef {
    /// Event id.
    pub id: Option<String>,
    /// Event title.
    pub info: Option<String>,
    /// Owner org id.
    pub org_id: Option<String>,
    /// Creator org id.
    pub orgc_id: Option<String>,
    /// Event uuid.
    pub uuid: Option<String>,
}

/// One MISP attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Numeric id.
    pub id: Option<String>,
    /// Numeric event id.
    pub event_id: Option<String>,
    /// The stable key: iocsync's indicator id.
    pub uuid: String,
    /// MISP type (`ip-dst`, `filename|sha256`…).
    pub kind: String,
    /// Category.
    pub category: Option<String>,
    /// Value (`"deleted"` on hardened servers once soft-deleted: never key on it).
    pub value: String,
    /// The IDS flag.
    pub to_ids: bool,
    /// Soft-deleted.
    pub deleted: bool,
    /// Last modification, unix seconds.
    pub timestamp: i64,
    /// Free text.
    pub comment: Option<String>,
    /// `first_seen`, when the server has it.
    pub first_seen: Option<String>,
    /// The embedded event.
    pub event: EventRef,
    /// Attribute tags (plus event tags with `includeEventTags`).
    pub tags: Vec<TagRef>,
}

impl Attribute {
    /// Reads one element of `response.Attribute`; `Err` names what makes it unusable.
    pub fn from_value(v: &Value) -> Result<Attribute, String> {
        let uuid = text(v.get("uuid")).ok_or("attribute without uuid")?;
        let kind = text(v.get("type")).ok_or_else(|| format!("attribute {uuid} without type"))?;
        let event = v.get("Event").filter(|e| e.is_object());
        let field = |name: &str| event.and_then(|e| text(e.get(name)));
        let tags = v
            .get("Tag")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| {
                        Some(TagRef {
                            id: text(t.get("id")),
                            name: text(t.get("name"))?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Attribute {
            id: text(v.get("id")),
            event_id: text(v.get("event_id")).or_else(|| field("id")),
            kind,
            category: text(v.get("category")),
            // A value is kept untrimmed here; normalisation trims per type.
            value: match v.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            },
            to_ids: flag(v.get("to_ids")).unwrap_or(false),
            deleted: flag(v.get("deleted")).unwrap_or(false),
            timestamp: int(v.get("timestamp")).unwrap_or(0),
            comment: text(v.get("comment")),
            first_seen: text(v.get("first_seen")),
            event: EventRef {
                id: field("id"),
                info: field("info"),
                org_id: field("org_id"),
                orgc_id: field("orgc_id"),
                uuid: field("uuid").or_else(|| text(v.get("event_uuid"))),
            },
            tags,
            uuid,
        })
    }
}

/// The attributes of a `restSearch` answer: `{"response": {"Attribute": [...]}}`; an empty result
/// may come as `{"response": []}`; some proxies strip the `response` wrapper.
pub fn attributes_of(body: &Value) -> Option<&[Value]> {
    let response = body.get("response").unwrap_or(body);
    match response {
        Value::Array(a) if a.is_empty() => Some(&[]),
        Value::Object(o) => match o.get("Attribute") {
            Some(Value::Array(a)) => Some(a.as_slice()),
            None | Some(Value::Null) => Some(&[]),
            _ => None,
        },
        _ => None,
    }
}

/// One MISP feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Feed id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: Option<String>,
    /// Source URL.
    pub url: Option<String>,
    /// Enabled in MISP.
    pub enabled: bool,
    /// `misp`, `freetext`, `csv`.
    pub source_format: Option<String>,
    /// Whether the feed writes into one fixed event.
    pub fixed_event: bool,
    /// That event (`None` when 0).
    pub event_id: Option<String>,
    /// The creator org the feed's events get (`None` when 0).
    pub orgc_id: Option<String>,
    /// The tag the feed puts on its events (`None` when 0).
    pub tag_id: Option<String>,
}

impl Feed {
    /// Reads one element of the `/feeds` array (`{"Feed": {...}}`, or a bare feed object).
    pub fn from_value(v: &Value) -> Option<Feed> {
        let f = v.get("Feed").unwrap_or(v);
        Some(Feed {
            id: text(f.get("id"))?,
            name: text(f.get("name")).unwrap_or_default(),
            provider: text(f.get("provider")),
            url: text(f.get("url")),
            enabled: flag(f.get("enabled")).unwrap_or(false),
            source_format: text(f.get("source_format")),
            fixed_event: flag(f.get("fixed_event")).unwrap_or(false),
            event_id: id_field(f.get("event_id")),
            orgc_id: id_field(f.get("orgc_id")),
            tag_id: id_field(f.get("tag_id")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_string_typed_numbers_and_old_booleans() {
        let a = Attribute::from_value(&json!({
            "id": "12", "event_id": 7, "uuid": "5e0f1d2c-0000-4000-8000-000000000001",
            "type": "ip-dst", "category": "Network activity", "value": "1.2.3.4",
            "to_ids": "1", "deleted": "0", "timestamp": "1700000000", "comment": "",
            "Event": {"id": "7", "info": "Botnet", "orgc_id": "3", "uuid": "ev-1"},
            "Tag": [{"id": "9", "name": "tlp:white"}, {"name": ""}]
        }))
        .expect("attribute");
        assert_eq!(a.event_id.as_deref(), Some("7"));
        assert!(a.to_ids && !a.deleted);
        assert_eq!(a.timestamp, 1_700_000_000);
        assert_eq!(a.comment, None);
        assert_eq!(a.event.info.as_deref(), Some("Botnet"));
        assert_eq!(a.tags.len(), 1);
        assert!(Attribute::from_value(&json!({"type": "md5"})).is_err());
    }

    #[test]
    fn response_shapes() {
        assert_eq!(
            attributes_of(&json!({"response": []})).map(<[_]>::len),
            Some(0)
        );
        assert_eq!(
            attributes_of(&json!({"response": {"Attribute": [{}]}})).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(
            attributes_of(&json!({"Attribute": [{}, {}]})).map(<[_]>::len),
            Some(2)
        );
        assert!(attributes_of(&json!({"response": "nope"})).is_none());
    }

    #[test]
    fn feed_zero_ids_mean_none() {
        let f = Feed::from_value(
            &json!({"Feed": {"id": "4", "name": "CIRCL OSINT", "enabled": true,
            "fixed_event": "0", "event_id": "0", "orgc_id": "2", "tag_id": 0}}),
        )
        .expect("feed");
        assert_eq!(f.event_id, None);
        assert_eq!(f.tag_id, None);
        assert_eq!(f.orgc_id.as_deref(), Some("2"));
        assert!(f.enabled && !f.fixed_event);
    }
}
