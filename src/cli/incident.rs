//! `canaryd incident list|show|review`. `list` and `show` read through a
//! [`StateReader`]: the API, or the data dir directly when `--data-dir` is
//! given (read-only, safe beside a running daemon); `review` always asks
//! the daemon.

use std::process::ExitCode;

use clap::Subcommand;

use super::StateReader;
use super::client::{Client, block_on, print_json, require_non_empty};
use super::terminal::{self, Table, wrap};
use crate::wire::{Incident, IncidentEvidence, ReviewRequest, rfc3339};

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
                print!("{}", render_list(&list, terminal::width()));
            }
        }
        IncidentCommand::Show { id, json } => {
            let v = state.incident(&id)?;
            if json {
                print_json(&v)?;
            } else {
                print!("{}", render(&v, terminal::width()));
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

/// An incident for people: what fired, on what evidence (in words, with
/// units), what happened, every instant in RFC 3339; fitted to `width`.
pub fn render(v: &Incident, width: usize) -> String {
    let mut out = wrap(
        &format!(
            "incident {}  {}  rollout {}  service {}",
            v.id, v.severity, v.rollout_id, v.service
        ),
        width,
        "",
    );
    out.push_str(&wrap(
        &format!(
            "trigger {} fired; opened {}; status {}",
            v.trigger,
            v.opened_at,
            v.status.as_str(),
        ),
        width,
        "",
    ));
    out.push_str("evidence:\n");
    let summary = if v.evidence.summary.is_empty() {
        // A daemon before words: name what it rests on.
        format!(
            "{} evidence (no summary from this daemon; see --json)",
            kind(v)
        )
    } else {
        v.evidence.summary.clone()
    };
    out.push_str(&wrap(&summary, width, "  "));
    if let IncidentEvidence::Statistical(e) = &v.evidence.evidence {
        out.push_str(&wrap(
            &format!(
                "window {} to {}; most of the evidence since {}",
                rfc3339(e.window_start),
                rfc3339(e.window_end),
                rfc3339(e.evidence_since)
            ),
            width,
            "  ",
        ));
    }
    if let Some(r) = &v.router_result {
        out.push_str(&wrap(
            &format!(
                "router: weight {}% at {}{}",
                r.weight,
                rfc3339(r.at),
                r.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(", with error: {e}"))
            ),
            width,
            "",
        ));
    }
    out.push_str("timeline:\n");
    for e in &v.timeline {
        out.push_str(&wrap(
            &format!(
                "{}  {}  {}%  {}: {}",
                rfc3339(e.at),
                e.phase.as_str(),
                e.weight.percent(),
                e.actor,
                e.message
            ),
            width,
            "  ",
        ));
    }
    if let Some(r) = &v.review {
        out.push_str(&wrap(
            &format!(
                "post-incident review {} ({}), opened {}{}",
                r.id,
                match r.status {
                    crate::wire::ReviewStatus::Open => "open",
                    crate::wire::ReviewStatus::Closed => "closed",
                },
                rfc3339(r.opened_at),
                r.closed_at
                    .map_or(String::new(), |t| format!(", closed {}", rfc3339(t)))
            ),
            width,
            "",
        ));
    }
    if let Some(n) = &v.review_note {
        out.push_str(&wrap(
            &format!(
                "review: {n} ({}{})",
                v.reviewed_by.as_deref().unwrap_or("-"),
                v.reviewed_at
                    .as_deref()
                    .map_or(String::new(), |t| format!(", {t}"))
            ),
            width,
            "",
        ));
    }
    out
}

/// The incidents as a table fitted to `width`.
pub fn render_list(list: &[Incident], width: usize) -> String {
    let mut table = Table::new(&[
        ("ID", false, false),
        ("ROLLOUT", false, false),
        ("SERVICE", true, false),
        ("TRIGGER", true, false),
        ("SEV", false, false),
        ("STATUS", false, false),
        ("OPENED", true, false),
    ]);
    for i in list {
        table.row(vec![
            i.id.clone(),
            i.rollout_id.clone(),
            i.service.clone(),
            i.trigger.clone(),
            i.severity.clone(),
            i.status.as_str().into(),
            i.opened_at.clone(),
        ]);
    }
    table.render(width)
}

fn kind(v: &Incident) -> &'static str {
    match v.evidence.evidence {
        IncidentEvidence::Statistical(_) => "statistical",
        IncidentEvidence::Objective(_) => "objective",
        IncidentEvidence::Router(_) => "router",
    }
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
            incident inc-01m91g4dj4q9n5zpws sev2 rollout r-01m91g4cjvakx6bjaq service web
            trigger error-rate fired; opened 2026-12-04T21:42:28.164Z; status open
            evidence:
              fired: canary rate of errors/requests: estimate 8.5714%, 95% anytime-valid interval [4.5068%, -];
              tolerance: at most 2%; evidence ln e 18.683 ≥ boundary 2.996; canary 30 of 350 (8.5714%); window
              1s, most of the evidence from the last 1s
              window 2026-12-04T21:42:27.163Z to 2026-12-04T21:42:28.163Z; most of the evidence since
              2026-12-04T21:42:27.163Z
            router: weight 0% at 2026-12-04T21:42:28.181Z
            timeline:
              2026-12-04T21:42:27.177Z progressing 0% canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:27.177Z progressing 0% canaryd: setting canary weight to 10%
              2026-12-04T21:42:27.204Z progressing 10% canaryd: canary weight is now 10%
              2026-12-04T21:42:28.164Z rolling-back 10% canaryd: progressing -> rolling-back: trigger
              `error-rate` fired
              2026-12-04T21:42:28.181Z rolling-back 0% canaryd: canary weight is now 0%
              2026-12-04T21:42:28.181Z rolled-back 0% canaryd: rolling-back -> rolled-back: trigger `error-rate`
              fired
        "#]].assert_eq(&render(&fixture("statistical"), 100));
    }

    #[test]
    fn a_reviewed_incident_with_objective_evidence() {
        expect_test::expect![[r#"
            incident inc-01m91g4srcc1azbk65 sev3 rollout r-01m91g4ptktb3rd980 service hot
            trigger p95-latency fired; opened 2026-12-04T21:42:40.652Z; status reviewed
            evidence:
              fired: lowest canary p95 bound (ms) over consecutive intervals above 5000ms 8.913s against a limit
              of 5s; tolerance: at most 5s for 3s; canary 600 of 600 (100%); window 3.001s
            router: weight 0% at 2026-12-04T21:42:40.681Z
            timeline:
              2026-12-04T21:42:37.659Z progressing 0% canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:37.659Z progressing 0% canaryd: emergency change: bakes, approvals and gates are
              bypassed for the first 1h; each weight still serves minSamples canary requests, and triggers stay
              armed
              2026-12-04T21:42:37.659Z progressing 0% canaryd: setting canary weight to 10%
              2026-12-04T21:42:37.677Z progressing 10% canaryd: canary weight is now 10%
              2026-12-04T21:42:39.653Z progressing 10% canaryd: setting canary weight to 50%
              2026-12-04T21:42:39.677Z progressing 50% canaryd: canary weight is now 50%
              2026-12-04T21:42:40.652Z rolling-back 50% canaryd: progressing -> rolling-back: trigger
              `p95-latency` fired
              2026-12-04T21:42:40.681Z rolling-back 0% canaryd: canary weight is now 0%
              2026-12-04T21:42:40.681Z rolled-back 0% canaryd: rolling-back -> rolled-back: trigger
              `p95-latency` fired
            post-incident review rev-01m91g4ptven5ezq3d (closed), opened 2026-12-04T21:42:37.659Z, closed
            2026-12-04T21:42:40.759Z
            review: slow build; fixed (olga, 2026-12-04T21:42:40.759Z)
        "#]].assert_eq(&render(&fixture("reviewed"), 100));
    }

    #[test]
    fn a_rollback_the_router_could_not_apply() {
        expect_test::expect![[r#"
            incident inc-01m91g4wneb3wmq9cz sev2 rollout r-01m91g4swvpn6jg6vt service flaky
            trigger router fired; opened 2026-12-04T21:42:43.630Z; status open
            evidence:
              the router did not set the canary weight to 0% (file /srv/canaryd/flaky/split.json) after 5
              attempts: file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or
              directory (os error 2) (after 5 attempts); still retrying
            router: weight 0% at 2026-12-04T21:42:43.642Z, with error: file /srv/canaryd/flaky/split.json:
            cannot write it atomically: No such file or directory (os error 2) (after 5 attempts)
            timeline:
              2026-12-04T21:42:40.809Z progressing 0% canaryd: pending -> progressing: rollout started
              2026-12-04T21:42:40.809Z progressing 0% canaryd: setting canary weight to 10%
              2026-12-04T21:42:40.829Z progressing 10% canaryd: canary weight is now 10%
              2026-12-04T21:42:41.797Z rolling-back 10% canaryd: progressing -> rolling-back: trigger
              `error-rate` fired
              2026-12-04T21:42:43.642Z rolling-back 10% canaryd: router failed to set weight 0%: file
              /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2)
              (after 5 attempts)
        "#]].assert_eq(&render(&fixture("router"), 100));
    }
}
