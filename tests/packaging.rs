//! Packaging (issue 17): the systemd unit passes `systemd-analyze verify`
//! with nothing to say and keeps its hardening (`systemd-analyze security`
//! exposure at most 2.0), its `ExecStart` and `ExecReload` command lines
//! run against this build; the container's config passes `config check`,
//! and the Dockerfile copies only what its context has. A real `docker
//! build` runs with `CANARYD_DOCKER_BUILD=1` (it needs a Docker daemon and
//! registry access, and minutes).

// Waits on a real child process (bounded).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = "packaging/systemd/canaryd.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_canaryd")
}

/// The unit with its paths moved into `dir`: the binary is this build's,
/// the config and state are `dir`'s.
fn unit_in(dir: &Path) -> String {
    std::fs::read_to_string(repo().join(UNIT))
        .unwrap()
        .replace("/usr/local/bin/canaryd", bin())
        .replace(
            "/etc/canaryd/canaryd.yaml",
            &dir.join("canaryd.yaml").display().to_string(),
        )
        .replace("/var/lib/canaryd", &dir.join("state").display().to_string())
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian's `systemd` package; scripts/test installs it)")
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("canaryd.service");
    std::fs::write(&unit, unit_in(tmp.path())).unwrap();
    let unit_s = unit.to_str().unwrap();

    // verify exits 0 on unknown keys and bad values (it only warns), so
    // anything it prints fails the test.
    let v = systemd_analyze(&["verify", unit_s]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        v.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    let s = systemd_analyze(&["security", "--offline=yes", unit_s]);
    let text = String::from_utf8_lossy(&s.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for canaryd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");

    let written = std::fs::read_to_string(repo().join(UNIT)).unwrap();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=canaryd",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=65536",
    ] {
        assert!(
            written.lines().any(|l| l == line),
            "the unit lacks `{line}`"
        );
    }
}

/// The command lines of `key=` in the unit, split on spaces (the unit
/// uses no quoting), `$MAINPID` lines left out.
fn commands(unit: &str, key: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .filter(|l| !l.contains("$MAINPID"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_units_commands_run_against_this_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("canaryd.yaml"),
        format!(
            "listen: 127.0.0.1:0\npolicies: {}\n",
            repo().join("rollout-policies").display()
        ),
    )
    .unwrap();
    let unit = unit_in(dir);

    // systemd creates the state directory before ExecStart.
    std::fs::create_dir(dir.join("state")).unwrap();
    let reload = commands(&unit, "ExecReload");
    assert_eq!(reload.len(), 1, "{reload:?}");
    let o = Command::new(&reload[0][0])
        .args(&reload[0][1..])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ExecReload: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let start = commands(&unit, "ExecStart");
    assert_eq!(start.len(), 1, "{start:?}");
    let mut child = Command::new(&start[0][0])
        .args(&start[0][1..])
        .env("CANARYD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("canaryd listening on http://127.0.0.1:"),
        "{line:?}"
    );
    assert!(
        dir.join("state/admin.token").exists(),
        "the state is not in the StateDirectory"
    );
    // KillSignal=SIGTERM drains and exits 0.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_container_config_passes_config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo().join("packaging/docker/canaryd.yaml"))
        .unwrap()
        .replace(
            "/etc/canaryd/rollout-policies",
            &repo().join("rollout-policies").display().to_string(),
        )
        .replace(
            "/var/lib/canaryd",
            &tmp.path().join("state").display().to_string(),
        );
    std::fs::write(tmp.path().join("canaryd.yaml"), config).unwrap();
    let o = Command::new(bin())
        .current_dir(tmp.path())
        .args(["config", "check", "canaryd.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The one warning it should have: configure tokens.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("warning: listen: the API listens on 0.0.0.0:7600"),
        "{err}"
    );
}

#[test]
fn the_dockerfile_copies_what_its_context_has() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut copies = 0;
    for line in dockerfile.lines() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            copies += 1;
            if *src == "." {
                continue;
            }
            assert!(
                repo().join(src).exists(),
                "COPY {src}: not in the repository"
            );
            let top = src.trim_end_matches('/');
            assert!(
                !ignored.iter().any(|i| i.trim_end_matches('/') == top),
                "COPY {src}: excluded by .dockerignore"
            );
        }
    }
    assert!(copies >= 3, "{copies} COPY sources");
    // What the build needs is in the context.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/",
        "simulator/",
        "tests/",
        "benches/",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|i| i.trim_end_matches('/') == needed.trim_end_matches('/')),
            "{needed} is excluded by .dockerignore but the build needs it"
        );
    }
    assert!(
        ignored.contains(&"target/"),
        "the build outputs are sent to the daemon"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains("http://127.0.0.1:7600/healthz"));
}

/// A real image build and a container that becomes healthy; needs a
/// Docker daemon and registry access (`CANARYD_DOCKER_BUILD=1`).
#[test]
fn docker_build_and_health() {
    if std::env::var("CANARYD_DOCKER_BUILD").as_deref() != Ok("1") {
        eprintln!("skipped: set CANARYD_DOCKER_BUILD=1 to build the image");
        return;
    }
    let tag = "canaryd-test:packaging";
    let b = Command::new("docker")
        .args(["build", "-t", tag, "."])
        .current_dir(repo())
        .status()
        .expect("docker");
    assert!(b.success());
    let run = Command::new("docker")
        .args(["run", "-d", "--rm", tag])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let healthy = loop {
        let o = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if s == "healthy" || Instant::now() > deadline {
            break s == "healthy";
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let _ = Command::new("docker").args(["stop", &id]).status();
    assert!(healthy, "the container did not become healthy");
}
