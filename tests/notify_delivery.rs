//! Notifications end to end: the real daemon, real receivers on loopback (a
//! Python `http.server`, `tests/notify_support/receiver.py`).
//!
//! - Every format's payloads, snapshotted (`tests/notify_expect/`;
//!   `UPDATE_EXPECT=1` rewrites them), and every generic webhook delivery
//!   verified by the very verifier `docs/notifications.md` documents.
//! - A receiver down for a while (`CANARYD_NOTIFY_DOWN_SECS`, default 30 s
//!   to keep CI's suite short; 120 is the issue's two minutes)
//!   with a daemon SIGKILL and restart in between: every event arrives, in
//!   order per rollout, and the delivery latency after the receiver comes
//!   back is measured (printed; bounded by the configured maximum pause).
//! - An HTTPS receiver (Python's `ssl`, certificates from
//!   `tests/tls_support/ca.rs`): reached with its CA as `caFile`; with
//!   another CA refused, the reason in the rollout's notifications status.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
#[path = "tls_support/ca.rs"]
mod test_ca;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{Api, Daemon, eventually};
use serde_json::{Value, json};

/// Waits at 10% for `risk`, then bakes at 50% for an hour: it stays put
/// while a test steers it; a 2% error-rate threshold rolls it back.
const NOTIFY_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: notify
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - approval: { roles: [risk] }
    - setWeight: 50
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
"#;

const SECRET: &str = "a-test-secret-of-32-bytes-000000";
const ADMIN: &str = "admin-token-for-the-notification-tests";
const APPROVER: &str = "risk-approver-token-for-the-notification-tests";

/// A loopback port with nothing listening on it (for now).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The verifier's code block of `docs/notifications.md`, as a file.
fn documented_verifier(dir: &Path) -> PathBuf {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/notifications.md"
    ))
    .unwrap();
    let block = doc
        .split("<!-- verifier:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- verifier:end -->").next())
        .expect("docs/notifications.md marks its verifier");
    let code = block
        .trim()
        .strip_prefix("```python")
        .and_then(|c| c.strip_suffix("```"))
        .expect("the verifier is one python code block");
    let path = dir.join("verifier.py");
    std::fs::write(&path, code).unwrap();
    path
}

/// `receiver.py` as a child: listening on `port`, every request appended to
/// its output file; killed on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16) -> Receiver {
        let out = dir.join(format!("received-{port}.jsonl"));
        let secret = dir.join("receiver.secret");
        std::fs::write(&secret, SECRET).unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/notify_support/receiver.py"
            ))
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .arg("--verifier")
            .arg(documented_verifier(dir))
            .arg("--secret-file")
            .arg(&secret)
            .arg("--files")
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), port.to_string(), "the receiver listens");
        Receiver { child, out }
    }

    /// Everything received so far, in arrival order.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's config: a Slack, a Teams and a signed webhook receiver at
/// `port`, every event of every service to each.
fn config(port: u16, secret_file: &Path, max_interval: &str) -> String {
    format!(
        r#"notifications:
  retryFor: 1h
  retryMaxInterval: {max_interval}
  receivers:
    chat: {{ slack: {{ url: "http://127.0.0.1:{port}/slack" }} }}
    channel: {{ teams: {{ url: "http://127.0.0.1:{port}/teams" }} }}
    log: {{ webhook: {{ url: "http://127.0.0.1:{port}/webhook", secretFile: "{}" }} }}
  routes:
    - {{ receivers: [chat, channel, log] }}
"#,
        secret_file.display()
    )
}

