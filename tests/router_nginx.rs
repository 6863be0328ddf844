//! The `nginx` router against a real nginx (Debian's 1.22, installed when
//! missing), run as the current user with its own prefix, config, pid file
//! and logs in a temporary directory: the owned upstream file is rewritten,
//! tested (`nginx -t`, derived from the reload command) and reloaded for
//! each step, 2000 real requests per step check the split, and a config
//! nginx rejects is refused with nginx's words and the previous file put
//! back, with nginx still serving the previous weights.

mod router_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use canaryd::policy::Weight;
use canaryd::routers::nginx::NginxRouter;
use canaryd::routers::{NginxConfig, Router, RouterError, Target, Weights};
use router_support::{
    Process, REQUESTS_PER_STEP, STEPS, Upstream, check_split, ensure_installed, free_port,
    measure_split, temp_dir, wait_for_port,
};

fn target() -> Target {
    Target {
        epoch: None,
        service: "search".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

/// `NGINX -p DIR -e DIR/error.log -c DIR/nginx.conf` and then `rest`.
fn nginx_argv(nginx: &str, dir: &Path, rest: &[&str]) -> Vec<String> {
    let mut argv = vec![
        nginx.to_string(),
        "-p".into(),
        format!("{}/", dir.display()),
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-c".into(),
        dir.join("nginx.conf").display().to_string(),
    ];
    argv.extend(rest.iter().map(|s| s.to_string()));
    argv
}

fn write_nginx_conf(dir: &Path, port: u16) {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
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
    include {d}/split.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://search;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}

fn router(nginx: &str, dir: &Path, baseline: String, canary: String) -> NginxRouter {
    NginxRouter::new(NginxConfig {
        config: dir.join("split.conf"),
        upstream: "search".into(),
        baseline,
        canary,
        reload: nginx_argv(nginx, dir, &["-s", "reload"]),
    })
    .with_timeout(Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_follow_each_step_and_a_rejected_config_is_rolled_back() {
    let nginx = ensure_installed("nginx", "nginx");
    let baseline = Upstream::start("baseline").await;
    let canary = Upstream::start("canary").await;
    let dir = temp_dir("nginx");
    let port = free_port();
    write_nginx_conf(&dir, port);
    let r = router(
        &nginx,
        &dir,
        baseline.addr.to_string(),
        canary.addr.to_string(),
    );
    assert_eq!(r.read_weights().await.unwrap(), None);
    // nginx needs the included file to start: the adapter's own rendering.
    std::fs::write(
        dir.join("split.conf"),
        r.render(None, Weight::ZERO).unwrap(),
    )
    .unwrap();
    let start = nginx_argv(&nginx, &dir, &[]);
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let _nginx = Process {
        child: Command::new(&start[0])
            .args(&start[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nginx"),
        dir: dir.clone(),
        stop: Some(nginx_argv(&nginx, &dir, &["-s", "stop"])),
    };
    wait_for_port(port, "nginx").await;

    let url = format!("http://127.0.0.1:{port}/");
    for w in STEPS {
        let weight = Weight::new(w).unwrap();
        r.set_weight(&target(), weight).await.unwrap();
        assert_eq!(
            r.read_weights().await.unwrap(),
            Some(Weights { canary: weight })
        );
        // `nginx -s reload` only signals the master: give it time to start
        // the new worker, and open fresh connections (old workers finish
        // their keep-alive connections with the old weights).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let client = reqwest::Client::new();
        let (b, c) = measure_split(&client, &url, REQUESTS_PER_STEP).await;
        check_split("nginx", w, b, c);
    }

    // Now at 0%. A config nginx rejects (a port above 65535) is refused
    // with nginx's message, and the previous file is back.
    r.set_weight(&target(), Weight::new(20).unwrap())
        .await
        .unwrap();
    let before = std::fs::read(dir.join("split.conf")).unwrap();
    let bad = router(
        &nginx,
        &dir,
        baseline.addr.to_string(),
        "127.0.0.1:99999".into(),
    );
    let e = bad
        .set_weight(&target(), Weight::new(60).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, RouterError::Refused { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("-t") && msg.contains("invalid port"),
        "the error should carry nginx -t's stderr: {msg}"
    );
    assert_eq!(
        std::fs::read(dir.join("split.conf")).unwrap(),
        before,
        "previous file restored"
    );
    assert_eq!(
        r.read_weights().await.unwrap(),
        Some(Weights {
            canary: Weight::new(20).unwrap()
        })
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b, c) = measure_split(&reqwest::Client::new(), &url, REQUESTS_PER_STEP).await;
    check_split("nginx after a rejected config", 20, b, c);
}
