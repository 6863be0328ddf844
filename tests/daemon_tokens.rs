//! Tokens without a restart (issue 17), against the real binary: SIGHUP
//! re-reads the config's `tokens:` (a new token opens, a removed one gets
//! 401, a broken config keeps the old set and logs located errors, no
//! tokens brings the admin token file back and tokens retire it), audited,
//! while the builtin proxy serves every request; and the CLI names the
//! token source a 401 refused, never the token, and does not fall back to
//! an admin token file when tokens are configured.

// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

mod daemon_support;
use daemon_support::{Daemon, bin, eventually};

use canaryd::daemon::auth::sha256_hex;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A plain HTTP/1.1 upstream on loopback answering every request `200 name`
/// (one thread per connection, `Connection: close`); it runs until the
/// test process ends.
fn upstream(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

/// One GET through the proxy: did it come back 200?
fn through_proxy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn token_line(actor: &str, token: &str, role: &str) -> String {
    format!(
        "  - {{ actor: {actor}, sha256: \"{}\", roles: [{role}] }}\n",
        sha256_hex(token)
    )
}

async fn status_with(d: &Daemon, token: &str) -> u16 {
    d.client()
        .with_token(Some(token))
        .get("/v1/rollouts")
        .await
        .status
}

fn sighup(d: &Daemon) {
    let ok = Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tokens_while_the_proxy_serves() {
    let proxy_port = free_port();
    let shop = format!(
        "  shop:\n    router: {{ builtin: {{ listen: 127.0.0.1:{proxy_port}, baseline: {}, canary: {} }} }}\n",
        upstream("baseline"),
        upstream("canary")
    );
    let tokens = |lines: &[String]| {
        if lines.is_empty() {
            String::new()
        } else {
            format!("tokens:\n{}", lines.concat())
        }
    };
    let alice = token_line("alice", "alice-secret", "admin");
    let bob = token_line("bob", "bob-secret", "viewer");
    let carol = token_line("carol", "carol-secret", "viewer");
    // The services block ends the generated config, so `shop` joins it.
    let mut d = Daemon::start(&format!("{shop}{}", tokens(&[alice.clone(), bob.clone()])));
    d.token = "alice-secret".into();
    let config_path = d.path("canaryd.yaml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let head = original.split("tokens:\n").next().unwrap().to_string();
    assert!(!d.data_dir().join("admin.token").exists());

    // Traffic through the builtin proxy the whole time; counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            // Bounded: the test stops it long before this.
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if through_proxy(proxy_port) {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    assert_eq!(status_with(&d, "alice-secret").await, 200);
    assert_eq!(status_with(&d, "bob-secret").await, 200);
    assert_eq!(status_with(&d, "carol-secret").await, 401);

    // Carol in, Bob out.
    std::fs::write(
        &config_path,
        format!("{head}{}", tokens(&[alice.clone(), carol.clone()])),
    )
    .unwrap();
    sighup(&d);
    eventually("carol's token to open", Duration::from_secs(10), || async {
        status_with(&d, "carol-secret").await == 200
    })
    .await;
    assert_eq!(status_with(&d, "bob-secret").await, 401);
    let audit = d.client().get("/v1/audit").await.body;
    let reload = audit
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["action"] == "tokens.reload")
        .unwrap_or_else(|| panic!("no tokens.reload audit entry: {audit}"));
    assert_eq!(
        reload["details"]["actors"],
        serde_json::json!(["alice", "carol"])
    );

    // A broken config changes nothing and says where it is broken.
    let broken =
        format!("{head}tokens:\n  - {{ actor: dave, sha256: nothex, roles: [viewer] }}\n{bob}");
    std::fs::write(&config_path, &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("nothex")).unwrap() + 1;
    let want = format!("canaryd.yaml:{line}:28: tokens[0].sha256: expected the token's SHA-256");
    sighup(&d);
    eventually(
        "the located error in the log",
        Duration::from_secs(10),
        || async { d.log_text().contains(&want) },
    )
    .await;
    assert!(
        d.log_text()
            .contains("SIGHUP: invalid config; the previous tokens stay"),
        "{}",
        d.log_text()
    );
    assert_eq!(status_with(&d, "carol-secret").await, 200);
    assert_eq!(status_with(&d, "bob-secret").await, 401);

    // No tokens: the admin token file is back, and only it opens.
    std::fs::write(&config_path, &head).unwrap();
    sighup(&d);
    let admin_file = d.data_dir().join("admin.token");
    eventually("the admin token file", Duration::from_secs(10), || async {
        admin_file.exists()
    })
    .await;
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_string();
    eventually(
        "the admin token to open",
        Duration::from_secs(10),
        || async { status_with(&d, &admin).await == 200 },
    )
    .await;
    assert_eq!(status_with(&d, "alice-secret").await, 401);

    // Tokens again: the admin token file is retired.
    std::fs::write(
        &config_path,
        format!("{head}{}", tokens(std::slice::from_ref(&alice))),
    )
    .unwrap();
    sighup(&d);
    eventually(
        "alice's token to open again",
        Duration::from_secs(10),
        || async { status_with(&d, "alice-secret").await == 200 },
    )
    .await;
    assert!(
        !admin_file.exists(),
        "admin.token left beside configured tokens"
    );
    assert_eq!(status_with(&d, &admin).await, 401);

    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let (served, failed) = (served.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(served > 20, "only {served} requests went through the proxy");
    assert_eq!(
        failed,
        0,
        "{failed} of {} proxied requests failed",
        served + failed
    );
    d.kill9();
}

fn cli(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = Command::new(bin());
    c.args(["--server", &d.base])
        .args(args)
        .env_remove("CANARYD_TOKEN")
        .env_remove("CANARYD_TOKEN_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_named_by_its_source() {
    // A data dir that already has an admin token file (a start without
    // tokens), then a start with tokens: the file is retired.
    let mut d = Daemon::start("");
    let stale = std::fs::read_to_string(d.data_dir().join("admin.token")).unwrap();
    d.terminate();
    let config_path = d.path("canaryd.yaml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "tokens:\n{}",
        token_line("ops", "ops-secret", "operator")
    ));
    std::fs::write(&config_path, config).unwrap();
    d.spawn();
    let data_dir = d.data_dir();
    let admin_file = data_dir.join("admin.token");
    assert!(
        !admin_file.exists(),
        "the admin token file outlived configured tokens"
    );
    let dd = data_dir.to_str().unwrap();

    // No token at all: the CLI says how to give one.
    let (code, err) = cli(&d, &["--data-dir", dd, "rollout", "list"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pass --token or --token-file"), "{err}");

    // Each source of a wrong token is named, the token never printed.
    let wrong = "wrong-secret-4711";
    let file = d.path("wrong.token");
    std::fs::write(&file, format!("{wrong}\n")).unwrap();
    let file_s = file.to_str().unwrap();
    for (args, env, named) in [
        (
            vec!["--token", wrong],
            vec![],
            "the token sent was from --token (HTTP 401)".to_string(),
        ),
        (
            vec!["--token-file", file_s],
            vec![],
            format!("the token sent was from --token-file {file_s} (HTTP 401)"),
        ),
        (
            vec![],
            vec![("CANARYD_TOKEN", wrong)],
            "the token sent was from CANARYD_TOKEN (HTTP 401)".into(),
        ),
        (
            vec![],
            vec![("CANARYD_TOKEN_FILE", file_s)],
            format!("the token sent was from CANARYD_TOKEN_FILE={file_s} (HTTP 401)"),
        ),
    ] {
        let mut all = args.clone();
        all.extend(["rollout", "list"]);
        let (code, err) = cli(&d, &all, &env);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(&named), "want {named:?} in {err}");
        assert!(!err.contains(wrong), "the token was printed: {err}");
    }

    // A token file that cannot be read is an error before anything is
    // sent, not a reason to use another token.
    std::fs::write(&admin_file, &stale).unwrap();
    let (code, err) = cli(
        &d,
        &[
            "--data-dir",
            dd,
            "--token-file",
            "/nonexistent/token",
            "rollout",
            "list",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read the token from --token-file /nonexistent/token"),
        "{err}"
    );

    // An admin token file put back by hand is still used when nothing else
    // is given, but a 401 says it was, and why it is refused.
    let (code, err) = cli(&d, &["--data-dir", dd, "rollout", "list"], &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "the token sent was the admin token file {}",
            admin_file.display()
        )) && err.contains("a daemon with `tokens:` configured does not accept it"),
        "{err}"
    );
    assert!(!err.contains(stale.trim()));

    // The right token from a file works, and wins over the admin file.
    let good = d.path("ops.token");
    std::fs::write(&good, "ops-secret\n").unwrap();
    let (code, err) = cli(
        &d,
        &[
            "--data-dir",
            dd,
            "--token-file",
            good.to_str().unwrap(),
            "rollout",
            "list",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = cli(
        &d,
        &["--data-dir", dd, "rollout", "list"],
        &[("CANARYD_TOKEN_FILE", good.to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{err}");
    d.kill9();
}
