//! The file source: replays an OpenCTI live-stream capture (raw SSE text as the server sends it, or
//! NDJSON of `{id, event, data}`) or a STIX 2.1 bundle (every indicator a create), resuming from a
//! byte offset (captures) or an object index (bundles) after a restart.

use crate::model::{EventKind, Payload, SourceEvent};
use crate::sources::opencti::event::{decode_event_value, decode_frame};
use crate::sources::sse::{Frame, SseDecoder};
use crate::sources::{Source, SourceContext, SourceError};
use async_trait::async_trait;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const NAME: &str = "file";

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `text/event-stream` capture.
    Sse,
    /// One `{id, event, data}` object per line.
    Ndjson,
    /// A STIX 2.1 bundle.
    Bundle,
}

/// Reads a capture or bundle file.
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A source for `path` (opened when run).
    pub fn new(path: &Path) -> Self {
        FileSource {
            path: path.to_path_buf(),
        }
    }

    fn err(&self, message: String) -> SourceError {
        SourceError::Other {
            source_name: NAME,
            message: format!("`{}`: {message}", self.path.display()),
        }
    }

    /// Detects the format from the first non-blank bytes.
    pub fn detect(path: &Path) -> std::io::Result<FileFormat> {
        let mut head = Vec::with_capacity(4096);
        std::fs::File::open(path)?
            .take(64 * 1024)
            .read_to_end(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        if !trimmed.starts_with('{') {
            return Ok(FileFormat::Sse);
        }
        let first_line = trimmed.lines().next().unwrap_or("");
        match serde_json::from_str::<serde_json::Value>(first_line) {
            Ok(v) if v.get("type").and_then(|t| t.as_str()) == Some("bundle") => {
                Ok(FileFormat::Bundle)
            }
            Ok(_) => Ok(FileFormat::Ndjson),
            // A pretty-printed JSON document: only a bundle makes sense.
            Err(_) => Ok(FileFormat::Bundle),
        }
    }

    /// Position strings carry the path, so a checkpoint taken on another file is not applied here.
    fn position(&self, offset: u64) -> String {
        format!("{}#{offset}", self.path.display())
    }

    fn start_offset(&self, start: Option<&str>) -> u64 {
        let Some(start) = start else { return 0 };
        match start.rsplit_once('#') {
            Some((path, offset)) if path == self.path.display().to_string() => {
                offset.parse().unwrap_or(0)
            }
            _ => {
                tracing::info!(checkpoint = start, file = %self.path.display(), "checkpoint belongs to another file: reading from the start");
                0
            }
        }
    }

    async fn send(&self, ctx: &SourceContext, event: SourceEvent) -> Result<bool, SourceError> {
        tokio::select! {
            r = ctx.events.send(event) => Ok(r.is_ok()),
            _ = ctx.shutdown.cancelled() => Ok(false),
        }
    }

    /// Sends a decoded event at `position` (an `Other` one for what decodes to nothing, so the
    /// position still moves); false when the run should end.
    async fn send_at(
        &self,
        ctx: &SourceContext,
        position: u64,
        event: Option<SourceEvent>,
    ) -> Result<bool, SourceError> {
        let mut out = event.unwrap_or(SourceEvent {
            position: None,
            kind: EventKind::Other,
            payload: Payload::None,
        });
        out.position = Some(self.position(position));
        self.send(ctx, out).await
    }

    fn open_at(&self, offset: u64) -> Result<std::fs::File, SourceError> {
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(format!("cannot seek to {offset}: {e}")))?;
        Ok(file)
    }

    /// An SSE capture, through the same bounded decoder as the live stream.
    async fn run_sse(&self, ctx: &SourceContext, offset: u64) -> Result<bool, SourceError> {
        let mut file = self.open_at(offset)?;
        let mut decoder = SseDecoder::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            let n = file.read(&mut buf).map_err(|e| {
                self.err(format!(
                    "read failed at byte {}: {e}",
                    offset + decoder.consumed()
                ))
            })?;
            if n == 0 {
                frames.extend(decoder.finish());
            } else {
                decoder.feed(&buf[..n], &mut frames);
            }
            for frame in frames.drain(..) {
                let event = decode_frame(&frame);
                if !self.send_at(ctx, offset + frame.end_offset, event).await? {
                    return Ok(false);
                }
            }
            if n == 0 {
                return self.send_end(ctx, offset + decoder.consumed()).await;
            }
        }
    }

    /// An NDJSON capture, one `{id, event, data}` object per line.
    async fn run_ndjson(&self, ctx: &SourceContext, offset: u64) -> Result<bool, SourceError> {
        let file = self.open_at(offset)?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut consumed = offset;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| self.err(format!("read failed at byte {consumed}: {e}")))?;
            if n == 0 {
                return self.send_end(ctx, consumed).await;
            }
            consumed += n as u64;
            if let Some(event) = ndjson_event(&line) {
                if !self.send_at(ctx, consumed, event).await? {
                    return Ok(false);
                }
            }
        }
    }

    async fn send_end(&self, ctx: &SourceContext, offset: u64) -> Result<bool, SourceError> {
        let end = SourceEvent {
            position: Some(self.position(offset)),
            kind: EventKind::RunEnd,
            payload: Payload::None,
        };
        self.send(ctx, end).await
    }

    async fn run_bundle(&self, ctx: &SourceContext, skip: u64) -> Result<bool, SourceError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| self.err(format!("cannot read: {e}")))?;
        let bundle: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| self.err(format!("not a JSON document: {e}")))?;
        let Some(objects) = bundle.get("objects").and_then(|o| o.as_array()) else {
            return Err(self.err("a STIX bundle needs an `objects` array".into()));
        };
        let total = objects.len() as u64;
        for (index, object) in objects.iter().enumerate().skip(skip as usize) {
            let event = SourceEvent {
                position: Some(self.position(index as u64 + 1)),
                kind: EventKind::Create,
                payload: Payload::Stix(object.clone()),
            };
            if !self.send(ctx, event).await? {
                return Ok(false);
            }
        }
        let end = SourceEvent {
            position: Some(self.position(total.max(skip))),
            kind: EventKind::RunEnd,
            payload: Payload::None,
        };
        self.send(ctx, end).await
    }
}

