//! `canaryd demo`: a real rollout on one machine, in one process, in under
//! two minutes. Two small HTTP services (baseline and canary; the canary
//! carries the regression chosen by `--regression`), canaryd's built-in
//! proxy splitting real requests between them, a load generator sending
//! those requests through the proxy (and reporting impressions and clicks
//! as a client app would, through the push API), and the daemon itself with
//! a demo policy whose bakes are short. Everything listens on ephemeral
//! loopback ports; the state stays in a directory the demo names at the end,
//! so `canaryd incident show --data-dir DIR` and `canaryd audit verify
//! --data-dir DIR` work on it afterwards.
//!
//! The demo is a client like any other: it starts the daemon (its public
//! `start`) and then only speaks the API, through the CLI's client and its
//! renderings, in `crate::wire`'s types.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use crate::cli::client::Client;
use crate::cli::{incident, rollout};
use crate::daemon::{self, config::parse_config};
use crate::engine::Phase;
use crate::wire::{
    Arm, Incident, ObservationBatch, ObservationsAccepted, ObservedCounts, Rollout, StartRequest,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Regression {
    /// The canary fails 8% of requests (baseline 0.5%).
    Errors,
    /// The canary's p95 latency is about 3x the baseline's.
    Latency,
    /// The canary's recommendations are clicked half as often.
    Ctr,
    /// A healthy canary: it is promoted.
    None,
}

/// The demo's policy: the same language as production policies, with
/// bakes of seconds instead of hours.
pub const DEMO_POLICY: &str = r#"apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: demo
  description: canaryd demo - a recommender behind the built-in proxy, bakes of seconds
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 200
  steps:
    - setWeight: 10
    - bake: 20s
    - setWeight: 50
    - bake: 30s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency:    { kind: latency, signal: latency_ms }
    ctr:        { kind: ratio, numerator: clicks, denominator: impressions }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
    - name: p95-latency
      metric: latency
      quantile: 0.95
      vsBaseline: { relativeIncrease: 50% }
    - name: ctr-drop
      metric: ctr
      vsBaseline: { relativeDrop: 10% }
    - name: no-traffic
      noData: { for: 15s }
      action: pause
  incident:
    severity: sev2
"#;

/// How a service behaves: (error probability, latency ms range, CTR).
fn behaviour(canary: bool, regression: Regression) -> (f64, (u64, u64), f64) {
    let base = (0.005, (4, 12), 0.10);
    if !canary {
        return base;
    }
    match regression {
        Regression::Errors => (0.08, base.1, base.2),
        Regression::Latency => (base.0, (16, 36), base.2),
        Regression::Ctr => (base.0, base.1, 0.05),
        Regression::None => base,
    }
}

/// A tiny deterministic generator (the demo needs no secure randomness).
struct SplitMix(AtomicU64);

impl SplitMix {
    fn next_f64(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A demo service's answer to `GET /recommend`.
#[derive(Serialize, Deserialize)]
struct Recommendations {
    /// Which version served it.
    version: String,
    items: Vec<u32>,
    /// Whether the (simulated) user will click.
    click: bool,
}

/// One demo service: answers `GET /recommend` with [`Recommendations`].
async fn service(canary: bool, regression: Regression) -> anyhow::Result<SocketAddr> {
    let (err_p, (lo, hi), ctr) = behaviour(canary, regression);
    let rng = Arc::new(SplitMix(AtomicU64::new(if canary { 7 } else { 3 })));
    let version = if canary { "v2" } else { "v1" };
    let app = axum::Router::new().route(
        "/recommend",
        axum::routing::get(move || {
            let rng = rng.clone();
            async move {
                let delay = lo + ((hi - lo) as f64 * rng.next_f64()) as u64;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if rng.next_f64() < err_p {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "model server error\n")
                        .into_response();
                }
                let click = rng.next_f64() < ctr;
                let mut headers = HeaderMap::new();
                headers.insert("x-served-by", version.parse().expect("static"));
                let answer = Recommendations {
                    version: version.to_string(),
                    items: vec![1, 2, 3],
                    click,
                };
                (headers, axum::Json(answer)).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A new directory for this run's state: the first `canaryd-demo-PID-N`
/// in the temp dir that does not exist yet.
fn state_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    let pid = std::process::id();
    // Bounded: a thousand earlier runs with this pid would be odd.
    for n in 1..=1000 {
        let dir = base.join(format!("canaryd-demo-{pid}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::create_dir_all(dir.join("policies"))
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("cannot find a free demo directory in {}", base.display())
}

pub fn run(regression: Regression) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(demo(regression))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn demo(regression: Regression) -> anyhow::Result<()> {
    let dir = state_dir()?;
    std::fs::write(dir.join("policies/demo.yaml"), DEMO_POLICY)?;
    let baseline = service(false, regression).await?;
    let canary = service(true, regression).await?;
    let proxy = free_port()?;
    let config_text = format!(
        "listen: 127.0.0.1:0\ndataDir: {d}/data\npolicies: {d}/policies\nservices:\n  recommender:\n    router: {{ builtin: {{ listen: {proxy}, baseline: http://{baseline}, canary: http://{canary} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("canaryd.yaml"), &config_text)?;
    let config = parse_config("canaryd.yaml", config_text.as_bytes())
        .map_err(|d| anyhow::anyhow!("demo config: {d}"))?;
    let listener = daemon::bind(config.listen).await?;
    let running = daemon::start(config, listener, Arc::new(daemon::clock::SystemClock)).await?;
    let api_url = format!("http://{}", running.addr);
    let data_dir = dir.join("data");
    let client = Client::new(&api_url, None, Some(&data_dir));

    println!(
        "canaryd demo: regression {:?}; baseline v1 on {baseline}, canary v2 on {canary}, proxy on {proxy}, API on {api_url}",
        regression
    );
    let start = StartRequest {
        service: "recommender".into(),
        canary: "v2".into(),
        baseline: "v1".into(),
        policy: "demo".into(),
        change_type: None,
        reason: Some("canaryd demo".into()),
        ticket: None,
        dry_run: false,
    };
    let started: Rollout = client.post("/v1/rollouts", &start).await?;
    let id = started.id;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(proxy, client.clone(), id.clone(), stop.clone()));

    let ended = follow(&client, &id, regression, &dir).await;
    stop.store(true, Ordering::SeqCst);
    let _ = load.await;
    report(&client, ended?.as_ref()).await?;
    running.stop().await?;
    println!();
    println!("state: {}", data_dir.display());
    println!("  canaryd incident list --data-dir {}", data_dir.display());
    println!("  canaryd audit verify --data-dir {}", data_dir.display());
    Ok(())
}

/// The live view, until the rollout ends (bounded: the demo policy ends
/// well within three minutes; a stuck demo stops there): the status view
/// on a terminal, a line per change otherwise. Returns the ended rollout.
async fn follow(
    client: &Client,
    id: &str,
    regression: Regression,
    dir: &std::path::Path,
) -> anyhow::Result<Option<Rollout>> {
    let tty = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    for _ in 0..(3 * 60 * 2) {
        let v: Rollout = client.get(&format!("/v1/rollouts/{id}")).await?;
        if tty {
            print!(
                "\x1b[2J\x1b[H canaryd demo (--regression {}), state in {}\n\n{}",
                format!("{regression:?}").to_lowercase(),
                dir.display(),
                rollout::render_status(
                    &v,
                    crate::cli::terminal::width(),
                    crate::cli::terminal::now()
                )
            );
        } else {
            let line = format!(
                "{} step {}/{} weight {}%: {}",
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
            return Ok(Some(v));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(None)
}

/// The outcome in words, and the incident when there is one.
async fn report(client: &Client, ended: Option<&Rollout>) -> anyhow::Result<()> {
    println!();
    match ended.and_then(|v| v.outcome.map(|o| (o, &v.reason))) {
        Some((Phase::Promoted, _)) => println!("promoted: v2 takes all traffic"),
        Some((Phase::RolledBack, reason)) => println!("rolled back: {reason}"),
        Some((other, reason)) => println!("{}: {reason}", other.as_str()),
        None => println!("the demo rollout did not end in time"),
    }
    if let Some(inc) = ended.and_then(|v| v.incident.as_deref()) {
        let shown: Incident = client.get(&format!("/v1/incidents/{inc}")).await?;
        println!("incident {inc}");
        print!(
            "{}",
            incident::render(&shown, crate::cli::terminal::width())
        );
    }
    Ok(())
}

/// ~250 requests/s through the proxy from 6 workers; each answer's arm and
/// click become an impression (and maybe a click) pushed to the daemon, as
/// a client app reporting engagement would.
async fn load(proxy: SocketAddr, api: Client, id: String, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let path = format!("/v1/rollouts/{id}/observations");
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (http, stop, api, path) = (http.clone(), stop.clone(), api.clone(), path.clone());
            tokio::spawn(async move {
                let mut events = Vec::new();
                let mut n = 0u64;
                // Bounded by `stop` and by a hard cap of requests.
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    n += 1;
                    let sent = http
                        .get(format!("http://{proxy}/recommend"))
                        .header("x-canary-key", format!("user-{w}-{n}"))
                        .send()
                        .await;
                    if let Ok(r) = sent {
                        let arm = match r.headers().get("x-served-by").and_then(|v| v.to_str().ok())
                        {
                            Some("v2") => Some(Arm::Canary),
                            Some(_) => Some(Arm::Baseline),
                            None => None,
                        };
                        if let (Some(arm), Ok(body)) = (arm, r.json::<Recommendations>().await) {
                            let counters = [("impressions", 1), ("clicks", u64::from(body.click))];
                            events.push(ObservedCounts {
                                arm,
                                counters: counters.map(|(k, v)| (k.to_string(), v)).into(),
                                group: None,
                            });
                        }
                    }
                    if events.len() >= 25 {
                        let batch = ObservationBatch {
                            counts: std::mem::take(&mut events),
                            ..ObservationBatch::default()
                        };
                        let _: Result<ObservationsAccepted, _> = api.post(&path, &batch).await;
                    }
                    tokio::time::sleep(Duration::from_millis(12)).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}
