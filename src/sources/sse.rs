//! A byte-level `text/event-stream` decoder (WHATWG "event stream interpretation"), shared by the
//! live OpenCTI stream and the file source's captures.
//!
//! Linear in its input: every byte is scanned once for a line end and copied at most twice (into a
//! partial-line buffer when a line spans chunks, then into the event's data). Bounded: an event
//! whose lines add up to more than `max_event_bytes` stops being buffered the moment it crosses the
//! bound and is dispatched as [`FrameData::Oversize`] with its `id` and `event`, so the reader can
//! skip it *and* move its position past it. Bytes are never required to be UTF-8 here: the data is
//! handed over raw, and whoever reads it decides (a frame that is not UTF-8 must cost one skipped
//! event, not the connection).
//!
//! What it does not do: `retry:` is ignored (the caller owns the reconnect policy), and `id` is per
//! event instead of sticky (a frame without `id:` has no position; the caller keeps its last one).

use memchr::memchr2;

/// The default bound of one event (16 MiB): far above any real STIX object in a stream, far below
/// what would hurt the daemon's memory.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, skipped at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The `id:` field, if the event had one (lossily decoded: validating it is the caller's job).
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The data, or why it was dropped.
    pub data: FrameData,
    /// Bytes of input consumed up to and including the blank line that dispatched this event
    /// (counted from the decoder's creation): a file source resumes after it.
    pub end_offset: u64,
}

/// An event's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameData {
    /// The `data:` lines joined with `\n`, as raw bytes.
    Bytes(Vec<u8>),
    /// The event was larger than the bound; `bytes` counts what was seen of it (at least the bound).
    Oversize {
        /// Size seen.
        bytes: u64,
    },
}

