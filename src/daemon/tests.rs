//! The daemon in-process, as `start` takes it: a listener bound by the
//! test on `127.0.0.1:0` and a [`ManualClock`]. Every time the daemon
//! records comes from that clock: the start, the audit log, and the
//! windows the drivers close (they wake every analysis interval, in real
//! time, and read the clock).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::clock::{Clock, ManualClock};
use super::config::parse_config;
use super::{read_admin_token, start};
use crate::time::Timestamp;
use crate::wire::rfc3339;

const HOUR_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: hour
spec:
  analysis:
    interval: 1s
    minSamples: 1
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
      threshold: { above: 5% }
"#;

/// A standard change of `web` from v1 to v2, for tests that drive an
/// engine rollout by hand.
pub(super) fn web_spec() -> crate::engine::RolloutSpec {
    crate::engine::RolloutSpec {
        id: "r-1".into(),
        service: "web".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type: crate::policy::ChangeType::Standard,
        dry_run: false,
        started_by: "ana".into(),
        reason: None,
        ticket: Some("CHG-1".into()),
    }
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_takes_its_listener_and_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/hour.yaml"), HOUR_POLICY).unwrap();
    let d = dir.path().display();
    // `listen` is the caller's business: start serves where it is told.
    let yaml = format!(
        "listen: 127.0.0.1:1\ndataDir: {d}/data\npolicies: {d}/policies\nservices:\n  web: {{}}\n"
    );
    let config = parse_config("test.yaml", yaml.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t0 = Timestamp::from_millis(1_000_000_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let running = start(config, listener, clock.clone()).await.unwrap();
    assert_eq!(running.addr, addr);

    let http = reqwest::Client::new();
    let token = read_admin_token(&dir.path().join("data")).unwrap();
    let base = format!("http://{addr}");
    let started = http
        .post(format!("{base}/v1/rollouts"))
        .bearer_auth(&token)
        .json(&json!({"service": "web", "canary": "v2", "baseline": "v1",
                      "policy": "hour", "dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let r: Value = started.json().await.unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["started_at"], rfc3339(t0));
    assert_eq!(r["weight"], 10);

    // An hour and a minute pass by the daemon's clock: the driver, which
    // wakes every interval, closes a window at the clock's time.
    clock.advance(Duration::from_secs(61 * 60));
    let later = rfc3339(clock.now());
    let mut r = Value::Null;
    for _ in 0..50 {
        r = get(&http, format!("{base}/v1/rollouts/{id}"), &token).await;
        if r["updated_at"] == later {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r["updated_at"], later, "{r}");
    assert_eq!(r["time_in_step_s"], 61 * 60, "{r}");

    let audit = get(&http, format!("{base}/v1/audit"), &token).await;
    let start_entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.start")
        .cloned()
        .unwrap();
    assert_eq!(start_entry["at"], json!(t0), "{start_entry}");
    running.stop().await.unwrap();
}

/// A daemon on a temp dir with the `hour` policy and a `web` service, on a
/// [`ManualClock`]: the dir (kept alive), the daemon, its base URL and the
/// admin token.
async fn serving_hour_policy() -> (tempfile::TempDir, super::Running, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/hour.yaml"), HOUR_POLICY).unwrap();
    let d = dir.path().display();
    let yaml = format!(
        "listen: 127.0.0.1:1\ndataDir: {d}/data\npolicies: {d}/policies\nservices:\n  web: {{}}\n"
    );
    let config = parse_config("test.yaml", yaml.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000_000_000)));
    let running = start(config, listener, clock).await.unwrap();
    let token = read_admin_token(&dir.path().join("data")).unwrap();
    let base = format!("http://{}", running.addr);
    (dir, running, base, token)
}

/// A dry-run rollout of `web` on the `hour` policy; its id.
async fn started_rollout(http: &reqwest::Client, base: &str, token: &str) -> String {
    let started: Value = http
        .post(format!("{base}/v1/rollouts"))
        .bearer_auth(token)
        .json(&json!({"service": "web", "canary": "v2", "baseline": "v1",
                      "policy": "hour", "dry_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    started["id"].as_str().unwrap().to_string()
}

/// Issue #19: a group commit holds the store through its fsync; a live
/// rollout's `GET /v1/rollouts/{id}` must not wait for it. The store is
/// held here (as a long commit would) until the answer has come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_rollout_is_answered_while_the_store_is_busy() {
    let (_dir, running, base, token) = serving_hour_policy().await;
    let http = reqwest::Client::new();
    let id = started_rollout(&http, &base, &token).await;

    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let shared = running.shared.clone();
    let holder = std::thread::spawn(move || {
        shared.with_store(|_| {
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
    });
    locked_rx.recv().unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        get(&http, format!("{base}/v1/rollouts/{id}"), &token),
    )
    .await;
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let r = answer.expect("GET /v1/rollouts/{id} waited for the store");
    assert_eq!(r["id"], id.as_str(), "{r}");
    assert_eq!(r["weight"], 10, "{r}");
    running.stop().await.unwrap();
}

/// Issue #19: steps that write a checkpoint wait for room among
/// `CHECKPOINTS_IN_FLIGHT`, so rollouts stepping together cannot all hold
/// their checkpoint's JSON at once. With every permit taken, an abort (a
/// step that ends the rollout, so it checkpoints) waits; once they are
/// given back it is committed and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointing_step_waits_for_room_among_those_in_flight() {
    let (_dir, running, base, token) = serving_hour_policy().await;
    let http = reqwest::Client::new();
    let id = started_rollout(&http, &base, &token).await;

    let taken = running
        .shared
        .checkpoints_in_flight
        .clone()
        .acquire_many_owned(super::driver::CHECKPOINTS_IN_FLIGHT as u32)
        .await
        .unwrap();
    let abort = tokio::spawn({
        let (http, url, token) = (
            http.clone(),
            format!("{base}/v1/rollouts/{id}/abort"),
            token.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"reason": "test"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // Bounded: the abort is not answered while no permit is free.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!abort.is_finished(), "the abort committed without a permit");
    drop(taken);
    let status = tokio::time::timeout(Duration::from_secs(10), abort)
        .await
        .expect("the abort was not answered once permits were free")
        .unwrap();
    assert_eq!(status, 200);
    let r = get(&http, format!("{base}/v1/rollouts/{id}"), &token).await;
    assert_eq!(r["state"], "aborted", "{r}");
    running.stop().await.unwrap();
}
