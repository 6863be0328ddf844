//! A real PostgreSQL server for tests: `initdb` in a temp dir and the
//! server on a free loopback port, one per test binary, each test in a
//! database of its own. Run as the `postgres` user when the tests run as
//! root (PostgreSQL refuses to run as root). A watchdog stops the server
//! when the test process is gone, so a failed or killed run leaves no
//! server behind.
#![allow(dead_code)]
// A real server is waited for on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where Debian puts PostgreSQL's programs (newest version first).
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    _temp: tempfile::TempDir,
}

/// The server this test binary shares; started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start(&[]))
}

fn as_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    // `id -u` keeps this file free of libc bindings.
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1)
}

/// `program args...`, as `postgres` when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let path = bin.join(program);
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// A new cluster and its server; `settings` are extra `-c name=value`
    /// settings (TLS, for one).
    pub fn start(settings: &[(&str, &str)]) -> PgServer {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb); scripts/test installs it",
        );
        let temp = tempfile::Builder::new()
            .prefix("canaryd-pg")
            .tempdir()
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "canaryd", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = PgServer {
            dir,
            port,
            bin,
            _temp: temp,
        };
        server.launch(settings);
        server
    }

    /// Start the server process (again, after [`PgServer::stop`]), with a
    /// watchdog that stops it when this test process ends.
    pub fn launch(&self, settings: &[(&str, &str)]) {
        let data = self.dir.join("data");
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let out = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        // The watchdog: polls once a second while this process lives (by
        // /proc: `kill -0` is refused across users), then stops the server
        // and removes its files; it ends with them.
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            ctl = self.bin.join("pg_ctl").display(),
            data = data.display(),
            dir = self.dir.display()
        );
        // Detached (`&` in a shell that exits at once): it outlives this
        // process by design, and nothing is left to reap.
        let detached = format!("({script}) </dev/null >/dev/null 2>&1 &");
        let mut watchdog = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &detached]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &detached]);
            c
        };
        let started = watchdog.status().expect("watchdog");
        assert!(started.success(), "the watchdog did not start");
    }

    /// Stop the server (`mode`: `fast` or `immediate`, a crash).
    /// A server of a test's own is stopped when it is dropped; the
    /// binary's shared one by its watchdog.
    pub fn stop(&self, mode: &str) {
        let out = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://canaryd@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database on this server; its name.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Run SQL with `psql` (tampering, as a person with database access
    /// would); panics with psql's message on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self.try_psql(database, sql);
        match out {
            Ok(text) => text,
            Err(e) => panic!("psql {sql:?}: {e}"),
        }
    }

    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        psql_at(&self.url(database), sql)
    }

    /// Wait until the server accepts connections again (bounded).
    pub fn wait_ready(&self) {
        // 300 tries 100 ms apart: about 30 s.
        for _ in 0..300 {
            if self.try_psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not come back on port {}", self.port);
    }
}

/// Run SQL with `psql` against the database at `url`: psql's output, or
/// its error message.
pub fn psql_at(url: &str, sql: &str) -> Result<String, String> {
    let bin = bin_dir().ok_or("PostgreSQL is not installed")?;
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .args(["-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Before its files go with the temp dir.
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
