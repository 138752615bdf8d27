//! The file source: replays an OpenCTI live-stream capture (raw SSE text as the server sends it, or
//! NDJSON of `{id, event, data}`) or a STIX 2.1 bundle (every indicator a create), resuming from a
//! byte offset (captures) or an object index (bundles) after a restart.

mod sse;

pub use sse::{SseEvent, SseParser};

use crate::model::{EventKind, Payload, SourceEvent};
use crate::sources::opencti::event::{decode_event, decode_event_value};
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

    async fn run_stream(
        &self,
        ctx: &SourceContext,
        format: FileFormat,
        offset: u64,
    ) -> Result<bool, SourceError> {
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| self.err(format!("cannot open: {e}")))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(format!("cannot seek to {offset}: {e}")))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut parser = SseParser::default();
        let mut consumed = offset;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| self.err(format!("read failed at byte {consumed}: {e}")))?;
            let at_eof = n == 0;
            consumed += n as u64;
            let event = match format {
                FileFormat::Sse if at_eof => parser.finish(),
                FileFormat::Sse => parser.push_line(&line),
                FileFormat::Ndjson if at_eof => None,
                FileFormat::Ndjson => ndjson_event(&line),
                FileFormat::Bundle => None,
            };
            if let Some(ev) = event {
                let position = Some(self.position(consumed));
                if let Some(mut out) = ev.decode() {
                    out.position = position;
                    if !self.send(ctx, out).await? {
                        return Ok(false);
                    }
                } else if !self
                    .send(
                        ctx,
                        SourceEvent {
                            position,
                            kind: EventKind::Other,
                            payload: Payload::None,
                        },
                    )
                    .await?
                {
                    return Ok(false);
                }
            }
            if at_eof {
                break;
            }
        }
        let end = SourceEvent {
            position: Some(self.position(consumed)),
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

/// One NDJSON line → an SSE-like event (data may be an object or a raw string).
fn ndjson_event(line: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => Some(SseEvent {
            id: v.get("id").and_then(|i| i.as_str()).map(str::to_string),
            event: v
                .get("event")
                .and_then(|e| e.as_str())
                .unwrap_or("message")
                .to_string(),
            data: sse::Data::Value(
                v.get_mut("data")
                    .map(serde_json::Value::take)
                    .unwrap_or(serde_json::Value::Null),
            ),
        }),
        Err(e) => Some(SseEvent {
            id: None,
            event: "malformed".into(),
            data: sse::Data::Text(format!("unreadable NDJSON line: {e}")),
        }),
    }
}

impl SseEvent {
    fn decode(self) -> Option<SourceEvent> {
        match self.data {
            sse::Data::Text(reason) if self.event == "malformed" => Some(SourceEvent {
                position: None,
                kind: EventKind::Create,
                payload: Payload::Malformed { reason },
            }),
            sse::Data::Text(text) => decode_event(&self.event, self.id.as_deref(), &text),
            sse::Data::Value(value) => decode_event_value(&self.event, self.id.as_deref(), value),
        }
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
            FileFormat::Sse | FileFormat::Ndjson => self.run_stream(&ctx, format, start).await?,
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
