//! `canaryd rollout ...`: the on-call commands, through the daemon's API.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::client::{Client, block_on, print_json, require_non_empty};
pub use super::status::{render_status, step_of, watch_line};
use super::terminal::{self, Table};
use crate::engine::Phase;
use crate::time::Timestamp;
use crate::wire::{
    ApproveRequest, CommandRequest, PromoteRequest, Rollout, RolloutPage, StartRequest,
};

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
    /// List rollouts (every one, oldest first; with --limit, a page of the
    /// newest, and the command to see the next).
    List {
        /// Only this service's rollouts.
        #[arg(long, value_name = "S")]
        service: Option<String>,
        /// Only rollouts in this state (progressing, paused,
        /// awaiting-approval, rolled-back, promoted, ...).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most N, newest first (paged on the daemon).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Continue after a previous page (its `next`).
        #[arg(long, value_name = "C")]
        cursor: Option<String>,
        /// The API's JSON: an array of rollouts; with --limit or --cursor,
        /// the page `{"items", "next"}`.
        #[arg(long)]
        json: bool,
    },
    /// One rollout: step, weights, each trigger's estimate against its
    /// tolerance and its evidence on the way to the boundary, in words.
    Status {
        id: String,
        /// Follow the rollout's event stream and redraw on each event until
        /// it ends; reconnects (and resumes) when the daemon restarts.
        #[arg(long)]
        watch: bool,
        /// The API's JSON (with --watch: one rollout per line, per event).
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
        /// Print the ended rollout as the API's JSON (exit codes unchanged).
        #[arg(long)]
        json: bool,
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
        RolloutCommand::List {
            service,
            state,
            limit,
            cursor,
            json,
        } => {
            let query = ListArgs {
                service,
                state,
                limit,
                cursor,
            };
            list(client, &query, json).await
        }
        RolloutCommand::Status { id, watch, json } => {
            if !watch {
                let v: Rollout = client.get(&format!("/v1/rollouts/{id}")).await?;
                if json {
                    print_json(&v)?;
                } else {
                    print!("{}", render_status(&v, terminal::width(), terminal::now()));
                }
                return Ok(ExitCode::SUCCESS);
            }
            super::watch::watch(client, &id, json).await
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
        RolloutCommand::Wait { id, timeout, json } => wait(client, &id, timeout, json).await,
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

/// `rollout list`'s filters and page.
#[derive(Clone, Debug, Default)]
pub struct ListArgs {
    pub service: Option<String>,
    pub state: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl ListArgs {
    /// `/v1/rollouts?...`, each value percent-encoded.
    pub fn path(&self) -> String {
        let mut params = Vec::new();
        for (k, v) in [
            ("service", self.service.clone()),
            ("state", self.state.clone()),
            ("limit", self.limit.map(|n| n.to_string())),
            ("cursor", self.cursor.clone()),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", percent_encode(&v)));
            }
        }
        if params.is_empty() {
            "/v1/rollouts".into()
        } else {
            format!("/v1/rollouts?{}", params.join("&"))
        }
    }

    fn paged(&self) -> bool {
        self.limit.is_some() || self.cursor.is_some()
    }
}

/// Everything but unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pages a whole list is read in: each one a bounded request, however
/// many rollouts the daemon keeps.
const WHOLE_LIST_PAGE: usize = 500;

/// Every rollout of the filters, oldest first (as the unpaged list was):
/// page after page of the newest first, following each `next`. The
/// cursor is keyed, so rollouts started meanwhile neither repeat nor skip
/// a row (they are newer than the first page's first row).
async fn every_page(client: &Client, query: &ListArgs) -> anyhow::Result<Vec<Rollout>> {
    let mut all = Vec::new();
    let mut page_query = ListArgs {
        limit: Some(WHOLE_LIST_PAGE),
        cursor: None,
        ..query.clone()
    };
    loop {
        let page: RolloutPage = client.get(&page_query.path()).await?;
        all.extend(page.items);
        match page.next {
            Some(next) => page_query.cursor = Some(next),
            None => break,
        }
    }
    all.reverse();
    Ok(all)
}

async fn list(client: &Client, query: &ListArgs, json: bool) -> anyhow::Result<ExitCode> {
    let path = query.path();
    let (items, next) = if query.paged() {
        let page: RolloutPage = client.get(&path).await?;
        if json {
            print_json(&page)?;
            return Ok(ExitCode::SUCCESS);
        }
        (page.items, page.next)
    } else {
        let list = every_page(client, query).await?;
        if json {
            print_json(&list)?;
            return Ok(ExitCode::SUCCESS);
        }
        (list, None)
    };
    print!(
        "{}",
        render_list(&items, terminal::width(), terminal::now())
    );
    if let Some(next) = next {
        let mut more = format!("more: canaryd rollout list --cursor {next}");
        if let Some(n) = query.limit {
            more.push_str(&format!(" --limit {n}"));
        }
        if let Some(s) = &query.service {
            more.push_str(&format!(" --service {s}"));
        }
        if let Some(s) = &query.state {
            more.push_str(&format!(" --state {s}"));
        }
        println!("{more}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The rollouts as a table fitted to `width`: ids whole, long versions cut
/// from the left (their tags stay), services cut with `…`.
pub fn render_list(list: &[Rollout], width: usize, now: Timestamp) -> String {
    let mut table = Table::new(&[
        ("ID", false, false),
        ("SERVICE", true, false),
        ("STATE", false, false),
        ("STEP", false, false),
        ("WEIGHT", false, true),
        ("STARTED", false, false),
        ("BASELINE", true, false),
        ("CANARY", true, false),
    ])
    .cut_left(6)
    .cut_left(7);
    for r in list {
        table.row(vec![
            r.id.clone(),
            r.service.clone(),
            r.state.as_str().into(),
            format!("{} of {}", r.step + 1, r.steps),
            format!("{}%", r.weight),
            terminal::parse_rfc3339(&r.started_at)
                .map_or_else(|| r.started_at.clone(), |t| terminal::relative(t, now)),
            r.baseline.clone(),
            r.canary.clone(),
        ]);
    }
    table.render(width)
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
            "rollout {}: {action} accepted; now {} at {}, weight {}%",
            v.id,
            v.state.as_str(),
            step_of(&v),
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

async fn wait(
    client: &Client,
    id: &str,
    timeout: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
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
                    if json {
                        print_json(&v)?;
                    } else {
                        println!("rollout {id}: {} ({})", outcome.as_str(), v.reason);
                        if let Some(inc) = &v.incident {
                            println!("incident {inc}");
                        }
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

    /// A few minutes after the fixtures were captured.
    fn now() -> Timestamp {
        terminal::parse_rfc3339("2026-12-04T21:45:00Z").unwrap()
    }

    #[test]
    fn status_of_a_rollout_with_every_kind_of_trigger_and_a_gate() {
        expect_test::expect![[r#"
            rollout r-01m91g4gvfhqwzkb3e service api policy mixed (standard)
            v1 → v2
            progressing, step 4 of 6, weight 50%, 2s in step, 240 canary requests in step
            started 2026-12-04T21:42:31.541Z (2m ago) by olga; updated
            2026-12-04T21:42:37.535Z (2m ago)
            reason: rollout started
            waiting for baking, 2949ms of 1h

            TRIGGER       STATE      ESTIMATE    TOLERANCE  EVIDENCE
            error-rate    gathering  0% [0%, -]  2%         0% of the way
            p95-latency   shown      16.9ms      5000ms     0% of the way
            error-budget  shown      ×0          ×1.5       0% of the way
            no-traffic    shown      0s          3600s      0% of the way
              error-rate: gathering: 0% of the way to rollback; canary rate of
              errors/requests: estimate 0%, 95% anytime-valid interval [0%, -]; canary 0 of
              1,020 (0%)
              p95-latency: within tolerance, shown: lowest canary p95 bound (ms) over
              consecutive intervals above 5000ms 16.896ms against a limit of 5s (0% of the
              way to rollback); tolerance: at most 5s for 1m
              error-budget: within tolerance, shown: canary error-budget burn rate ×0
              against a limit of ×1.5 (0% of the way to rollback); tolerance: the burn
              factor of each window
              no-traffic: within tolerance, shown: seconds without canary requests 0s
              against a limit of 3600s (0% of the way to rollback); tolerance: less than 1h

            GATE              STATE      BEFORE WEIGHT
            latency-no-worse  gathering           100%
              latency-no-worse: gathering: 0% of the way to showing canary/baseline share of
              latency_ms beyond +10% over the baseline's p95 below ×1; canary/baseline share
              of latency_ms beyond +10% over the baseline's p95: estimate ×1, no interval
              yet; canary 0 of 1,020 (0%), baseline 0 of 1,020 (0%)

            sources: push (ok, last pulled 2026-12-04T21:42:37.535Z (2m ago))
        "#]]
        .assert_eq(&render_status(&fixture("progressing"), 80, now()));
    }

    #[test]
    fn status_of_a_rollout_waiting_for_an_approval() {
        expect_test::expect![[r#"
            rollout r-01m91g4grpmc707hc5 service pushonly policy slow (standard, dry run)
            v1 → v2
            paused, step 3 of 4, weight 5%, 0s in step, 0 canary requests in step
            started 2026-12-04T21:42:31.461Z (2m ago) by olga; updated
            2026-12-04T21:42:31.519Z (2m ago)
            reason: paused by olga: hold
            waiting for approval by compliance

            TRIGGER     STATE        ESTIMATE  TOLERANCE  EVIDENCE
            error-rate  no data yet  -         2%         -
              error-rate: no data yet; tolerance: at most 2%

            approvals at step 3: needs risk and compliance; given by bo as risk
            (2026-12-04T21:42:31.503Z (2m ago)); still missing compliance; deadline none

            sources: push (unknown)
        "#]]
        .assert_eq(&render_status(&fixture("approval"), 80, now()));
    }

    #[test]
    fn status_of_a_rollback_the_router_cannot_apply() {
        expect_test::expect![[r#"
            rollout r-01m91g4swvpn6jg6vt service flaky policy fast (standard)
            v1 → v2
            rolling-back, step 2 of 5, weight 10%, 1s in step, 600 canary requests in step
            started 2026-12-04T21:42:40.809Z (2m ago) by olga; updated
            2026-12-04T21:42:43.796Z (2m ago)
            reason: trigger `error-rate` fired
            waiting for the router

            TRIGGER     STATE  ESTIMATE         TOLERANCE  EVIDENCE
            error-rate  fired  20% [16.03%, -]  2%         boundary crossed
              error-rate: fired: canary rate of errors/requests: estimate 20%, 95%
              anytime-valid interval [16.0313%, -]; tolerance: at most 2%; evidence ln e
              285.068 ≥ boundary 2.996; canary 200 of 1,000 (20%); window 2s, most of the
              evidence from the last 2s

            sources: push (ok, last pulled 2026-12-04T21:42:43.796Z (2m ago))
            router: file /srv/canaryd/flaky/split.json: cannot write it atomically: No such
            file or directory (os error 2) (after 5 attempts)
            incident inc-01m91g4tw52hmv2xb2
        "#]]
        .assert_eq(&render_status(&fixture("router"), 80, now()));
    }

    #[test]
    fn status_of_a_rolled_back_rollout() {
        expect_test::expect![[r#"
            rollout r-01m91g4cjvakx6bjaq service web policy fast (standard)
            v1 → v2
            rolled-back, step 2 of 5, weight 0%, 0s in step, 0 canary requests in step
            started 2026-12-04T21:42:27.177Z (2m ago) by olga; updated
            2026-12-04T21:42:28.181Z (2m ago)
            reason: trigger `error-rate` fired

            TRIGGER     STATE  ESTIMATE            TOLERANCE  EVIDENCE
            error-rate  fired  8.571% [4.507%, -]  2%         boundary crossed
              error-rate: fired: canary rate of errors/requests: estimate 8.5714%, 95%
              anytime-valid interval [4.5068%, -]; tolerance: at most 2%; evidence ln e
              18.683 ≥ boundary 2.996; canary 30 of 350 (8.5714%); window 1s, most of the
              evidence from the last 1s
            incident inc-01m91g4dj4q9n5zpws
        "#]]
        .assert_eq(&render_status(&fixture("rolled-back"), 80, now()));
    }

    /// Long versions and names give way with an ellipsis; every line fits.
    #[test]
    fn status_and_list_fit_a_narrow_terminal() {
        let mut v = fixture("progressing");
        v.baseline = "registry.example.com/recommender/model-server:2026.12.04-rc.17".into();
        v.canary = "registry.example.com/recommender/model-server:2026.12.05-rc.1".into();
        for width in [60, 80, 120] {
            let status = render_status(&v, width, now());
            // The list's fixed columns (the id, the state, the step) and
            // four characters of each other need 77.
            let list = render_list(std::slice::from_ref(&v), width.max(80), now());
            for line in status.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            for line in list.lines() {
                assert!(line.chars().count() <= width.max(80), "{width}: {line:?}");
            }
            assert!(status.contains('…') && list.contains('…'), "{status}{list}");
            // The id is never cut: it is what the next command needs.
            assert!(list.contains(&v.id), "{list}");
        }
        expect_test::expect![[r#"
            ID                    SERVI…  STATE        STEP    WEIGHT  STARTED  …LINE  …NARY
            r-01m91g4gvfhqwzkb3e  api     progressing  4 of 6     50%  2m ago   …c.17  …rc.1
        "#]]
        .assert_eq(&render_list(&[v], 80, now()));
    }

    #[test]
    fn list_paths_carry_their_filters_encoded() {
        let q = ListArgs {
            service: Some("api web".into()),
            state: Some("rolled-back".into()),
            limit: Some(20),
            cursor: None,
        };
        assert_eq!(
            q.path(),
            "/v1/rollouts?service=api%20web&state=rolled-back&limit=20"
        );
        assert_eq!(ListArgs::default().path(), "/v1/rollouts");
    }
}
