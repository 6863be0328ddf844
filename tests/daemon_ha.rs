//! Several daemons on one PostgreSQL database (issue #20): three real
//! `canaryd serve` processes on loopback, a real server (`pg_support`),
//! file routers that every daemon writes to the same file, pushed traffic.
//!
//! - SIGKILL the owner of a rollout mid-way, again and again: another
//!   daemon takes it over within the lease (takeover times printed), the
//!   router's weight equals the rollout's recorded weight, the rollout
//!   ends as it would have (promoted, or rolled back with one incident),
//!   and the audit chain verifies.
//! - SIGSTOP the owner past its lease, let another take over, SIGCONT:
//!   the old owner commits nothing and moves no traffic, and says so in
//!   its log.
//! - Commands sent to a daemon that does not drive the rollout are
//!   applied once, also when its owner is killed meanwhile.
//! - PostgreSQL restarted under load: the daemons wait, and the rollouts
//!   go on to the end they would have had.
//!
//! `CANARYD_HA_KILLS=N` sets the number of kills (default 10).

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::json;

mod daemon_support;
mod pg_support;
use daemon_support::{Daemon, eventually, read_json};

/// Steps long enough to be killed in, short enough to finish in a test.
const STEPPED: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: stepped
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 6s
    - setWeight: 30
    - bake: 6s
    - setWeight: 60
    - bake: 6s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 3% }
"#;

/// Three daemons sharing one database, one key and the routers' files.
struct Cluster {
    daemons: Vec<Daemon>,
    shared: tempfile::TempDir,
    /// The database's URL, for what the test reads of it directly.
    url: String,
}

const INSTANCES: [&str; 3] = ["a", "b", "c"];

