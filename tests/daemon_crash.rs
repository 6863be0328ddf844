//! Crash test of the real daemon: several rollouts with pushed traffic,
//! SIGKILL at seeded random points, restart, and check after every restart
//! that nothing committed was lost:
//! - every rollout is at the step (or later) and in the state it was last
//!   seen in, and a terminal rollout stays as it ended;
//! - the audit log still begins with every entry seen before the kill
//!   (same seq, same MAC), and `audit verify` passes;
//! - every incident seen before the kill is still there;
//! - the file router's weight is reconciled with the rollout's weight.
//!
//! Finally the healthy rollouts promote and the failing one rolls back.

mod daemon_support;

use std::collections::BTreeMap;
use std::time::Duration;

use daemon_support::{Daemon, eventually, read_json};
use serde_json::{Value, json};

const KILLS: usize = 20;

const CRASHY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: crashy
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 2s
    - setWeight: 25
    - bake: 2s
    - setWeight: 50
    - bake: 2s
    - setWeight: 75
    - bake: 2s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 3% }
"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn rank(state: &str) -> u8 {
    match state {
        "pending" => 0,
        "progressing" | "paused" | "awaiting-approval" => 1,
        "rolling-back" => 2,
        _ => 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    let mut d = Daemon::start_with_policies(
        "  svc-a:\n    router: { file: { path: {dir}/svc-a.json } }\n  svc-b:\n    router: { file: { path: {dir}/svc-b.json } }\n",
        &[("crashy.yaml", CRASHY)],
    );
    let dir = d.dir.path().to_path_buf();

    let services = ["web", "api", "svc-a", "svc-b"];
    // svc-b's canaries fail 12% of requests; the others are healthy. A
    // service whose rollout ended gets a new one, so every kill lands
    // among rollouts in flight.
    let canary_err = |s: &str| if s == "svc-b" { 0.12 } else { 0.0 };
    let mut all: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut version = 1;
    let mut rng = Rng(0x5eed);
    for kill in 0..KILLS {
        let api = d.client();
        for s in services {
            let ended = match all.get(s).and_then(|v| v.last()) {
                None => true,
                Some(id) => !api.rollout(id).await["outcome"].is_null(),
            };
            if ended {
                version += 1;
                let a = api
                    .post(
                        "/v1/rollouts",
                        json!({"service": s, "canary": format!("v{version}"), "baseline": "v1",
                               "policy": "crashy", "reason": "crash test"}),
                    )
                    .await;
                assert_eq!(a.status, 201, "{:?}", a.body);
                all.entry(s)
                    .or_default()
                    .push(a.body["id"].as_str().unwrap().to_string());
            }
        }
        let ids: BTreeMap<&str, String> = all
            .iter()
            .map(|(s, v)| (*s, v.last().unwrap().clone()))
            .collect();
        // Traffic for a random while, then a snapshot of what was committed.
        let run_ms = 200 + rng.next() % 1500;
        let until = tokio::time::Instant::now() + Duration::from_millis(run_ms);
        while tokio::time::Instant::now() < until {
            for s in services {
                api.push(&ids[s], 15, 0.0, canary_err(s)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut seen = BTreeMap::new();
        for (s, list) in &all {
            for id in list {
                seen.insert(id.clone(), (*s, api.rollout(id).await));
            }
        }
        eprintln!(
            "kill {kill}: {}",
            services
                .iter()
                .map(|s| {
                    let r = &seen[&ids[s]].1;
                    format!("{s} {} step {}", r["state"], r["step"])
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let audit_before = api.get("/v1/audit").await.body;
        let incidents_before = api.get("/v1/incidents").await.body;
        // Keep pushing while the kill lands at a random point.
        let pusher = {
            let api = api.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    for s in services {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            api.try_push(&ids[s], 15, 0.0, canary_err(s)),
                        )
                        .await;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(rng.next() % 400)).await;
        d.kill9();
        pusher.abort();
        d.spawn();

        let api = d.client();
        for (id, (s, before)) in &seen {
            let after = api.rollout(id).await;
            let (b_state, a_state) = (
                before["state"].as_str().unwrap(),
                after["state"].as_str().unwrap(),
            );
            assert!(
                rank(a_state) >= rank(b_state),
                "kill {kill}: {s} {id} went from {b_state} back to {a_state}"
            );
            if rank(b_state) == 3 {
                assert_eq!(
                    a_state, b_state,
                    "kill {kill}: {s} {id} changed after it ended"
                );
            }
            assert!(
                after["step"].as_u64() >= before["step"].as_u64(),
                "kill {kill}: {s} {id} lost steps: {} -> {}",
                before["step"],
                after["step"]
            );
        }
        let audit_after = api.get("/v1/audit").await.body;
        let (b, a) = (
            audit_before.as_array().unwrap(),
            audit_after.as_array().unwrap(),
        );
        assert!(
            a.len() >= b.len(),
            "kill {kill}: audit shrank {} -> {}",
            b.len(),
            a.len()
        );
        for (x, y) in b.iter().zip(a) {
            assert_eq!(
                (&x["seq"], &x["mac"]),
                (&y["seq"], &y["mac"]),
                "kill {kill}: audit entry changed"
            );
        }
        let incidents_after = api.get("/v1/incidents").await.body;
        for inc in incidents_before.as_array().unwrap() {
            assert!(
                incidents_after
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["id"] == inc["id"]),
                "kill {kill}: incident {} lost",
                inc["id"]
            );
        }
        assert_eq!(
            api.get("/v1/audit/verify").await.body["ok"],
            true,
            "kill {kill}"
        );
        // The router is reconciled with the committed weight.
        for s in services {
            let file = dir.join(format!("{s}.json"));
            let id = ids[s].clone();
            eventually("router reconciled", Duration::from_secs(10), || {
                let api = api.clone();
                let id = id.clone();
                let file = file.clone();
                async move {
                    let r = api.rollout(&id).await;
                    read_json(&file)["canary_weight"] == r["weight"]
                        || !r["pending_weight"].is_null()
                }
            })
            .await;
        }
    }

    // Let the last rollouts finish: healthy canaries promote, bad ones roll back.
    let api = d.client();
    let ids: BTreeMap<&str, String> = all
        .iter()
        .map(|(s, v)| (*s, v.last().unwrap().clone()))
        .collect();
    eventually("every rollout ended", Duration::from_secs(90), || {
        let api = api.clone();
        let ids = ids.clone();
        async move {
            let mut done = true;
            for s in services {
                let r = api.rollout(&ids[s]).await;
                if r["outcome"].is_null() {
                    done = false;
                    let _ = api.push(&ids[s], 15, 0.0, canary_err(s)).await;
                }
            }
            done
        }
    })
    .await;
    let incidents: Value = api.get("/v1/incidents").await.body;
    let mut rollouts = 0;
    for (s, list) in &all {
        for id in list {
            rollouts += 1;
            let r = api.rollout(id).await;
            let want = if *s == "svc-b" {
                "rolled-back"
            } else {
                "promoted"
            };
            assert_eq!(r["outcome"], want, "{s}: {r}");
            let opened = incidents
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["rollout_id"] == id.as_str())
                .count();
            assert_eq!(opened, usize::from(*s == "svc-b"), "{s} {id}: {incidents}");
        }
        let weight = read_json(&dir.join(format!("{s}.json")))["canary_weight"].clone();
        let last = api.rollout(list.last().unwrap()).await;
        assert_eq!(weight, last["weight"], "{s}: router and rollout disagree");
    }
    eprintln!("{rollouts} rollouts across {KILLS} kills");
    d.kill9();
    let out = std::process::Command::new(daemon_support::bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
