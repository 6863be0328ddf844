//! Retention applied online by the real daemon: with ages of seconds
//! (`retention:` in its config), ended rollouts' journals are pruned while
//! the daemon keeps serving, an active rollout keeps everything, and
//! `canaryd audit verify` passes, against the API and the data dir.

mod daemon_support;

use std::time::Duration;

use canaryd::store::Store;
use daemon_support::{Daemon, eventually};
use serde_json::{Value, json};

/// Ids of the rollouts whose journals the log's anchors say went.
async fn journals_pruned(api: &daemon_support::Api) -> Vec<String> {
    let log = api.get("/v1/audit").await.body;
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "audit.prune")
        .flat_map(|e| {
            e["details"]["journals"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|j| j["rollout"].as_str().map(String::from))
        .collect()
}

async fn ended(api: &daemon_support::Api, service: &str) -> String {
    let a = api.start(service, "fast").await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/rollouts/{id}/abort");
    eventually("the abort is accepted", Duration::from_secs(10), || async {
        api.post(&path, json!({"reason": "retention test"}))
            .await
            .status
            == 200
    })
    .await;
    eventually(
        "the rollout ends at weight 0",
        Duration::from_secs(10),
        || async {
            let r: Value = api.rollout(&id).await;
            r["state"] == "aborted" && r["weight"] == 0
        },
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_rollouts_journals_are_pruned_while_the_daemon_serves() {
    let d = Daemon::start("retention: { journal: 2s, every: 1s }\n");
    let api = d.client();
    // One active rollout, which keeps everything.
    let active = api.start("api", "fast").await;
    assert_eq!(active.status, 201, "{:?}", active.body);
    let active = active.body["id"].as_str().unwrap().to_string();
    let first = ended(&api, "web").await;
    eventually(
        "the first journal is pruned",
        Duration::from_secs(20),
        || async { journals_pruned(&api).await.contains(&first) },
    )
    .await;
    // The daemon goes on: another rollout of the same service, ended,
    // pruned in its turn; the ended ones are still shown.
    let second = ended(&api, "web").await;
    eventually(
        "the second journal is pruned",
        Duration::from_secs(20),
        || async { journals_pruned(&api).await.contains(&second) },
    )
    .await;
    for id in [&first, &second, &active] {
        assert_eq!(api.get(&format!("/v1/rollouts/{id}")).await.status, 200);
    }
    assert!(!journals_pruned(&api).await.contains(&active));

    let store = Store::open_read_only(d.data_dir()).unwrap();
    assert!(store.journal(&first).unwrap().is_empty());
    assert!(store.journal(&second).unwrap().is_empty());
    assert!(
        !store.journal(&active).unwrap().is_empty(),
        "the active rollout keeps its journal"
    );
    drop(store);

    let out = d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = d.data_dir().display().to_string();
    let out = std::process::Command::new(daemon_support::bin())
        .args(["audit", "verify", "--data-dir", &dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.log_text().contains("retention: pass done"));
}
