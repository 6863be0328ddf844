//! The newcomer's path through the real binary: `canaryd serve`, the
//! admin token file, `rollout start` (idempotent), pushed traffic,
//! `rollout wait` exiting with the rollback's code, the incident through
//! the API and offline, `audit verify` both ways; `token create` lines that
//! the config accepts; SIGHUP reloads (an invalid policy keeps the old set);
//! SIGTERM drains and a restart resumes; one daemon per data dir.

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use daemon_support::{Daemon, bin, eventually};
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_push_wait_rollback_incident_audit() {
    let d = Daemon::start("");
    let token_file = d.data_dir().join("admin.token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The CLI finds the admin token through --data-dir.
    let start = |extra: &[&str]| {
        let mut args = vec![
            "--server".to_string(),
            d.base.clone(),
            "--data-dir".into(),
            d.data_dir().display().to_string(),
            "rollout".into(),
            "start".into(),
            "--service".into(),
            "web".into(),
            "--canary".into(),
            "v2".into(),
            "--baseline".into(),
            "v1".into(),
            "--policy".into(),
            "fast".into(),
            "--reason".into(),
            "release 42".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(bin()).args(&args).output().unwrap()
    };
    let first = start(&["--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let v: Value = serde_json::from_str(&stdout(&first)).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let again = start(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains(&id), "{}", stdout(&again));

    let other = d.cli(&[
        "rollout",
        "start",
        "--service",
        "web",
        "--canary",
        "v3",
        "--baseline",
        "v1",
        "--policy",
        "fast",
        "--reason",
        "x",
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        stderr(&other).contains("already has an active rollout"),
        "{}",
        stderr(&other)
    );
    let bad = d.cli(&["rollout", "start", "--service", "web"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));

    // `rollout wait` in the background while traffic flows.
    let waiter = {
        let (base, token, id) = (d.base.clone(), d.token.clone(), id.clone());
        std::thread::spawn(move || {
            Command::new(bin())
                .args([
                    "--server",
                    &base,
                    "--token",
                    &token,
                    "rollout",
                    "wait",
                    &id,
                    "--timeout",
                    "60s",
                ])
                .output()
                .unwrap()
        })
    };
    let api = d.client();
    eventually("the rollback", Duration::from_secs(40), || async {
        let _ = api.try_push(&id, 100, 0.01, 0.10).await;
        !api.rollout(&id).await["outcome"].is_null()
    })
    .await;
    let waited = waiter.join().unwrap();
    assert_eq!(
        waited.status.code(),
        Some(2),
        "{}{}",
        stdout(&waited),
        stderr(&waited)
    );
    assert!(
        stdout(&waited).contains("rolled-back"),
        "{}",
        stdout(&waited)
    );
    let inc_line = stdout(&waited)
        .lines()
        .find_map(|l| l.strip_prefix("incident ").map(str::to_string))
        .expect("the incident is named");

    let status = d.cli(&["rollout", "status", &id]);
    assert!(
        stdout(&status).contains("error-rate") && stdout(&status).contains("fired"),
        "{}",
        stdout(&status)
    );
    let json_status: Value =
        serde_json::from_str(&stdout(&d.cli(&["rollout", "status", &id, "--json"]))).unwrap();
    assert_eq!(json_status["state"], "rolled-back");
    let list: Value =
        serde_json::from_str(&stdout(&d.cli(&["rollout", "list", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let watch = d.cli(&["rollout", "status", &id, "--watch"]);
    assert!(
        watch.status.success() && stdout(&watch).contains("rolled-back"),
        "{}",
        stdout(&watch)
    );

    // The incident, through the API and offline from the data dir.
    let online = d.cli(&["incident", "show", &inc_line]);
    assert!(online.status.success(), "{}", stderr(&online));
    let dd = d.data_dir().display().to_string();
    let offline = Command::new(bin())
        .args(["incident", "show", &inc_line, "--data-dir", &dd])
        .output()
        .unwrap();
    assert_eq!(stdout(&online), stdout(&offline));
    assert!(
        stdout(&online).contains("trigger error-rate fired"),
        "{}",
        stdout(&online)
    );
    assert!(
        stdout(&online).contains("rolling-back -> rolled-back"),
        "{}",
        stdout(&online)
    );
    let listed: Value = serde_json::from_str(&stdout(
        &Command::new(bin())
            .args(["incident", "list", "--json", "--data-dir", &dd])
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(listed[0]["id"], inc_line.as_str());
    let reviewed = d.cli(&["incident", "review", &inc_line, "--note", "bad build"]);
    assert!(reviewed.status.success(), "{}", stderr(&reviewed));

    for args in [
        vec!["audit", "verify"],
        vec!["audit", "verify", "--data-dir", &dd],
    ] {
        let o = d.cli(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("audit log ok"), "{}", stdout(&o));
    }
    let log = d.cli(&["audit", "log"]);
    assert!(
        stdout(&log).contains("rollout.rollback"),
        "{}",
        stdout(&log)
    );
    assert!(stdout(&log).contains("incident.review"), "{}", stdout(&log));

    // Wrong token: a clear 401.
    let o = Command::new(bin())
        .args(["--server", &d.base, "--token", "nope", "rollout", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    // No daemon: says so.
    let o = Command::new(bin())
        .args([
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "x",
            "rollout",
            "list",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("cannot reach the daemon"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reload_drain_restart_and_one_daemon_per_dir() {
    // `token create` prints a line the config accepts.
    let o = Command::new(bin())
        .args([
            "token",
            "create",
            "--actor",
            "alice",
            "--roles",
            "operator,approver:risk",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let token = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("token: ")
        .unwrap()
        .to_string();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("- {"))
        .unwrap();
    let bad = Command::new(bin())
        .args(["token", "create", "--actor", "x", "--roles", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("unknown role `root`"),
        "{}",
        stderr(&bad)
    );

    let mut d = Daemon::start(&format!("tokens:\n{line}\n"));
    assert!(
        !d.data_dir().join("admin.token").exists(),
        "no admin token with tokens configured"
    );
    d.token = token.clone();
    let api = d.client();
    let id = api.start("web", "slow").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A second daemon on the same data dir refuses to start.
    let second = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(d.path("policies"))
        .arg("--data-dir")
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert_ne!(second.status.code(), Some(0));
    assert!(
        stderr(&second).contains("in use by another canaryd"),
        "{}",
        stderr(&second)
    );

    // SIGHUP: a new valid policy appears; an invalid file keeps the old set.
    let pid = d.child.as_ref().unwrap().id().to_string();
    let extra = daemon_support::FAST_POLICY.replace("name: fast", "name: fast-two");
    std::fs::write(d.path("policies/two.yaml"), extra).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    eventually("reload", Duration::from_secs(10), || async {
        api.get("/v1/policies").await.body.as_array().unwrap().len() == 3
    })
    .await;
    std::fs::write(
        d.path("policies/broken.yaml"),
        "apiVersion: canaryd.dev/v1\nkind: Nope\n",
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    eventually("the error in the log", Duration::from_secs(10), || {
        let log = d.log_text();
        async move { log.contains("broken.yaml:2:") }
    })
    .await;
    assert_eq!(
        api.get("/v1/policies").await.body.as_array().unwrap().len(),
        3
    );

    // SIGTERM drains and exits 0; a restart resumes the rollout.
    let before = api.rollout(&id).await;
    let status = d.terminate();
    assert!(status.success(), "exit {status:?}\n{}", d.log_text());
    std::fs::remove_file(d.path("policies/broken.yaml")).unwrap();
    d.spawn();
    let api = d.client();
    let after = api.rollout(&id).await;
    assert_eq!(after["state"], before["state"]);
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["weight"], 5);
    let audit = api.get("/v1/audit").await.body;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "router.reconcile"),
        "{audit}"
    );
    assert!(!d.log_text().contains(&token), "a token was logged");
}
