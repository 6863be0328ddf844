//! The real `canaryd serve` binary as a child process on an ephemeral
//! loopback port, with a temp data dir and policies, and a small async API
//! client. Every wait is bounded; the child is killed on drop.

#![allow(dead_code)]
// End-to-end tests of a real process wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A policy that moves in seconds: 1s interval, 10% then 50% then 100%.
pub const FAST_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: fast
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 4s
    - setWeight: 50
    - bake: 4s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
  incident:
    severity: sev2
    notify: [ { webhook: "http://127.0.0.1:9/unreachable" } ]
"#;

/// Long bakes and an approval: stays put while a test pokes at it.
pub const SLOW_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: slow
spec:
  analysis:
    interval: 1s
    minSamples: 1
    sampleRatioCheck: false
  steps:
    - setWeight: 5
    - bake: 1h
    - approval: { roles: [risk, compliance], distinct: true }
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 5% }
"#;

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub base: String,
    pub token: String,
    pub log: PathBuf,
    config: PathBuf,
    /// Run the child under `prlimit --nofile=N:N` (both limits).
    pub nofile: Option<u64>,
    /// Environment variables the child gets beyond this process's.
    pub env: Vec<(String, String)>,
}

/// The daemon under test: this build's, or the one `CANARYD_TEST_BIN`
/// names (to check that a test fails against an older build).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("CANARYD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_canaryd").into())
    })
}

impl Daemon {
    /// Start with services `web` and `api` on `file` routers (and
    /// `pushonly` with no router) plus any extra config lines.
    pub fn start(extra_config: &str) -> Daemon {
        Daemon::start_with(extra_config, &[], None)
    }

    /// With more policies (file name, YAML); `{dir}` in `extra_config`
    /// stands for the temp dir.
    pub fn start_with_policies(extra_config: &str, policies: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(extra_config, policies, None)
    }

    /// With configured tokens (no admin token file): `admin_token` is the
    /// one the helpers use.
    pub fn start_with_tokens(tokens: &[(&str, &str, &[&str])]) -> Daemon {
        let mut yaml = String::from("tokens:\n");
        for (actor, token, roles) in tokens {
            let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
            yaml.push_str(&format!(
                "  - {{ actor: {actor}, sha256: \"{}\", roles: [{}] }}\n",
                canaryd::daemon::auth::sha256_hex(token),
                roles.join(", ")
            ));
        }
        let admin = tokens
            .iter()
            .find(|t| t.2.contains(&"admin"))
            .map(|t| t.1.to_string());
        Daemon::start_with(&yaml, &[], admin)
    }

    fn start_with(
        extra_config: &str,
        extra_policies: &[(&str, &str)],
        token: Option<String>,
    ) -> Daemon {
        let mut daemon = Daemon::prepare(extra_config, extra_policies, token);
        daemon.spawn();
        daemon
    }

    /// The temp dir, config and policies, without starting the child.
    fn prepare(
        extra_config: &str,
        extra_policies: &[(&str, &str)],
        token: Option<String>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("fast.yaml"), FAST_POLICY).unwrap();
        std::fs::write(policies.join("slow.yaml"), SLOW_POLICY).unwrap();
        for (name, yaml) in extra_policies {
            std::fs::write(policies.join(name), yaml).unwrap();
        }
        let d = dir.path().display();
        let extra_config = extra_config.replace("{dir}", &d.to_string());
        let config = dir.path().join("canaryd.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:0\ndataDir: {d}/data\npolicies: {d}/policies\nservices:\n  web:\n    router: {{ file: {{ path: {d}/web.json }} }}\n  api:\n    router: {{ file: {{ path: {d}/api.json }} }}\n  pushonly: {{}}\n{extra_config}"
            ),
        )
        .unwrap();
        Daemon {
            log: dir.path().join("serve.log"),
            dir,
            child: None,
            base: String::new(),
            token: token.unwrap_or_default(),
            config,
            nofile: None,
            env: Vec::new(),
        }
    }

    /// As [`Daemon::start`], with `env` set in the child's environment.
    pub fn start_with_env(extra_config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::prepare(extra_config, &[], None);
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn();
        d
    }

    /// As [`Daemon::start`], with the child's descriptor limit (soft and
    /// hard) set to `nofile` by `prlimit` before it runs.
    pub fn start_with_nofile(extra_config: &str, nofile: u64) -> Daemon {
        let mut d = Daemon::prepare(extra_config, &[], None);
        d.nofile = Some(nofile);
        d.spawn();
        d
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)start the child and wait until it is ready.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match self.nofile {
            // prlimit sets the limits, then execs the daemon (same pid).
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CANARYD_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start canaryd serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("canaryd listening on ") else {
            let _ = child.kill();
            panic!("canaryd did not start: {line:?}\n{}", self.log_text());
        };
        self.base = addr.to_string();
        self.child = Some(child);
        if let Ok(t) = std::fs::read_to_string(self.data_dir().join("admin.token")) {
            self.token = t.trim().to_string();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_status(&self.base, "/readyz") == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in 30s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(["--server", &self.base, "--token", &self.token])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn client(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(self.token.clone()),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

/// An answer: status and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        self.try_raw(method, path, body).await.expect("request")
    }

    /// As `raw`, but a failed connection is an `Err` (a daemon being killed).
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, reqwest::Error> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.raw("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.raw("POST", path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn start(&self, service: &str, policy: &str) -> Answer {
        self.post(
            "/v1/rollouts",
            json!({"service": service, "canary": "v2", "baseline": "v1", "policy": policy, "reason": "test"}),
        )
        .await
    }

    /// Push `n` events per arm with the given error rates (deterministic).
    pub async fn push(&self, id: &str, n: usize, base_err: f64, canary_err: f64) -> Answer {
        self.try_push(id, n, base_err, canary_err)
            .await
            .expect("request")
    }

    pub async fn try_push(
        &self,
        id: &str,
        n: usize,
        base_err: f64,
        canary_err: f64,
    ) -> Result<Answer, reqwest::Error> {
        let mut events = Vec::with_capacity(2 * n);
        for i in 0..n {
            let frac = (i as f64 + 0.5) / n as f64;
            events.push(json!({"arm": "baseline", "error": frac < base_err, "latency_ms": 10.0 + (i % 7) as f64}));
            events.push(json!({"arm": "canary", "error": frac < canary_err, "latency_ms": 11.0 + (i % 7) as f64}));
        }
        let body = json!({ "events": events }).to_string().into_bytes();
        self.try_raw(
            "POST",
            &format!("/v1/rollouts/{id}/observations"),
            Some(body),
        )
        .await
    }

    pub async fn rollout(&self, id: &str) -> Value {
        let a = self.get(&format!("/v1/rollouts/{id}")).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    /// The daemon's own `/metrics` (no token needed).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn audit_len(&self) -> usize {
        self.get("/v1/audit")
            .await
            .body
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// Poll until `f` holds (bounded).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain blocking GET's status (no client library needed before the
/// runtime exists).
pub fn http_status(base: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Write `request` on a fresh connection to the daemon and read until it
/// closes or `limit` passes; the bytes read, as text.
pub fn raw_exchange(base: &str, request: &[u8], limit: Duration) -> String {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").expect("an http base");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status of a raw HTTP answer (`HTTP/1.1 415 ...`).
pub fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// A field of a process's `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// How many descriptors a process has open.
pub fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}