fn start_daemon(port: u16, max_interval: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("log.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let sha = canaryd::daemon::auth::sha256_hex;
    let tokens = format!(
        "tokens:\n  - {{ actor: ops, sha256: \"{}\", roles: [admin] }}\n  - {{ actor: rita, sha256: \"{}\", roles: [\"approver:risk\"] }}\n",
        sha(ADMIN),
        sha(APPROVER)
    );
    let mut d = Daemon::start_with_policies(
        &format!("{tokens}{}", config(port, &secret, max_interval)),
        &[("notify.yaml", NOTIFY_POLICY)],
    );
    d.token = ADMIN.to_string();
    // The secret's dir lives as long as the daemon's own.
    std::mem::forget(dir);
    d
}

async fn command(api: &Api, id: &str, action: &str, body: Value) {
    let a = api.post(&format!("/v1/rollouts/{id}/{action}"), body).await;
    assert_eq!(a.status, 200, "{action}: {}", a.body);
}

/// The kind of each delivery to `path`, in arrival order, per rollout.
fn kinds_by_rollout(received: &[Value], path: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in received.iter().filter(|r| r["path"] == path) {
        // At least once: a retried delivery keeps its id.
        if !seen.insert(
            r["headers"]["x-canaryd-delivery"]
                .as_str()
                .unwrap()
                .to_string(),
        ) {
            continue;
        }
        out.entry(
            r["headers"]["x-canaryd-rollout"]
                .as_str()
                .unwrap()
                .to_string(),
        )
        .or_default()
        .push(
            r["headers"]["x-canaryd-event"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    out
}

/// A delivery with what changes from run to run replaced: ids, instants,
/// the port; and, in a rollback's evidence, every number (how many
/// intervals a rollback takes depends on timing).
fn normalized(r: &Value, id: &str, port: u16) -> String {
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let kind = r["headers"]["x-canaryd-event"].as_str().unwrap();
    let mut text = serde_json::to_string_pretty(&json!({
        "path": r["path"],
        "event": kind,
        "content-type": r["headers"]["content-type"],
        "signed": r["headers"].get("x-canaryd-signature").is_some(),
        "body": body,
    }))
    .unwrap();
    text = text
        .replace(id, "ROLLOUT")
        .replace(&port.to_string(), "PORT");
    let instant = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").unwrap();
    text = instant.replace_all(&text, "AT").into_owned();
    if kind == "rolled-back" {
        let number = regex::Regex::new(r"\d+(,\d{3})*(\.\d+)?(e-?\d+)?").unwrap();
        text = number.replace_all(&text, "N").into_owned();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_gets_every_event_with_its_payload_signed_as_documented() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(work.path(), port);
    let d = start_daemon(port, "2s");
    let api = d.client();
    let started = api.start("web", "notify").await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    eventually("awaiting approval", Duration::from_secs(20), || async {
        api.rollout(&id).await["state"] == "awaiting-approval"
    })
    .await;
    let why = |reason: &str| json!({ "reason": reason, "ticket": "CHG-7" });
    let approver = api.with_token(Some(APPROVER));
    command(
        &approver,
        &id,
        "approve",
        json!({ "role": "risk", "reason": "looks fine" }),
    )
    .await;
    command(&api, &id, "pause", why("checking a dashboard")).await;
    command(&api, &id, "resume", why("dashboard is fine")).await;
    eventually("the rollback", Duration::from_secs(60), || async {
        let _ = api.try_push(&id, 200, 0.0, 0.3).await;
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    let want = [
        "started",
        "awaiting-approval",
        "paused",
        "resumed",
        "rolled-back",
    ];
    eventually("every delivery", Duration::from_secs(30), || async {
        receiver.received().len() >= 3 * want.len()
    })
    .await;
    let received = receiver.received();
    for path in ["/slack", "/teams", "/webhook"] {
        assert_eq!(
            kinds_by_rollout(&received, path)[&id],
            want,
            "{path}: every event, in order"
        );
    }
    for r in received.iter().filter(|r| r["path"] == "/webhook") {
        assert_eq!(r["verified"], true, "the documented verifier accepts {r}");
        assert_eq!(r["tampered_verified"], false, "and refuses a changed body");
    }
    let mut snapshot = String::new();
    for path in ["/slack", "/teams", "/webhook"] {
        for r in received.iter().filter(|r| r["path"] == path) {
            snapshot.push_str(&normalized(r, &id, port));
            snapshot.push('\n');
        }
    }
    expect_test::expect_file!["notify_expect/deliveries.txt"].assert_eq(&snapshot);

    // The rollout shows where its notifications stand, and /metrics counts them.
    let view = api.rollout(&id).await;
    let status = view["notifications"].as_array().unwrap();
    assert_eq!(status.len(), 3, "{view}");
    for s in status {
        assert_eq!(
            (
                s["pending"].as_u64(),
                s["delivered"].as_u64(),
                s["failed"].as_u64()
            ),
            (Some(0), Some(5), Some(0)),
            "{s}"
        );
        assert!(s["last_error"].is_null(), "{s}");
    }
    let metrics = api.metrics().await;
    for receiver in ["chat", "channel", "log"] {
        let line = format!(
            "canaryd_notifications_delivered_total{{service=\"web\",receiver=\"{receiver}\"}} 5"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

/// How long the receiver stays down: 30 s by default; the issue's bar, two
/// minutes, with `CANARYD_NOTIFY_DOWN_SECS=120` (the retry schedule does
/// not change with it: past a few of its maximum pauses, down time only
/// adds waiting).
fn down_for() -> Duration {
    let secs = std::env::var("CANARYD_NOTIFY_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_minutes_across_a_restart_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let max_pause = Duration::from_secs(5);
    let mut d = start_daemon(port, "5s");
    let down_since = Instant::now();
    let api = d.client();
    let mut ids = Vec::new();
    for service in ["web", "api"] {
        let started = api.start(service, "notify").await;
        assert_eq!(started.status, 201, "{}", started.body);
        ids.push(started.body["id"].as_str().unwrap().to_string());
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    for id in &ids {
        eventually("awaiting approval", Duration::from_secs(20), || async {
            api.rollout(id).await["state"] == "awaiting-approval"
        })
        .await;
    }
    command(&api, &a, "pause", json!({ "reason": "before the restart" })).await;
    eventually(
        "failed attempts, recorded",
        Duration::from_secs(20),
        || async {
            let v = api.rollout(&a).await;
            v["notifications"].as_array().is_some_and(|s| {
                s.len() == 3
                    && s.iter().all(|s| {
                        s["pending"] == 3
                            && s["last_error"].is_string()
                            && s["next_attempt_at"].is_string()
                    })
            })
        },
    )
    .await;
    tokio::time::sleep(down_for() / 3).await;

    // SIGKILL: the pending deliveries are in the store, the first of each
    // rollout's line to each receiver with its attempts and when the next
    // is due; the ones behind it wait their turn, untried.
    d.kill9();
    let before_restart = {
        let store = canaryd::store::Store::open_read_only(d.data_dir()).unwrap();
        let pending = store.pending_notifications().unwrap();
        assert_eq!(pending.len(), 3 * 5, "{pending:?}");
        let mut heads = std::collections::BTreeSet::new();
        for n in &pending {
            let head = heads.insert((n.rollout_id.clone(), n.receiver.clone()));
            assert_eq!(
                (n.attempts >= 1, n.next_attempt_at.is_some()),
                (head, head),
                "{n:?}"
            );
        }
        pending
            .iter()
            .map(|n| (n.id, n.attempts))
            .collect::<BTreeMap<_, _>>()
    };
    d.spawn();
    let api = d.client();
    command(&api, &a, "resume", json!({ "reason": "after the restart" })).await;
    command(&api, &b, "abort", json!({ "reason": "after the restart" })).await;
    let remaining = down_for().saturating_sub(down_since.elapsed());
    tokio::time::sleep(remaining).await;
    let view = api.rollout(&a).await;
    for s in view["notifications"].as_array().unwrap() {
        assert_eq!(s["pending"], 4, "nothing delivered while down: {s}");
        assert_eq!(s["delivered"], 0, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
        let error = s["last_error"].as_str().unwrap();
        assert!(error.contains("Connection refused"), "{error}");
    }
    {
        let store = canaryd::store::Store::open_read_only(d.data_dir()).unwrap();
        for n in store.pending_notifications().unwrap() {
            if let Some(before) = before_restart.get(&n.id).filter(|b| **b > 0) {
                assert!(
                    n.attempts > *before,
                    "attempts counted on across the restart: {n:?}"
                );
            }
        }
    }

    // The receiver comes back.
    let receiver = Receiver::start(work.path(), port);
    let back = Instant::now();
    let want_a = ["started", "awaiting-approval", "paused", "resumed"];
    let want_b = ["started", "awaiting-approval", "aborted"];
    let total = 3 * (want_a.len() + want_b.len());
    let mut first = None;
    let deadline = back + max_pause + Duration::from_secs(30);
    let all_in = loop {
        let n = receiver.received().len();
        if n > 0 && first.is_none() {
            first = Some(back.elapsed());
        }
        if n >= total {
            break back.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {total} deliveries {:?} after the receiver came back",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let received = receiver.received();
    for path in ["/slack", "/teams", "/webhook"] {
        let kinds = kinds_by_rollout(&received, path);
        assert_eq!(kinds[&a], want_a, "{path}: rollout a, in order");
        assert_eq!(kinds[&b], want_b, "{path}: rollout b, in order");
    }
    for r in received.iter().filter(|r| r["path"] == "/webhook") {
        assert_eq!(
            r["verified"], true,
            "signed at its own attempt, hours later too: {r}"
        );
    }
    eprintln!(
        "receiver down {:?} with a SIGKILL and restart; after it came back: first delivery in {:?}, all {total} in {all_in:?} (maximum pause {max_pause:?})",
        down_for(),
        first.unwrap_or_default(),
    );
    assert!(
        all_in <= max_pause + Duration::from_secs(10),
        "every delivery within the maximum pause of the receiver's return: {all_in:?}"
    );
    eventually(
        "every delivery recorded",
        Duration::from_secs(10),
        || async {
            let v = api.rollout(&a).await;
            v["notifications"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["delivered"] == 4 && s["pending"] == 0))
        },
    )
    .await;
}

/// An incident webhook whose receiver is down for longer than the daemon's
/// router retries (5 tries within 1.7 s) still arrives once the receiver is
/// back, without a restart: incident webhooks use the notification
/// schedule (hours) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_webhook_outlasts_a_receiver_down_for_seconds() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let policy = daemon_support::FAST_POLICY
        .replace("name: fast", "name: paging")
        .replace(
            "http://127.0.0.1:9/unreachable",
            &format!("http://127.0.0.1:{port}/oncall"),
        );
    let d = Daemon::start_with_policies("", &[("paging.yaml", &policy)]);
    let api = d.client();
    let id = api.start("web", "paging").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the rollback", Duration::from_secs(30), || async {
        let _ = api.try_push(&id, 100, 0.0, 0.2).await;
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let receiver = Receiver::start(work.path(), port);
    eventually(
        "the incident webhook after the receiver came back",
        Duration::from_secs(40),
        || async { receiver.received().iter().any(|r| r["path"] == "/oncall") },
    )
    .await;
    let incident = &receiver.received()[0];
    let body: Value = serde_json::from_str(incident["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["rollout_id"],
        id.as_str(),
        "its body as before: {body}"
    );
    assert_eq!(body["trigger"], "error-rate");
    let status = &api.rollout(&id).await["notifications"][0];
    assert_eq!(status["receiver"], "incident-webhook", "{status}");
}

/// An exposition with both signals' families, counters unchanged.
const EXPOSITION: &str = "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 10\nhttp_requests_total{code=\"500\"} 0\n";

/// A metric source that fails, recovers and fails again is told as three
/// edges, not once per interval; a restart while it fails tells nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_told_once_per_edge_also_across_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(work.path(), port);
    let serve = |on: bool| {
        for arm in ["baseline", "canary"] {
            let file = work.path().join(arm);
            if on {
                std::fs::write(&file, EXPOSITION).unwrap();
            } else {
                let _ = std::fs::remove_file(&file);
            }
        }
    };
    serve(true);
    let secret = work.path().join("log.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = format!(
        r#"  scraped:
    router: {{ file: {{ path: {{dir}}/scraped.json }} }}
    source:
      prometheusScrape:
        baseline: http://127.0.0.1:{port}/files/baseline
        canary: http://127.0.0.1:{port}/files/canary
        timeout: 1s
        signals: {{ requests: 'http_requests_total', errors: 'http_requests_total{{code=~"5.."}}' }}
notifications:
  receivers:
    log: {{ webhook: {{ url: "http://127.0.0.1:{port}/webhook", secretFile: "{}" }} }}
  routes:
    - {{ events: [source-failing, source-recovered], receivers: [log] }}
"#,
        secret.display()
    );
    let mut d = Daemon::start_with_policies(&config, &[("notify.yaml", NOTIFY_POLICY)]);
    let api = d.client();
    let started = api.start("scraped", "notify").await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    let source_is = |status: &'static str| {
        let api = api.clone();
        let id = id.clone();
        async move {
            eventually(status, Duration::from_secs(20), || async {
                api.rollout(&id).await["source"]["status"] == status
            })
            .await
        }
    };
    let told = || -> Vec<String> {
        kinds_by_rollout(&receiver.received(), "/webhook")
            .remove(&id)
            .unwrap_or_default()
    };
    source_is("ok").await;
    serve(false);
    source_is("failing").await;
    // Several failing intervals: still one event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    serve(true);
    source_is("ok").await;
    serve(false);
    source_is("failing").await;
    eventually("three edges told", Duration::from_secs(20), || async {
        told().len() >= 3
    })
    .await;

    d.kill9();
    d.spawn();
    let api = d.client();
    eventually(
        "failing after the restart",
        Duration::from_secs(20),
        || async { api.rollout(&id).await["source"]["status"] == "failing" },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        told(),
        ["source-failing", "source-recovered", "source-failing"]
    );
    let failing = receiver
        .received()
        .into_iter()
        .find(|r| r["headers"]["x-canaryd-event"] == "source-failing")
        .unwrap();
    let body: Value = serde_json::from_str(failing["body"].as_str().unwrap()).unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("503"), "the source's error: {error}");
}

/// A router that keeps failing (retried every few seconds) is told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_failing_again_and_again_is_told_once() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::start(work.path(), port);
    let secret = work.path().join("log.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = format!(
        r#"  broken:
    router: {{ file: {{ path: {{dir}}/no-such-dir/weights.json }} }}
notifications:
  receivers:
    log: {{ webhook: {{ url: "http://127.0.0.1:{port}/webhook", secretFile: "{}" }} }}
  routes:
    - {{ events: [router-failure], receivers: [log] }}
"#,
        secret.display()
    );
    let d = Daemon::start_with_policies(&config, &[("notify.yaml", NOTIFY_POLICY)]);
    let api = d.client();
    let started = api.start("broken", "notify").await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    let errors = || async {
        let metrics = api.metrics().await;
        metrics
            .lines()
            .find(|l| l.starts_with("canaryd_router_errors_total{service=\"broken\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The first apply's attempts, then at least two retries of it.
    eventually("the router retried", Duration::from_secs(30), || async {
        errors().await >= 15
    })
    .await;
    eventually("the failure told", Duration::from_secs(10), || async {
        !receiver.received().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let told = kinds_by_rollout(&receiver.received(), "/webhook");
    assert_eq!(told[&id], ["router-failure"], "{told:?}");
    let body: Value =
        serde_json::from_str(receiver.received()[0]["body"].as_str().unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no-such-dir"),
        "{body}"
    );
}

/// An HTTPS receiver with a certificate from a CA the test made: a
/// receiver configured with that CA gets its deliveries, signed; one
/// configured with another CA is refused, and the rollout's notifications
/// status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_is_reached_with_its_ca_and_a_wrong_ca_is_refused_clearly() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let files = test_ca::TlsFiles::write(dir);
    let port = free_port();
    let out = dir.join("received-tls.jsonl");
    std::fs::write(dir.join("receiver.secret"), SECRET).unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/notify_support/receiver.py"
        ))
        .args(["--port", &port.to_string(), "--out"])
        .arg(&out)
        .arg("--cert")
        .arg(&files.server_cert)
        .arg("--key")
        .arg(&files.server_key)
        .arg("--verifier")
        .arg(documented_verifier(dir))
        .arg("--secret-file")
        .arg(dir.join("receiver.secret"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the test receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let receiver = Receiver { child, out };
    let config = format!(
        r#"notifications:
  retryMaxInterval: 1s
  receivers:
    trusted: {{ webhook: {{ url: "https://127.0.0.1:{port}/webhook", secretFile: "{d}/receiver.secret", caFile: "{ca}" }} }}
    mistrusted: {{ slack: {{ url: "https://127.0.0.1:{port}/slack", caFile: "{wrong}" }} }}
  routes:
    - {{ events: [started], receivers: [trusted, mistrusted] }}
"#,
        d = dir.display(),
        ca = files.ca.display(),
        wrong = files.wrong_ca.display(),
    );
    let d = Daemon::start_with_policies(&config, &[("notify.yaml", NOTIFY_POLICY)]);
    let api = d.client();
    let started = api.start("web", "notify").await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().unwrap().to_string();
    eventually("the trusted delivery", Duration::from_secs(20), || async {
        !receiver.received().is_empty()
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "only the trusted receiver's: {got:?}");
    assert_eq!(got[0]["path"], "/webhook");
    assert_eq!(got[0]["verified"], true);
    let mistrusted = || async {
        api.rollout(&id).await["notifications"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["receiver"] == "mistrusted").cloned())
    };
    eventually("the refusal recorded", Duration::from_secs(20), || async {
        mistrusted()
            .await
            .is_some_and(|s| s["last_error"].is_string())
    })
    .await;
    let s = mistrusted().await.unwrap();
    assert_eq!(
        (s["pending"].as_u64(), s["delivered"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "the error says the certificate's issuer is not trusted: {error}"
    );
}
