//! `/metrics` of the real daemon with live rollouts (`metrics_support`):
//! `promtool check metrics` (Prometheus' own linter, from the Debian
//! package the suite installs) passes on the text a `curl` gets, every
//! family declared has a sample, OpenMetrics is what Prometheus' `Accept`
//! gets, and every `canaryd_*` name the shipped dashboard and alerting
//! rules use is one the daemon exports. After a SIGKILL and a restart the
//! live rollouts' series and the pending deliveries are back.
//!
//! Skips, loudly, only when the Prometheus package cannot be installed.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod metrics_support;
mod source_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use metrics_support::{Scenario, families};
use source_support::prometheus;

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The `canaryd_*` metric names in a file (PromQL in JSON or YAML).
fn names_used(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("canaryd_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// After a SIGKILL and a restart: the live rollouts' series are back (from
/// their checkpoints), the ended one's are gone, and the deliveries still
/// pending for the receiver that is down are counted again, with their age
/// from when they were queued before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_live_rollouts_and_pending_deliveries() {
    if let Err(e) = prometheus::ensure_installed() {
        println!("SKIPPED: Prometheus is not installed and cannot be: {e}");
        return;
    }
    let mut s = Scenario::start().await;
    let before = s.text().await;
    let pending = "canaryd_notifications_pending{kind=\"delivery\"}";
    let oldest = "canaryd_notifications_oldest_pending_age_seconds{kind=\"delivery\"}";
    assert!(value(&before, pending).is_some_and(|v| v > 0.0), "{before}");
    s.daemon.kill9();
    s.daemon.spawn();
    let api = s.daemon.client();
    let text = api.metrics().await;
    let (ok, said) = promtool_check_metrics(&text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
    for service in ["web", "scraped", "broken"] {
        let id = &s.rollouts[service];
        assert!(
            text.contains(&format!("canaryd_rollout_phase{{rollout=\"{id}\",service=\"{service}\",phase=\"progressing\"}} 1")),
            "{service}: {text}"
        );
    }
    let ended = &s.rollouts["api"];
    assert!(!text.contains(&format!("rollout=\"{ended}\"")), "{text}");
    assert!(value(&text, pending).is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&text, oldest).is_some_and(|v| v > 0.0), "{text}");
    println!(
        "after the restart: {} deliveries pending, the oldest {:.1} s old",
        value(&text, pending).unwrap(),
        value(&text, oldest).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_passes_the_real_exposition_with_every_family_present() {
    if let Err(e) = prometheus::ensure_installed() {
        println!("SKIPPED: Prometheus is not installed and cannot be: {e}");
        return;
    }
    let s = Scenario::start().await;
    let text = s.text().await;

    let (ok, said) = promtool_check_metrics(&text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );

    let declared = families(&text);
    let empty: Vec<&String> = declared
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(f, _)| f)
        .collect();
    assert!(
        empty.is_empty(),
        "families without a sample: {empty:?}\n{text}"
    );
    println!(
        "promtool check metrics: passed on {} families, {} samples",
        declared.len(),
        declared.values().sum::<usize>()
    );

    // Per-rollout series: only the four rollouts of the scenario.
    let rollouts: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("rollout=\"").nth(1)?.split('"').next())
        .collect();
    let expected: BTreeSet<&str> = s.rollouts.values().map(String::as_str).collect();
    assert_eq!(rollouts, expected);

    // Prometheus asks for OpenMetrics and gets it; the samples are the same
    // families (counters declared without `_total`).
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", s.daemon.base))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let om = resp.text().await.unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE canaryd_decisions counter\n"), "{om}");
    assert!(
        text.contains("# TYPE canaryd_decisions_total counter\n"),
        "{text}"
    );

    // The dashboard and the alerting rules ask only for what exists.
    let samples: BTreeSet<String> = declared.keys().cloned().collect();
    for file in [
        "dashboards/canaryd-grafana.json",
        "dashboards/canaryd-alerts.yaml",
    ] {
        let unknown: Vec<String> = names_used(file)
            .into_iter()
            .filter(|n| !samples.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} uses names /metrics does not have: {unknown:?}"
        );
    }
}
