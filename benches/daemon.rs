//! The daemon's costs (issue #6), in one run:
//! - push ingestion over HTTP on loopback: batches of 1,000 events to a real
//!   in-process daemon, against decoding and validating the same batch
//!   without HTTP (the baseline, same run);
//! - the CPU cost of 1,000 concurrent rollouts at a 1s interval: process
//!   CPU time over a 10s window with 1,000 dry-run rollouts driven (a step
//!   committed per rollout per second, group-committed), against the same
//!   window with the daemon idle.

#![allow(clippy::disallowed_methods)] // benches read the clock

use std::sync::Arc;
use std::time::Duration;

use canaryd::daemon::{self, config::Config};
use criterion::{Criterion, Throughput, criterion_group};
use serde_json::json;

const POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: steady
spec:
  analysis:
    interval: 1s
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
"#;

struct Env {
    rt: tokio::runtime::Runtime,
    running: Option<daemon::Running>,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

fn env(services: usize) -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/steady.yaml"), POLICY).unwrap();
    // The bench measures ingestion as fast as it goes: no per-token push
    // rate limit (api.pushRateLimit, issue #21) in the way.
    let mut yaml = format!(
        "listen: 127.0.0.1:0\ndataDir: {0}/data\npolicies: {0}/policies\napi: {{ pushRateLimit: {{ perSecond: 1000000, burst: 1000000 }} }}\nservices:\n",
        dir.path().display()
    );
    for i in 0..services {
        yaml.push_str(&format!("  s{i}: {{}}\n"));
    }
    let config: Config = daemon::config::parse_config("bench.yaml", yaml.as_bytes()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(async {
            let listener = daemon::bind(config.listen).await?;
            daemon::start(config, listener, Arc::new(daemon::clock::SystemClock)).await
        })
        .unwrap();
    let base = format!("http://{}", running.addr);
    let token = daemon::read_admin_token(&dir.path().join("data")).unwrap();
    Env {
        rt,
        running: Some(running),
        base,
        token,
        _dir: dir,
    }
}

impl Env {
    fn start(&self, http: &reqwest::Client, service: usize) -> String {
        self.rt.block_on(async {
            let r = http
                .post(format!("{}/v1/rollouts", self.base))
                .bearer_auth(&self.token)
                .json(
                    &json!({"service": format!("s{service}"), "canary": "v2", "baseline": "v1",
                              "policy": "steady", "dry_run": true}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.rt.block_on(r.stop());
        }
    }
}

fn batch() -> Vec<u8> {
    let events: Vec<_> = (0..1000)
        .map(|i| {
            json!({"arm": if i % 10 == 0 { "canary" } else { "baseline" },
                   "error": i % 97 == 0, "latency_ms": 5.0 + (i % 50) as f64,
                   "impression": true, "click": i % 20 == 0})
        })
        .collect();
    json!({ "events": events }).to_string().into_bytes()
}

fn ingestion(c: &mut Criterion) {
    let e = env(1);
    let http = reqwest::Client::new();
    let id = e.start(&http, 0);
    let body = batch();
    let url = format!("{}/v1/rollouts/{id}/observations", e.base);
    let mut g = c.benchmark_group("push_ingestion");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode_and_validate_only", |b| {
        b.iter(|| {
            let parsed: daemon::push::Batch = serde_json::from_slice(&body).unwrap();
            daemon::push::validate(
                &parsed,
                canaryd::time::Timestamp::from_millis(u64::MAX / 2),
                canaryd::time::Timestamp::EPOCH,
                canaryd::time::Timestamp::EPOCH,
            )
            .unwrap()
        })
    });
    g.bench_function("http_post_batch_of_1000", |b| {
        b.iter(|| {
            e.rt.block_on(async {
                let r = http
                    .post(&url)
                    .bearer_auth(&e.token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            })
        })
    });
    g.finish();
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn cpu_over(window: Duration) -> f64 {
    let t0 = std::time::Instant::now();
    let c0 = cpu_seconds();
    std::thread::sleep(window);
    (cpu_seconds() - c0) / t0.elapsed().as_secs_f64()
}

fn rollouts_cpu() {
    let n: usize = std::env::var("CANARYD_BENCH_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let e = env(n);
    let window = Duration::from_secs(10);
    let idle = cpu_over(window);
    let http = reqwest::Client::new();
    let t0 = std::time::Instant::now();
    for i in 0..n {
        e.start(&http, i);
    }
    let started = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let busy = cpu_over(window);
    println!(
        "rollouts_cpu: {n} dry-run rollouts at a 1s interval: {:.1}% of one core (idle daemon, same run: {:.1}%); started in {:.1}s ({:.1} ms each)",
        busy * 100.0,
        idle * 100.0,
        started.as_secs_f64(),
        started.as_secs_f64() * 1000.0 / n as f64
    );
}

criterion_group!(benches, ingestion);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    rollouts_cpu();
}
