//! canaryd at scale on one machine (issue #19): the PRODUCT.md example
//! policy (every trigger kind, two gates, a 1 h burn-rate window) on many
//! rollouts, one service each, pushed data flowing to every rollout. Three
//! parts, each printing its figures against a baseline of the same run:
//!
//! - `rollouts`: N rollouts at a 1 s interval on the wall clock for a
//!   while: per-window lag (a window's end to its step committed and
//!   acted on, from the daemon's `canaryd_window_lag_seconds`) p50/p99/max
//!   bucket, the process's CPU against the same daemon idle before the
//!   start, group commits (fsyncs) per second and steps per commit, and
//!   `GET /v1/rollouts/{id}` latency p50/p99 from a client polling
//!   meanwhile. Every push is a real HTTP request on loopback.
//! - `memory`: RSS growth per rollout. One child process per N (0 and
//!   the sizes asked), glibc's `MALLOC_MMAP_THRESHOLD_` and
//!   `MALLOC_ARENA_MAX` as `serve` sets them, a [`ManualClock`] driven a window at a time (the drivers wake
//!   when it moves) until the policy's 1 h window is full (120 windows at
//!   30 s; at 1 s as many as asked, 3,600 for a full hour), a batch pushed
//!   to every rollout in every window (in-process through
//!   `Shared::push`, the same validation and merge as the HTTP route);
//!   then (RSS_N - RSS_0) / N, after the last window closed and again
//!   mid-window (a batch pushed into every rollout's open window), with
//!   what glibc's malloc then holds in blocks in use and free between
//!   them (`mallinfo2` after `malloc_trim`): whether RSS beyond the live
//!   heap is live blocks' headers or fragmentation.
//! - `ingest`: batches of 1,000 events over HTTP on loopback from a load
//!   generator on its own runtime and threads, for a while: observations
//!   per second, the generator threads' share of the CPU used, and no
//!   loss: the observations accepted (the 202s) equal the requests the
//!   engine was fed (the journaled windows, read back from the store).
//!
//! Allocator: glibc's malloc, the `canaryd` binary's, unless
//! `CANARYD_SCALE_ALLOCATOR` is `mimalloc` or `jemalloc`; `memory` runs
//! its children with each of `CANARYD_SCALE_ALLOCATORS` (`glibc,mimalloc`;
//! `jemalloc:OPTS` sets jemalloc's options, `/` between them, e.g.
//! `jemalloc:background_thread:true/dirty_decay_ms:1000`) in the same run,
//! and also counts the heap bytes they hold, to break a rollout's bytes
//! down (the core, the API view, a push buffer, `/metrics` series, the
//! rest), and SQLite's own (its page cache, on glibc's malloc whatever the
//! Rust allocator). It prints the peak RSS too, and reads RSS
//! `CANARYD_SCALE_SETTLE_SECS` (2) after the last window: jemalloc returns
//! freed pages over its decay time (10 s), which a daemon at 30 s spends
//! idle between windows.
//!
//! Sizes by environment, so a plain `cargo bench --bench daemon_scale`
//! stays short: `CANARYD_SCALE_PARTS` (`rollouts,memory,ingest`),
//! `CANARYD_SCALE_ROLLOUTS` (N for `rollouts`, 300), `CANARYD_SCALE_SECS`
//! (its measured seconds, 10), `CANARYD_SCALE_MEMORY` (the N of `memory`,
//! `100`; e.g. `1000,10000`), `CANARYD_SCALE_INTERVALS` (`30s,1s`),
//! `CANARYD_SCALE_WINDOWS_1S` (windows filled at 1 s, 120),
//! `CANARYD_SCALE_INGEST_SECS` (5), `CANARYD_SCALE_INGEST_CONNECTIONS` (8).

#![allow(clippy::disallowed_methods)] // benches read the clock
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canaryd::daemon::clock::{Clock, ManualClock, SystemClock};
use canaryd::daemon::{self, config::Config};
use canaryd::time::Timestamp;
use serde_json::json;

/// glibc's malloc (the binary's), or mimalloc or jemalloc when
/// `CANARYD_SCALE_ALLOCATOR` names one.
/// Chosen once, on the first allocation (before `main`), from the
/// environment through `getenv`, which does not allocate; every block is
/// freed by the allocator that gave it.
struct ChosenAllocator;

/// The allocator in the low bits of [`CHOSEN`].
const GLIBC: u8 = 1;
const MIMALLOC: u8 = 2;
const JEMALLOC: u8 = 3;
const WHICH: u8 = 3;
/// The memory children also count the bytes they hold ([`heap_bytes`]).
const COUNTING: u8 = 4;
static HEAP_BYTES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Bytes allocated and not yet freed (memory children only).
fn heap_bytes() -> i64 {
    HEAP_BYTES.load(Ordering::Relaxed)
}

