//! The API over TLS (`tls: { cert, key }`), with the real daemon binary:
//! served with a certificate the test's CA signed, refused by a client
//! that trusts another CA, a renewed certificate taken on SIGHUP (a broken
//! one refused, the one in use kept), the CLI's `--cacert`, and the loud
//! warning when the API listens beyond loopback without TLS.

// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod tls_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tls_support::ca::TestCa;

struct Serving {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// `canaryd serve` with `extra` config; the first stdout line is the URL.
fn serve(dir: &Path, listen: &str, extra: &str) -> Serving {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let config = dir.join("canaryd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\ndataDir: {d}/data\npolicies: {d}/policies\n{extra}",
            d = dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let mut child = Command::new(daemon_support::bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("CANARYD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("canaryd listening on ")
        .unwrap_or_else(|| {
            panic!(
                "did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .to_string();
    Serving { child, base, log }
}

fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn health(client: &reqwest::Client, base: &str) -> Result<u16, String> {
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_tls_and_takes_a_renewed_certificate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (first, second) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let issued = first.issue_server(&[]);
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(dir.join("first-ca.pem"), first.cert_pem()).unwrap();
    let d = serve(
        dir,
        "127.0.0.1:0",
        &format!(
            "tls: {{ cert: {}, key: {} }}\n",
            cert.display(),
            key.display()
        ),
    );
    assert!(d.base.starts_with("https://127.0.0.1:"), "{}", d.base);
    let trusts_first = client_trusting(&first.cert_pem());
    let trusts_second = client_trusting(&second.cert_pem());
    assert_eq!(health(&trusts_first, &d.base).await, Ok(200));
    let refused = health(&trusts_second, &d.base).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = d.base.replacen("https://", "http://", 1);
    assert!(daemon_support::http_status(&plain, "/healthz").is_none());

    // The CLI with --cacert (reads go through the API).
    let cli = |args: &[&str]| {
        Command::new(daemon_support::bin())
            .args(["--server", &d.base, "--token-file"])
            .arg(dir.join("data/admin.token"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "--cacert",
        dir.join("first-ca.pem").to_str().unwrap(),
        "rollout",
        "list",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["rollout", "list"]);
    assert!(!out.status.success(), "trusted without --cacert");

    // A broken key on SIGHUP: refused, the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    d.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .log()
        .contains("the API's TLS certificate cannot be loaded")
    {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health(&trusts_first, &d.base).await, Ok(200));

    // Renewed by another CA: new connections get it after SIGHUP.
    let renewed = second.issue_server(&[]);
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    d.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client_trusting(&second.cert_pem());
        if health(&fresh, &d.base).await == Ok(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate not served:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        health(&client_trusting(&first.cert_pem()), &d.base)
            .await
            .is_err()
    );
}

#[test]
fn beyond_loopback_without_tls_is_a_loud_warning_and_a_broken_pair_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = serve(tmp.path(), "0.0.0.0:0", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("WITHOUT TLS") {
        assert!(Instant::now() < deadline, "no warning:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let ca = TestCa::new("CA");
    let (one, other) = (ca.issue_server(&[]), ca.issue_server(&[]));
    std::fs::write(dir.join("api.crt"), &one.cert_pem).unwrap();
    std::fs::write(dir.join("api.key"), &other.key_pem).unwrap();
    let config = dir.join("canaryd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndataDir: {d}/data\npolicies: {d}/policies\ntls: {{ cert: {d}/api.crt, key: {d}/api.key }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(daemon_support::bin())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("canaryd.yaml:4:") && text.contains("does not match"),
        "{text}"
    );
}
