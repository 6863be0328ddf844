//! Shared support for the router tests: tiny upstreams on loopback, real
//! HAProxy and nginx processes that are killed however a test ends (with
//! the HAProxy setup the router and closed-loop tests share), the Debian
//! install step, and the split tolerance.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

/// A loopback HTTP server answering every request with its name in the
/// `x-arm` header and the body it was sent (streamed back), plus what it
/// saw in `x-saw-*` headers. `x-status: N` makes it answer status N.
/// Stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind an upstream");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move |req: Request| echo(name, req));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Upstream {
            addr,
            name,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn echo(name: &'static str, req: Request) -> Response {
    let status = req
        .headers()
        .get("x-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let saw = |h: &str| {
        req.headers()
            .get(h)
            .cloned()
            .unwrap_or(HeaderValue::from_static("-"))
    };
    let headers = [
        (
            "x-saw-method",
            HeaderValue::from_str(req.method().as_str()).unwrap(),
        ),
        (
            "x-saw-uri",
            HeaderValue::from_str(&req.uri().to_string()).unwrap(),
        ),
        ("x-saw-host", saw("host")),
        ("x-saw-secret", saw("x-secret")),
        ("x-saw-forwarded-for", saw("x-forwarded-for")),
        ("x-saw-custom", saw("x-custom")),
    ];
    let mut response = Response::new(Body::new(req.into_body()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-arm", HeaderValue::from_static(name));
    for (k, v) in headers {
        response.headers_mut().insert(k, v);
    }
    response
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A temporary directory for a server's config and data.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "canaryd-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Where `binary` is: on PATH, or in /usr/sbin (not on a normal user's
/// PATH on Debian, where both servers install).
fn locate(binary: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .ok()?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !found.is_empty() {
        return Some(found);
    }
    let sbin = format!("/usr/sbin/{binary}");
    Path::new(&sbin).exists().then_some(sbin)
}

/// Makes sure `binary` (from Debian package `package`) is installed:
/// `apt-get update && apt-get install -y` only when it is missing, as
/// `scripts/test` does. Returns the binary's path; panics with the reason
/// when it cannot install it.
pub fn ensure_installed(binary: &str, package: &str) -> String {
    if let Some(path) = locate(binary) {
        return path;
    }
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["apt-get", "update"]);
    run(&[
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        package,
    ]);
    locate(binary).unwrap_or_else(|| panic!("{package} installed but no `{binary}` found"))
}

/// A server process that is stopped however the test ends: `stop` runs
/// first (a graceful stop command, if any), then the child is killed and
/// the directory removed.
pub struct Process {
    pub child: Child,
    pub dir: PathBuf,
    pub stop: Option<Vec<String>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = Command::new(&stop[0])
                .args(&stop[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("CANARYD_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits (bounded) until `path` exists.
pub async fn wait_for_path(path: &Path, what: &str) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: {} did not appear within 5 s", path.display());
}

/// Waits (bounded) until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: nothing listens on 127.0.0.1:{port} after 5 s");
}

/// Sends `n` GETs to `url` and counts the answers by their `x-arm`
/// (`baseline`, `canary`); any other answer fails the test.
pub async fn measure_split(client: &reqwest::Client, url: &str, n: u32) -> (u32, u32) {
    let (mut baseline, mut canary) = (0, 0);
    for i in 0..n {
        let r = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} to {url}: {e}"));
        assert!(r.status().is_success(), "request {i}: HTTP {}", r.status());
        match r.headers().get("x-arm").and_then(|v| v.to_str().ok()) {
            Some("baseline") => baseline += 1,
            Some("canary") => canary += 1,
            other => panic!("request {i}: answered by {other:?}"),
        }
    }
    (baseline, canary)
}

/// The largest deviation of the canary's measured share from `weight`
/// percent that `n` independent requests allow: 4.5 binomial standard
/// deviations (a false failure about once in 150 000 runs per step), and
/// no less than half a percentage point. A deterministic balancer
/// (HAProxy's round-robin, nginx's smooth weighted round-robin) stays far
/// inside it; the bound is for the random split.
pub fn tolerance(weight: u8, n: u32) -> f64 {
    let p = f64::from(weight) / 100.0;
    (4.5 * (p * (1.0 - p) / f64::from(n)).sqrt()).max(0.005)
}

/// Checks a measured split against `weight` and prints it for the report.
pub fn check_split(what: &str, weight: u8, baseline: u32, canary: u32) {
    let n = baseline + canary;
    let share = f64::from(canary) / f64::from(n);
    let tol = tolerance(weight, n);
    eprintln!(
        "{what}: weight {weight:>3}%: canary {canary}/{n} = {:.2}% (tolerance ±{:.2} pp)",
        share * 100.0,
        tol * 100.0
    );
    match weight {
        0 => assert_eq!(
            canary, 0,
            "{what}: weight 0 sent {canary} requests to the canary"
        ),
        100 => assert_eq!(
            baseline, 0,
            "{what}: weight 100 sent {baseline} to the baseline"
        ),
        _ => assert!(
            (share - f64::from(weight) / 100.0).abs() <= tol,
            "{what}: weight {weight}%: measured {:.2}%, tolerance ±{:.2} pp",
            share * 100.0,
            tol * 100.0
        ),
    }
}

pub const STEPS: [u8; 7] = [0, 5, 25, 50, 75, 100, 0];
pub const REQUESTS_PER_STEP: u32 = 2000;

/// An HAProxy config in `dir`: frontend on `port`, backend `be_app` with
/// servers `stable` (weight 100) and `canary` (weight 0), the admin socket
/// at `dir/admin.sock`, and server state kept across reloads in
/// `dir/server-state`.
pub fn write_haproxy_config(dir: &Path, port: u16, baseline: SocketAddr, canary: SocketAddr) {
    let config = format!(
        "global
    stats socket {dir}/admin.sock mode 600 level admin
    stats timeout 30s
    server-state-file {dir}/server-state
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    load-server-state-from-file global
frontend fe
    bind 127.0.0.1:{port}
    default_backend be_app
backend be_app
    balance roundrobin
    server stable {baseline} weight 100
    server canary {canary} weight 0
",
        dir = dir.display(),
    );
    std::fs::write(dir.join("haproxy.cfg"), config).expect("write haproxy.cfg");
}

/// Starts HAProxy on `dir/haproxy.cfg` in the foreground (`-db`);
/// `replacing` is the pid of an instance to take over from (`-sf`,
/// HAProxy's reload).
pub fn start_haproxy(haproxy: &str, dir: &Path, replacing: Option<u32>) -> Process {
    let log = std::fs::File::create(dir.join(format!("haproxy-{}.log", replacing.unwrap_or(0))))
        .expect("log file");
    let mut cmd = Command::new(haproxy);
    cmd.arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(pid) = replacing {
        cmd.arg("-sf").arg(pid.to_string());
    }
    Process {
        child: cmd.spawn().expect("start haproxy"),
        dir: dir.to_path_buf(),
        stop: None,
    }
}

/// The router for the config of [`write_haproxy_config`] in `dir`.
pub fn haproxy_router(dir: &Path) -> canaryd::routers::haproxy::HaproxyRouter {
    canaryd::routers::haproxy::HaproxyRouter::new(canaryd::routers::HaproxyConfig {
        socket: dir.join("admin.sock"),
        backend: "be_app".into(),
        baseline: "stable".into(),
        canary: "canary".into(),
    })
}
