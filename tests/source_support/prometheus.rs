//! A real Prometheus (the Debian package, installed when missing) on a free
//! loopback port with a temporary config and data directory, optionally
//! filled by `promtool tsdb create-blocks-from openmetrics` before the
//! server starts, so a test queries exactly known data and waits on no
//! scrape. Used by `source_prometheus.rs` and `promtext_real_prometheus.rs`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The running server; killed (and its directory removed) when dropped.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Prometheus {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Kills the server and waits for it to exit (the port is closed after).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// After [`Prometheus::kill`]: starts it again on the same port, config
    /// and data directory, and waits until it is ready (bounded: 20 s).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.child = spawn(&self.dir, self.port)?;
        wait_ready(self)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn has_prometheus() -> bool {
    ["prometheus", "promtool"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
    } else {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

/// Installs the Debian package when `prometheus` or `promtool` is missing;
/// `Err` says why it could not.
pub fn ensure_installed() -> Result<(), String> {
    if has_prometheus() {
        return Ok(());
    }
    println!("prometheus not installed: installing the Debian package (apt-get)");
    run(&["apt-get", "update"])?;
    run(&[
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "prometheus",
    ])?;
    if has_prometheus() {
        Ok(())
    } else {
        Err("apt-get succeeded but `prometheus`/`promtool` is not on PATH".into())
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A plain HTTP/1.0 GET (no chunking, no compression): (status, content
/// type, body).
pub fn get(port: u16, path: &str, accept: &str) -> std::io::Result<(u16, String, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((status, content_type, body.to_owned()))
}

/// Writes `openmetrics` (samples with explicit timestamps, ending in
/// `# EOF`) into blocks in a fresh data directory, then starts Prometheus
/// on it with no scrape jobs: the tests query exactly the backfilled data.
pub fn start_with_backfill(openmetrics: &str) -> Result<Prometheus, String> {
    start(
        |_| "global:\n  scrape_interval: 15s\n".to_owned(),
        Some(openmetrics),
    )
}

/// Starts Prometheus on a free loopback port with the config `config(port)`
/// and a fresh data directory (first filled from `backfill`, OpenMetrics,
/// by `promtool tsdb create-blocks-from openmetrics`), and waits until it is
/// ready (bounded: 20 s).
pub fn start(
    config: impl FnOnce(u16) -> String,
    backfill: Option<&str>,
) -> Result<Prometheus, String> {
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("canaryd-prometheus-{}-{port}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    if let Some(openmetrics) = backfill {
        let input = dir.join("backfill.om");
        std::fs::write(&input, openmetrics).map_err(|e| format!("{}: {e}", input.display()))?;
        run(&[
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            &input.display().to_string(),
            &data.display().to_string(),
        ])?;
    }
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config(port))
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    let child = spawn(&dir, port)?;
    let server = Prometheus { port, dir, child };
    wait_ready(&server)?;
    Ok(server)
}

/// Runs `prometheus` on `dir`'s config and data directory (its log
/// appended to `dir/prometheus.log`).
fn spawn(dir: &std::path::Path, port: u16) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prometheus.log"))
        .map_err(|e| e.to_string())?;
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        // Backfilled blocks lie at a fixed date; keep them whatever today is.
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start prometheus: {e}"))
}

fn wait_ready(server: &Prometheus) -> Result<(), String> {
    for _ in 0..200 {
        if let Ok((200, _, _)) = get(server.port, "/-/ready", "*/*") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "prometheus not ready within 20 s on 127.0.0.1:{}:\n{}",
        server.port,
        server.log()
    ))
}