/// The heap bytes a clone of `x` holds (its own, not shared, allocations;
/// the process is otherwise idle when this is called).
fn heap_of<T: Clone>(x: &T) -> i64 {
    let before = heap_bytes();
    let copy = x.clone();
    let held = heap_bytes() - before;
    drop(copy);
    held
}
static CHOSEN: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl ChosenAllocator {
    fn chosen() -> u8 {
        let c = CHOSEN.load(Ordering::Relaxed);
        if c != 0 {
            return c;
        }
        // SAFETY: a NUL-terminated name; the result is read at once,
        // before anything could change the environment.
        let which = unsafe {
            let v = libc::getenv(c"CANARYD_SCALE_ALLOCATOR".as_ptr());
            if v.is_null() {
                GLIBC
            } else {
                match std::ffi::CStr::from_ptr(v).to_bytes() {
                    b"mimalloc" => MIMALLOC,
                    b"jemalloc" => JEMALLOC,
                    _ => GLIBC,
                }
            }
        };
        // SAFETY: as above.
        let child = unsafe {
            !libc::getenv(c"CANARYD_SCALE_CHILD".as_ptr()).is_null()
                || !libc::getenv(c"CANARYD_SCALE_CORE_CHILD".as_ptr()).is_null()
        };
        let c = which | if child { COUNTING } else { 0 };
        CHOSEN.store(c, Ordering::Relaxed);
        c
    }

    fn count(bytes: i64) {
        if Self::chosen() & COUNTING != 0 {
            HEAP_BYTES.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn name() -> &'static str {
        match Self::chosen() & WHICH {
            MIMALLOC => "mimalloc",
            JEMALLOC => "jemalloc",
            _ => "glibc",
        }
    }
}

// SAFETY: every call goes to one allocator, the same for the whole process
// (decided before the first block and never changed).
unsafe impl std::alloc::GlobalAlloc for ChosenAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::count(layout.size() as i64);
        unsafe {
            match Self::chosen() & WHICH {
                MIMALLOC => mimalloc::MiMalloc.alloc(layout),
                JEMALLOC => tikv_jemallocator::Jemalloc.alloc(layout),
                _ => std::alloc::System.alloc(layout),
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        Self::count(-(layout.size() as i64));
        unsafe {
            match Self::chosen() & WHICH {
                MIMALLOC => mimalloc::MiMalloc.dealloc(ptr, layout),
                JEMALLOC => tikv_jemallocator::Jemalloc.dealloc(ptr, layout),
                _ => std::alloc::System.dealloc(ptr, layout),
            }
        }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::count(layout.size() as i64);
        unsafe {
            match Self::chosen() & WHICH {
                MIMALLOC => mimalloc::MiMalloc.alloc_zeroed(layout),
                JEMALLOC => tikv_jemallocator::Jemalloc.alloc_zeroed(layout),
                _ => std::alloc::System.alloc_zeroed(layout),
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size as i64 - layout.size() as i64);
        unsafe {
            match Self::chosen() & WHICH {
                MIMALLOC => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
                JEMALLOC => tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size),
                _ => std::alloc::System.realloc(ptr, layout, new_size),
            }
        }
    }
}

#[global_allocator]
static ALLOCATOR: ChosenAllocator = ChosenAllocator;

const EXAMPLE_POLICY: &str = include_str!("../simulator/policies/product-example.yaml");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The example policy at `interval` (it is written at 30s).
fn policy_at(interval: &str) -> String {
    let p = EXAMPLE_POLICY.replace("interval: 30s", &format!("interval: {interval}"));
    assert!(p.contains(&format!("interval: {interval}")));
    p
}

/// A runtime whose threads are all named `name` (workers and blocking),
/// so their CPU can be told apart in `/proc/self/task`.
fn runtime(name: &str, workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

struct Daemon {
    rt: tokio::runtime::Runtime,
    running: Option<daemon::Running>,
    base: String,
    token: String,
    dir: tempfile::TempDir,
}

fn daemon(services: usize, policy: &str, clock: Arc<dyn Clock>) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/example.yaml"), policy).unwrap();
    // As fast as it goes: no per-token push or write rate limit in the way.
    let mut yaml = format!(
        "listen: 127.0.0.1:0\ndataDir: {0}/data\npolicies: {0}/policies\napi: {{ maxConnections: 1000, pushRateLimit: {{ perSecond: 1000000, burst: 1000000 }}, writeRateLimit: {{ perSecond: 1000000, burst: 1000000 }} }}\nservices:\n",
        dir.path().display()
    );
    for i in 0..services {
        yaml.push_str(&format!("  s{i}: {{}}\n"));
    }
    let config: Config = daemon::config::parse_config("bench.yaml", yaml.as_bytes()).unwrap();
    let rt = runtime("daemon", 2);
    let running = rt
        .block_on(async {
            let listener = daemon::bind(config.listen).await?;
            daemon::start(config, listener, clock).await
        })
        .unwrap();
    let base = format!("http://{}", running.addr);
    let token = daemon::read_admin_token(&dir.path().join("data")).unwrap();
    Daemon {
        rt,
        running: Some(running),
        base,
        token,
        dir,
    }
}

impl Daemon {
    fn shared(&self) -> &Arc<daemon::Shared> {
        &self.running.as_ref().unwrap().shared
    }

    /// Start one dry-run rollout of the example policy on each of `n`
    /// services, `parallel` at a time, from the generator's runtime.
    fn start_rollouts(&self, gen_rt: &tokio::runtime::Runtime, n: usize) -> Vec<String> {
        let http = reqwest::Client::new();
        let base = self.base.clone();
        let token = self.token.clone();
        gen_rt.block_on(async move {
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..32 {
                let (http, base, token, next) =
                    (http.clone(), base.clone(), token.clone(), next.clone());
                tasks.spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                        if i >= n {
                            return ids;
                        }
                        let r = http
                            .post(format!("{base}/v1/rollouts"))
                            .bearer_auth(&token)
                            .json(&json!({"service": format!("s{i}"), "canary": "v2",
                                          "baseline": "v1", "policy": "recommender-ctr",
                                          "dry_run": true}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201);
                        let v: serde_json::Value = r.json().await.unwrap();
                        ids.push((i, v["id"].as_str().unwrap().to_string()));
                    }
                });
            }
            let mut ids = Vec::new();
            while let Some(r) = tasks.join_next().await {
                ids.extend(r.unwrap());
            }
            ids.sort();
            ids.into_iter().map(|(_, id)| id).collect()
        })
    }

    /// The canary weight of a live rollout (the generator splits its
    /// traffic by it, so the sample-ratio guard sees the split it expects).
    fn weight(&self, id: &str) -> Option<u8> {
        let h = self.shared().driver(id)?;
        let w = h.view.lock().unwrap().facts().weight;
        Some(w)
    }

    /// Drain and stop the daemon; its data dir stays until the returned
    /// directory is dropped.
    fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop()).unwrap();
        }
        self.dir
    }
}

