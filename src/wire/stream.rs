//! The events of `GET /v1/rollouts/{id}/events` (Server-Sent Events): each
//! is an `event:` name and one line of JSON `data:`.

use serde::{Deserialize, Serialize};

use super::Rollout;
use crate::engine::Event;

/// One event of a rollout's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// `status`: the rollout as the stream opens; when it has already
    /// ended, the stream closes after this one.
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
            // An engine event's keys are written sorted, as in a timeline.
            StreamEvent::Transition(e) => Ok(serde_json::to_value(e)?.to_string()),
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
