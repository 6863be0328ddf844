//! `canaryd rollout ...`: the on-call commands, through the daemon's API.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::client::{Client, block_on, or_dash, print_json, require_non_empty};
use crate::engine::Phase;
use crate::wire::{ApproveRequest, CommandRequest, PromoteRequest, Rollout, StartRequest};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout (idempotent: the same request returns the same rollout).
    Start {
        #[arg(long)]
        service: String,
        #[arg(long)]
        canary: String,
        #[arg(long)]
        baseline: String,
        /// The policy's metadata.name.
        #[arg(long)]
        policy: String,
        /// standard | emergency | experiment (default: the policy's).
        #[arg(long, value_name = "T")]
        change_type: Option<String>,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Decide everything, move no traffic.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// List rollouts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One rollout: step, weights, each trigger against its boundary.
    Status {
        id: String,
        /// Redraw live until the rollout ends.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Hold the weight where it is; triggers stay armed.
    Pause(Why),
    /// Continue the bake where it stopped.
    Resume(Why),
    /// Set the canary weight to 0 at once and end `aborted`.
    Abort(Why),
    /// Skip the rest of the current bake (--full: straight to 100%).
    Promote {
        #[command(flatten)]
        why: Why,
        #[arg(long)]
        full: bool,
        /// Admin only; needs --ticket.
        #[arg(long)]
        override_gates: bool,
    },
    /// Approve the current approval step as ROLE.
    Approve {
        #[command(flatten)]
        why: Why,
        #[arg(long)]
        role: String,
    },
    /// Block until the rollout ends; exit 0 promoted, 2 rolled-back,
    /// 3 aborted, 4 inconclusive, 5 concluded, 6 timed out.
    Wait {
        id: String,
        /// Give up after this long (e.g. 30m, 2h).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

#[derive(Debug, Args)]
pub struct Why {
    pub id: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub ticket: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::yaml::units::parse_duration(s).map_err(|e| e.to_string())
}

pub fn run(cmd: RolloutCommand, client: &Client) -> anyhow::Result<ExitCode> {
    block_on(run_async(cmd, client))
}

async fn run_async(cmd: RolloutCommand, client: &Client) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCommand::Start {
            service,
            canary,
            baseline,
            policy,
            change_type,
            ticket,
            reason,
            dry_run,
            json,
        } => {
            let body = StartRequest {
                service,
                canary,
                baseline,
                policy,
                change_type,
                reason,
                ticket,
                dry_run,
            };
            start(client, &body, json).await
        }
        RolloutCommand::List { json } => list(client, json).await,
        RolloutCommand::Status { id, watch, json } => {
            let path = format!("/v1/rollouts/{id}");
            if !watch {
                let v: Rollout = client.get(&path).await?;
                if json {
                    print_json(&v)?;
                } else {
                    print!("{}", render_status(&v));
                }
                return Ok(ExitCode::SUCCESS);
            }
            watch_status(client, &path, json).await
        }
        RolloutCommand::Pause(why) => command(client, "pause", why).await,
        RolloutCommand::Resume(why) => command(client, "resume", why).await,
        RolloutCommand::Abort(why) => command(client, "abort", why).await,
        RolloutCommand::Promote {
            why,
            full,
            override_gates,
        } => {
            if override_gates && why.ticket.is_none() {
                bail!("--override-gates needs --ticket");
            }
            require_non_empty("--reason", &why.reason)?;
            let body = PromoteRequest {
                reason: why.reason.clone(),
                ticket: why.ticket.clone(),
                full,
                override_gates,
            };
            accepted(client, "promote", &why, &body).await
        }
        RolloutCommand::Approve { why, role } => {
            require_non_empty("--role", &role)?;
            require_non_empty("--reason", &why.reason)?;
            let body = ApproveRequest {
                role,
                reason: why.reason.clone(),
                ticket: why.ticket.clone(),
            };
            accepted(client, "approve", &why, &body).await
        }
        RolloutCommand::Wait { id, timeout } => wait(client, &id, timeout).await,
    }
}

async fn start(client: &Client, body: &StartRequest, json: bool) -> anyhow::Result<ExitCode> {
    let v: Rollout = client.post("/v1/rollouts", body).await?;
    if json {
        print_json(&v)?;
    } else {
        println!(
            "rollout {} started: {} {} -> {} with policy {} ({}{})",
            v.id,
            v.service,
            v.baseline,
            v.canary,
            v.policy,
            v.state.as_str(),
            if body.dry_run { ", dry run" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let list: Vec<Rollout> = client.get("/v1/rollouts").await?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<16} {:<18} {:>4} {:>6}  {:<24} POLICY",
        "ID", "SERVICE", "STATE", "STEP", "WEIGHT", "BASELINE -> CANARY"
    );
    for r in &list {
        println!(
            "{:<28} {:<16} {:<18} {:>4} {:>5}%  {:<24} {}",
            r.id,
            r.service,
            r.state.as_str(),
            r.step,
            r.weight,
            format!("{} -> {}", r.baseline, r.canary),
            r.policy
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pause`, `resume` or `abort`.
async fn command(client: &Client, action: &str, why: Why) -> anyhow::Result<ExitCode> {
    require_non_empty("--reason", &why.reason)?;
    let body = CommandRequest {
        reason: why.reason.clone(),
        ticket: why.ticket.clone(),
    };
    accepted(client, action, &why, &body).await
}

/// Send a command's body and print the rollout it answers with.
async fn accepted<B: serde::Serialize>(
    client: &Client,
    action: &str,
    why: &Why,
    body: &B,
) -> anyhow::Result<ExitCode> {
    let v: Rollout = client
        .post(&format!("/v1/rollouts/{}/{action}", why.id), body)
        .await?;
    if why.json {
        print_json(&v)?;
    } else {
        println!(
            "rollout {}: {action} accepted; now {} at step {}, weight {}%",
            v.id,
            v.state.as_str(),
            v.step,
            v.weight
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code PRODUCT.md section 8 gives each outcome; `None` for a
/// phase that is not one.
pub fn outcome_code(outcome: Phase) -> Option<u8> {
    Some(match outcome {
        Phase::Promoted => 0,
        Phase::RolledBack => 2,
        Phase::Aborted => 3,
        Phase::Inconclusive => 4,
        Phase::Concluded => 5,
        _ => return None,
    })
}

async fn wait(client: &Client, id: &str, timeout: Option<Duration>) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/rollouts/{id}");
    let started = tokio::time::Instant::now();
    let mut failures = 0;
    // Bounded by --timeout, or by the rollout's own maxDuration.
    loop {
        match client.get::<Rollout>(&path).await {
            Ok(v) => {
                failures = 0;
                if let Some((outcome, code)) = v
                    .outcome
                    .and_then(|o| outcome_code(o).map(|code| (o, code)))
                {
                    println!("rollout {id}: {} ({})", outcome.as_str(), v.reason);
                    if let Some(inc) = &v.incident {
                        println!("incident {inc}");
                    }
                    return Ok(ExitCode::from(code));
                }
            }
            // A daemon restarting is not an outcome: keep waiting a while.
            Err(e) if !e.is_answer() && failures < 60 => {
                failures += 1;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(t) = timeout
            && started.elapsed() >= t
        {
            eprintln!("canaryd: rollout {id} did not end within {t:?}");
            return Ok(ExitCode::from(6));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn watch_status(client: &Client, path: &str, json: bool) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut last_line = String::new();
    loop {
        let v: Rollout = client.get(path).await?;
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else if tty {
            print!("\x1b[2J\x1b[H{}", render_status(&v));
        } else {
            let line = format!(
                "{} step {}/{} weight {}% {}",
                v.state.as_str(),
                v.step,
                v.steps,
                v.weight,
                v.reason
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if v.outcome.is_some() {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A trigger's number for the table: `-` when absent, scientific when very
/// small or large.
fn num(x: Option<f64>) -> String {
    match x {
        Some(x) if x != 0.0 && (x.abs() < 0.001 || x.abs() >= 1e6) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

/// A list as the status view shows it: JSON text (`["risk","compliance"]`).
fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// The status view: what `kubectl argo rollouts get rollout` shows, plus
/// each trigger's estimate against its boundary.
pub fn render_status(v: &Rollout) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "rollout {}   service {}   {} -> {}   policy {} ({}{})\n",
        v.id,
        v.service,
        v.baseline,
        v.canary,
        v.policy,
        v.change_type.as_str(),
        if v.dry_run { ", dry run" } else { "" }
    ));
    out.push_str(&format!(
        "state {}   step {}/{}   weight {}%   in step {}s   canary requests in step {}\n",
        v.state.as_str(),
        v.step,
        v.steps,
        v.weight,
        v.time_in_step_s,
        v.canary_requests_in_step
    ));
    out.push_str(&format!("reason: {}\n", v.reason));
    if let Some(w) = &v.waiting_for {
        out.push_str(&format!("waiting for: {w}\n"));
    }
    out.push_str(&format!(
        "\n{:<24} {:<13} {:>12} {:>12} {:>10}\n",
        "TRIGGER", "VERDICT", "ESTIMATE", "BOUNDARY", "SAMPLES"
    ));
    for t in &v.triggers {
        out.push_str(&format!(
            "{:<24} {:<13} {:>12} {:>12} {:>10}\n",
            t.name,
            verdict(t.verdict),
            num(t.estimate),
            num(t.boundary),
            t.samples
        ));
    }
    for t in v.triggers.iter().filter(|t| t.note.is_some()) {
        out.push_str(&format!(
            "  {}: {}\n",
            t.name,
            t.note.as_deref().unwrap_or("")
        ));
    }
    if !v.gates.is_empty() {
        out.push_str(&format!("\n{:<24} {:<6} BEFORE\n", "GATE", "SHOWN"));
        for g in &v.gates {
            out.push_str(&format!(
                "{:<24} {:<6} {}%\n",
                g.name,
                if g.shown { "yes" } else { "no" },
                g.before
            ));
        }
    }
    if let Some(a) = &v.approvals {
        let given: Vec<String> = a
            .given
            .iter()
            .map(|g| format!("{} by {}", g.role, g.actor))
            .collect();
        out.push_str(&format!(
            "\napprovals: roles {}; given: {}; deadline {}\n",
            json_list(&a.roles),
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(", ")
            },
            or_dash(a.deadline.as_deref())
        ));
    }
    if let Some(src) = &v.source {
        out.push_str(&format!(
            "\nsources: {} ({}{})\n",
            json_list(&src.sources),
            src.status,
            match &src.last_error {
                Some(e) => format!(": {e}"),
                None => String::new(),
            }
        ));
    }
    if let Some(e) = &v.router_error {
        out.push_str(&format!("router: {e}\n"));
    }
    if let Some(i) = &v.incident {
        out.push_str(&format!("incident {i}\n"));
    }
    out
}

fn verdict(v: crate::engine::TriggerVerdict) -> &'static str {
    match v {
        crate::engine::TriggerVerdict::Ok => "ok",
        crate::engine::TriggerVerdict::Inconclusive => "inconclusive",
        crate::engine::TriggerVerdict::Fired => "fired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_exit_codes() {
        let codes: Vec<_> = [
            Phase::Promoted,
            Phase::RolledBack,
            Phase::Aborted,
            Phase::Inconclusive,
            Phase::Concluded,
            Phase::Paused,
        ]
        .into_iter()
        .map(outcome_code)
        .collect();
        assert_eq!(codes, [Some(0), Some(2), Some(3), Some(4), Some(5), None]);
    }

    fn fixture(name: &str) -> Rollout {
        let text = match name {
            "progressing" => include_str!("../wire/fixtures/rollout_progressing.json"),
            "approval" => include_str!("../wire/fixtures/rollout_paused_for_approval.json"),
            "router" => include_str!("../wire/fixtures/rollout_router_failing.json"),
            _ => include_str!("../wire/fixtures/rollout_rolled_back.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn status_of_a_rollout_with_every_kind_of_trigger_and_a_gate() {
        expect_test::expect![[r#"
            rollout r-01m91g4gvfhqwzkb3e   service api   v1 -> v2   policy mixed (standard)
            state progressing   step 3/6   weight 50%   in step 2s   canary requests in step 240
            reason: rollout started
            waiting for: baking, 2949ms of 1h

            TRIGGER                  VERDICT           ESTIMATE     BOUNDARY    SAMPLES
            error-rate               ok                  0.0000       2.9957       1020
            p95-latency              ok                 16.8960    5000.0000          0
            error-budget             ok                  0.0000       1.5000          0
            no-traffic               ok                  0.0000    3600.0000          0

            GATE                     SHOWN  BEFORE
            latency-no-worse         no     100%

            sources: ["push"] (ok)
        "#]]
        .assert_eq(&render_status(&fixture("progressing")));
    }

    #[test]
    fn status_of_a_rollout_waiting_for_an_approval() {
        expect_test::expect![[r#"
            rollout r-01m91g4grpmc707hc5   service pushonly   v1 -> v2   policy slow (standard, dry run)
            state paused   step 2/4   weight 5%   in step 0s   canary requests in step 0
            reason: paused by olga: hold
            waiting for: waiting for approval by compliance

            TRIGGER                  VERDICT           ESTIMATE     BOUNDARY    SAMPLES
            error-rate               inconclusive             -            -          0

            approvals: roles ["risk","compliance"]; given: risk by bo; deadline -

            sources: ["push"] (unknown)
        "#]].assert_eq(&render_status(&fixture("approval")));
    }

    #[test]
    fn status_of_a_rollback_the_router_cannot_apply() {
        expect_test::expect![[r#"
            rollout r-01m91g4swvpn6jg6vt   service flaky   v1 -> v2   policy fast (standard)
            state rolling-back   step 1/5   weight 10%   in step 1s   canary requests in step 600
            reason: trigger `error-rate` fired
            waiting for: waiting for the router

            TRIGGER                  VERDICT           ESTIMATE     BOUNDARY    SAMPLES
            error-rate               fired              20.0000       2.9957       1000

            sources: ["push"] (ok)
            router: file /srv/canaryd/flaky/split.json: cannot write it atomically: No such file or directory (os error 2) (after 5 attempts)
            incident inc-01m91g4tw52hmv2xb2
        "#]].assert_eq(&render_status(&fixture("router")));
    }

    #[test]
    fn status_of_a_rolled_back_rollout() {
        expect_test::expect![[r#"
            rollout r-01m91g4cjvakx6bjaq   service web   v1 -> v2   policy fast (standard)
            state rolled-back   step 1/5   weight 0%   in step 0s   canary requests in step 0
            reason: trigger `error-rate` fired

            TRIGGER                  VERDICT           ESTIMATE     BOUNDARY    SAMPLES
            error-rate               fired               8.5714       2.9957        350
            incident inc-01m91g4dj4q9n5zpws
        "#]]
        .assert_eq(&render_status(&fixture("rolled-back")));
    }
}
