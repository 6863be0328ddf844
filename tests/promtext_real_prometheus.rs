//! A real exposition: a real Prometheus server's own `/metrics`, in both
//! formats it serves. The test installs the Debian `prometheus` package when
//! it is missing, starts the server on a free loopback port with a temporary
//! config and data directory, scrapes it twice, checks families every
//! Prometheus exposes, and kills it. It skips, loudly, only when the package
//! cannot be installed.
//!
//! `PROMTEXT_CAPTURE=1` also writes the expositions into the corpus
//! (`tests/promtext_corpus/real_prometheus.{prom,om}`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canaryd::sources::prom_text::{
    Family, Format, Kind, Limits, Selector, counter_delta, histogram, parse, sum,
};

/// Kills the server however the test ends.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn has_prometheus() -> bool {
    Command::new("sh")
        .args(["-c", "command -v prometheus"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian package; `Err` says why it could not.
fn install_prometheus() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            Err(format!(
                "`{}` failed ({}): {}",
                args.join(" "),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        }
    };
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
        Err("apt-get succeeded but `prometheus` is not on PATH".into())
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A plain HTTP/1.0 GET (no chunking, no compression): (status, content type, body).
fn get(port: u16, path: &str, accept: &str) -> std::io::Result<(u16, String, String)> {
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

fn start(port: u16) -> Server {
    let dir = std::env::temp_dir().join(format!("canaryd-promtext-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Server { child, dir }
}

fn family<'f>(families: &'f [Family], name: &str) -> &'f Family {
    families
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family `{name}`"))
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn check_families(families: &[Family], format: Format) {
    let om = format == Format::OpenMetrics;
    let requests = family(
        families,
        if om {
            "prometheus_http_requests"
        } else {
            "prometheus_http_requests_total"
        },
    );
    assert_eq!(requests.kind, Kind::Counter);
    assert!(requests.help.as_deref().is_some_and(|h| !h.is_empty()));
    for s in requests
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_total"))
    {
        assert!(
            s.label("code").is_some() && s.label("handler").is_some(),
            "{s:?}"
        );
    }
    let ready = sum(
        families,
        &sel(r#"prometheus_http_requests_total{handler="/-/ready",code="200"}"#),
    )
    .unwrap();
    assert!(ready.series == 1 && ready.value >= 1.0, "{ready:?}");

    let gc = family(families, "go_gc_duration_seconds");
    assert_eq!(gc.kind, Kind::Summary);
    let quantiles: Vec<&str> = gc
        .samples
        .iter()
        .filter_map(|s| s.label("quantile"))
        .collect();
    assert_eq!(quantiles, ["0", "0.25", "0.5", "0.75", "1"]);
    assert!(
        gc.samples
            .iter()
            .any(|s| s.name == "go_gc_duration_seconds_count")
    );
    assert!(
        gc.samples
            .iter()
            .any(|s| s.name == "go_gc_duration_seconds_sum")
    );

    let duration = family(families, "prometheus_http_request_duration_seconds");
    assert_eq!(duration.kind, Kind::Histogram);
    let buckets = histogram(
        families,
        &sel(r#"prometheus_http_request_duration_seconds{handler="/-/ready"}"#),
    )
    .unwrap();
    assert!(buckets.len() >= 2, "{buckets:?}");
    let (last_le, total) = *buckets.last().unwrap();
    assert_eq!(last_le, f64::INFINITY);
    assert!(total >= 1, "{buckets:?}");
}

#[test]
// The test reports how long its own setup took; no code under test reads a clock.
#[allow(clippy::disallowed_methods)]
fn parses_a_real_prometheus_servers_own_metrics() {
    let setup = std::time::Instant::now();
    if !has_prometheus() {
        println!("prometheus not installed: installing the Debian package (apt-get)");
        if let Err(why) = install_prometheus() {
            println!("SKIPPED: cannot install prometheus: {why}");
            eprintln!("SKIPPED: cannot install prometheus: {why}");
            return;
        }
        println!(
            "installed prometheus in {:.1} s",
            setup.elapsed().as_secs_f64()
        );
    }
    let started = std::time::Instant::now();
    let port = free_port();
    let server = start(port);
    // Bounded wait: 200 x 100 ms.
    let mut ready = false;
    for _ in 0..200 {
        if let Ok((200, _, _)) = get(port, "/-/ready", "*/*") {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = || std::fs::read_to_string(server.dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        ready,
        "prometheus not ready within 20 s on 127.0.0.1:{port}:\n{}",
        log()
    );
    println!(
        "prometheus ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let limits = Limits::default();
    let mut captures = Vec::new();
    for (accept, expected_format) in [
        ("text/plain;version=0.0.4", Format::PrometheusText),
        (
            "application/openmetrics-text;version=1.0.0",
            Format::OpenMetrics,
        ),
    ] {
        let (status, content_type, first) = get(port, "/metrics", accept).expect("scrape");
        assert_eq!(status, 200, "{first}");
        // The Content-Type decides, as it will in the scrape source; Prometheus
        // 2.42 answers its own /metrics in 0.0.4 even when asked for OpenMetrics.
        let format = Format::from_content_type(&content_type);
        if format != expected_format {
            println!("asked for {accept}, served {content_type}");
        }
        let before = parse(&first, format, &limits).unwrap_or_else(|e| panic!("{e}"));
        check_families(&before, format);
        let (_, _, second) = get(port, "/metrics", accept).expect("second scrape");
        let after = parse(&second, format, &limits).unwrap_or_else(|e| panic!("{e}"));
        // The first scrape was itself counted by the second.
        let scrapes = counter_delta(
            &before,
            &after,
            &sel(r#"prometheus_http_requests_total{handler="/metrics"}"#),
        )
        .unwrap();
        assert!(scrapes.value >= 1.0, "{scrapes:?}");
        println!(
            "{content_type}: {} bytes, {} families, {} samples",
            first.len(),
            before.len(),
            before.iter().map(|f| f.samples.len()).sum::<usize>()
        );
        if format == expected_format {
            captures.push((format, first));
        }
    }
    if std::env::var_os("PROMTEXT_CAPTURE").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promtext_corpus");
        for (format, text) in captures {
            let ext = if format == Format::OpenMetrics {
                "om"
            } else {
                "prom"
            };
            std::fs::write(dir.join(format!("real_prometheus.{ext}")), text).expect("capture");
        }
    }
}
