//! A line-oriented `text/event-stream` parser per the WHATWG spec: `id`, `event`, multi-line `data`
//! joined with `\n`, `:` comments, CRLF / LF line ends, dispatch on a blank line.

/// The data of an event: SSE text, or an already-parsed value (NDJSON captures).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Raw `data:` text.
    Text(String),
    /// Parsed JSON.
    Value(serde_json::Value),
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The data.
    pub data: Data,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds one line (with or without its line end); returns an event when the line dispatches one.
    pub fn push_line(&mut self, raw: &[u8]) -> Option<SseEvent> {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }

    /// End of input: a pending event without its blank line is still dispatched (a truncated capture
    /// loses nothing it holds).
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let id = self.id.take();
        let event = self.event.take();
        let data = self.data.take()?;
        Some(SseEvent {
            id,
            event: event.unwrap_or_else(|| "message".into()),
            data: Data::Text(data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out: Vec<SseEvent> = text
            .split_inclusive('\n')
            .filter_map(|l| p.push_line(l.as_bytes()))
            .collect();
        out.extend(p.finish());
        out
    }

    #[test]
    fn parses_fields_comments_crlf_and_multiline_data() {
        let events = parse(": hello\r\nid: 1-0\r\nevent: create\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: heartbeat\ndata:\"x\"\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1-0"));
        assert_eq!(events[0].event, "create");
        assert_eq!(events[0].data, Data::Text("{\"a\":\n1}".into()));
        assert_eq!(events[1].id, None);
        assert_eq!(events[1].data, Data::Text("\"x\"".into()));
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_truncated_tail_is() {
        let events = parse("id: 5-0\nevent: ping\n\nid: 6-0\nevent: create\ndata: {}");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("6-0"));
    }
}
