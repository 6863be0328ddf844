//! The daemon on PostgreSQL (`storage.postgres`): a real server on
//! loopback (`pg_support`), the real `canaryd serve` binary. One daemon
//! here; several daemons sharing a database are `tests/daemon_ha.rs`'s.

// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

mod daemon_support;
mod pg_support;
use daemon_support::{Daemon, eventually};

/// A database and a key file for one daemon; the config lines naming them.
fn postgres_config(key_dir: &std::path::Path) -> String {
    let server = pg_support::server();
    let database = server.database();
    let key = key_dir.join("audit.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "storage:\n  postgres: {{ url: \"{}\", instance: solo }}\naudit: {{ keyFile: {} }}\n",
        server.url(&database),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_runs_is_killed_resumes_and_verifies_on_postgres() {
    let keys = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&postgres_config(keys.path()));
    let api = d.client();
    let a = api.start("web", "fast").await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap().to_string();

    // Healthy traffic until the first step is baking, then a SIGKILL.
    eventually("the first step", Duration::from_secs(20), || async {
        api.push(&id, 30, 0.0, 0.0).await;
        api.rollout(&id).await["weight"].as_u64().unwrap_or(0) >= 10
    })
    .await;
    let before = api.rollout(&id).await;
    d.kill9();
    d.spawn();
    let api = d.client();
    let after = api.rollout(&id).await;
    assert_eq!(after["state"], before["state"], "resumed where it was");

    // Bad canary: rolled back, with its incident.
    eventually("the rollback", Duration::from_secs(30), || async {
        api.push(&id, 60, 0.0, 0.3).await;
        !api.rollout(&id).await["outcome"].is_null()
    })
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["outcome"], "rolled-back", "{r}");
    let incidents = api.get("/v1/incidents").await;
    assert_eq!(
        incidents.body.as_array().map(Vec::len),
        Some(1),
        "{:?}",
        incidents.body
    );
    let verify = api.get("/v1/audit/verify").await;
    assert_eq!(verify.status, 200, "{:?}", verify.body);
    assert_eq!(verify.body["ok"], true, "{:?}", verify.body);
    // Nothing of the state went to the data dir.
    assert!(!d.data_dir().join("canaryd.db").exists());
    assert!(!d.data_dir().join("audit.head").exists());
}
