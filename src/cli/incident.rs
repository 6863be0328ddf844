//! `canaryd incident list|show|review`. `list` and `show` read `--data-dir`
//! directly when it is given (read-only, safe beside a running daemon);
//! otherwise they, and `review`, ask the daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, block_on, field, print_json, require_non_empty};
use crate::daemon::api::{incident_json, incidents_json};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One incident with its evidence and timeline.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark an incident reviewed (closes an emergency change's review).
    Review {
        id: String,
        #[arg(long)]
        note: String,
        #[arg(long)]
        json: bool,
    },
}

fn offline(dir: &Path) -> anyhow::Result<Store> {
    Store::open_read_only(dir)
        .with_context(|| format!("cannot read the state in {}", dir.display()))
}

fn refusal(e: crate::daemon::Refusal) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

pub fn run(
    cmd: IncidentCommand,
    client: &Client,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    match cmd {
        IncidentCommand::List { json } => {
            let list: Value = match data_dir {
                Some(dir) => Value::Array(incidents_json(&offline(dir)?).map_err(refusal)?),
                None => block_on(client.get("/v1/incidents"))?,
            };
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<28} {:<28} {:<14} {:<18} {:<6} {:<9} OPENED",
                    "ID", "ROLLOUT", "SERVICE", "TRIGGER", "SEV", "STATUS"
                );
                for i in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<28} {:<28} {:<14} {:<18} {:<6} {:<9} {}",
                        field(i, "id"),
                        field(i, "rollout_id"),
                        field(i, "service"),
                        field(i, "trigger"),
                        field(i, "severity"),
                        field(i, "status"),
                        field(i, "opened_at")
                    );
                }
            }
        }
        IncidentCommand::Show { id, json } => {
            let v = match data_dir {
                Some(dir) => incident_json(&offline(dir)?, &id).map_err(|e| match e {
                    crate::daemon::Refusal::NotFound(m) => anyhow::anyhow!(m),
                    other => refusal(other),
                })?,
                None => block_on(client.get(&format!("/v1/incidents/{id}")))?,
            };
            if json {
                print_json(&v)?;
            } else {
                print!("{}", render(&v));
            }
        }
        IncidentCommand::Review { id, note, json } => {
            require_non_empty("--note", &note)?;
            let v = block_on(client.post(
                &format!("/v1/incidents/{id}/review"),
                &json!({ "note": note }),
            ))?;
            if json {
                print_json(&v)?;
            } else {
                println!("incident {id} reviewed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An incident for people: what fired, on what evidence, what happened.
pub fn render(v: &Value) -> String {
    let mut out = format!(
        "incident {}   {}   rollout {}   service {}\ntrigger {} fired; opened {}; status {}\n",
        field(v, "id"),
        field(v, "severity"),
        field(v, "rollout_id"),
        field(v, "service"),
        field(v, "trigger"),
        field(v, "opened_at"),
        field(v, "status"),
    );
    if let Some(e) = v.get("evidence").filter(|e| !e.is_null()) {
        out.push_str("evidence:\n");
        let text = serde_json::to_string_pretty(e).unwrap_or_default();
        for line in text.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(r) = v.get("router_result").filter(|r| !r.is_null()) {
        out.push_str(&format!("router: {r}\n"));
    }
    if let Some(t) = v.get("timeline").and_then(Value::as_array) {
        out.push_str("timeline:\n");
        for e in t {
            out.push_str(&format!(
                "  {}  {:<18} {:>3}%  {}: {}\n",
                e.get("at")
                    .and_then(Value::as_u64)
                    .map(|ms| crate::daemon::view::rfc3339(crate::time::Timestamp::from_millis(ms)))
                    .unwrap_or_else(|| "-".into()),
                field(e, "phase"),
                field(e, "weight"),
                field(e, "actor"),
                field(e, "message")
            ));
        }
    }
    if let Some(n) = v.get("review_note").and_then(Value::as_str) {
        out.push_str(&format!("review: {n} ({})\n", field(v, "reviewed_by")));
    }
    out
}
