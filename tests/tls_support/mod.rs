//! Shared by the TLS tests: test CAs and certificates ([`ca`]), and real
//! HTTPS servers on 127.0.0.1 that use them, each started by the test and
//! killed on drop: Prometheus with `--web.config.file`, a Python `ssl`
//! server (a scrape target and a webhook receiver), and nginx as a TLS
//! front for another server (MLflow).

#![allow(dead_code)]
// Real processes are waited for on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

pub mod ca;

#[allow(unused_imports)]
pub use ca::{TestCa, TlsFiles};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::tls::{ClientIdentity, ClientTls};

/// `ClientTls` trusting `ca`, with the client certificate when `mutual`.
pub fn client_tls(files: &TlsFiles, ca: &Path, mutual: bool) -> ClientTls {
    let identity = mutual.then(|| ClientIdentity {
        cert: files.client_cert.clone(),
        key: files.client_key.clone(),
    });
    ClientTls::new(Some(ca.to_owned()), identity).expect("valid test TLS files")
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where `binary` is, installing the Debian `package` when missing.
pub fn ensure_installed(binary: &str, package: &str) -> String {
    let locate = || {
        Command::new("sh")
            .args([
                "-c",
                &format!("command -v {binary} || ls /usr/sbin/{binary}"),
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
    };
    if let Some(path) = locate() {
        return path;
    }
    for args in [
        &["apt-get", "update"][..],
        &[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            package,
        ][..],
    ] {
        let status = Command::new(args[0])
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")));
        assert!(status.success(), "`{}` failed", args.join(" "));
    }
    locate().unwrap_or_else(|| panic!("{package} installed but no `{binary}` found"))
}

/// A child process that leads its own process group (see [`spawn`]); the
/// group (nginx's workers too) is killed, by its id, on drop.
struct Owned {
    child: Child,
}

/// Starts `cmd` as the leader of a new process group.
fn spawn(cmd: &mut Command, what: &str) -> Owned {
    use std::os::unix::process::CommandExt;
    Owned {
        child: cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}")),
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most `limit`) until an HTTPS GET of `url` with `tls` answers
/// with any status; `Err` with the last error otherwise.
pub async fn wait_https(url: &str, tls: &ClientTls, limit: Duration) -> Result<(), String> {
    let client = tls
        .http_client_builder()
        .unwrap()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match client.get(url).send().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{url} not up within {limit:?}: {e:?}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Python's `ssl` + `http.server` (`https_server.py`): `GET /metrics`
/// answers what [`HttpsServer::set_metrics`] wrote; every POST is recorded.
pub struct HttpsServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: Owned,
}

impl HttpsServer {
    /// Serves with `files`' server certificate; requires a client
    /// certificate from `files.ca` when `mutual`.
    pub async fn start(files: &TlsFiles, mutual: bool) -> HttpsServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics"), "").unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_support/https_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--cert")
            .arg(&files.server_cert)
            .arg("--key")
            .arg(&files.server_key)
            .arg("--dir")
            .arg(dir.path());
        if mutual {
            cmd.arg("--client-ca").arg(&files.ca);
        }
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = spawn(
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log),
            "python3",
        );
        let port_file = dir.path().join("port");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "https_server.py did not start: {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        HttpsServer {
            port,
            dir,
            _child: child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn set_metrics(&self, text: &str) {
        let tmp = self.dir.path().join("metrics.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join("metrics")).unwrap();
    }

    /// The POSTs received so far: (path, body as JSON).
    pub fn posts(&self) -> Vec<(String, serde_json::Value)> {
        std::fs::read_to_string(self.dir.path().join("posts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let body = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
                (v["path"].as_str().unwrap().to_owned(), body)
            })
            .collect()
    }
}

/// A real Prometheus serving HTTPS (`--web.config.file` with
/// `tls_server_config`), on data backfilled with promtool before it starts.
pub struct TlsPrometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: Owned,
}

impl TlsPrometheus {
    /// With a client certificate from `files.ca` required when `mutual`.
    pub async fn start(files: &TlsFiles, mutual: bool, openmetrics: &str) -> TlsPrometheus {
        let prometheus = ensure_installed("prometheus", "prometheus");
        let promtool = ensure_installed("promtool", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let input = d.join("backfill.om");
        std::fs::write(&input, openmetrics).unwrap();
        let out = Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool: {out:?}");
        std::fs::write(
            d.join("prometheus.yml"),
            "global:\n  scrape_interval: 15s\n",
        )
        .unwrap();
        let mut web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            files.server_cert.display(),
            files.server_key.display()
        );
        if mutual {
            web += &format!(
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
                files.ca.display()
            );
        }
        std::fs::write(d.join("web.yml"), web).unwrap();
        let port = free_port();
        let log = std::fs::File::create(d.join("prometheus.log")).unwrap();
        let child = spawn(
            Command::new(prometheus)
                .arg(format!(
                    "--config.file={}",
                    d.join("prometheus.yml").display()
                ))
                .arg(format!("--web.config.file={}", d.join("web.yml").display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg("--storage.tsdb.retention.time=100y")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
            "prometheus",
        );
        let server = TlsPrometheus {
            port,
            dir,
            _child: child,
        };
        let tls = client_tls(files, &files.ca, mutual);
        if let Err(e) = wait_https(
            &format!("{}/-/ready", server.url()),
            &tls,
            Duration::from_secs(30),
        )
        .await
        {
            panic!("{e}\n{}", server.log());
        }
        server
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// nginx terminating TLS on a free port and passing requests to
/// `127.0.0.1:upstream_port` over plain HTTP.
pub struct NginxTlsFront {
    pub port: u16,
    pub dir: PathBuf,
    _child: Owned,
    _keep: tempfile::TempDir,
}

impl NginxTlsFront {
    pub async fn start(files: &TlsFiles, upstream_port: u16, mutual: bool) -> NginxTlsFront {
        let nginx = ensure_installed("nginx", "nginx");
        let keep = tempfile::tempdir().unwrap();
        let dir = keep.path().to_owned();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = free_port();
        let d = dir.display();
        let client_auth = if mutual {
            format!(
                "ssl_client_certificate {};\n        ssl_verify_client on;",
                files.ca.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {client_auth}
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host 127.0.0.1:{upstream_port};
        }}
    }}
}}
",
            cert = files.server_cert.display(),
            key = files.server_key.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = spawn(
            Command::new(nginx)
                .arg("-p")
                .arg(format!("{d}/"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
            "nginx",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        NginxTlsFront {
            port,
            dir,
            _child: child,
            _keep: keep,
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}
