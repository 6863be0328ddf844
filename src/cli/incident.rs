//! `canaryd incident list|show|review`. `list` and `show` read through a
//! [`StateReader`]: the API, or the data dir directly when `--data-dir` is
//! given (read-only, safe beside a running daemon); `review` always asks
//! the daemon.

use std::process::ExitCode;

use clap::Subcommand;

use super::StateReader;
use super::client::{Client, block_on, print_json, require_non_empty};
use crate::wire::{Incident, ReviewRequest, rfc3339};

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

pub fn run(
    cmd: IncidentCommand,
    state: &dyn StateReader,
    client: &Client,
) -> anyhow::Result<ExitCode> {
    match cmd {
        IncidentCommand::List { json } => {
            let list = state.incidents()?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<28} {:<28} {:<14} {:<18} {:<6} {:<9} OPENED",
                    "ID", "ROLLOUT", "SERVICE", "TRIGGER", "SEV", "STATUS"
                );
                for i in &list {
                    println!(
                        "{:<28} {:<28} {:<14} {:<18} {:<6} {:<9} {}",
                        i.id,
                        i.rollout_id,
                        i.service,
                        i.trigger,
                        i.severity,
                        i.status.as_str(),
                        i.opened_at
                    );
                }
            }
        }
        IncidentCommand::Show { id, json } => {
            let v = state.incident(&id)?;
            if json {
                print_json(&v)?;
            } else {
                print!("{}", render(&v));
            }
        }
        IncidentCommand::Review { id, note, json } => {
            require_non_empty("--note", &note)?;
            let body = ReviewRequest { note };
            let v: Incident = block_on(async {
                Ok(client
                    .post(&format!("/v1/incidents/{id}/review"), &body)
                    .await?)
            })?;
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
pub fn render(v: &Incident) -> String {
    let mut out = format!(
        "incident {}   {}   rollout {}   service {}\ntrigger {} fired; opened {}; status {}\n",
        v.id,
        v.severity,
        v.rollout_id,
        v.service,
        v.trigger,
        v.opened_at,
        v.status.as_str(),
    );
    out.push_str("evidence:\n");
    // Keys sorted, as the API writes evidence.
    let evidence = serde_json::to_value(&v.evidence)
        .and_then(|e| serde_json::to_string_pretty(&e))
        .unwrap_or_default();
    for line in evidence.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if let Some(r) = &v.router_result {
        let text = serde_json::to_string(r).unwrap_or_default();
        out.push_str(&format!("router: {text}\n"));
    }
    out.push_str("timeline:\n");
    for e in &v.timeline {
        out.push_str(&format!(
            "  {}  {:<18} {:>3}%  {}: {}\n",
            rfc3339(e.at),
            e.phase.as_str(),
            e.weight.percent(),
            e.actor,
            e.message
        ));
    }
    if let Some(n) = &v.review_note {
        out.push_str(&format!(
            "review: {n} ({})\n",
            v.reviewed_by.as_deref().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Incident {
        let text = match name {
            "statistical" => include_str!("../wire/fixtures/incident_statistical.json"),
            "reviewed" => include_str!("../wire/fixtures/incident_reviewed.json"),
            _ => include_str!("../wire/fixtures/incident_router.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn an_incident_with_statistical_evidence() {
        expect_test::expect![[r#"
            incident inc-01m91g4dj4q9n5zpws   sev2   rollout r-01m91g4cjvakx6bjaq   service web
            trigger error-rate fired; opened 2026-12-04T21:42:28.164Z; status open
            evidence:
              {
                "baseline": {
                  "events": 0,
                  "exposure": 0
                },
                "canary": {
                  "events": 30,
                  "exposure": 350
                },
                "estimand": "canary rate of errors/requests (threshold 0.02)",
                "estimate": 0.08571428571428572,
                "evidence_since": 1796420547163,
                "interval": {
                  "level": 0.95,
                  "lower": 0.04506799995089428,
                  "upper": null
                },
                "kind": "statistical",
                "log_boundary": 2.995732273553991,
                "log_e_value": 18.683287572504224,
                "summary": "fired: canary rate of errors/requests 8.5714% [4.5068%, -] at 95%; tolerance: at most 2%; evidence ln e 18.683 ≥ boundary 2.996; canary 30 of 350 (8.5714%); covers 1s, most of the evidence from the last 1s",
                "window_end": 1796420548163,
                "window_start": 1796420547163
              }
            router: {"at":1796420548181,"error":null,"weight":0}
            timeline:
              2026-12-04T21:42:27.177Z  progressing          0%  canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:27.177Z  progressing          0%  canaryd: setting canary weight to 10%
              2026-12-04T21:42:27.204Z  progressing         10%  canaryd: canary weight is now 10%
              2026-12-04T21:42:28.164Z  rolling-back        10%  canaryd: progressing -> rolling-back: trigger `error-rate` fired
              2026-12-04T21:42:28.181Z  rolling-back         0%  canaryd: canary weight is now 0%
              2026-12-04T21:42:28.181Z  rolled-back          0%  canaryd: rolling-back -> rolled-back: trigger `error-rate` fired
        "#]].assert_eq(&render(&fixture("statistical")));
    }

    #[test]
    fn a_reviewed_incident_with_objective_evidence() {
        expect_test::expect![[r#"
            incident inc-01m91g4srcc1azbk65   sev3   rollout r-01m91g4ptktb3rd980   service hot
            trigger p95-latency fired; opened 2026-12-04T21:42:40.652Z; status reviewed
            evidence:
              {
                "canary": {
                  "events": 600,
                  "exposure": 600
                },
                "fired": true,
                "kind": "objective",
                "limit": 5000.0,
                "measured": "lowest canary p95 bound (ms) over consecutive intervals above 5000ms",
                "observed": 8912.896,
                "summary": "fired: lowest canary p95 bound (ms) over consecutive intervals above 5000ms 8.913s against a limit of 5s; tolerance: at most 5s for 3s; canary 600 of 600 (100%); covers 3.001s",
                "window_end": 1796420560652,
                "window_start": 1796420557651
              }
            router: {"at":1796420560681,"error":null,"weight":0}
            timeline:
              2026-12-04T21:42:37.659Z  progressing          0%  canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:37.659Z  progressing          0%  canaryd: emergency change: bakes, approvals and gates are bypassed for the first 1h; each weight still serves minSamples canary requests, and triggers stay armed
              2026-12-04T21:42:37.659Z  progressing          0%  canaryd: setting canary weight to 10%
              2026-12-04T21:42:37.677Z  progressing         10%  canaryd: canary weight is now 10%
              2026-12-04T21:42:39.653Z  progressing         10%  canaryd: setting canary weight to 50%
              2026-12-04T21:42:39.677Z  progressing         50%  canaryd: canary weight is now 50%
              2026-12-04T21:42:40.652Z  rolling-back        50%  canaryd: progressing -> rolling-back: trigger `p95-latency` fired
              2026-12-04T21:42:40.681Z  rolling-back         0%  canaryd: canary weight is now 0%
              2026-12-04T21:42:40.681Z  rolled-back          0%  canaryd: rolling-back -> rolled-back: trigger `p95-latency` fired
            review: slow build; fixed (olga)
        "#]].assert_eq(&render(&fixture("reviewed")));
    }

    #[test]
    fn a_rollback_the_router_could_not_apply() {
        expect_test::expect![[r#"
            incident inc-01m91g4wneb3wmq9cz   sev2   rollout r-01m91g4swvpn6jg6vt   service flaky
            trigger router fired; opened 2026-12-04T21:42:43.630Z; status open
            evidence:
              {
                "attempts": 5,
                "error": "file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2) (after 5 attempts)",
                "kind": "router",
                "router": "file /srv/canaryd/flaky/split.json",
                "still_retrying": true,
                "summary": "the router did not set the canary weight to 0% (file /srv/canaryd/flaky/split.json) after 5 attempts: file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2) (after 5 attempts); still retrying",
                "wanted_weight": 0
              }
            router: {"at":1796420563642,"error":"file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2) (after 5 attempts)","weight":0}
            timeline:
              2026-12-04T21:42:40.809Z  progressing          0%  canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:40.809Z  progressing          0%  canaryd: setting canary weight to 10%
              2026-12-04T21:42:40.829Z  progressing         10%  canaryd: canary weight is now 10%
              2026-12-04T21:42:41.797Z  rolling-back        10%  canaryd: progressing -> rolling-back: trigger `error-rate` fired
              2026-12-04T21:42:43.642Z  rolling-back        10%  canaryd: router failed to set weight 0%: file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2) (after 5 attempts)
        "#]].assert_eq(&render(&fixture("router")));
    }
}
