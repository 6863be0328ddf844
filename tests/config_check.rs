//! `canaryd config check FILE` (issue 17): a table of broken configs, each
//! with the exact lines the real binary prints (`FILE:LINE:COL: path:
//! message`), a good config that passes, warnings that do not fail, the
//! JSON rendering, and `serve` refusing a config with the very same lines.
//! Every case runs in its own temp dir: `{dir}` in a config stands for it,
//! and stands for it again in the output.

// One test waits on a real child process (bounded).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

use expect_test::{Expect, expect};

mod daemon_support;
use daemon_support::{FAST_POLICY, bin};

/// What every case starts from: a data dir and a policies dir with one
/// valid policy (`fast`), an existing directory for written files.
fn prepare(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("policies/fast.yaml"), FAST_POLICY).unwrap();
    // Not a socket, not a program: a plain file.
    std::fs::write(dir.join("plain"), "x").unwrap();
    std::fs::write(dir.join("token"), "t0k3n\n").unwrap();
}

const HEAD: &str = "listen: 127.0.0.1:7600\ndataDir: {dir}/data\npolicies: {dir}/policies\n";

/// Run `config check` on `HEAD` + `body` in a fresh temp dir (`setup` may
/// add files); the exit code, stdout and stderr, with the dir as `{dir}`.
fn run(body: &str, setup: impl FnOnce(&Path), extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    prepare(dir);
    setup(dir);
    let d = dir.display().to_string();
    // A key the body sets replaces HEAD's.
    let head: String = HEAD
        .lines()
        .filter(|l| {
            let key = l.split(':').next().unwrap_or_default();
            !body.lines().any(|b| b.starts_with(&format!("{key}:")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.join("canaryd.yaml"),
        format!("{head}{body}").replace("{dir}", &d),
    )
    .unwrap();
    let out = Command::new(bin())
        .current_dir(dir)
        .args(["config", "check", "canaryd.yaml"])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "exit {}\n{}{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.replace(&d, "{dir}")
}

fn check(body: &str, expected: Expect) {
    expected.assert_eq(&run(body, |_| {}, &[]));
}

fn check_with(body: &str, setup: impl FnOnce(&Path), expected: Expect) {
    expected.assert_eq(&run(body, setup, &[]));
}

#[test]
fn a_good_config_passes() {
    check(
        "services:
  web:
    router: { file: { path: {dir}/out/web.json } }
    hooks:
      onPromoted: { command: { program: /bin/true } }
  shop:
    router: { builtin: { listen: 127.0.0.1:18080, baseline: http://127.0.0.1:9001, canary: http://127.0.0.1:9002 } }
  gw:
    router: { gatewayApi: { server: https://10.0.0.1:6443, tokenFile: {dir}/token, namespace: prod,
                            route: gw, baseline: gw-v1, canary: gw-v2 } }
  pushonly: {}
tokens:
  - { actor: alice, sha256: \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\", roles: [operator] }
registries:
  - mlflow: { url: http://127.0.0.1:5000, model: m, alias: champion, service: web, policy: fast }
",
        expect![[r#"
            exit 0
            canaryd.yaml: valid: 4 services, 1 token, 1 registry; retention: journal 90d, rollouts forever, audit forever, every 1h
        "#]],
    );
}

#[test]
fn yaml_syntax() {
    check(
        "services: { web: {\n",
        expect![[r#"
            exit 1
            canaryd.yaml:4:18: invalid YAML: unclosed bracket '{'
        "#]],
    );
}

#[test]
fn unknown_top_level_field() {
    check(
        "lisen: 127.0.0.1:1\n",
        expect![[r#"
            exit 1
            canaryd.yaml:4:1: lisen: unknown field `lisen`, expected one of `listen`, `dataDir`, `policies`, `services`, `tokens`, `registries`, `api`, `tls`, `notifications`, `retention`, `storage`, `audit`
        "#]],
    );
}

#[test]
fn unknown_router() {
    check(
        "services:\n  web:\n    router: { traefik: { service: web } }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:6:13: services.web.router: expected one of `builtin`, `haproxy`, `nginx`, `gatewayApi`, `command`, `webhook`, `file`
            canaryd.yaml:6:15: services.web.router.traefik: unknown field `traefik`, expected one of `builtin`, `haproxy`, `nginx`, `gatewayApi`, `command`, `webhook`, `file`
        "#]],
    );
}

#[test]
fn duplicate_service() {
    check(
        "services:\n  web: {}\n  web: {}\n",
        expect![[r#"
            exit 1
            canaryd.yaml:6:3: invalid YAML: duplicate mapping key: web
        "#]],
    );
}

#[test]
fn listen_is_not_an_address() {
    check(
        "listen: localhost:7600\n",
        expect![[r#"
            exit 1
            canaryd.yaml:3:9: listen: expected an address `IP:PORT` (e.g. 127.0.0.1:7600), found `localhost:7600`
        "#]],
    );
}

#[test]
fn policies_directory_missing() {
    check_with(
        "",
        |dir| std::fs::remove_dir_all(dir.join("policies")).unwrap(),
        expect![[r#"
            exit 1
            canaryd.yaml:3:11: policies: cannot read the policies directory {dir}/policies: No such file or directory (os error 2)
        "#]],
    );
}

#[test]
fn a_parse_error_does_not_hide_a_missing_policies_directory() {
    check_with(
        "services:\n  web:\n    router: { file: { pth: {dir}/out/w.json } }\n",
        |dir| std::fs::remove_dir_all(dir.join("policies")).unwrap(),
        expect![[r#"
            exit 1
            canaryd.yaml:3:11: policies: cannot read the policies directory {dir}/policies: No such file or directory (os error 2)
            canaryd.yaml:6:21: services.web.router.file: missing required field `path`
            canaryd.yaml:6:23: services.web.router.file.pth: unknown field `pth`, expected one of `path`
        "#]],
    );
}

/// A value the parser refused is not checked again at its default.
#[test]
fn a_refused_value_is_not_checked_at_its_default() {
    check(
        "policies: 7\nregistries:\n  - mlflow: { url: http://127.0.0.1:5000, model: m, alias: a, service: nowhere, policy: fast }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:3:11: policies: expected a string, found an integer 7
            canaryd.yaml:5:72: registries[0].mlflow.service: service `nowhere` is not defined under `services`
        "#]],
    );
}

#[test]
fn an_invalid_policy_in_the_directory() {
    check_with(
        "",
        |dir| {
            std::fs::write(
                dir.join("policies/broken.yaml"),
                "apiVersion: canaryd.dev/v1\nkind: Nope\n",
            )
            .unwrap()
        },
        expect![[r#"
            exit 1
            canaryd.yaml:3:11: policies: invalid policy: {dir}/policies/broken.yaml:1:1: missing required field `metadata`
            canaryd.yaml:3:11: policies: invalid policy: {dir}/policies/broken.yaml:1:1: missing required field `spec`
            canaryd.yaml:3:11: policies: invalid policy: {dir}/policies/broken.yaml:2:7: kind: expected `RolloutPolicy`, found `Nope`
        "#]],
    );
}

#[test]
fn data_dir_is_a_file() {
    check(
        "dataDir: {dir}/plain\n",
        expect![[r#"
            exit 1
            canaryd.yaml:3:10: dataDir: {dir}/plain is not a directory
        "#]],
    );
}

/// Not an error: another unit or a mount may make the directory; until
/// then the router fails and is retried, and the rollout says so.
#[test]
fn weights_file_directory_missing_is_a_warning() {
    check(
        "services:\n  web:\n    router: { file: { path: {dir}/missing/web.json } }\n",
        expect![[r#"
            exit 0
            canaryd.yaml: valid: 1 service, 0 tokens, 0 registries; retention: journal 90d, rollouts forever, audit forever, every 1h
            canaryd.yaml:6:29: warning: services.web.router.file.path: its directory {dir}/missing does not exist (yet): writes fail until it does
        "#]],
    );
}

#[test]
fn two_services_one_weights_file() {
    check(
        "services:
  web:
    router: { file: { path: {dir}/out/w.json } }
  api:
    router: { file: { path: {dir}/out/w.json } }
",
        expect![[r#"
            exit 1
            canaryd.yaml:6:29: services.web.router.file.path: service `api` already uses the weights file {dir}/out/w.json; two services would fight over it
        "#]],
    );
}

#[test]
fn builtin_proxy_on_the_api_address() {
    check(
        "services:
  shop:
    router: { builtin: { listen: 127.0.0.1:7600, baseline: http://127.0.0.1:9001, canary: http://127.0.0.1:9002 } }
",
        expect![[r#"
            exit 1
            canaryd.yaml:6:34: services.shop.router.builtin.listen: 127.0.0.1:7600 is the API's own `listen`
        "#]],
    );
}

#[test]
fn two_builtin_proxies_on_one_address() {
    check(
        "services:
  a:
    router: { builtin: { listen: 127.0.0.1:18080, baseline: http://127.0.0.1:9001, canary: http://127.0.0.1:9002 } }
  b:
    router: { builtin: { listen: 127.0.0.1:18080, baseline: http://127.0.0.1:9003, canary: http://127.0.0.1:9004 } }
",
        expect![[r#"
            exit 1
            canaryd.yaml:8:34: services.b.router.builtin.listen: service `a` already uses the proxy address 127.0.0.1:18080; two services would fight over it
        "#]],
    );
}

#[test]
fn canary_is_the_baseline() {
    check(
        "services:
  shop:
    router: { builtin: { listen: 127.0.0.1:18080, baseline: http://127.0.0.1:9001, canary: http://127.0.0.1:9001/ } }
  search:
    source:
      prometheusScrape:
        baseline: http://127.0.0.1:9101/metrics
        canary: http://127.0.0.1:9101/metrics
        signals: { requests: http_requests_total }
",
        expect![[r#"
            exit 1
            canaryd.yaml:6:92: services.shop.router.builtin.canary: the same as `baseline` (http://127.0.0.1:9001); the canary must be another target
            canaryd.yaml:11:17: services.search.source.prometheusScrape.canary: the same as `baseline` (http://127.0.0.1:9101/metrics); the canary must be another target
        "#]],
    );
}

#[test]
fn command_program_missing() {
    check(
        "services:\n  web:\n    router: { command: { program: {dir}/set-weight } }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:6:35: services.web.router.command.program: {dir}/set-weight: No such file or directory (os error 2)
        "#]],
    );
}

#[test]
fn hook_program_not_executable() {
    check(
        "services:\n  web:\n    hooks:\n      onRolledBack: { command: { program: {dir}/plain } }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:7:43: services.web.hooks.onRolledBack.command.program: {dir}/plain: not executable
        "#]],
    );
}

#[test]
fn gateway_token_file_unreadable() {
    check(
        "services:
  gw:
    router: { gatewayApi: { server: https://10.0.0.1:6443, tokenFile: {dir}/no-token, namespace: prod,
                            route: gw, baseline: gw-v1, canary: gw-v2 } }
",
        expect![[r#"
            exit 1
            canaryd.yaml:6:71: services.gw.router.gatewayApi.tokenFile: token file {dir}/no-token: cannot read it: No such file or directory (os error 2)
        "#]],
    );
}

#[test]
fn haproxy_socket_is_a_plain_file() {
    check(
        "services:\n  lb:\n    router: { haproxy: { socket: {dir}/plain, backend: be, baseline: a, canary: b } }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:6:34: services.lb.router.haproxy.socket: {dir}/plain is not a socket
        "#]],
    );
}

#[test]
fn two_services_one_nginx_config() {
    check(
        "services:
  a:
    router: { nginx: { config: {dir}/out/split.conf, upstream: a, baseline: 127.0.0.1:1, canary: 127.0.0.1:2, reload: /bin/true } }
  b:
    router: { nginx: { config: {dir}/out/split.conf, upstream: b, baseline: 127.0.0.1:3, canary: 127.0.0.1:4, reload: /bin/true } }
",
        expect![[r#"
            exit 1
            canaryd.yaml:8:32: services.b.router.nginx.config: service `a` already uses the nginx config file {dir}/out/split.conf; two services would fight over it
        "#]],
    );
}

#[test]
fn registry_names_an_unknown_policy() {
    check(
        "services:\n  web: {}\nregistries:
  - mlflow: { url: http://127.0.0.1:5000, model: m, alias: a, service: web, policy: nope }
",
        expect![[r#"
            exit 1
            canaryd.yaml:7:85: registries[0].mlflow.policy: no policy named `nope` in {dir}/policies (it has: fast)
        "#]],
    );
}

#[test]
fn two_registries_feed_one_service() {
    check(
        "services:\n  web: {}\nregistries:
  - mlflow: { url: http://127.0.0.1:5000, model: m, alias: a, service: web, policy: fast }
  - mlflow: { url: http://127.0.0.1:5000, model: n, stage: Production, service: web, policy: fast }
",
        expect![[r#"
            exit 1
            canaryd.yaml:8:81: registries[1].mlflow.service: service `web` is already fed by registries[0]; one registry per service
        "#]],
    );
}

#[test]
fn token_entries() {
    check(
        "tokens:\n  - { actor: bob, sha256: abc, roles: [boss] }\n  - { actor: eve, roles: [] }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:5:27: tokens[0].sha256: expected the token's SHA-256 as 64 hex digits (`canaryd token create` prints it)
            canaryd.yaml:5:40: tokens[0].roles[0]: unknown role `boss`; expected `viewer`, `operator`, `approver:<role>` or `admin`
            canaryd.yaml:6:5: tokens[1]: missing required field `sha256`
            canaryd.yaml:6:26: tokens[1].roles: expected at least one role
        "#]],
    );
}

#[test]
fn every_problem_at_once() {
    check(
        "services:
  Web: {}
  c:
    router: { file: { path: {dir}/out/c.json }, extra: 1 }
  a:
    router: { file: { path: {dir}/missing/a.json } }
    hooks:
      onStart: { command: { program: /nonexistent/hook } }
  b:
    router: { file: { path: {dir}/missing/a.json } }
registries:
  - mlflow: { url: http://127.0.0.1:5000, model: m, alias: a, service: a, policy: nope }
",
        expect![[r#"
            exit 1
            canaryd.yaml:5:3: services.Web: service name `Web`: expected 1 to 63 characters from `a-z`, `0-9` and `-`
            canaryd.yaml:7:59: services.c.router.extra: unknown field `extra`, expected one of `builtin`, `haproxy`, `nginx`, `gatewayApi`, `command`, `webhook`, `file`
            canaryd.yaml:9:29: warning: services.a.router.file.path: its directory {dir}/missing does not exist (yet): writes fail until it does
            canaryd.yaml:11:38: services.a.hooks.onStart.command.program: /nonexistent/hook: No such file or directory (os error 2)
            canaryd.yaml:13:29: warning: services.b.router.file.path: its directory {dir}/missing does not exist (yet): writes fail until it does
            canaryd.yaml:13:29: services.b.router.file.path: service `a` already uses the weights file {dir}/missing/a.json; two services would fight over it
            canaryd.yaml:15:83: registries[0].mlflow.policy: no policy named `nope` in {dir}/policies (it has: fast)
        "#]],
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    check(
        "listen: 0.0.0.0:7600\n",
        expect![[r#"
            exit 0
            canaryd.yaml: valid: 0 services, 0 tokens, 0 registries; retention: journal 90d, rollouts forever, audit forever, every 1h
            canaryd.yaml:3:9: warning: listen: the API listens on 0.0.0.0:7600 beyond loopback and no `tokens` are configured: the admin token file is its only credential
        "#]],
    );
    check(
        "services:
  lb:
    router: { haproxy: { socket: {dir}/haproxy.sock, backend: be, baseline: a, canary: b } }
  web:
    router: { command: { program: canaryd-no-such-program } }
",
        expect![[r#"
            exit 0
            canaryd.yaml: valid: 2 services, 0 tokens, 0 registries; retention: journal 90d, rollouts forever, audit forever, every 1h
            canaryd.yaml:6:34: warning: services.lb.router.haproxy.socket: {dir}/haproxy.sock: No such file or directory (os error 2); weight changes fail until HAProxy listens there
            canaryd.yaml:8:35: warning: services.web.router.command.program: `canaryd-no-such-program` is not on this PATH; the daemon's PATH must have it
        "#]],
    );
}

#[test]
fn an_unreadable_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .current_dir(tmp.path())
        .args(["config", "check", "nowhere.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    expect![[r#"
        nowhere.yaml: cannot read the config file: No such file or directory (os error 2)
    "#]]
    .assert_eq(&String::from_utf8_lossy(&o.stderr));
}

#[test]
fn json_lists_each_problem_with_its_place() {
    expect![[r#"
        exit 1
        {
          "file": "canaryd.yaml",
          "valid": false,
          "problems": [
            {
              "severity": "error",
              "file": "canaryd.yaml",
              "line": 6,
              "col": 35,
              "flag": null,
              "path": "services.web.router.command.program",
              "message": "/nonexistent/x: No such file or directory (os error 2)"
            },
            {
              "severity": "warning",
              "file": "canaryd.yaml",
              "line": 8,
              "col": 34,
              "flag": null,
              "path": "services.lb.router.haproxy.socket",
              "message": "{dir}/none.sock: No such file or directory (os error 2); weight changes fail until HAProxy listens there"
            }
          ]
        }
    "#]].assert_eq(&run(
        "services:\n  web:\n    router: { command: { program: /nonexistent/x } }\n  lb:\n    router: { haproxy: { socket: {dir}/none.sock, backend: be, baseline: a, canary: b } }\n",
        |_| {},
        &["--json"],
    ));
}

/// `serve` refuses the config `config check` refuses, with the same lines
/// (one code path), and starts nothing: no state is created.
#[test]
fn serve_reports_what_config_check_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    prepare(dir);
    let d = dir.display().to_string();
    std::fs::write(
        dir.join("canaryd.yaml"),
        format!(
            "{HEAD}services:\n  web:\n    router: {{ file: {{ path: {{dir}} }} }}\nregistries:\n  - mlflow: {{ url: http://127.0.0.1:5000, model: m, alias: a, service: web, policy: nope }}\n"
        )
        .replace("{dir}", &d),
    )
    .unwrap();
    let check = Command::new(bin())
        .current_dir(dir)
        .args(["config", "check", "canaryd.yaml"])
        .output()
        .unwrap();
    // Bounded: a daemon that starts anyway is killed and fails the test.
    let log = dir.join("serve.log");
    let mut child = Command::new(bin())
        .current_dir(dir)
        .args([
            "serve",
            "--config",
            "canaryd.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("CANARYD_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let serve_status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with a config that config check refuses");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(check.status.code(), Some(1));
    assert_ne!(serve_status.code(), Some(0));
    let check_lines = String::from_utf8_lossy(&check.stderr).into_owned();
    let serve_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(check_lines.lines().count(), 2, "{check_lines}");
    for line in check_lines.lines() {
        assert!(
            serve_text.contains(line),
            "serve lacks {line:?}:\n{serve_text}"
        );
    }
    assert!(
        std::fs::read_dir(dir.join("data"))
            .unwrap()
            .next()
            .is_none(),
        "serve created state for a config it refused"
    );
}

#[test]
fn retention_is_read_and_checked() {
    check(
        "retention: { journal: 7d, rollouts: 30d, audit: 400d, every: 10m }\n",
        expect![[r#"
            exit 0
            canaryd.yaml: valid: 0 services, 0 tokens, 0 registries; retention: journal 7d, rollouts 30d, audit 400d, every 10m
        "#]],
    );
    check(
        "retention:\n  journal: 30x\n  rollouts: 7d\n  audit: forever\n  every: 0s\n  keep: 1\n",
        expect![[r#"
            exit 1
            canaryd.yaml:5:12: retention.journal: unknown duration unit `x` in `30x`: use ms, s, m, h or d
            canaryd.yaml:8:10: retention.every: must be greater than 0s, got 0s
            canaryd.yaml:9:3: retention.keep: unknown field `keep`, expected one of `journal`, `rollouts`, `audit`, `every`
        "#]],
    );
    check(
        "retention: { journal: forever, rollouts: 30d, audit: 1d }\n",
        expect![[r#"
            exit 1
            canaryd.yaml:4:42: retention.rollouts: 30d is shorter than `journal: forever`; a rollout goes whole only after its journal went, so it must be at least as long
            canaryd.yaml:4:54: retention.audit: 1d is shorter than `rollouts: 30d`; a rollout's audit entries go only after the rollout did, so it must be at least as long
        "#]],
    );
}
