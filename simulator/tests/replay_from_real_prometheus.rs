//! `replay-from-prometheus` on a real Prometheus' `query_range` answers: the
//! first two hours of the synthetic A/A replay (`replays/synthetic-aa.json`)
//! are written as cumulative counters per arm in OpenMetrics (15 s samples,
//! growing linearly within each minute), backfilled into a TSDB with
//! `promtool tsdb create-blocks-from openmetrics`, served by a real
//! Prometheus on 127.0.0.1 (no scraping), and read back with the query the
//! README documents (`increase(..[1m])` per arm, labelled `signal`), one
//! `query_range` per counter at `step=60`. The converted replay must hold
//! the recorded counts (±1 for Prometheus' float arithmetic) and run an
//! A/A within alpha.
//!
//! Skips, loudly, when `prometheus` or `promtool` is missing (`scripts/test`
//! installs Debian's package, which has both).

// A test of real processes: it waits on the wall clock, bounded.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canaryd::policy::parse_policy;
use canaryd_sim::source::{Replay, Source, parse_replay, replay_from_prometheus};
use canaryd_sim::{SimOptions, simulate};

/// 2026-01-01T00:00:00Z: a fixed past instant (no clock read); Prometheus
/// serves backfilled blocks of any age.
const T0: u64 = 1_767_225_600;
const MINUTES: usize = 120;
const SIGNALS: [&str; 4] = ["requests", "errors", "impressions", "clicks"];

/// A scratch directory removed when the test ends, pass or fail.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET; the body when the status is 200.
fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split(' ').nth(1);
    (status == Some("200")).then(|| answer[split + 4..].to_vec())
}

/// The replay's first [`MINUTES`] intervals as OpenMetrics text.
fn open_metrics(replay: &Replay) -> String {
    let mut out = String::new();
    for signal in SIGNALS {
        out.push_str(&format!("# TYPE sim_{signal} counter\n"));
        for arm in ["baseline", "canary"] {
            let mut total = 0u64;
            for (i, rec) in replay.intervals[..MINUTES].iter().enumerate() {
                let recorded = if arm == "baseline" {
                    &rec.baseline
                } else {
                    &rec.canary
                };
                let step = recorded.counters.get(signal).copied().unwrap_or(0);
                let start = T0 + 60 * i as u64;
                for k in 0..4u64 {
                    let v = total as f64 + step as f64 * k as f64 / 4.0;
                    out.push_str(&format!(
                        "sim_{signal}_total{{arm=\"{arm}\"}} {v} {}\n",
                        start + 15 * k
                    ));
                }
                total += step;
            }
            let end = T0 + 60 * MINUTES as u64;
            out.push_str(&format!(
                "sim_{signal}_total{{arm=\"{arm}\"}} {total} {end}\n"
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

#[test]
fn a_replay_converted_from_real_prometheus_answers_runs_an_a_a() {
    if !have("prometheus") || !have("promtool") {
        eprintln!(
            "SKIPPED: prometheus or promtool not installed (scripts/test installs Debian's prometheus)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("canaryd-sim-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _scratch = Scratch(dir.clone());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/replays/synthetic-aa.json");
    let original = parse_replay(path, &std::fs::read(path).unwrap()).unwrap();
    std::fs::write(dir.join("om.txt"), open_metrics(&original)).unwrap();
    let made = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(dir.join("om.txt"))
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(dir.join("prometheus.yml"), "scrape_configs: []\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded: 60 s at most.
    let ready = (0..300).any(|_| {
        if get(port, "/-/ready").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(ready, "prometheus did not get ready on port {port}");
    let inputs: Vec<(String, Vec<u8>)> = SIGNALS
        .iter()
        .map(|signal| {
            let query = format!(
                "label_replace(sum by (arm) (increase(sim_{signal}_total[1m])), \"signal\", \"{signal}\", \"\", \"\")"
            );
            let url = format!(
                "/api/v1/query_range?query={}&start={}&end={}&step=60",
                percent_encoded(&query),
                T0 + 60,
                T0 + 60 * MINUTES as u64
            );
            let body = get(port, &url).unwrap_or_else(|| panic!("query_range {query} failed"));
            (format!("{signal}.json"), body)
        })
        .collect();
    let file = replay_from_prometheus(&inputs).unwrap();
    assert_eq!(file.interval, "1m");
    assert_eq!(file.intervals.len(), MINUTES);
    for (i, (got, want)) in file.intervals.iter().zip(&original.intervals).enumerate() {
        for (g, w) in [(&got.baseline, &want.baseline), (&got.canary, &want.canary)] {
            for signal in SIGNALS {
                let (g, w) = (g.counters.get(signal), w.counters.get(signal));
                let (g, w) = (g.copied().unwrap_or(0), w.copied().unwrap_or(0));
                assert!(g.abs_diff(w) <= 1, "interval {i} {signal}: {g} vs {w}");
            }
        }
    }
    let bytes = serde_json::to_vec(&file).unwrap();
    let replay = parse_replay("converted.json", &bytes).unwrap();
    let policy_path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/fast-web.yaml");
    let policy = parse_policy(policy_path, &std::fs::read(policy_path).unwrap()).unwrap();
    let runs = 200;
    let report = simulate(
        &policy,
        &Source::Replay(replay),
        &SimOptions {
            runs,
            seed: 1,
            threads: None,
            approval_delay: Duration::ZERO,
            ..SimOptions::default()
        },
    )
    .unwrap();
    let r = &report.results[0];
    let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / f64::from(runs)).sqrt();
    eprintln!(
        "fast-web on the replay converted from prometheus: rollback {} (bound {bound:.4}), promoted {}, by trigger {:?}",
        r.rollback_rate, r.promotion_rate, r.by_trigger
    );
    assert!(r.rollback_rate <= bound, "{r:?}");
}
