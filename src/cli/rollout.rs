//! `canaryd rollout ...`: the on-call commands, through the daemon's API.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Client, block_on, field, print_json, require_non_empty};

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
    crate::yaml::units::parse_duration(s)
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
            let mut body = json!({
                "service": service, "canary": canary, "baseline": baseline,
                "policy": policy, "dry_run": dry_run,
            });
            for (k, v) in [
                ("change_type", change_type),
                ("ticket", ticket),
                ("reason", reason),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let v = client.post("/v1/rollouts", &body).await?;
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "rollout {} started: {} {} -> {} with policy {} ({}{})",
                    field(&v, "id"),
                    field(&v, "service"),
                    field(&v, "baseline"),
                    field(&v, "canary"),
                    field(&v, "policy"),
                    field(&v, "state"),
                    if dry_run { ", dry run" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::List { json } => {
            let v = client.get("/v1/rollouts").await?;
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "{:<28} {:<16} {:<18} {:>4} {:>6}  {:<24} POLICY",
                    "ID", "SERVICE", "STATE", "STEP", "WEIGHT", "BASELINE -> CANARY"
                );
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<28} {:<16} {:<18} {:>4} {:>5}%  {:<24} {}",
                        field(r, "id"),
                        field(r, "service"),
                        field(r, "state"),
                        field(r, "step"),
                        field(r, "weight"),
                        format!("{} -> {}", field(r, "baseline"), field(r, "canary")),
                        field(r, "policy")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Status { id, watch, json } => {
            let path = format!("/v1/rollouts/{id}");
            if !watch {
                let v = client.get(&path).await?;
                if json {
                    print_json(&v)?;
                } else {
                    print!("{}", render_status(&v));
                }
                return Ok(ExitCode::SUCCESS);
            }
            watch_status(client, &path, json).await
        }
        RolloutCommand::Pause(why) => simple(client, "pause", why, json!({})).await,
        RolloutCommand::Resume(why) => simple(client, "resume", why, json!({})).await,
        RolloutCommand::Abort(why) => simple(client, "abort", why, json!({})).await,
        RolloutCommand::Promote {
            why,
            full,
            override_gates,
        } => {
            if override_gates && why.ticket.is_none() {
                bail!("--override-gates needs --ticket");
            }
            simple(
                client,
                "promote",
                why,
                json!({ "full": full, "override_gates": override_gates }),
            )
            .await
        }
        RolloutCommand::Approve { why, role } => {
            require_non_empty("--role", &role)?;
            simple(client, "approve", why, json!({ "role": role })).await
        }
        RolloutCommand::Wait { id, timeout } => wait(client, &id, timeout).await,
    }
}