/// One window's traffic of one rollout at canary weight `weight`: 2,000
/// requests split by the weight, 20 latency events per arm (5-100 ms),
/// the rest as counts in two groups (and what is left of them as plain
/// requests); 5% clicks and 30% approvals in both arms and both groups,
/// so an A/A rollout that no trigger fires on.
fn window_batch(weight: u8) -> serde_json::Value {
    let total = 2_000u64;
    let canary = (total * u64::from(weight.max(1)) / 100).max(1);
    let mut events = Vec::new();
    let mut counts = Vec::new();
    for (arm, n) in [("canary", canary), ("baseline", total - canary)] {
        let latency_events = n.min(20);
        for k in 0..latency_events {
            events.push(json!({"arm": arm, "latency_ms": 5.0 + (k * 5) as f64}));
        }
        let rest = n - latency_events;
        // Each group's share a multiple of 20, so that clicks (5%) and
        // approvals (30%) are exact in both arms at every weight: rounded
        // down per arm, the canary's smaller shares read as a lower CTR,
        // and at 1 s `ctr-drop` fired on it within the hour.
        let share = rest / 2 / 20 * 20;
        for group in ["a", "b"] {
            counts.push(json!({"arm": arm, "group": group, "counters": {
                "requests": share, "errors": share / 1000, "impressions": share,
                "clicks": share / 20, "approvals": share * 3 / 10}}));
        }
        if rest > 2 * share {
            counts.push(json!({"arm": arm, "counters": {"requests": rest - 2 * share}}));
        }
    }
    json!({"events": events, "counts": counts})
}

/// utime + stime (seconds) of this process, or of its threads whose name
/// starts with `prefix`.
fn cpu_seconds(prefix: Option<&str>) -> f64 {
    let ticks = |stat: &str| -> Option<(String, f64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        Some((
            name,
            f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?,
        ))
    };
    let hz = 100.0;
    match prefix {
        None => {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            ticks(&stat).unwrap().1 / hz
        }
        Some(p) => {
            let mut sum = 0.0;
            for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                    continue;
                };
                if let Some((name, x)) = ticks(&stat)
                    && name.starts_with(p)
                {
                    sum += x;
                }
            }
            sum / hz
        }
    }
}

/// Bytes this process has had written (`write_bytes` of /proc/self/io:
/// what reached the block layer, WAL, database and checkpoints).
fn written_bytes() -> u64 {
    io_figure("write_bytes:")
}

