//! `canaryd rollout status ID --watch`: follows the rollout's event stream
//! (`GET /v1/rollouts/{id}/events`) and redraws on each event, never on a
//! timer. When the stream breaks (the daemon restarts, the network drops, a
//! proxy times out) it reconnects with backoff and resumes with
//! `Last-Event-ID`, so no transition is missed and none is shown twice; it
//! gives up only after [`GIVE_UP_AFTER`] without a daemon, or when the
//! daemon refuses (unknown rollout, bad token).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::client::{Client, ClientError};
use super::status::{render_status, watch_line};
use super::terminal;
use crate::wire::{Rollout, SseReader, StreamEvent, rfc3339};

/// The daemon sends a keep-alive every 15 s: this much silence means the
/// connection is dead even if no error says so.
const SILENCE: Duration = Duration::from_secs(45);
/// Backoff between reconnects: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// How long without a daemon before the watch gives up (exit 1).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);

/// How the watch shows what happens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Redraw the status view on a terminal.
    Screen,
    /// The rollout as JSON, one line per update.
    Json,
    /// One line per change (not a terminal).
    Lines,
}

pub async fn watch(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let output = if json {
        Output::Json
    } else if std::io::stdout().is_terminal() {
        Output::Screen
    } else {
        Output::Lines
    };
    let path = format!("/v1/rollouts/{id}/events");
    let mut view = View {
        output,
        current: None,
        last_line: String::new(),
    };
    let mut last_id: Option<String> = None;
    let mut retry = FIRST_RETRY;
    let mut down_since: Option<tokio::time::Instant> = None;
    // Bounded: every pass either ends the watch, or waits `retry` and
    // counts towards GIVE_UP_AFTER.
    loop {
        let broke = match client.open_events(&path, last_id.as_deref()).await {
            Ok(resp) => {
                if down_since.take().is_some() {
                    eprintln!(
                        "canaryd: reconnected to the event stream{}",
                        last_id
                            .as_deref()
                            .map_or(String::new(), |i| format!(", resuming after event {i}"))
                    );
                }
                retry = FIRST_RETRY;
                match follow(resp, &mut view, &mut last_id).await? {
                    Followed::Ended => return Ok(ExitCode::SUCCESS),
                    Followed::Broke(why) => why,
                }
            }
            // The daemon answered and refused: retrying will not help,
            // unless it is busy or still restoring (503).
            Err(e) if e.is_answer() && !unavailable(&e) => return Err(e.into()),
            Err(e) => e.to_string(),
        };
        let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= GIVE_UP_AFTER {
            anyhow::bail!(
                "the daemon's event stream has been gone for {}: {broke}",
                crate::time::format_duration(GIVE_UP_AFTER)
            );
        }
        if since.elapsed() < retry {
            eprintln!("canaryd: the event stream broke ({broke}); reconnecting");
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

fn unavailable(e: &ClientError) -> bool {
    match e {
        ClientError::Refused { refusal, .. } => refusal.status() == 503,
        ClientError::Status { status, .. } => *status == 503 || *status == 502,
        _ => false,
    }
}

enum Followed {
    /// The rollout ended (its `end`, or a `status` of an ended rollout).
    Ended,
    /// The stream stopped before that, for this reason.
    Broke(String),
}

/// Read one connection's events until the rollout ends or the stream
/// breaks, remembering the last event's id.
async fn follow(
    mut resp: reqwest::Response,
    view: &mut View,
    last_id: &mut Option<String>,
) -> anyhow::Result<Followed> {
    let mut reader = SseReader::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, resp.chunk()).await {
            Err(_) => return Ok(Followed::Broke("no keep-alive for 45s".into())),
            Ok(Err(e)) => return Ok(Followed::Broke(e.to_string())),
            Ok(Ok(None)) => return Ok(Followed::Broke("the daemon closed the stream".into())),
            Ok(Ok(Some(bytes))) => bytes,
        };
        for frame in reader.push(&chunk)? {
            let event = StreamEvent::parse(&frame.event, &frame.data)?;
            if frame.id.is_some() {
                *last_id = frame.id;
            }
            if view.show(event)? {
                return Ok(Followed::Ended);
            }
        }
    }
}

/// What the watch has shown.
struct View {
    output: Output,
    current: Option<Rollout>,
    /// The last line printed in [`Output::Lines`].
    last_line: String,
}

impl View {
    /// Show `event`; true when the rollout has ended.
    fn show(&mut self, event: StreamEvent) -> anyhow::Result<bool> {
        let ends = event.ends_stream();
        match event {
            StreamEvent::Status(r) | StreamEvent::End(r) => {
                self.current = Some(*r);
                self.draw()?;
            }
            StreamEvent::Transition(e) => {
                if self.output == Output::Lines {
                    println!("{}  {}", rfc3339(e.at), e.message);
                }
                if let Some(r) = &mut self.current {
                    r.state = e.phase;
                    r.step = e.step;
                    r.weight = e.weight.percent();
                    r.reason = e.message.clone();
                    if self.output != Output::Lines {
                        self.draw()?;
                    }
                }
            }
            StreamEvent::Lagged { missed } => {
                eprintln!("canaryd: the stream skipped {missed} event(s)");
            }
        }
        Ok(ends)
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        let Some(r) = &self.current else {
            return Ok(());
        };
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Screen => write!(
                out,
                "\x1b[2J\x1b[H{}",
                render_status(r, terminal::width(), terminal::now())
            )?,
            Output::Json => writeln!(out, "{}", serde_json::to_string(r)?)?,
            Output::Lines => {
                let line = watch_line(r);
                if line != self.last_line {
                    writeln!(out, "{line}")?;
                    self.last_line = line;
                }
            }
        }
        out.flush()?;
        Ok(())
    }
}
