//! Issue #21, "bounded everything under load": the real daemon under a
//! descriptor limit (`prlimit --nofile=512`) for `CANARYD_SOAK_SECS`
//! seconds (60 by default; set more for a long soak) of pushed traffic,
//! API clients that open connections and drop them (idle, half a request
//! head, a request whose answer is never read, event streams), and
//! SIGKILLs with restarts. Every rollout ends as its canary deserves and
//! its final weight reaches the file router; RSS and open descriptors,
//! sampled at quiet moments, stay flat.

// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daemon_support::{Api, Daemon, open_descriptors, proc_status_kb, read_json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const NOFILE: u64 = 512;

/// Clients that connect and leave without a proper exchange, until `stop`.
async fn churn(base: String, token: String, stream: String, stop: Arc<AtomicBool>) -> u64 {
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut held: VecDeque<TcpStream> = VecDeque::new();
    let mut opened = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10 {
            i += 1;
            let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&addr)).await
            else {
                continue;
            };
            opened += 1;
            let _ = match i % 4 {
                // An event stream, dropped later (one in twenty).
                0 if i.is_multiple_of(20) => {
                    s.write_all(
                        format!(
                            "GET {stream} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await
                }
                // Idle: held a while, then dropped.
                0 => Ok(()),
                // Half a request head.
                1 => s.write_all(b"POST /v1/rollouts HTTP/1.1\r\nHost: x\r\n").await,
                // A request whose answer is never read.
                2 => {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await
                }
                // A read, answered, then the connection left idle.
                _ => {
                    s.write_all(
                        format!(
                            "GET /v1/rollouts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await
                }
            };
            held.push_back(s);
            if held.len() > 150 {
                held.pop_front();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    opened
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kb: u64,
    fds: usize,
}

/// Wait for the idle sockets of the churn to time out (headerReadTimeout
/// is 2s), then read the daemon's RSS and descriptors.
async fn quiet_sample(d: &Daemon) -> Sample {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = d.pid();
    Sample {
        rss_kb: proc_status_kb(pid, "VmRSS").unwrap(),
        fds: open_descriptors(pid).unwrap(),
    }
}

async fn start(api: &Api, service: &str, round: usize) -> String {
    let a = api
        .post(
            "/v1/rollouts",
            serde_json::json!({"service": service, "canary": format!("v{}", round + 2),
                               "baseline": format!("v{}", round + 1), "policy": "fast",
                               "reason": "soak"}),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_churn_and_kills_leave_memory_descriptors_and_routers_right() {
    let secs: u64 = std::env::var("CANARYD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut d = Daemon::start_with_nofile(
        "api: { reservedDescriptors: 128, headerReadTimeout: 2s, bodyReadTimeout: 5s }\n",
        NOFILE,
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut samples: Vec<Sample> = Vec::new();
    let mut kills = 0;
    let mut churned = 0;
    let mut round = 0;
    while round < 2 || Instant::now() < deadline {
        let api = d.client();
        let bad = start(&api, "web", round).await;
        let good = start(&api, "api", round).await;
        let stop = Arc::new(AtomicBool::new(false));
        let churner = tokio::spawn(churn(
            d.base.clone(),
            d.token.clone(),
            format!("/v1/rollouts/{bad}/events"),
            stop.clone(),
        ));
        // Kill every other round, a little after the start.
        let kill_at = (round % 2 == 1).then(|| Instant::now() + Duration::from_millis(1500));
        let round_deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(
                Instant::now() < round_deadline,
                "round {round} did not end:\n{}",
                d.log_text()
            );
            if kill_at.is_some_and(|t| Instant::now() >= t) && kills < round.div_ceil(2) {
                d.kill9();
                kills += 1;
                d.spawn();
            }
            let api = d.client();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), api.try_push(&bad, 50, 0.01, 0.30))
                    .await;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), api.try_push(&good, 50, 0.01, 0.01))
                    .await;
            let (b, g) = (api.rollout(&bad).await, api.rollout(&good).await);
            if !b["outcome"].is_null() && !g["outcome"].is_null() {
                assert_eq!(b["outcome"], "rolled-back", "{b}");
                assert_eq!(g["outcome"], "promoted", "{g}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        churned += churner.await.unwrap();
        // Each final weight reached its router.
        assert_eq!(read_json(&d.path("web.json"))["canary_weight"], 0);
        assert_eq!(read_json(&d.path("api.json"))["canary_weight"], 100);
        let s = quiet_sample(&d).await;
        eprintln!(
            "round {round}: rss {} kB, {} descriptors, {kills} kills so far",
            s.rss_kb, s.fds
        );
        assert!((s.fds as u64) < NOFILE, "{s:?}");
        samples.push(s);
        round += 1;
    }
    assert!(kills >= 1);
    let log = d.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    // Flat: the last quiet sample is no larger than the first one of the
    // same kind of moment plus a margin (allocator arenas, SQLite cache).
    let first = samples[0];
    let max = samples.iter().fold(first, |m, s| Sample {
        rss_kb: m.rss_kb.max(s.rss_kb),
        fds: m.fds.max(s.fds),
    });
    let last = *samples.last().unwrap();
    eprintln!(
        "soak: {secs}s, {round} rounds, {kills} kills, {churned} churned connections; rss first {} kB, max {} kB, last {} kB; descriptors first {}, max {}, last {}",
        first.rss_kb, max.rss_kb, last.rss_kb, first.fds, max.fds, last.fds
    );
    assert!(last.fds <= first.fds + 8, "descriptors grew: {samples:?}");
    assert!(
        max.rss_kb <= first.rss_kb + 64 * 1024,
        "RSS grew: {samples:?}"
    );
}