impl FrameData {
    /// The data as text, or why it is not usable text.
    pub fn text(&self) -> Result<&str, String> {
        match self {
            FrameData::Bytes(b) => std::str::from_utf8(b).map_err(|e| {
                format!(
                    "data is not UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                )
            }),
            FrameData::Oversize { bytes } => Err(format!(
                "event of {bytes} bytes or more exceeds the size limit"
            )),
        }
    }
}

/// Incremental decoder state; feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes consumed so far.
    consumed: u64,
    /// A line that started in an earlier chunk (never longer than the bound).
    partial: Vec<u8>,
    /// The current line crossed the bound: drop bytes until its end.
    discarding_line: bool,
    /// ...and it is a comment (its bytes do not count towards the event).
    discarding_comment: bool,
    /// The previous chunk ended with `\r`: a leading `\n` belongs to that line end.
    after_cr: bool,
    /// Nothing decided yet: a UTF-8 byte order mark may come first.
    at_start: bool,
    /// The first bytes, while they may still be a byte order mark.
    head: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<u8>,
    /// `data:` lines seen in the current event (dispatch needs at least one).
    data_lines: u64,
    /// Bytes of the current event's field lines seen so far.
    event_bytes: u64,
    /// The current event crossed the bound.
    oversize: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder that drops events larger than `max_event_bytes` (at least 1 KiB).
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            max_event_bytes: max_event_bytes.max(1024),
            consumed: 0,
            partial: Vec::new(),
            discarding_line: false,
            discarding_comment: false,
            after_cr: false,
            at_start: true,
            head: Vec::new(),
            id: None,
            event: None,
            data: Vec::new(),
            data_lines: 0,
            event_bytes: 0,
            oversize: false,
        }
    }

    /// Decodes `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Frame>) {
        if self.at_start {
            // The first three bytes decide whether a byte order mark is there to skip; they may
            // arrive in separate chunks.
            let take = (BOM.len() - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.head.len() < BOM.len() && BOM.starts_with(&self.head) {
                return;
            }
            self.at_start = false;
            let head = std::mem::take(&mut self.head);
            if head == BOM {
                self.consumed += BOM.len() as u64;
            } else {
                self.feed_text(&head, out);
            }
        }
        self.feed_text(chunk, out);
    }

    /// Decodes bytes after the (optional) byte order mark.
    fn feed_text(&mut self, mut chunk: &[u8], out: &mut Vec<Frame>) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                self.consumed += 1;
                chunk = &chunk[1..];
            }
        }
        while !chunk.is_empty() {
            let Some(end) = memchr2(b'\n', b'\r', chunk) else {
                self.consumed += chunk.len() as u64;
                self.buffer_partial(chunk);
                return;
            };
            let line_end_len = if chunk[end] == b'\r' {
                match chunk.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        self.after_cr = true;
                        1
                    }
                }
            } else {
                1
            };
            // The `\n` of a `\r\n` is counted after the line is handled, as it is when the two
            // bytes arrive in different chunks: offsets must not depend on where chunks end.
            self.consumed += end as u64 + 1;
            let (head, rest) = (&chunk[..end], &chunk[end + line_end_len..]);
            chunk = rest;
            let crlf = line_end_len == 2;
            if self.discarding_line {
                self.discarding_line = false;
                if !self.discarding_comment {
                    self.event_bytes += head.len() as u64 + 1;
                }
            } else if self.partial.is_empty() {
                self.line(head, out);
            } else if self.partial.len() + head.len() > self.max_event_bytes {
                let first = self.partial.first().copied();
                self.overlong_line(first, self.partial.len() + head.len() + 1);
                self.partial.clear();
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line, out);
                line.clear();
                self.partial = line;
            }
            if crlf {
                self.consumed += 1;
            }
        }
    }

    /// End of input: an event without its closing blank line is still dispatched (a truncated
    /// capture loses nothing it holds). A live stream ending mid-event discards it instead (the
    /// server sends it again after the reconnect): don't call this there.
    pub fn finish(&mut self) -> Option<Frame> {
        let mut out = Vec::new();
        if self.at_start {
            // Fewer than three bytes, all a prefix of the byte order mark: they are text.
            self.at_start = false;
            let head = std::mem::take(&mut self.head);
            self.feed_text(&head, &mut out);
        }
        if !self.discarding_line && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut out);
        }
        self.discarding_line = false;
        self.partial.clear();
        self.dispatch(&mut out);
        out.pop()
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn buffer_partial(&mut self, bytes: &[u8]) {
        if self.discarding_line {
            if !self.discarding_comment {
                self.event_bytes += bytes.len() as u64;
            }
            return;
        }
        if self.partial.len() + bytes.len() > self.max_event_bytes {
            let first = self.partial.first().or(bytes.first()).copied();
            self.discarding_comment = first == Some(b':');
            self.overlong_line(first, self.partial.len() + bytes.len());
            self.partial.clear();
            self.partial.shrink_to(64 * 1024);
            self.discarding_line = true;
            return;
        }
        self.partial.extend_from_slice(bytes);
    }

    /// A line longer than the bound (`len` bytes of it seen), known by its first byte: a comment
    /// costs nothing, any other line makes its event unusable.
    fn overlong_line(&mut self, first: Option<u8>, len: usize) {
        if first == Some(b':') {
            return;
        }
        self.event_bytes += len as u64;
        self.mark_oversize();
    }

    fn mark_oversize(&mut self) {
        self.oversize = true;
        self.data = Vec::new();
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Frame>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        self.event_bytes += line.len() as u64 + 1;
        if self.event_bytes > self.max_event_bytes as u64 && !self.oversize {
            self.mark_oversize();
        }
        match field {
            b"data" => {
                if !self.oversize {
                    if self.data_lines > 0 {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                }
                self.data_lines += 1;
            }
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Frame>) {
        let id = self.id.take();
        let event = self.event.take();
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.data_lines, 0) > 0;
        let oversize = std::mem::replace(&mut self.oversize, false);
        let bytes = std::mem::replace(&mut self.event_bytes, 0);
        if !had_data && !oversize {
            return;
        }
        out.push(Frame {
            id,
            event: event.unwrap_or_else(|| "message".to_string()),
            data: if oversize {
                FrameData::Oversize { bytes }
            } else {
                FrameData::Bytes(data)
            },
            end_offset: self.consumed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_chunks(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut d = SseDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        out.extend(d.finish());
        out
    }

    fn decode(text: &[u8]) -> Vec<Frame> {
        decode_chunks(&[text], DEFAULT_MAX_EVENT_BYTES)
    }

    fn bytes(f: &Frame) -> &[u8] {
        match &f.data {
            FrameData::Bytes(b) => b,
            FrameData::Oversize { .. } => panic!("oversize {f:?}"),
        }
    }

    #[test]
    fn fields_comments_line_ends_and_multiline_data() {
        let text = b"\xEF\xBB\xBF: hello\r\nid: 1-0\r\nevent: create\r\nretry: 10\r\ndata: {\"a\":\r\ndata:1}\r\n\r\nevent: heartbeat\rdata:\"x\"\r\rdata\n\n";
        let frames = decode(text);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].id.as_deref(), Some("1-0"));
        assert_eq!(frames[0].event, "create");
        assert_eq!(bytes(&frames[0]), b"{\"a\":\n1}");
        assert_eq!(frames[1].id, None);
        assert_eq!(frames[1].event, "heartbeat");
        assert_eq!(bytes(&frames[1]), b"\"x\"");
        assert_eq!(frames[2].event, "message");
        assert_eq!(bytes(&frames[2]), b"");
        assert_eq!(frames[2].end_offset, text.len() as u64);
    }

    #[test]
    fn a_byte_order_mark_split_across_chunks_is_still_skipped() {
        let text = b"\xEF\xBB\xBFdata: x\n\n";
        let whole = decode_chunks(&[text], 1024);
        assert_eq!(bytes(&whole[0]), b"x");
        assert_eq!(whole[0].end_offset, text.len() as u64);
        let split = decode_chunks(&[&text[..1], &text[1..2], &text[2..]], 1024);
        assert_eq!(split, whole);
        // Not a BOM after all: the held bytes are text (here the start of an unknown field).
        let not_bom = b"\xEF\xBBdata: y\n\ndata: z\n\n";
        let frames = decode_chunks(&[&not_bom[..1], &not_bom[1..]], 1024);
        assert_eq!(frames, decode_chunks(&[not_bom], 1024));
        assert_eq!(frames.len(), 1);
        assert_eq!(bytes(&frames[0]), b"z");
        assert!(decode_chunks(&[b"\xEF\xBB"], 1024).is_empty());
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_a_truncated_tail_is() {
        let frames = decode(b"id: 5-0\nevent: ping\n\nid: 6-0\nevent: create\ndata: {}");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].id.as_deref(), Some("6-0"));
    }

    #[test]
    fn invalid_utf8_stays_in_its_own_frame() {
        let frames = decode(b"id: 1-0\nevent: create\ndata: {\"x\":\"\xff\xfe\"}\n\nid: 2-0\nevent: create\ndata: {}\n\n");
        assert_eq!(frames.len(), 2);
        let err = frames[0].data.text().expect_err("not utf-8");
        assert!(err.contains("not UTF-8"), "{err}");
        assert_eq!(frames[1].data.text(), Ok("{}"));
    }

    #[test]
    fn oversize_events_are_dropped_but_keep_their_id_and_offset() {
        let big = vec![b'a'; 5000];
        let mut text = b"id: 1-0\nevent: create\ndata: ".to_vec();
        text.extend_from_slice(&big);
        text.extend_from_slice(b"\n\n");
        let first_end = text.len() as u64;
        text.extend_from_slice(b"id: 2-0\nevent: create\ndata: ok\n\n");
        // Whole, and split inside the long line (the partial-line path).
        for chunks in [
            vec![&text[..]],
            vec![&text[..100], &text[100..3000], &text[3000..]],
        ] {
            let frames = decode_chunks(&chunks, 1024);
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].id.as_deref(), Some("1-0"));
            assert!(matches!(frames[0].data, FrameData::Oversize { bytes } if bytes > 1024));
            assert_eq!(frames[0].end_offset, first_end);
            assert_eq!(bytes(&frames[1]), b"ok");
        }
        // Many data lines that add up past the bound.
        let mut text = b"id: 3-0\nevent: update\n".to_vec();
        for _ in 0..100 {
            text.extend_from_slice(b"data: 0123456789012345678901234567890123456789\n");
        }
        text.extend_from_slice(b"\n");
        let frames = decode_chunks(&[&text[..]], 1024);
        assert!(matches!(frames[0].data, FrameData::Oversize { .. }));
    }

    #[test]
    fn a_long_comment_costs_nothing() {
        let mut text = b":".to_vec();
        text.extend_from_slice(&vec![b'c'; 5000]);
        text.extend_from_slice(b"\nid: 1-0\nevent: create\ndata: ok\n\n");
        for chunks in [vec![&text[..]], vec![&text[..10], &text[10..]]] {
            let frames = decode_chunks(&chunks, 1024);
            assert_eq!(frames.len(), 1);
            assert_eq!(bytes(&frames[0]), b"ok");
        }
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        let frames = decode(b"id: 1\0-0\ndata: x\n\n");
        assert_eq!(frames[0].id, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Where the network cuts the stream never changes what is decoded.
        #[test]
        fn chunking_does_not_change_frames(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"id: 1-0\n".to_vec()), Just(b"event: create\n".to_vec()),
                    Just(b"data: {\"a\":1}\n".to_vec()), Just(b"\n".to_vec()), Just(b"\r\n".to_vec()),
                    Just(b"\r".to_vec()), Just(b": comment\n".to_vec()), Just(b"data\n".to_vec()),
                    Just(vec![0xff, 0xc3]), Just(vec![b'x'; 700]), Just(BOM.to_vec()),
                    Just(vec![0xEF, 0xBB]),
                ],
                0..40,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let text: Vec<u8> = parts.concat();
            let whole = decode_chunks(&[&text[..]], 1024);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for a in at {
                chunks.push(&text[last..a]);
                last = a;
            }
            chunks.push(&text[last..]);
            prop_assert_eq!(decode_chunks(&chunks, 1024), whole);
        }
    }
}