async fn simple(
    client: &Client,
    action: &str,
    why: Why,
    mut body: Value,
) -> anyhow::Result<ExitCode> {
    require_non_empty("--reason", &why.reason)?;
    body["reason"] = json!(why.reason);
    if let Some(t) = why.ticket {
        body["ticket"] = json!(t);
    }
    let v = client
        .post(&format!("/v1/rollouts/{}/{action}", why.id), &body)
        .await?;
    if why.json {
        print_json(&v)?;
    } else {
        println!(
            "rollout {}: {action} accepted; now {} at step {}, weight {}%",
            field(&v, "id"),
            field(&v, "state"),
            field(&v, "step"),
            field(&v, "weight")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code PRODUCT.md section 8 gives each outcome.
pub fn outcome_code(outcome: &str) -> Option<u8> {
    Some(match outcome {
        "promoted" => 0,
        "rolled-back" => 2,
        "aborted" => 3,
        "inconclusive" => 4,
        "concluded" => 5,
        _ => return None,
    })
}

async fn wait(client: &Client, id: &str, timeout: Option<Duration>) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/rollouts/{id}");
    let started = tokio::time::Instant::now();
    let mut failures = 0;
    // Bounded by --timeout, or by the rollout's own maxDuration.
    loop {
        match client.get(&path).await {
            Ok(v) => {
                failures = 0;
                if let Some(code) = v
                    .get("outcome")
                    .and_then(Value::as_str)
                    .and_then(outcome_code)
                {
                    println!(
                        "rollout {id}: {} ({})",
                        field(&v, "outcome"),
                        field(&v, "reason")
                    );
                    if let Some(inc) = v.get("incident").and_then(Value::as_str) {
                        println!("incident {inc}");
                    }
                    return Ok(ExitCode::from(code));
                }
            }
            // A daemon restarting is not an outcome: keep waiting a while.
            Err(e) if e.downcast_ref::<super::client::ApiError>().is_none() && failures < 60 => {
                failures += 1;
            }
            Err(e) => return Err(e),
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
        let v = client.get(path).await?;
        let ended = v.get("outcome").is_some_and(|o| !o.is_null());
        if json {
            println!("{v}");
        } else if tty {
            print!("\x1b[2J\x1b[H{}", render_status(&v));
        } else {
            let line = format!(
                "{} step {}/{} weight {}% {}",
                field(&v, "state"),
                field(&v, "step"),
                field(&v, "steps"),
                field(&v, "weight"),
                field(&v, "reason")
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if ended {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn num(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_f64) {
        Some(x) if x != 0.0 && (x.abs() < 0.001 || x.abs() >= 1e6) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

/// The status view: what `kubectl argo rollouts get rollout` shows, plus
/// each trigger's estimate against its boundary.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let s = |k: &str| field(v, k);
    out.push_str(&format!(
        "rollout {}   service {}   {} -> {}   policy {} ({}{})\n",
        s("id"),
        s("service"),
        s("baseline"),
        s("canary"),
        s("policy"),
        s("change_type"),
        if v.get("dry_run").and_then(Value::as_bool) == Some(true) {
            ", dry run"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "state {}   step {}/{}   weight {}%   in step {}s   canary requests in step {}\n",
        s("state"),
        s("step"),
        s("steps"),
        s("weight"),
        s("time_in_step_s"),
        s("canary_requests_in_step")
    ));
    out.push_str(&format!("reason: {}\n", s("reason")));
    if let Some(w) = v.get("waiting_for").and_then(Value::as_str) {
        out.push_str(&format!("waiting for: {w}\n"));
    }
    out.push_str(&format!(
        "\n{:<24} {:<13} {:>12} {:>12} {:>10}\n",
        "TRIGGER", "VERDICT", "ESTIMATE", "BOUNDARY", "SAMPLES"
    ));
    for t in v
        .get("triggers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "{:<24} {:<13} {:>12} {:>12} {:>10}\n",
            field(t, "name"),
            field(t, "verdict"),
            num(t, "estimate"),
            num(t, "boundary"),
            field(t, "samples")
        ));
    }
    let gates: Vec<&Value> = v
        .get("gates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if !gates.is_empty() {
        out.push_str(&format!("\n{:<24} {:<6} BEFORE\n", "GATE", "SHOWN"));
        for g in gates {
            out.push_str(&format!(
                "{:<24} {:<6} {}%\n",
                field(g, "name"),
                if g.get("shown").and_then(Value::as_bool) == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                field(g, "before")
            ));
        }
    }
    if let Some(a) = v.get("approvals").filter(|a| !a.is_null()) {
        let given: Vec<String> = a
            .get("given")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| format!("{} by {}", field(g, "role"), field(g, "actor")))
            .collect();
        out.push_str(&format!(
            "\napprovals: roles {}; given: {}; deadline {}\n",
            field(a, "roles"),
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(", ")
            },
            field(a, "deadline")
        ));
    }
    if let Some(src) = v.get("source").filter(|s| !s.is_null()) {
        out.push_str(&format!(
            "\nsources: {} ({}{})\n",
            field(src, "sources"),
            field(src, "status"),
            match src.get("last_error").and_then(Value::as_str) {
                Some(e) => format!(": {e}"),
                None => String::new(),
            }
        ));
    }
    if let Some(e) = v.get("router_error").and_then(Value::as_str) {
        out.push_str(&format!("router: {e}\n"));
    }
    if let Some(i) = v.get("incident").and_then(Value::as_str) {
        out.push_str(&format!("incident {i}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_exit_codes() {
        let codes: Vec<_> = [
            "promoted",
            "rolled-back",
            "aborted",
            "inconclusive",
            "concluded",
            "paused",
        ]
        .iter()
        .map(|o| outcome_code(o))
        .collect();
        assert_eq!(codes, [Some(0), Some(2), Some(3), Some(4), Some(5), None]);
    }

    fn fixture(name: &str) -> Value {
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
            error-rate               fired               0.2000       2.9957       1000

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
            error-rate               fired               0.0857       2.9957        350
            incident inc-01m91g4dj4q9n5zpws
        "#]]
        .assert_eq(&render_status(&fixture("rolled-back")));
    }
}
