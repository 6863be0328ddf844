//! The shipped Grafana dashboard (`dashboards/canaryd-grafana.json`) against
//! a real Prometheus (Debian's, `source_support/prometheus.rs`) scraping a
//! real daemon with live rollouts (`metrics_support`) every second: every
//! panel's every query, its template variables substituted as Grafana
//! would (all services, all rollouts), returns data through Prometheus'
//! HTTP API; so do the variables' own queries and the annotation. The same
//! Prometheus loads `dashboards/canaryd-alerts.yaml`: with a rollback just
//! done, a source failing and a receiver down, those alerts are pending or
//! firing, and the daemon-down ones are not.
//!
//! Skips, loudly, only when the Prometheus package cannot be installed.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod metrics_support;
mod source_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use metrics_support::Scenario;
use serde_json::Value;
use source_support::prometheus::{self, Prometheus};

/// What the test puts for Grafana's variables: every service and rollout,
/// and windows that hold several of the 1 s scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("${service}", ".*")
        .replace("$service", ".*")
        .replace("${rollout}", ".*")
        .replace("$rollout", ".*")
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
}

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/canaryd-grafana.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// (where, PromQL) of every panel target and the annotation.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            out.push((format!("panel {title:?} {}", t["refId"]), expr.to_string()));
        }
    }
    out
}

/// (name, PromQL) of every annotation: Grafana runs them over the
/// dashboard's time range.
fn annotations(d: &Value) -> Vec<(String, String)> {
    d["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A range query's series over the last `range`, one point a second.
async fn range_query(
    http: &reqwest::Client,
    prom: &Prometheus,
    promql: &str,
    range: Duration,
) -> Result<Vec<Value>, String> {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = end - range.as_secs_f64();
    let resp = http
        .get(format!("{}/api/v1/query_range", prom.url()))
        .query(&[
            ("query", promql.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", "1".to_string()),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The dashboard's structure: a Prometheus data source variable every
/// panel and query uses, unique ids, no data source named outright.
#[test]
fn the_dashboard_uses_its_datasource_variable_everywhere() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            p["title"]
        );
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{}", v["name"]);
    }
    assert!(ids.len() >= 20, "{} panels", ids.len());
}

/// An instant query's result (`data.result`), or why not.
async fn query(
    http: &reqwest::Client,
    prom: &Prometheus,
    promql: &str,
) -> Result<Vec<Value>, String> {
    let resp = http
        .get(format!("{}/api/v1/query", prom.url()))
        .query(&[("query", promql)])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Poll `promql` until it has a result (bounded by `deadline`).
async fn non_empty(
    http: &reqwest::Client,
    prom: &Prometheus,
    promql: &str,
    deadline: Instant,
) -> Result<usize, String> {
    loop {
        match query(http, prom, promql).await {
            Ok(r) if !r.is_empty() => return Ok(r.len()),
            Ok(_) if Instant::now() >= deadline => return Err("no data".into()),
            Err(e) if Instant::now() >= deadline || e.contains("bad_data") => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn prometheus_config(daemon: &str) -> impl FnOnce(u16) -> String {
    let target = daemon.strip_prefix("http://").unwrap().to_string();
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/canaryd-alerts.yaml"
    );
    move |_| {
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: canaryd\n    static_configs:\n      - targets: ['{target}']\n"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_returns_data_from_a_real_prometheus() {
    if let Err(e) = prometheus::ensure_installed() {
        println!("SKIPPED: Prometheus is not installed and cannot be: {e}");
        return;
    }
    let d = dashboard();
    let started = Instant::now();
    let (scenario, prom) = Scenario::start_then(|base| {
        let prom = prometheus::start(prometheus_config(base), None)?;
        // The rollouts start once Prometheus has read every counter at 0.
        for _ in 0..200 {
            if let Ok((200, _, body)) = prometheus::get(prom.port, "/api/v1/query?query=up", "*/*")
                && body.contains("\"1\"]")
            {
                return Ok(prom);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the daemon was not scraped in 20 s:\n{}",
            prom.log()
        ))
    })
    .await;
    let prom = prom.unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::new();

    // Prometheus scrapes the daemon (OpenMetrics) and keeps what it reads.
    let deadline = Instant::now() + Duration::from_secs(60);
    non_empty(&http, &prom, "up{job=\"canaryd\"} == 1", deadline)
        .await
        .unwrap_or_else(|e| panic!("the daemon is not scraped: {e}\n{}", prom.log()));

    let mut failures = Vec::new();
    let mut answered = 0;
    for (place, expr) in queries(&d) {
        let promql = substitute(&expr);
        match non_empty(&http, &prom, &promql, deadline).await {
            Ok(n) => {
                answered += 1;
                println!("{place}: {n} series  <- {promql}");
            }
            Err(e) => failures.push(format!("{place}: {e}\n    {promql}")),
        }
    }
    // The annotations over the time since Prometheus started (the rollback
    // of `api` happened in it).
    for (name, expr) in annotations(&d) {
        let promql = substitute(&expr);
        match range_query(
            &http,
            &prom,
            &promql,
            started.elapsed() + Duration::from_secs(5),
        )
        .await
        {
            Ok(r) if !r.is_empty() => {
                answered += 1;
                println!("annotation {name}: {} series  <- {promql}", r.len());
            }
            Ok(_) => failures.push(format!("annotation {name}: no data\n    {promql}")),
            Err(e) => failures.push(format!("annotation {name}: {e}\n    {promql}")),
        }
    }
    // The variables' `label_values(selector, label)`, as Grafana asks them.
    for v in d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
    {
        let def = substitute(v["definition"].as_str().unwrap());
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let resp: Value = http
            .get(format!(
                "{}/api/v1/label/{}/values",
                prom.url(),
                label.trim()
            ))
            .query(&[("match[]", selector.trim())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let values = resp["data"].as_array().cloned().unwrap_or_default();
        println!("variable {}: {values:?}", v["name"]);
        if values.is_empty() {
            failures.push(format!("variable {}: no values for {def}", v["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries without data:\n{}\n{}",
        failures.len(),
        failures.len() + answered,
        failures.join("\n"),
        prom.log()
    );
    println!(
        "{answered} dashboard queries answered with data in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The alerting rules, evaluated by this Prometheus on the live daemon.
    let expected = [
        "CanarydRolledBack",
        "CanarydNotificationsFailing",
        "CanarydSourceFailing",
    ];
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let alerts: Value = http
            .get(format!("{}/api/v1/alerts", prom.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
            .collect();
        if expected.iter().all(|a| seen.contains(*a)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("alerts pending or firing: {seen:?}");
    for a in expected {
        assert!(
            seen.contains(a),
            "{a} is neither pending nor firing: {seen:?}"
        );
    }
    for a in ["CanarydDown", "CanarydAbsent", "CanarydRouterFailing"] {
        assert!(
            !seen.contains(a),
            "{a} is active on a healthy daemon: {seen:?}"
        );
    }
    drop(scenario);
}
