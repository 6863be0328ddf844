//! The closed loop, end to end, with every part real: two upstream HTTP
//! servers in this process (baseline `v1`, canary `v2`) that export their
//! own Prometheus metrics, a real HAProxy in front of them (Debian's,
//! installed when missing), a real Prometheus scraping both every second,
//! a load generator sending real requests through HAProxy, and the real
//! `canaryd serve` moving HAProxy's weights over its admin socket from
//! what it reads back from Prometheus (`prometheusQuery`).
//!
//! The policy is time-compressed (interval 4 s, four scrape intervals;
//! 10 % → bake 8 s → 50 % → bake 8 s → 100 %), so each test takes about half a
//! minute. A healthy canary is promoted step by step, and the canary's
//! share of the requests HAProxy actually routed is measured at each step;
//! a canary failing 10 % of its requests is rolled back, after which every
//! request goes to the baseline, and its incident carries the canary's
//! error rate as Prometheus saw it. Both check the audit chain over the API
//! and with `canaryd audit verify --data-dir`.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod router_support;
mod source_support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use daemon_support::{Api, Daemon, eventually};
use router_support::{
    Process, ensure_installed, free_port, haproxy_router, temp_dir, tolerance, write_haproxy_config,
};
use serde_json::Value;
use source_support::prometheus::{self, Prometheus};

/// Time-compressed: four scrape intervals per analysis interval. The
/// sample-ratio check is on: the split the daemon reads back from
/// Prometheus must agree with the weight it gave HAProxy, or the rollout
/// pauses and the healthy test fails.
const POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: closed-loop
spec:
  analysis:
    interval: 4s
    alpha: 0.05
    minSamples: 30
    sampleRatioCheck: true
    maxDuration: 3m
  steps:
    - setWeight: 10
    - bake: 8s
    - setWeight: 50
    - bake: 8s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
    - name: p95-latency
      metric: latency
      quantile: 0.95
      threshold: { above: 2s, for: 8s }
  incident:
    severity: sev2
"#;

/// Histogram bounds (seconds) of `http_request_duration_seconds`.
const BOUNDS: [f64; 7] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

// ---------------------------------------------------------------- upstreams

/// What one upstream has served, as its `/metrics` exports it.
#[derive(Default)]
struct Served {
    by_code: BTreeMap<u16, u64>,
    /// Per bound (not cumulative), plus the overflow bucket last.
    buckets: [u64; BOUNDS.len() + 1],
    sum_seconds: f64,
}

struct ArmState {
    version: &'static str,
    /// Every `n`-th request answers 500 (`None`: never).
    fail_every: Option<u64>,
    served: Mutex<Served>,
}