/// One NDJSON line → the event it holds (`None` for a blank line; `Some(None)` for a line that
/// decodes to nothing, e.g. `connected`). The data may be an object or the raw wire text.
fn ndjson_event(line: &[u8]) -> Option<Option<SourceEvent>> {
    let malformed = |reason: String| {
        Some(Some(SourceEvent {
            position: None,
            kind: EventKind::Create,
            payload: Payload::Malformed { reason },
        }))
    };
    let Ok(text) = std::str::from_utf8(line) else {
        return malformed("NDJSON line is not UTF-8".to_string());
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            let id = v.get("id").and_then(|i| i.as_str()).map(str::to_string);
            let event = v
                .get("event")
                .and_then(|e| e.as_str())
                .unwrap_or("message")
                .to_string();
            let data = v
                .get_mut("data")
                .map(serde_json::Value::take)
                .unwrap_or(serde_json::Value::Null);
            Some(decode_event_value(&event, id.as_deref(), data))
        }
        Err(e) => malformed(format!("unreadable NDJSON line: {e}")),
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let format = FileSource::detect(&self.path).map_err(|e| SourceError::Config {
            source_name: NAME,
            key: "file.path",
            message: format!("cannot read `{}`: {e}", self.path.display()),
        })?;
        let start = self.start_offset(ctx.start.as_deref());
        tracing::info!(file = %self.path.display(), ?format, start, "reading file source");
        match format {
            FileFormat::Bundle => self.run_bundle(&ctx, start).await?,
            FileFormat::Sse => self.run_sse(&ctx, start).await?,
            FileFormat::Ndjson => self.run_ndjson(&ctx, start).await?,
        };
        Ok(())
    }

    async fn check(&self) -> Result<String, SourceError> {
        let format = FileSource::detect(&self.path).map_err(|e| SourceError::Config {
            source_name: NAME,
            key: "file.path",
            message: format!("cannot read `{}`: {e}", self.path.display()),
        })?;
        let what = match format {
            FileFormat::Sse => "OpenCTI stream capture, SSE text",
            FileFormat::Ndjson => "OpenCTI stream capture, NDJSON",
            FileFormat::Bundle => "STIX 2.1 bundle",
        };
        Ok(format!("readable `{}` ({what})", self.path.display()))
    }
}