const LEASE: &str = "3s";

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_on(pg_support::server())
    }

    /// On a server of the test's own (one it may restart).
    fn start_on(server: &pg_support::PgServer) -> Cluster {
        let database = server.database();
        let shared = tempfile::tempdir().unwrap();
        let key = shared.path().join("audit.key");
        std::fs::write(&key, [9u8; 32]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let s = shared.path().display();
        let url = server.url(&database);
        let daemons = INSTANCES
            .iter()
            .map(|name| {
                Daemon::start_with_policies(
                    &format!(
                        "  good:\n    router: {{ file: {{ path: {s}/good.json }} }}\n  bad:\n    router: {{ file: {{ path: {s}/bad.json }} }}\nstorage:\n  postgres: {{ url: \"{}\", instance: {name}, lease: {LEASE} }}\naudit: {{ keyFile: {} }}\n",
                        url,
                        key.display()
                    ),
                    &[("stepped.yaml", STEPPED)],
                )
            })
            .collect();
        Cluster {
            daemons,
            shared,
            url,
        }
    }

    /// Start a `stepped` rollout of `service` through daemon `on`; its id.
    async fn start_rollout(&self, on: usize, service: &str) -> String {
        let a = self.daemons[on]
            .client()
            .post("/v1/rollouts", start_body(service))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    fn sql(&self, sql: &str) -> String {
        pg_support::psql_at(&self.url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn router_weight(&self, service: &str) -> serde_json::Value {
        read_json(&self.shared.path().join(format!("{service}.json")))["canary_weight"].clone()
    }

    /// Which daemon drives `id` now: a running one holding its live lease
    /// (bounded wait).
    async fn owner(&self, id: &str, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let owner = self.sql(&format!(
                "SELECT owner FROM leases WHERE rollout_id = '{id}'
                 AND expires_at > (extract(epoch from clock_timestamp()) * 1000)::BIGINT"
            ));
            if let Some(i) = INSTANCES.iter().position(|n| *n == owner)
                && self.daemons[i].child.is_some()
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "nobody took rollout {id} over within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The requests of each arm the rollout's journaled windows hold.
    fn journaled_requests(&self, id: &str) -> (u64, u64) {
        let sum = |arm: &str| -> u64 {
            self.sql(&format!(
                "SELECT coalesce(sum((body::json->'snapshot'->'{arm}'->'counters'->>'requests')::BIGINT), 0)
                 FROM journal WHERE rollout_id = '{id}' AND kind = 'input' AND body::json->>'input' = 'data'"
            ))
            .parse()
            .unwrap()
        };
        (sum("baseline"), sum("canary"))
    }
}

fn start_body(service: &str) -> serde_json::Value {
    json!({"service": service, "canary": "v2", "baseline": "v1", "policy": "stepped", "reason": "ha test"})
}

fn kills() -> usize {
    std::env::var("CANARYD_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_again_and_again_loses_nothing() {
    let mut c = Cluster::start();
    let api = c.daemons[0].client();
    let good = api.post("/v1/rollouts", start_body("good")).await;
    assert_eq!(good.status, 201, "{:?}", good.body);
    let good = good.body["id"].as_str().unwrap().to_string();
    // The same start through another daemon is the same rollout.
    let again = c.daemons[1]
        .client()
        .post("/v1/rollouts", start_body("good"))
        .await;
    assert_eq!(again.body["id"], good.as_str(), "{:?}", again.body);

    let mut takeovers = Vec::new();
    let mut seed: u64 = 0x4a11;
    for kill in 0..kills() {
        let owner = c.owner(&good, Duration::from_secs(20)).await;
        // Healthy traffic for a random while.
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let run = Duration::from_millis(300 + (seed >> 33) % 1500);
        let until = Instant::now() + run;
        while Instant::now() < until {
            let _ = c.daemons[owner]
                .client()
                .try_push(&good, 30, 0.0, 0.0)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = c.daemons[owner].client().rollout(&good).await;
        if !before["outcome"].is_null() {
            break;
        }
        c.daemons[owner].kill9();
        let killed_at = Instant::now();
        let next = c.owner(&good, Duration::from_secs(30)).await;
        let took = killed_at.elapsed();
        eprintln!(
            "kill {kill}: daemon {owner} killed at {} weight {}; daemon {next} took over in {took:?}",
            before["state"], before["weight"]
        );
        takeovers.push(took);
        c.daemons[owner].spawn();
    }

    // Healthy to the end: promoted, the router at 100.
    let owner = c.owner(&good, Duration::from_secs(20)).await;
    let api = c.daemons[owner].client();
    eventually("the promotion", Duration::from_secs(90), || async {
        let _ = api.try_push(&good, 30, 0.0, 0.0).await;
        !api.rollout(&good).await["outcome"].is_null()
    })
    .await;
    let r = api.rollout(&good).await;
    assert_eq!(r["outcome"], "promoted", "{r}");
    eventually(
        "the router at the rollout's weight",
        Duration::from_secs(10),
        || async { c.router_weight("good") == api.rollout(&good).await["weight"] },
    )
    .await;

    // A bad canary, its owner killed as it fails: rolled back, one incident.
    let bad = c.daemons[2]
        .client()
        .post("/v1/rollouts", start_body("bad"))
        .await;
    assert_eq!(bad.status, 201, "{:?}", bad.body);
    let bad = bad.body["id"].as_str().unwrap().to_string();
    let owner = c.owner(&bad, Duration::from_secs(20)).await;
    let _ = c.daemons[owner].client().try_push(&bad, 40, 0.0, 0.5).await;
    c.daemons[owner].kill9();
    let killed_at = Instant::now();
    let next = c.owner(&bad, Duration::from_secs(30)).await;
    takeovers.push(killed_at.elapsed());
    let api = c.daemons[next].client();
    eventually("the rollback", Duration::from_secs(60), || async {
        let _ = api.try_push(&bad, 60, 0.0, 0.5).await;
        !api.rollout(&bad).await["outcome"].is_null()
    })
    .await;
    let r = api.rollout(&bad).await;
    assert_eq!(r["outcome"], "rolled-back", "{r}");
    eventually("the router back at 0", Duration::from_secs(10), || async {
        c.router_weight("bad") == json!(0)
    })
    .await;
    let incidents = api.get("/v1/incidents").await.body;
    let of_bad: Vec<_> = incidents
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["rollout_id"] == bad.as_str())
        .collect();
    assert_eq!(of_bad.len(), 1, "{incidents}");

    // Every daemon verifies the one chain.
    for d in c.daemons.iter().filter(|d| d.child.is_some()) {
        let v = d.client().get("/v1/audit/verify").await;
        assert_eq!(v.body["ok"], true, "{:?}", v.body);
    }
    takeovers.sort();
    eprintln!(
        "takeover times: p50 {:?}, max {:?} over {} kills (lease {LEASE})",
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap(),
        takeovers.len()
    );
    assert!(*takeovers.last().unwrap() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_when_it_wakes() {
    let c = Cluster::start();
    let id = c.start_rollout(0, "good").await;
    let owner = c.owner(&id, Duration::from_secs(10)).await;
    let pid = c.daemons[owner].pid();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    // Its lease expires (it cannot renew) and another daemon takes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let next = loop {
        let next = c.owner(&id, Duration::from_secs(30)).await;
        if next != owner {
            break next;
        }
        assert!(Instant::now() < deadline, "nobody took the rollout over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let api = c.daemons[next].client();
    // The new owner moves the rollout on.
    for _ in 0..20 {
        let _ = api.try_push(&id, 30, 0.0, 0.0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit_before = api.audit_len().await;
    signal("-CONT");
    // The old owner wakes with its timers overdue: it must find out, and
    // commit and move nothing.
    eventually(
        "the old owner to say it was fenced",
        Duration::from_secs(20),
        || async {
            let log = c.daemons[owner].log_text();
            log.contains("fenced") || log.contains("lease lost")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = api.rollout(&id).await;
    assert_eq!(c.router_weight("good"), r["weight"], "{r}");
    // The router's last write carries the new owner's epoch.
    let epoch: u64 = c
        .sql(&format!(
            "SELECT epoch FROM leases WHERE rollout_id = '{id}'"
        ))
        .parse()
        .unwrap();
    assert!(epoch >= 2, "a takeover raised the epoch");
    let written = read_json(&c.shared.path().join("good.json"))["epoch"].clone();
    assert_eq!(written, json!(epoch));
    // The chain goes on from the new owner's entries, and holds.
    assert!(api.audit_len().await >= audit_before);
    let v = api.get("/v1/audit/verify").await;
    assert_eq!(v.body["ok"], true, "{:?}", v.body);
    // And it does not drive the rollout any more: the lease is another's.
    assert_eq!(c.owner(&id, Duration::from_secs(5)).await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_any_daemon_are_applied_once() {
    let c = Cluster::start();
    let id = c.start_rollout(0, "good").await;
    let owner = c.owner(&id, Duration::from_secs(10)).await;
    let other = c.daemons[(owner + 1) % 3].client();
    let audited = |log: &serde_json::Value, action: &str| {
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e["rollout_id"] == id.as_str())
            .count()
    };

    // Pause through a daemon that does not drive the rollout.
    let paused = other
        .post(
            &format!("/v1/rollouts/{id}/pause"),
            json!({"reason": "through another daemon", "ticket": "CHG-7"}),
        )
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["state"], "paused", "{:?}", paused.body);
    // Refused the same way as at the owner: pausing a paused rollout.
    let again = other
        .post(
            &format!("/v1/rollouts/{id}/pause"),
            json!({"reason": "twice"}),
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    // Resumed through the third daemon.
    let third = c.daemons[(owner + 2) % 3].client();
    let resumed = third
        .post(
            &format!("/v1/rollouts/{id}/resume"),
            json!({"reason": "through a third daemon"}),
        )
        .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["state"], "progressing", "{:?}", resumed.body);

    // Each applied exactly once, audited with who and why.
    let log = c.daemons[owner].client().get("/v1/audit").await.body;
    assert_eq!(audited(&log, "rollout.pause"), 1, "{log}");
    assert_eq!(audited(&log, "rollout.resume"), 1, "{log}");
    let pause = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.pause")
        .unwrap();
    assert_eq!(pause["reason"], "through another daemon");
    assert_eq!(pause["ticket"], "CHG-7");

    // A command queued while its owner is killed is applied once by the
    // daemon that takes the rollout over.
    let mut c = c;
    c.daemons[owner].kill9();
    let other = c.daemons[(owner + 1) % 3].client();
    let paused = other
        .post(
            &format!("/v1/rollouts/{id}/pause"),
            json!({"reason": "while its owner is down"}),
        )
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["state"], "paused", "{:?}", paused.body);
    let log = other.get("/v1/audit").await.body;
    assert_eq!(audited(&log, "rollout.pause"), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_wait_for_a_restarted_database_and_go_on() {
    // A server of its own: the other tests' server stays up.
    let server = pg_support::PgServer::start(&[]);
    let mut c = Cluster::start_on(&server);
    let good = c.daemons[0]
        .client()
        .post("/v1/rollouts", start_body("good"))
        .await;
    assert_eq!(good.status, 201, "{:?}", good.body);
    let good = good.body["id"].as_str().unwrap().to_string();
    let bad = c.daemons[1]
        .client()
        .post("/v1/rollouts", start_body("bad"))
        .await;
    assert_eq!(bad.status, 201, "{:?}", bad.body);
    let bad = bad.body["id"].as_str().unwrap().to_string();

    // Traffic, then the database goes away mid-rollout for a few seconds.
    for _ in 0..10 {
        for id in [&good, &bad] {
            let owner = c.owner(id, Duration::from_secs(10)).await;
            let _ = c.daemons[owner].client().try_push(id, 30, 0.0, 0.0).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop("fast");
    // Pushes meanwhile may be refused or accepted; the daemons stay up.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for d in &c.daemons {
            let _ = d.client().try_push(&good, 10, 0.0, 0.0).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.launch(&[]);
    server.wait_ready();
    for d in &mut c.daemons {
        assert!(
            d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "a daemon exited while the database was away:\n{}",
            d.log_text()
        );
    }

    // Both go on to their ends: the healthy one promoted, the bad one
    // rolled back with one incident; routers and chain agree.
    eventually("both rollouts to end", Duration::from_secs(120), || async {
        let mut ended = 0;
        for (id, canary_err) in [(&good, 0.0), (&bad, 0.5)] {
            for d in &c.daemons {
                let _ = d.client().try_push(id, 30, 0.0, canary_err).await;
            }
            if !c.daemons[2].client().rollout(id).await["outcome"].is_null() {
                ended += 1;
            }
        }
        ended == 2
    })
    .await;
    let api = c.daemons[2].client();
    assert_eq!(api.rollout(&good).await["outcome"], "promoted");
    assert_eq!(api.rollout(&bad).await["outcome"], "rolled-back");
    eventually(
        "the routers at the recorded weights",
        Duration::from_secs(20),
        || async { c.router_weight("good") == json!(100) && c.router_weight("bad") == json!(0) },
    )
    .await;
    let incidents = api.get("/v1/incidents").await.body;
    assert_eq!(incidents.as_array().map(Vec::len), Some(1), "{incidents}");
    let v = api.get("/v1/audit/verify").await;
    assert_eq!(v.body["ok"], true, "{:?}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_pushed_to_any_daemon_reach_the_owner_without_loss() {
    let c = Cluster::start();
    // Paused: windows go on closing and being journaled, nothing ends it.
    let id = c.start_rollout(0, "good").await;
    let owner = c.owner(&id, Duration::from_secs(10)).await;
    let paused = c.daemons[owner]
        .client()
        .post(
            &format!("/v1/rollouts/{id}/pause"),
            json!({"reason": "hold"}),
        )
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    let before = c.journaled_requests(&id);

    // Batches of 1,000 events (500 per arm) through the two other daemons.
    let others: Vec<_> = (1..3)
        .map(|k| c.daemons[(owner + k) % 3].client())
        .collect();
    let batches = 200;
    let started = Instant::now();
    for b in 0..batches {
        let a = others[b % 2].push(&id, 500, 0.0, 0.0).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
    }
    let took = started.elapsed();
    eprintln!(
        "relay: {} observations through non-owners in {took:?}: {:.0}/s (one client, sequential batches)",
        batches * 1000,
        (batches * 1000) as f64 / took.as_secs_f64()
    );
    // Relayed within a second, taken in by the next window.
    let expected = (
        before.0 + 500 * batches as u64,
        before.1 + 500 * batches as u64,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.journaled_requests(&id) != expected {
        assert!(
            Instant::now() < deadline,
            "journaled {:?}, pushed {expected:?}",
            c.journaled_requests(&id)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.sql("SELECT count(*) FROM relayed"), "0");
}