/// A figure of /proc/self/io (`write_bytes:`; `syscr:`, read calls, a
/// `pread` of a page SQLite's cache no longer holds among them).
fn io_figure(field: &str) -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A `/proc/self/status` figure in KiB (`VmRSS:`, `VmHWM:`, the peak).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// p50/p99/max of `canaryd_window_lag_seconds` between two renders, read
/// as the upper bound of the bucket each falls in.
fn lag_quantiles(before: &str, after: &str) -> (u64, [String; 3]) {
    let buckets = |text: &str| -> BTreeMap<String, u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("canaryd_window_lag_seconds_bucket{le=\""))
            .filter_map(|l| {
                let (le, rest) = l.split_once("\"}")?;
                Some((le.to_string(), rest.trim().parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let mut cumulative: Vec<(f64, String, u64)> = b1
        .iter()
        .map(|(le, n)| {
            let x = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (x, le.clone(), n - b0.get(le).copied().unwrap_or(0))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = cumulative.last().map_or(0, |c| c.2);
    let at = |q: f64| -> String {
        let want = (q * total as f64).ceil() as u64;
        cumulative
            .iter()
            .find(|c| c.2 >= want.max(1))
            .map_or("-".into(), |c| format!("<= {} s", c.1))
    };
    let max = cumulative
        .iter()
        .find(|c| c.2 == total)
        .map_or("-".into(), |c| format!("<= {} s", c.1));
    (total, [at(0.50), at(0.99), max])
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn rollouts_part() {
    let n: usize = env_or("CANARYD_SCALE_ROLLOUTS", 300);
    let secs: u64 = env_or("CANARYD_SCALE_SECS", 10);
    let d = daemon(n, &policy_at("1s"), Arc::new(SystemClock));
    let gen_rt = runtime("loadgen", 1);
    let idle = {
        let (c0, t0) = (cpu_seconds(None), Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        (cpu_seconds(None) - c0) / t0.elapsed().as_secs_f64()
    };
    let t0 = Instant::now();
    let ids = Arc::new(d.start_rollouts(&gen_rt, n));
    let started = t0.elapsed();
    let weights: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(1)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed_ok = Arc::new(AtomicU64::new(0));
    let pushed_late = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // The pusher: every second one batch to every rollout, 48 in flight.
    let pusher = {
        let (ids, weights, stop, ok, late) = (
            ids.clone(),
            weights.clone(),
            stop.clone(),
            pushed_ok.clone(),
            pushed_late.clone(),
        );
        let (http, base, token) = (http.clone(), d.base.clone(), d.token.clone());
        gen_rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let round = Instant::now();
                let next = Arc::new(AtomicU64::new(0));
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..48 {
                    let (ids, weights, next, ok, http, base, token) = (
                        ids.clone(),
                        weights.clone(),
                        next.clone(),
                        ok.clone(),
                        http.clone(),
                        base.clone(),
                        token.clone(),
                    );
                    tasks.spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                            if i >= ids.len() {
                                return;
                            }
                            let w = weights[i].load(Ordering::SeqCst) as u8;
                            let r = http
                                .post(format!("{base}/v1/rollouts/{}/observations", ids[i]))
                                .bearer_auth(&token)
                                .json(&window_batch(w))
                                .send()
                                .await;
                            if r.is_ok_and(|r| r.status() == 202) {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
                if round.elapsed() > Duration::from_secs(1) {
                    late.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // The poller: GET one rollout after another, one request at a time,
    // from a thread and a connection of its own, as an operator's client
    // in another process would (on the pusher's thread, its latency was
    // the pusher's queue as much as the daemon's answer). Its thread
    // counts as the load generator's.
    let poll_rt = runtime("loadgen", 1);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let poller = {
        let (ids, weights, stop, lat) = (
            ids.clone(),
            weights.clone(),
            stop.clone(),
            latencies.clone(),
        );
        let (http, base, token) = (reqwest::Client::new(), d.base.clone(), d.token.clone());
        poll_rt.spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = http
                    .get(format!("{base}/v1/rollouts/{}", ids[i % ids.len()]))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let v: serde_json::Value = r.json().await.unwrap();
                lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                if let Some(w) = v["weight"].as_u64() {
                    weights[i % ids.len()].store(w.max(1), Ordering::SeqCst);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Weights straight from the drivers too (the poller reaches each
    // rollout only every few seconds at 10,000).
    for (i, id) in ids.iter().enumerate() {
        if let Some(w) = d.weight(id) {
            weights[i].store(u64::from(w.max(1)), Ordering::SeqCst);
        }
    }
    // Settle (the first windows, connections), then measure.
    std::thread::sleep(Duration::from_secs(5));
    latencies.lock().unwrap().clear();
    let metrics = &d.shared().metrics;
    let now = || d.shared().clock.now();
    let render0 = metrics.render(now());
    let (groups0, steps0) = (metrics.commit_groups.get(), metrics.committed_steps.get());
    let (c0, g0, t0) = (
        cpu_seconds(None),
        cpu_seconds(Some("loadgen")),
        Instant::now(),
    );
    let late0 = pushed_late.load(Ordering::SeqCst);
    let (written0, reads0) = (written_bytes(), io_figure("syscr:"));
    let ok0 = pushed_ok.load(Ordering::SeqCst);
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        for (i, id) in ids.iter().enumerate() {
            if let Some(w) = d.weight(id) {
                weights[i].store(u64::from(w.max(1)), Ordering::SeqCst);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(None) - c0) / wall;
    let gen_cpu = (cpu_seconds(Some("loadgen")) - g0) / wall;
    let written = written_bytes() - written0;
    let reads = io_figure("syscr:") - reads0;
    let render1 = metrics.render(now());
    let groups = metrics.commit_groups.get() - groups0;
    let steps = metrics.committed_steps.get() - steps0;
    let pushes = pushed_ok.load(Ordering::SeqCst) - ok0;
    let late_rounds = pushed_late.load(Ordering::SeqCst) - late0;
    stop.store(true, Ordering::SeqCst);
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_by(f64::total_cmp);
    let (windows, [p50, p99, max]) = lag_quantiles(&render0, &render1);
    let live = ids
        .iter()
        .filter(|id| d.shared().driver(id).is_some())
        .count();
    gen_rt.block_on(async {
        let _ = pusher.await;
        let _ = poller.await;
    });
    drop(poll_rt);
    println!(
        "rollouts: {n} rollouts of the example policy at a 1 s interval, {live} live at the end; {secs} s measured; allocator {}",
        ChosenAllocator::name()
    );
    println!(
        "  started in {:.1} s ({:.2} ms each)",
        started.as_secs_f64(),
        started.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "  windows closed: {windows} ({:.0}/s, {:.2} per rollout per second); lag p50 {p50}, p99 {p99}, max {max}",
        windows as f64 / wall,
        windows as f64 / wall / n as f64
    );
    println!(
        "  CPU: {:.1}% of one core in all (idle daemon before the start, same run: {:.1}%), of which the load generator {:.1}%; daemon alone {:.1}% = {:.1} µs of CPU per window",
        cpu * 100.0,
        idle * 100.0,
        gen_cpu * 100.0,
        (cpu - gen_cpu) * 100.0,
        (cpu - gen_cpu) * wall / windows.max(1) as f64 * 1e6
    );
    println!(
        "  commits: {:.1} group commits (fsyncs) per second, {:.1} steps each; pushes accepted {:.0}/s, push rounds over 1 s: {late_rounds}",
        groups as f64 / wall,
        steps as f64 / groups.max(1) as f64,
        pushes as f64 / wall
    );
    println!(
        "  written to the data dir's disk: {:.1} MiB/s, {:.1} KiB per committed step; {:.1} read calls per committed step (sockets and files)",
        written as f64 / wall / 1048576.0,
        written as f64 / steps.max(1) as f64 / 1024.0,
        reads as f64 / steps.max(1) as f64
    );
    println!(
        "  GET /v1/rollouts/{{id}}: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    d.stop();
}

/// One child's part of `memory`: `n` rollouts at `interval`, `windows`
/// windows filled by the manual clock, data pushed in every one; prints
/// `RSS <kib> LIVE <live>`.
fn memory_child(services: usize, n: usize, interval: Duration, windows: u64) {
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let policy = policy_at(&format!("{}s", interval.as_secs()));
    let d = daemon(services, &policy, clock.clone());
    let gen_rt = runtime("loadgen", 1);
    let ids = d.start_rollouts(&gen_rt, n);
    let shared = d.shared().clone();
    let batches: BTreeMap<u8, canaryd::daemon::push::Batch> = [1u8, 10, 50, 100]
        .into_iter()
        .map(|w| (w, serde_json::from_value(window_batch(w)).unwrap()))
        .collect();
    // One window's batch into a live rollout's open window, for its weight.
    let push_window = |id: &str| {
        if let Some(w) = d.weight(id) {
            let batch = batches.range(..=w.max(1)).next_back().unwrap().1;
            shared.push(id, batch).unwrap();
        }
    };
    let wall = Instant::now();
    for _ in 0..windows {
        ids.iter().for_each(|id| push_window(id));
        clock.advance(interval);
        let want = canaryd::wire::rfc3339(clock.now());
        // Every live rollout has closed the window (its view says so).
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let behind = ids
                .iter()
                .filter_map(|id| shared.driver(id))
                .filter(|h| h.view.lock().unwrap().facts().updated_at != want)
                .count();
            if behind == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{behind} rollouts never closed their window"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let fill = wall.elapsed();
    // Let the allocator and the committer settle, then read. jemalloc
    // returns freed pages over its decay time (10 s by default), which a
    // daemon at 30 s spends idle between windows.
    std::thread::sleep(Duration::from_secs(env_or("CANARYD_SCALE_SETTLE_SECS", 2)));
    let live = ids.iter().filter(|id| shared.driver(id).is_some()).count();
    // The size of one rollout's checkpoint (the core's state as JSON, the
    // row every step rewrites).
    let checkpoint = ids.first().map_or(0, |id| {
        let cp = shared
            .with_store(|s| s.checkpoint::<canaryd::monitor::Monitor>(id))
            .unwrap();
        serde_json::to_string(&cp).unwrap().len()
    });
    let (rss, heap, hwm) = (rss_kib(), heap_bytes(), status_kib("VmHWM:"));
    // SAFETY: a read of SQLite's global memory counter, no arguments.
    let sqlite = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    // Mid-window: every rollout's open window holding a batch, as between
    // two window closes at steady state.
    ids.iter().for_each(|id| push_window(id));
    std::thread::sleep(Duration::from_secs(1));
    let rss_open = rss_kib();
    let (in_use, held_free) = glibc_blocks();
    // Where the heap bytes are, for one rollout: the API's view the driver
    // keeps, its push buffer holding one window's batch, and (last, as it
    // removes them) the `/metrics` series of every rollout.
    let (mut view, mut buffer) = (0, 0);
    if let Some(id) = ids.first()
        && let Some(h) = shared.driver(id)
    {
        view = heap_of(&**h.view.lock().unwrap());
        buffer = heap_of(&*h.push.lock().unwrap());
    }
    let before = heap_bytes();
    let now = clock.now();
    for id in &ids {
        shared.metrics.rollout_ended(id, now);
    }
    let _ = shared.metrics.render(now + Duration::from_secs(3_600));
    let series = before - heap_bytes();
    println!(
        "RSS {rss} LIVE {live} FILL_MS {} CHECKPOINT {checkpoint} HEAP {heap} VIEW {view} PUSH {buffer} SERIES {series} HWM {hwm} SQLITE {sqlite} INUSE {in_use} FREE {held_free} OPEN {rss_open}",
        fill.as_millis()
    );
    d.stop();
}

/// The same rollouts with the pure core alone (no daemon: no store, HTTP,
/// metrics or driver), fed the same windows: the core's share of the RSS
/// and of the CPU per window. Prints `RSS <kib> LIVE <live> FILL_MS <ms>
/// CHECKPOINT <bytes>` like [`memory_child`].
fn core_child(n: usize, interval: Duration, windows: u64) {
    use canaryd::engine::{Effect, Input, Rollout, RolloutSpec};
    use canaryd::monitor::Monitor;
    use canaryd::policy::ChangeType;
    use canaryd::stats::IntervalSnapshot;
    let policy = canaryd::policy::parse_policy(
        "example.yaml",
        policy_at(&format!("{}s", interval.as_secs())).as_bytes(),
    )
    .unwrap();
    let t0 = Timestamp::from_millis(1_900_000_000_000);
    let batches: BTreeMap<u8, canaryd::daemon::push::Batch> = [1u8, 10, 50, 100]
        .into_iter()
        .map(|w| (w, serde_json::from_value(window_batch(w)).unwrap()))
        .collect();
    let settle = |r: &mut Rollout<Monitor>, now: Timestamp| {
        // Dry run: every weight asked is acknowledged at once.
        for _ in 0..8 {
            let mut ack = None;
            while let Some(e) = r.poll_effect() {
                if let Effect::SetWeight { weight, .. } = e {
                    ack = Some(weight);
                }
            }
            let Some(weight) = ack else { return };
            let _ = r.handle(
                now,
                Input::RouterAck {
                    weight,
                    error: None,
                },
            );
        }
    };
    let mut rollouts: Vec<Rollout<Monitor>> = (0..n)
        .map(|i| {
            let spec = RolloutSpec {
                id: format!("r{i}"),
                service: format!("s{i}"),
                baseline: "v1".into(),
                canary: "v2".into(),
                change_type: ChangeType::Standard,
                dry_run: true,
                started_by: "bench".into(),
                reason: None,
                ticket: None,
            };
            let monitor = Monitor::new(&policy).unwrap();
            let mut r = Rollout::new(spec, policy.clone(), monitor, t0).unwrap();
            r.handle(t0, Input::Tick).unwrap();
            settle(&mut r, t0);
            r
        })
        .collect();
    let wall = Instant::now();
    let mut now = t0;
    for _ in 0..windows {
        let start = now;
        now = now + interval;
        for r in rollouts.iter_mut() {
            if r.phase().is_terminal() {
                continue;
            }
            let w = r.weight().percent();
            let batch = batches.range(..=w.max(1)).next_back().unwrap().1;
            let v = canaryd::daemon::push::validate(batch, now, t0, t0).unwrap();
            let mut snapshot = IntervalSnapshot::new(start, now);
            snapshot.baseline = v.data.baseline;
            snapshot.canary = v.data.canary;
            let _ = r.handle(now, Input::Data { snapshot });
            settle(r, now);
        }
    }
    let fill = wall.elapsed();
    let live = rollouts.iter().filter(|r| !r.phase().is_terminal()).count();
    let checkpoint = rollouts
        .first()
        .map_or(0, |r| serde_json::to_string(&r.checkpoint()).unwrap().len());
    println!(
        "RSS {} LIVE {live} FILL_MS {} CHECKPOINT {checkpoint} HEAP {} VIEW 0 PUSH 0 SERIES 0 HWM {} SQLITE 0 INUSE 0 FREE 0 OPEN 0",
        rss_kib(),
        fill.as_millis(),
        heap_bytes(),
        status_kib("VmHWM:")
    );
}

/// What one memory child printed.
struct ChildFigures {
    rss_kib: u64,
    live: usize,
    fill_ms: u64,
    checkpoint: u64,
    heap: i64,
    view: i64,
    push: i64,
    series: i64,
    /// Peak RSS (KiB).
    hwm_kib: u64,
    /// Bytes SQLite holds (its own malloc, outside [`heap_bytes`]): the
    /// page cache, mostly.
    sqlite: i64,
    /// glibc malloc's blocks in use (live, with their headers; Rust's
    /// under glibc, and SQLite's) and free but held in its arenas, in
    /// bytes, mid-window (see [`glibc_blocks`]).
    in_use: i64,
    held_free: i64,
    /// RSS (KiB) with a window's batch pushed into every rollout's open
    /// window: between two closes at steady state.
    rss_open_kib: u64,
}

/// glibc malloc's bytes in use and free but held in its arenas (after
/// `malloc_trim`, so what is left free is what sits between live blocks
/// and cannot be returned): where RSS beyond the live heap goes.
fn glibc_blocks() -> (i64, i64) {
    // SAFETY: glibc calls without pointers; `malloc_trim` only returns
    // whole free pages.
    let info = unsafe {
        libc::malloc_trim(0);
        libc::mallinfo2()
    };
    (info.uordblks as i64, info.fordblks as i64)
}

fn memory_part() {
    let sizes: Vec<usize> = std::env::var("CANARYD_SCALE_MEMORY")
        .unwrap_or_else(|_| "100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let intervals = std::env::var("CANARYD_SCALE_INTERVALS").unwrap_or_else(|_| "30s,1s".into());
    let allocators =
        std::env::var("CANARYD_SCALE_ALLOCATORS").unwrap_or_else(|_| "glibc,mimalloc".into());
    let services = sizes.iter().copied().max().unwrap_or(0);
    let exe = std::env::current_exe().unwrap();
    for interval in intervals.split(',') {
        let secs: u64 = interval.trim().trim_end_matches('s').parse().unwrap();
        // The burn-rate rule's 1 h window, full.
        let windows = if secs == 1 {
            env_or("CANARYD_SCALE_WINDOWS_1S", 120)
        } else {
            3_600 / secs
        };
        for allocator in allocators.split(',').map(str::trim) {
            // `jemalloc:background_thread:true/dirty_decay_ms:1000`: jemalloc
            // with those options (`/` for the `,` between them).
            let (name, conf) = allocator.split_once(':').unwrap_or((allocator, ""));
            let run_as = |mode: &str, n: usize| -> ChildFigures {
                let mut child = std::process::Command::new(&exe);
                child
                    .env(mode, format!("{services},{n},{secs},{windows}"))
                    .env("CANARYD_SCALE_ALLOCATOR", name)
                    .env("MALLOC_MMAP_THRESHOLD_", "131072")
                    .env("MALLOC_ARENA_MAX", "2");
                if !conf.is_empty() {
                    child.env("_RJEM_MALLOC_CONF", conf.replace('/', ","));
                }
                let out = child.output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find(|l| l.starts_with("RSS "))
                    .unwrap_or_else(|| {
                        panic!(
                            "child failed: {text}\n{}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    });
                let f: Vec<&str> = line.split_whitespace().collect();
                ChildFigures {
                    rss_kib: f[1].parse().unwrap(),
                    live: f[3].parse().unwrap(),
                    fill_ms: f[5].parse().unwrap(),
                    checkpoint: f[7].parse().unwrap(),
                    heap: f[9].parse().unwrap(),
                    view: f[11].parse().unwrap(),
                    push: f[13].parse().unwrap(),
                    series: f[15].parse().unwrap(),
                    hwm_kib: f[17].parse().unwrap(),
                    sqlite: f[19].parse().unwrap(),
                    in_use: f[21].parse().unwrap(),
                    held_free: f[23].parse().unwrap(),
                    rss_open_kib: f[25].parse().unwrap(),
                }
            };
            let run = |n: usize| run_as("CANARYD_SCALE_CHILD", n);
            let zero = run(0);
            let core0 = run_as("CANARYD_SCALE_CORE_CHILD", 0);
            println!(
                "memory ({allocator}): interval {secs} s, {windows} windows filled ({} of data), {services} services configured; RSS with no rollout: {:.1} MiB",
                canaryd::time::format_duration(Duration::from_secs(secs * windows)),
                zero.rss_kib as f64 / 1024.0
            );
            for &n in sizes.iter().filter(|&&n| n > 0) {
                let d = run(n);
                let per = |x: i64, x0: i64| (x - x0) as f64 / n as f64 / 1024.0;
                let daemon_kib = per(d.rss_kib as i64 * 1024, zero.rss_kib as i64 * 1024);
                println!(
                    "  {n} rollouts ({} live): RSS {:.1} MiB, growth {daemon_kib:.1} KiB per rollout (peak {:.1} KiB per rollout); filled in {:.1} s ({:.1} µs per rollout-window); a checkpoint is {:.1} KiB of JSON",
                    d.live,
                    d.rss_kib as f64 / 1024.0,
                    per(d.hwm_kib as i64 * 1024, zero.hwm_kib as i64 * 1024),
                    d.fill_ms as f64 / 1000.0,
                    d.fill_ms as f64 * 1000.0 / (n as f64 * windows as f64),
                    d.checkpoint as f64 / 1024.0
                );
                let c = run_as("CANARYD_SCALE_CORE_CHILD", n);
                let core_kib = per(c.rss_kib as i64 * 1024, core0.rss_kib as i64 * 1024);
                println!(
                    "    the pure core alone, same rollouts and windows ({} live): growth {core_kib:.1} KiB per rollout ({:.0}% of the daemon's), {:.1} µs per rollout-window; the daemon's own share: {:.1} KiB per rollout",
                    c.live,
                    core_kib / daemon_kib * 100.0,
                    c.fill_ms as f64 * 1000.0 / (n as f64 * windows as f64),
                    daemon_kib - core_kib
                );
                let heap = per(d.heap, zero.heap);
                let core_heap = per(c.heap, core0.heap);
                let (view, push, series) = (
                    d.view as f64 / 1024.0,
                    d.push as f64 / 1024.0,
                    d.series as f64 / n as f64 / 1024.0,
                );
                println!(
                    "    heap held per rollout (bytes allocated, not freed): {heap:.1} KiB in the daemon, {:.1} KiB of RSS beyond it; the core {core_heap:.1} KiB, the API view {view:.1} KiB, a push buffer with one window's batch {push:.1} KiB (empty between windows), /metrics series {series:.1} KiB, the rest (driver, task, row, maps, store) {:.1} KiB; SQLite (its own malloc, mostly the page cache) {:.1} KiB",
                    daemon_kib - heap,
                    heap - core_heap - view - series,
                    per(d.sqlite, zero.sqlite)
                );
                println!(
                    "    mid-window (a window's batch pushed into every rollout's open window): RSS growth {:.1} KiB per rollout; then glibc's malloc (after malloc_trim) holds {:.1} KiB per rollout in blocks in use (live, with their headers) and {:.1} KiB free between them",
                    per(
                        d.rss_open_kib as i64 * 1024,
                        zero.rss_open_kib as i64 * 1024
                    ),
                    per(d.in_use, zero.in_use),
                    per(d.held_free, zero.held_free),
                );
            }
        }
    }
}

fn ingest_part() {
    let secs: u64 = env_or("CANARYD_SCALE_INGEST_SECS", 5);
    let connections: usize = env_or("CANARYD_SCALE_INGEST_CONNECTIONS", 8);
    let policy = policy_at("1s");
    let d = daemon(1, &policy, Arc::new(SystemClock));
    let gen_rt = runtime("loadgen", 1);
    let ids = d.start_rollouts(&gen_rt, 1);
    let id = ids[0].clone();
    // Baseline traffic only, events without `at`: every one counts. The
    // example's sample-ratio guard may pause the rollout on this split; it
    // keeps taking observations and closing windows either way.
    let events: Vec<_> = (0..1000)
        .map(|i| {
            json!({"arm": if i % 100 == 0 { "canary" } else { "baseline" },
                   "error": i % 997 == 1, "latency_ms": 5.0 + (i % 50) as f64,
                   "impression": true, "click": i % 20 == 0})
        })
        .collect();
    let body = bytes_of(&json!({ "events": events }));
    let url = format!("{}/v1/rollouts/{id}/observations", d.base);
    let accepted = Arc::new(AtomicU64::new(0));
    let (c0, g0, t0) = (
        cpu_seconds(None),
        cpu_seconds(Some("loadgen")),
        Instant::now(),
    );
    let until = t0 + Duration::from_secs(secs);
    gen_rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (http, url, token, body, accepted) = (
                http.clone(),
                url.clone(),
                d.token.clone(),
                body.clone(),
                accepted.clone(),
            );
            tasks.spawn(async move {
                while Instant::now() < until {
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    let v: serde_json::Value = r.json().await.unwrap();
                    accepted.fetch_add(v["accepted_events"].as_u64().unwrap(), Ordering::SeqCst);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(None) - c0;
    let gen_cpu = cpu_seconds(Some("loadgen")) - g0;
    let accepted = accepted.load(Ordering::SeqCst);
    // No loss: once the window holding the last push has closed, stop
    // (the drivers finish their step), then add up the requests of every
    // journaled window.
    std::thread::sleep(Duration::from_millis(2_500));
    let dir = d.stop();
    let data = dir.path().join("data");
    let store = canaryd::store::Store::open_read_only(&data).unwrap();
    let seen = journaled_requests(&store, &id);
    println!(
        "ingest: {:.0} observations/s over HTTP on loopback in batches of 1,000 ({secs} s, {connections} connections); CPU {:.0}% of one core, of which the load generator {:.0}% ({:.0}% of the CPU used)",
        accepted as f64 / wall,
        cpu / wall * 100.0,
        gen_cpu / wall * 100.0,
        gen_cpu / cpu * 100.0
    );
    println!(
        "  no loss: {accepted} accepted, {seen} in the journaled windows{}",
        if seen == accepted {
            " (equal)"
        } else {
            " (DIFFERENT)"
        }
    );
    assert_eq!(seen, accepted, "observations lost or invented");
}

fn bytes_of(v: &serde_json::Value) -> axum::body::Bytes {
    axum::body::Bytes::from(v.to_string())
}

/// Requests of both arms over every journaled `data` input of a rollout.
fn journaled_requests(store: &canaryd::store::Store, id: &str) -> u64 {
    let mut sum = 0;
    for entry in store.journal(id).unwrap() {
        if entry.kind != canaryd::store::JournalKind::Input {
            continue;
        }
        let input = entry
            .decode_input::<canaryd::stats::IntervalSnapshot>()
            .unwrap();
        if let canaryd::engine::Input::Data { snapshot } = input {
            sum += snapshot.baseline.counter("requests") + snapshot.canary.counter("requests");
        }
    }
    sum
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(child) = std::env::var("CANARYD_SCALE_CORE_CHILD") {
        let f: Vec<u64> = child.split(',').map(|x| x.parse().unwrap()).collect();
        core_child(f[1] as usize, Duration::from_secs(f[2]), f[3]);
        return;
    }
    if let Ok(child) = std::env::var("CANARYD_SCALE_CHILD") {
        let f: Vec<u64> = child.split(',').map(|x| x.parse().unwrap()).collect();
        memory_child(
            f[0] as usize,
            f[1] as usize,
            Duration::from_secs(f[2]),
            f[3],
        );
        return;
    }
    let parts =
        std::env::var("CANARYD_SCALE_PARTS").unwrap_or_else(|_| "rollouts,memory,ingest".into());
    for part in parts.split(',') {
        match part.trim() {
            "rollouts" => rollouts_part(),
            "memory" => memory_part(),
            "ingest" => ingest_part(),
            other => panic!("unknown part {other:?}: rollouts, memory or ingest"),
        }
    }
}