/// An application instance on 127.0.0.1: answers every path with its
/// version (also in `x-version`), and `/metrics` with the requests it
/// served, by code, and their durations. Stops when dropped.
struct App {
    addr: std::net::SocketAddr,
    state: Arc<ArmState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl App {
    async fn start(version: &'static str, fail_every: Option<u64>) -> App {
        let state = Arc::new(ArmState {
            version,
            fail_every,
            served: Mutex::new(Served::default()),
        });
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind an upstream");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .fallback(serve)
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        App {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// (requests, 5xx) served so far.
    fn counts(&self) -> (u64, u64) {
        let s = self.state.served.lock().unwrap();
        let total = s.by_code.values().sum();
        let errors = s
            .by_code
            .iter()
            .filter(|(c, _)| **c >= 500)
            .map(|(_, n)| n)
            .sum();
        (total, errors)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn serve(State(arm): State<Arc<ArmState>>) -> Response {
    let started = Instant::now();
    // A little work, so the histogram has something to show.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut served = arm.served.lock().unwrap();
    let n = served.by_code.values().sum::<u64>() + 1;
    let code = match arm.fail_every {
        Some(every) if n % every == 0 => 500,
        _ => 200,
    };
    *served.by_code.entry(code).or_default() += 1;
    let seconds = started.elapsed().as_secs_f64();
    let bucket = BOUNDS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(BOUNDS.len());
    served.buckets[bucket] += 1;
    served.sum_seconds += seconds;
    drop(served);
    let mut response = (StatusCode::from_u16(code).unwrap(), arm.version).into_response();
    response
        .headers_mut()
        .insert("x-version", HeaderValue::from_static(arm.version));
    response
}

async fn metrics(State(arm): State<Arc<ArmState>>) -> Response {
    let served = arm.served.lock().unwrap();
    let v = arm.version;
    let mut text = String::from(
        "# HELP http_requests_total Requests served, by status code.\n# TYPE http_requests_total counter\n",
    );
    // The 200 series exists from the start, as a client library's
    // pre-declared child does; the 500 one appears with the first error.
    if !served.by_code.contains_key(&200) {
        text.push_str(&format!(
            "http_requests_total{{version=\"{v}\",code=\"200\"}} 0\n"
        ));
    }
    for (code, n) in &served.by_code {
        text.push_str(&format!(
            "http_requests_total{{version=\"{v}\",code=\"{code}\"}} {n}\n"
        ));
    }
    text.push_str("# HELP http_request_duration_seconds Time to answer a request.\n# TYPE http_request_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (i, bound) in BOUNDS.iter().enumerate() {
        cumulative += served.buckets[i];
        text.push_str(&format!(
            "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"{bound}\"}} {cumulative}\n"
        ));
    }
    cumulative += served.buckets[BOUNDS.len()];
    text.push_str(&format!(
        "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"+Inf\"}} {cumulative}\n\
         http_request_duration_seconds_sum{{version=\"{v}\"}} {}\n\
         http_request_duration_seconds_count{{version=\"{v}\"}} {cumulative}\n",
        served.sum_seconds
    ));
    drop(served);
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

// ------------------------------------------------------------------ HAProxy

fn start_haproxy(dir: &Path, port: u16, baseline: &App, canary: &App) -> Process {
    let haproxy = ensure_installed("haproxy", "haproxy");
    write_haproxy_config(dir, port, baseline.addr, canary.addr);
    router_support::start_haproxy(&haproxy, dir, None)
}

// --------------------------------------------------------------- Prometheus

fn start_prometheus(baseline: &App, canary: &App) -> Prometheus {
    prometheus::ensure_installed().expect("prometheus");
    let (b, c) = (baseline.addr, canary.addr);
    tokio::task::block_in_place(|| {
        prometheus::start(
            |_| {
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                     scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{b}', '{c}']\n"
                )
            },
            None,
        )
    })
    .expect("start prometheus")
}

/// Waits (bounded) until Prometheus has scraped both upstreams.
async fn wait_for_scrapes(prom: &Prometheus) {
    let port = prom.port;
    eventually("Prometheus scraping both upstreams", Duration::from_secs(30), || async move {
        let body = tokio::task::spawn_blocking(move || {
            prometheus::get(port, "/api/v1/query?query=sum(up)", "application/json")
        })
        .await
        .unwrap();
        matches!(body, Ok((200, _, b)) if b.contains(r#""status":"success""#) && b.contains(r#","2"]"#))
    })
    .await;
}

// ------------------------------------------------------------ load and view

/// One request sent through HAProxy: when (since the test's epoch), which
/// version answered, with what status.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Duration,
    canary: bool,
    status: u16,
}

/// Sends requests through HAProxy from `workers` tasks, each pacing one
/// request per `every`, until `stop` is set or `limit` has passed.
fn start_load(
    url: String,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) && epoch.elapsed() < limit {
                    tick.tick().await;
                    let at = epoch.elapsed();
                    // A failed request is status 0 (the tests allow none).
                    let (canary, status) = match client.get(&url).send().await {
                        Ok(r) => (
                            r.headers().get("x-version").is_some_and(|v| v == "v2"),
                            r.status().as_u16(),
                        ),
                        Err(_) => (false, 0),
                    };
                    sent.push(Sent { at, canary, status });
                }
                sent
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("a load worker"));
        }
        all.sort_by_key(|s| s.at);
        all
    })
}

/// A change seen by the watcher: HAProxy's canary weight (from `show
/// servers state`) or the rollout's (state, weight) over the API.
#[derive(Clone, Debug)]
struct Seen {
    at: Duration,
    haproxy: Option<(u32, u32)>,
    rollout: Option<(String, u64)>,
    /// The daemon's source status said `failing`, with this error.
    source_error: Option<String>,
}

/// Polls HAProxy's servers and the rollout every 50 ms and records every
/// change, until `stop`.
fn start_watch(
    dir: &Path,
    api: Api,
    id: Arc<Mutex<Option<String>>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    let router = haproxy_router(dir);
    tokio::spawn(async move {
        let mut seen: Vec<Seen> = Vec::new();
        let mut last_h = None;
        let mut last_r = None;
        let deadline = Instant::now() + Duration::from_secs(240);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let servers = router.servers().await.expect("show servers state");
            let weight = |name: &str| {
                servers
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.weight)
                    .expect("server listed")
            };
            let h = (weight("stable"), weight("canary"));
            if last_h != Some(h) {
                seen.push(Seen {
                    at: epoch.elapsed(),
                    haproxy: Some(h),
                    rollout: None,
                    source_error: None,
                });
                last_h = Some(h);
            }
            let current = id.lock().unwrap().clone();
            if let Some(id) = current {
                let r = api.rollout(&id).await;
                if r["source"]["status"] == "failing" {
                    seen.push(Seen {
                        at: epoch.elapsed(),
                        haproxy: None,
                        rollout: None,
                        source_error: Some(r["source"]["last_error"].to_string()),
                    });
                }
                let now = (
                    r["state"].as_str().unwrap_or("?").to_string(),
                    r["weight"].as_u64().unwrap_or(999),
                );
                if last_r.as_ref() != Some(&now) {
                    seen.push(Seen {
                        at: epoch.elapsed(),
                        haproxy: None,
                        rollout: Some(now.clone()),
                        source_error: None,
                    });
                    last_r = Some(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

/// One stretch of time during which HAProxy had one weight, with the
/// requests sent in it (away from both edges, where the watcher's 50 ms
/// poll cannot say which weight served them). The router sets the two
/// servers one after the other, so the watcher may catch the moment in
/// between (50/50 → 100/50 on the way to 0/100): such a stretch, shorter
/// than [`TRANSIENT`], is reported and left out.
#[derive(Debug)]
struct Stretch {
    canary_weight: u32,
    from: Duration,
    to: Duration,
    baseline: u32,
    canary: u32,
}

const EDGE: Duration = Duration::from_millis(300);
const TRANSIENT: Duration = Duration::from_millis(500);

fn stretches(what: &str, seen: &[Seen], sent: &[Sent], end: Duration) -> Vec<Stretch> {
    let mut changes: Vec<(Duration, u32)> = Vec::new();
    let all: Vec<(Duration, (u32, u32))> = seen
        .iter()
        .filter_map(|s| s.haproxy.map(|h| (s.at, h)))
        .collect();
    for (i, (at, (b, c))) in all.iter().enumerate() {
        let until = all.get(i + 1).map_or(end, |n| n.0);
        if until.saturating_sub(*at) < TRANSIENT && i + 1 < all.len() {
            eprintln!(
                "{what}: HAProxy at stable {b} / canary {c} for only {:?} from {:.2}s (left out)",
                until.saturating_sub(*at),
                at.as_secs_f64()
            );
            continue;
        }
        let w = 100 * c / (b + c).max(1);
        if changes.last().is_some_and(|l| l.1 == w) {
            continue;
        }
        changes.push((*at, w));
    }
    let mut out = Vec::new();
    for (i, (from, w)) in changes.iter().enumerate() {
        let to = changes.get(i + 1).map_or(end, |c| c.0);
        let (lo, hi) = (*from + EDGE, to.saturating_sub(EDGE));
        let inside = sent.iter().filter(|s| s.at > lo && s.at < hi);
        let (mut baseline, mut canary) = (0, 0);
        for s in inside {
            if s.canary {
                canary += 1;
            } else {
                baseline += 1;
            }
        }
        out.push(Stretch {
            canary_weight: *w,
            from: *from,
            to,
            baseline,
            canary,
        });
    }
    out
}

fn report(what: &str, stretches: &[Stretch]) {
    for s in stretches {
        let n = s.baseline + s.canary;
        eprintln!(
            "{what}: {:>6.2}s..{:>6.2}s HAProxy canary weight {:>3}%: canary served {}/{} = {:.1}%",
            s.from.as_secs_f64(),
            s.to.as_secs_f64(),
            s.canary_weight,
            s.canary,
            n,
            100.0 * f64::from(s.canary) / f64::from(n.max(1)),
        );
    }
}

/// The measured share agrees with HAProxy's weight (HAProxy's round-robin
/// is deterministic, so the binomial tolerance is generous).
fn check_share(what: &str, s: &Stretch) {
    let n = s.baseline + s.canary;
    assert!(
        n >= 50,
        "{what}: only {n} requests at weight {}",
        s.canary_weight
    );
    let share = f64::from(s.canary) / f64::from(n);
    let weight = u8::try_from(s.canary_weight).unwrap();
    match weight {
        0 => assert_eq!(s.canary, 0, "{what}: weight 0 sent requests to the canary"),
        100 => assert_eq!(
            s.baseline, 0,
            "{what}: weight 100 sent requests to the baseline"
        ),
        _ => {
            let tol = tolerance(weight, n).max(0.03);
            assert!(
                (share - f64::from(weight) / 100.0).abs() <= tol,
                "{what}: weight {weight}%: measured {:.2}%",
                share * 100.0
            );
        }
    }
}

// ------------------------------------------------------------------- daemon

fn start_daemon(haproxy_dir: &Path, prom: &Prometheus) -> Daemon {
    let config = format!(
        r#"  shop:
    router: {{ haproxy: {{ socket: {socket}, backend: be_app, baseline: stable, canary: canary }} }}
    source:
      prometheusQuery:
        url: {url}
        timeout: 2s
        signals:
          requests: 'sum(increase(http_requests_total{{version="{{{{version}}}}"}}[{{{{window}}}}]))'
          errors: 'sum(increase(http_requests_total{{version="{{{{version}}}}",code=~"5.."}}[{{{{window}}}}])) or vector(0)'
          latency_ms: 'http_request_duration_seconds{{version="{{{{version}}}}"}}'
"#,
        socket = haproxy_dir.join("admin.sock").display(),
        url = prom.url(),
    );
    tokio::task::block_in_place(|| {
        Daemon::start_with_policies(&config, &[("closed-loop.yaml", POLICY)])
    })
}

/// The audit chain verifies over the API and, after the daemon stopped,
/// read directly from the data dir by the CLI.
async fn check_audit(d: &mut Daemon) {
    for line in d.log_text().lines() {
        if line.contains("WARN") || line.contains("ERROR") {
            eprintln!("canaryd: {line}");
        }
    }
    let v = d.client().get("/v1/audit/verify").await.body;
    assert_eq!(v["ok"], true, "{v}");
    let status = tokio::task::block_in_place(|| d.terminate());
    assert!(status.success(), "canaryd exited {status}");
    let out = Command::new(daemon_support::bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify --data-dir: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "audit verify --data-dir: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

/// Everything but the daemon, with load flowing at weight 0.
struct Loop {
    baseline: App,
    canary: App,
    haproxy_dir: std::path::PathBuf,
    _haproxy: Process,
    prom: Prometheus,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    load: Option<tokio::task::JoinHandle<Vec<Sent>>>,
    url: String,
}

impl Loop {
    async fn start(canary_fail_every: Option<u64>) -> Loop {
        let baseline = App::start("v1", None).await;
        let canary = App::start("v2", canary_fail_every).await;
        let haproxy_dir = temp_dir("closed-loop-haproxy");
        let port = free_port();
        let haproxy = start_haproxy(&haproxy_dir, port, &baseline, &canary);
        router_support::wait_for_path(&haproxy_dir.join("admin.sock"), "haproxy").await;
        router_support::wait_for_port(port, "haproxy").await;
        let prom = start_prometheus(&baseline, &canary);
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://127.0.0.1:{port}/");
        let load = start_load(url.clone(), epoch, stop.clone(), Duration::from_secs(170));
        wait_for_scrapes(&prom).await;
        Loop {
            baseline,
            canary,
            haproxy_dir,
            _haproxy: haproxy,
            prom,
            epoch,
            stop,
            load: Some(load),
            url,
        }
    }

    async fn stop_load(&mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.load.take().unwrap().await.expect("the load generator")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits (bounded: 2 minutes) for the rollout to end; on timeout, fails
/// with the rollout as the API shows it and the daemon's log.
async fn wait_for_outcome(api: &Api, id: &str, d: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = api.rollout(id).await;
        if !r["outcome"].is_null() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout {id} did not end within 2 minutes: {r}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_rollout(api: &Api) -> String {
    let a = api.start("shop", "closed-loop").await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

// -------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_promoted_step_by_step_through_haproxy() {
    let started = Instant::now();
    let mut lp = Loop::start(None).await;
    let mut d = start_daemon(&lp.haproxy_dir, &lp.prom);
    let api = d.client();
    let id_slot = Arc::new(Mutex::new(None));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watch = start_watch(
        &lp.haproxy_dir,
        api.clone(),
        id_slot.clone(),
        lp.epoch,
        watch_stop.clone(),
    );
    // A little traffic at weight 0 first: HAProxy's config gives the
    // canary nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = start_rollout(&api).await;
    *id_slot.lock().unwrap() = Some(id.clone());

    let r = wait_for_outcome(&api, &id, &d).await;
    assert_eq!(r["outcome"], "promoted", "{r}\n{}", d.log_text());
    assert_eq!(r["weight"], 100, "{r}");
    assert!(r["incident"].is_null(), "{r}");
    eprintln!("healthy: triggers {}", r["triggers"]);
    // Some traffic at 100 %, then stop and look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch_stop.store(true, Ordering::Relaxed);
    let seen = watch.await.unwrap();
    let end = lp.epoch.elapsed();
    let sent = lp.stop_load().await;

    let failures: Vec<&String> = seen
        .iter()
        .filter_map(|s| s.source_error.as_ref())
        .collect();
    assert!(
        failures.is_empty(),
        "the Prometheus source failed: {failures:?}"
    );
    let rollout_path: Vec<(String, u64)> = seen.iter().filter_map(|s| s.rollout.clone()).collect();
    eprintln!("healthy: the rollout went {rollout_path:?}");
    let weights: Vec<u64> = rollout_path.iter().map(|(_, w)| *w).collect();
    let mut distinct: Vec<u64> = weights.into_iter().skip_while(|w| *w == 0).collect();
    distinct.dedup();
    assert_eq!(distinct, [10, 50, 100], "rollout weights: {rollout_path:?}");
    assert_eq!(rollout_path.last().unwrap().0, "promoted");

    let stretches = stretches("healthy", &seen, &sent, end);
    report("healthy", &stretches);
    let haproxy_weights: Vec<u32> = stretches.iter().map(|s| s.canary_weight).collect();
    assert_eq!(
        haproxy_weights,
        [0, 10, 50, 100],
        "HAProxy went {stretches:?}"
    );
    for s in &stretches {
        check_share("healthy", s);
    }
    assert!(
        sent.iter().all(|s| s.status == 200),
        "a healthy loop answered non-200"
    );

    // What the upstreams served is what the load generator saw.
    let (base_n, base_e) = lp.baseline.counts();
    let (can_n, can_e) = lp.canary.counts();
    let canary_seen = sent.iter().filter(|s| s.canary).count() as u64;
    assert_eq!((base_e, can_e), (0, 0));
    assert_eq!(base_n + can_n, sent.len() as u64);
    assert_eq!(can_n, canary_seen);
    // The daemon counted the canary's requests from Prometheus (no more
    // than it served, give or take `increase()`'s extrapolation) and read
    // its latency histogram (p95's lower bucket bound, in ms).
    let trigger = |name: &str| {
        r["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    let samples = trigger("error-rate")["samples"].as_u64().unwrap();
    assert!(
        samples >= 60 && samples <= can_n + can_n / 10,
        "{samples} samples, {can_n} served"
    );
    assert_eq!(trigger("error-rate")["estimate"], 0.0);
    let p95 = trigger("p95-latency")["estimate"].as_f64().unwrap();
    assert!(p95 > 0.0 && p95 < 100.0, "p95 {p95} ms");
    eprintln!(
        "healthy: {} requests through HAProxy ({base_n} baseline, {can_n} canary); {:.1}s",
        sent.len(),
        started.elapsed().as_secs_f64()
    );
    check_audit(&mut d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_with_an_error_regression_is_rolled_back_with_evidence() {
    let started = Instant::now();
    // Every 10th request the canary serves is a 500.
    let mut lp = Loop::start(Some(10)).await;
    let mut d = start_daemon(&lp.haproxy_dir, &lp.prom);
    let api = d.client();
    let id_slot = Arc::new(Mutex::new(None));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watch = start_watch(
        &lp.haproxy_dir,
        api.clone(),
        id_slot.clone(),
        lp.epoch,
        watch_stop.clone(),
    );
    let id = start_rollout(&api).await;
    *id_slot.lock().unwrap() = Some(id.clone());

    let r = wait_for_outcome(&api, &id, &d).await;
    assert_eq!(r["outcome"], "rolled-back", "{r}\n{}", d.log_text());
    assert_eq!(r["weight"], 0, "{r}");
    let rolled_back_at = lp.epoch.elapsed();
    // HAProxy gives the canary nothing now.
    let servers = haproxy_router(&lp.haproxy_dir).servers().await.unwrap();
    let canary = servers.iter().find(|s| s.name == "canary").unwrap();
    let stable = servers.iter().find(|s| s.name == "stable").unwrap();
    assert_eq!((stable.weight, canary.weight), (100, 0), "{servers:?}");
    let canary_before = lp.canary.counts().0;
    // Traffic after the rollback, all of it to the baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watch_stop.store(true, Ordering::Relaxed);
    let seen = watch.await.unwrap();
    let end = lp.epoch.elapsed();
    let sent = lp.stop_load().await;
    assert!(
        sent.iter()
            .all(|s| s.status == 200 || (s.canary && s.status == 500)),
        "only the canary may fail, and only with its 500s"
    );
    let after: Vec<&Sent> = sent.iter().filter(|s| s.at > rolled_back_at).collect();
    assert!(
        after.len() >= 100,
        "only {} requests after the rollback",
        after.len()
    );
    assert!(
        after.iter().all(|s| !s.canary && s.status == 200),
        "a request after the rollback reached the canary"
    );
    assert_eq!(
        lp.canary.counts().0,
        canary_before,
        "the canary served after the rollback"
    );
    // And a last batch, sent now, also all to the baseline.
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let r = client.get(&lp.url).send().await.unwrap();
        assert_eq!(r.headers()["x-version"], "v1");
    }

    let failures: Vec<&String> = seen
        .iter()
        .filter_map(|s| s.source_error.as_ref())
        .collect();
    assert!(
        failures.is_empty(),
        "the Prometheus source failed: {failures:?}"
    );
    let rollout_path: Vec<(String, u64)> = seen.iter().filter_map(|s| s.rollout.clone()).collect();
    eprintln!("regression: the rollout went {rollout_path:?}");
    assert_eq!(
        rollout_path.last().unwrap(),
        &("rolled-back".to_string(), 0)
    );
    let stretches = stretches("regression", &seen, &sent, end);
    report("regression", &stretches);
    for s in stretches.iter().filter(|s| s.baseline + s.canary >= 50) {
        check_share("regression", s);
    }
    assert_eq!(stretches.last().unwrap().canary_weight, 0);

    // The incident holds the evidence Prometheus gave.
    let inc_id = r["incident"].as_str().expect("an incident").to_string();
    let inc = api.get(&format!("/v1/incidents/{inc_id}")).await;
    assert_eq!(inc.status, 200, "{:?}", inc.body);
    let inc = inc.body;
    eprintln!(
        "regression: incident {}",
        serde_json::to_string_pretty(&inc).unwrap()
    );
    assert_eq!(inc["rollout_id"], Value::String(id.clone()));
    assert_eq!(inc["service"], "shop");
    assert_eq!(inc["trigger"], "error-rate");
    assert_eq!(inc["severity"], "sev2");
    assert_eq!(inc["router_result"]["weight"], 0, "{inc}");
    assert!(inc["router_result"]["error"].is_null(), "{inc}");
    let timeline = inc["timeline"].to_string();
    assert!(
        timeline.contains("trigger `error-rate` fired"),
        "{timeline}"
    );
    assert!(timeline.contains("canary weight is now 0%"), "{timeline}");
    let ev = &inc["evidence"];
    assert!(
        ev["log_e_value"].as_f64().unwrap() >= ev["log_boundary"].as_f64().unwrap(),
        "{ev}"
    );
    let exposure = ev["canary"]["exposure"].as_u64().unwrap();
    let events = ev["canary"]["events"].as_u64().unwrap();
    let estimate = ev["estimate"].as_f64().unwrap();
    let (can_n, can_e) = lp.canary.counts();
    eprintln!(
        "regression: evidence: canary {events}/{exposure} errors, estimate {estimate:.4}; the canary upstream served {can_e}/{can_n} errors"
    );
    assert!(exposure > 0 && exposure <= can_n + can_n / 10, "{ev}");
    assert!(
        (0.04..=0.2).contains(&estimate),
        "canary error rate {estimate}: {ev}"
    );
    assert!(events <= can_e + 2, "{ev}");
    assert_eq!(
        ev["baseline"]["exposure"], 0,
        "a threshold trigger reads the canary alone"
    );
    eprintln!(
        "regression: {} requests; {:.1}s",
        sent.len() + 100,
        started.elapsed().as_secs_f64()
    );
    check_audit(&mut d).await;
}
