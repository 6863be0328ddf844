//! The events of `GET /v1/rollouts/{id}/events` (Server-Sent Events): each
//! is an `id:` line, an `event:` name and one line of JSON `data:`; and
//! [`SseReader`], which reads them back from the bytes of a stream.
//!
//! The `id` is the rollout's journal sequence number the event reflects
//! (a transition: its own entry; `status` and `end`: the last entry the
//! rollout had): durable across daemon restarts and never decreasing
//! within a rollout's stream, so a client that reconnects with
//! `Last-Event-ID` is sent every transition after it.

use serde::{Deserialize, Serialize};

use super::Rollout;
use crate::engine::Event;

/// One event of a rollout's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// `status`: the rollout as the stream opens, and again after each
    /// step the daemon commits (new evidence, a new weight); when it has
    /// already ended, the stream closes after this one.
    Status(Box<Rollout>),
    /// `transition`: one timeline entry, as it happens.
    Transition(Event),
    /// `end`: the rollout as it ended; the stream closes after it.
    End(Box<Rollout>),
    /// `lagged`: the stream fell behind and skipped `missed` events.
    Lagged { missed: u64 },
}

#[derive(Serialize, Deserialize)]
struct Lagged {
    missed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamEventError {
    #[error("unknown event `{0}`")]
    Unknown(String),
    #[error("event `{name}`: its data is not what the stream sends")]
    Data {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StreamEvent {
    /// The `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Status(_) => "status",
            StreamEvent::Transition(_) => "transition",
            StreamEvent::End(_) => "end",
            StreamEvent::Lagged { .. } => "lagged",
        }
    }

    /// Whether the stream closes after this event.
    pub fn ends_stream(&self) -> bool {
        match self {
            StreamEvent::Status(r) => r.outcome.is_some(),
            StreamEvent::End(_) => true,
            StreamEvent::Transition(_) | StreamEvent::Lagged { .. } => false,
        }
    }

    /// The `data:` line: the event's JSON, keys as the API writes them.
    pub fn data(&self) -> Result<String, serde_json::Error> {
        match self {
            StreamEvent::Status(r) | StreamEvent::End(r) => serde_json::to_string(r),
            // An engine event's keys are written sorted, as in a timeline,
            // with `time`, its `at` in RFC 3339, beside it.
            StreamEvent::Transition(e) => {
                let mut v = serde_json::to_value(e)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("time".into(), super::rfc3339(e.at).into());
                }
                Ok(v.to_string())
            }
            StreamEvent::Lagged { missed } => serde_json::to_string(&Lagged { missed: *missed }),
        }
    }

    /// Read back an event from its name and data.
    pub fn parse(name: &str, data: &str) -> Result<StreamEvent, StreamEventError> {
        let bad = |source| StreamEventError::Data {
            name: name.to_string(),
            source,
        };
        Ok(match name {
            "status" => StreamEvent::Status(serde_json::from_str(data).map_err(bad)?),
            "transition" => StreamEvent::Transition(serde_json::from_str(data).map_err(bad)?),
            "end" => StreamEvent::End(serde_json::from_str(data).map_err(bad)?),
            "lagged" => {
                let l: Lagged = serde_json::from_str(data).map_err(bad)?;
                StreamEvent::Lagged { missed: l.missed }
            }
            other => return Err(StreamEventError::Unknown(other.to_string())),
        })
    }
}

/// One frame of a Server-Sent Events stream: its `id:`, `event:` name and
/// `data:` (lines joined with `\n`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Reads frames from a stream's bytes as they arrive, in any chunking:
/// `push` the bytes, then take the complete frames. Comments (`:`, the
/// keep-alives) and fields it does not know are skipped; a line longer than
/// [`SseReader::MAX_LINE`] is an error rather than memory without bound.
#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    frame: SseFrame,
    has_field: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("an event stream line is longer than {max} bytes")]
    LineTooLong { max: usize },
}

impl SseReader {
    /// The longest line taken (a `status` event of a large policy is some
    /// tens of kilobytes).
    pub const MAX_LINE: usize = 4 * 1024 * 1024;

    /// Takes `bytes`; returns the frames they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= Self::MAX_LINE {
                    return Err(SseError::LineTooLong {
                        max: Self::MAX_LINE,
                    });
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(&line));
            if line.is_empty() {
                if self.has_field {
                    out.push(std::mem::take(&mut self.frame));
                    self.has_field = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.frame.id = Some(value.to_string()),
                "event" => self.frame.event = value.to_string(),
                "data" => {
                    if !self.frame.data.is_empty() {
                        self.frame.data.push('\n');
                    }
                    self.frame.data.push_str(value);
                }
                _ => continue,
            }
            self.has_field = true;
        }
        Ok(out)
    }
}
