//! The daemon config's `gatewayApi` block, read with the files it names:
//! each broken variant (the router's keys, the kubeconfig, the files they
//! point at) is refused at parse time, so `config check` and the daemon's
//! start report it with its place; for a kubeconfig, its own
//! `FILE:LINE:COL: path` comes after the config's. The temp dir reads `$D`.

use canaryd::daemon::config::parse_config;
use canaryd::routers::RouterConfig;
use expect_test::{Expect, expect};

/// A real certificate (the checks parse it), made once.
fn ca() -> &'static str {
    static CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        rcgen::generate_simple_self_signed(vec!["cluster-ca".to_string()])
            .unwrap()
            .cert
            .pem()
    })
}

/// A kubeconfig whose current context `prod` uses `cluster` and `user`
/// (indented YAML bodies) beside a context that uses nothing valid.
fn kubeconfig(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: c
  cluster:
{cluster}
contexts:
- name: prod
  context: {{cluster: c, user: u}}
- name: spare
  context: {{cluster: gone, user: gone}}
users:
- name: u
  user:
{user}
"
    )
}

const GOOD_CLUSTER: &str = "    server: https://10.0.0.1:6443\n    certificate-authority: ca.crt";
const GOOD_USER: &str = "    token: abc";

/// Parse a config whose service `app` has `gatewayApi: {router}` (one line,
/// `$D` the temp dir), after writing `files` (`config` is the kubeconfig)
/// into the temp dir. The diagnostics, or `ok: ...` with the cluster source.
fn parse(files: &[(&str, &str)], router: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let yaml = format!(
        "services:\n  app:\n    router:\n      gatewayApi: {{ namespace: prod, route: app, baseline: a, canary: b, {} }}\n",
        router.replace("$D", &d)
    );
    match parse_config("c.yaml", yaml.as_bytes()) {
        Ok(c) => match &c.services["app"].router {
            Some(RouterConfig::GatewayApi(g)) => format!("ok: {:?}\n", g.cluster).replace(&d, "$D"),
            other => panic!("{other:?}"),
        },
        Err(e) => format!("{e}\n").replace(&d, "$D"),
    }
}

fn check(files: &[(&str, &str)], router: &str, want: Expect) {
    want.assert_eq(&parse(files, router));
}

#[test]
fn good_configs_name_their_cluster_source() {
    check(
        &[
            ("config", &kubeconfig(GOOD_CLUSTER, GOOD_USER)),
            ("ca.crt", ca()),
        ],
        "kubeconfig: $D/config",
        expect![[r#"
            ok: Kubeconfig { path: "$D/config", context: None, server: None }
        "#]],
    );
    check(
        &[
            ("config", &kubeconfig(GOOD_CLUSTER, GOOD_USER)),
            ("ca.crt", ca()),
        ],
        "kubeconfig: $D/config, context: prod, server: \"https://127.0.0.1:6443/\"",
        expect![[r#"
            ok: Kubeconfig { path: "$D/config", context: Some("prod"), server: Some("https://127.0.0.1:6443") }
        "#]],
    );
    check(
        &[],
        "inCluster: true",
        expect![[r#"
            ok: InCluster { service_account_dir: "/var/run/secrets/kubernetes.io/serviceaccount" }
        "#]],
    );
    check(
        &[("token", "abc\n"), ("ca.crt", ca())],
        "server: \"https://10.0.0.1:6443\", tokenFile: $D/token, caFile: $D/ca.crt",
        expect![[r#"
            ok: Explicit { server: "https://10.0.0.1:6443", token_file: Some("$D/token"), tls: ClientTls { ca_file: Some("$D/ca.crt"), identity: None } }
        "#]],
    );
}

#[test]
fn broken_router_keys_are_refused_where_they_are_written() {
    check(
        &[],
        "server: \"https://10.0.0.1:6443\"",
        expect![[r#"
            c.yaml:4:19: services.app.router.gatewayApi: expected one way to the API server: `server` with `tokenFile` (or `clientCert` and `clientKey`), `kubeconfig`, or `inCluster: true`
        "#]],
    );
    check(
        &[("token", "abc")],
        "server: \"https://x:1\", tokenFile: $D/token, kubeconfig: $D/config",
        expect![[r#"
            c.yaml:4:19: services.app.router.gatewayApi: `tokenFile`/`clientCert` and `kubeconfig` are given; expected exactly one way to the API server
        "#]],
    );
    check(
        &[],
        "inCluster: true, server: \"https://x:1\"",
        expect![[r#"
            c.yaml:4:99: services.app.router.gatewayApi.server: `inCluster` finds the server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT; drop `server`
        "#]],
    );
    check(
        &[],
        "inCluster: yes",
        expect![[r#"
            c.yaml:4:85: services.app.router.gatewayApi.inCluster: expected `true` or `false`, found a string `yes`
        "#]],
    );
    check(
        &[
            ("config", &kubeconfig(GOOD_CLUSTER, GOOD_USER)),
            ("ca.crt", ca()),
        ],
        "kubeconfig: $D/config, caFile: $D/ca.crt",
        expect![[r#"
            c.yaml:4:118: services.app.router.gatewayApi.caFile: only with `server` and no `kubeconfig`/`inCluster`: a kubeconfig names its own CA and certificates, the service account its own
        "#]],
    );
    check(
        &[("token", "abc")],
        "server: \"https://x:1\", tokenFile: $D/token, context: prod",
        expect![[r#"
            c.yaml:4:140: services.app.router.gatewayApi.context: `context` chooses a kubeconfig's context; give `kubeconfig` too
        "#]],
    );
    check(
        &[],
        "server: \"https://x:1\", tokenFile: $D/missing",
        expect![[r#"
            c.yaml:4:108: services.app.router.gatewayApi.tokenFile: token file $D/missing: cannot read it: No such file or directory (os error 2)
        "#]],
    );
    check(
        &[("token", "abc"), ("ca.crt", "not a certificate")],
        "server: \"https://x:1\", tokenFile: $D/token, caFile: $D/ca.crt",
        expect![[r#"
            c.yaml:4:139: services.app.router.gatewayApi.caFile: $D/ca.crt: not PEM (no `-----BEGIN` line; a DER file converts with `openssl x509 -inform der -in FILE`)
        "#]],
    );
    check(
        &[("client.crt", ca())],
        "server: \"https://x:1\", clientCert: $D/client.crt",
        expect![[r#"
            c.yaml:4:109: services.app.router.gatewayApi.clientCert: `clientCert` needs `clientKey` beside it (mutual TLS takes both)
        "#]],
    );
    check(
        &[("token", "abc"), ("ca.crt", ca())],
        "server: \"http://x:1\", tokenFile: $D/token, caFile: $D/ca.crt",
        expect![[r#"
            c.yaml:4:138: services.app.router.gatewayApi.caFile: `caFile` applies to https:// URLs only, and the URL is http://; use https:// or remove `caFile`
        "#]],
    );
}

#[test]
fn broken_kubeconfigs_are_refused_with_their_own_place() {
    let with = |cluster: &str, user: &str| kubeconfig(cluster, user);
    let kc = "kubeconfig: $D/config";
    check(
        &[],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: cannot read the kubeconfig $D/config: No such file or directory (os error 2)
        "#]],
    );
    check(
        &[("config", "clusters: [unclosed")],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:1:11: invalid YAML: unclosed bracket '['
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(GOOD_CLUSTER, GOOD_USER).replace("current-context: prod\n", ""),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:1:1: no `current-context`, and the router config names no `context`
        "#]],
    );
    check(
        &[("config", &with(GOOD_CLUSTER, GOOD_USER)), ("ca.crt", ca())],
        "kubeconfig: $D/config, context: staging",
        expect![[r#"
            c.yaml:4:119: services.app.router.gatewayApi.context: $D/config has no context `staging`; it has `prod`, `spare`
        "#]],
    );
    check(
        &[("config", &with(GOOD_CLUSTER, GOOD_USER)), ("ca.crt", ca())],
        "kubeconfig: $D/config, context: spare",
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:13:22: contexts[1].context.cluster: no cluster named `gone`; there are `c`
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:13:34: contexts[1].context.user: no user named `gone`; there are `u`
        "#]],
    );
    check(
        &[(
            "config",
            &with(
                "    server: https://10.0.0.1:6443\n    insecure-skip-tls-verify: true",
                GOOD_USER,
            ),
        )],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:31: clusters[0].cluster.insecure-skip-tls-verify: refused: canaryd does not talk to an API server it cannot verify; give the cluster's CA (`certificate-authority-data` or `certificate-authority`)
        "#]],
    );
    check(
        &[(
            "config",
            &with(
                "    server: https://10.0.0.1:6443\n    certificate-authority-data: '%%%'",
                GOOD_USER,
            ),
        )],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:33: clusters[0].cluster.certificate-authority-data: is not base64: Invalid symbol 37, offset 0
        "#]],
    );
    check(
        &[(
            "config",
            &with(
                "    server: https://10.0.0.1:6443\n    certificate-authority-data: aGVsbG8=",
                GOOD_USER,
            ),
        )],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:33: clusters[0].cluster.certificate-authority-data: the decoded data holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)
        "#]],
    );
    check(
        &[("config", &with(GOOD_CLUSTER, GOOD_USER))],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:28: clusters[0].cluster.certificate-authority: cannot read $D/ca.crt: No such file or directory (os error 2)
        "#]],
    );
    check(
        &[(
            "config",
            &with(
                "    server: https://10.0.0.1:6443\n    certificate-authority-dat: aGVsbG8=",
                GOOD_USER,
            ),
        )],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:5: clusters[0].cluster.certificate-authority-dat: unknown field `certificate-authority-dat`, expected one of `server`, `certificate-authority`, `certificate-authority-data`, `insecure-skip-tls-verify`, `tls-server-name`, `proxy-url`, `disable-compression`, `extensions`
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(
                    GOOD_CLUSTER,
                    "    token: abc\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}",
                ),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:5: users[0].user: `token` and `exec` are given; canaryd uses exactly one credential, keep one
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(
                    GOOD_CLUSTER,
                    "    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
                ),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:30: users[0].user: a client certificate needs `client-key` or `client-key-data`
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(GOOD_CLUSTER, "    auth-provider: {name: gcp}"),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:20: users[0].user.auth-provider: `auth-provider` is not supported by canaryd: use an `exec` plugin instead (for GKE: gke-gcloud-auth-plugin; for Azure: kubelogin)
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(
                    GOOD_CLUSTER,
                    "    exec: {apiVersion: client.authentication.k8s.io/v1alpha1, interactiveMode: Always}",
                ),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:11: users[0].user.exec: missing required field `command`
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:24: users[0].user.exec.apiVersion: expected `client.authentication.k8s.io/v1` or `client.authentication.k8s.io/v1beta1`, found `client.authentication.k8s.io/v1alpha1`
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:80: users[0].user.exec.interactiveMode: `Always` needs a terminal, and canaryd is a daemon: use a plugin that runs unattended (`Never` or `IfAvailable`)
        "#]],
    );
    check(
        &[("config", &with(GOOD_CLUSTER, "    {}")), ("ca.crt", ca())],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:5: users[0].user: no credential: expected one of `token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`, or `exec`
        "#]],
    );
    check(
        &[
            (
                "config",
                &with(GOOD_CLUSTER, GOOD_USER).replace("- name: spare", "- name: prod"),
            ),
            ("ca.crt", ca()),
        ],
        kc,
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:12:3: contexts[1]: a second context named `prod`; names must be unique
        "#]],
    );
}

#[test]
fn certificates_are_parsed_and_a_key_must_match_its_certificate() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let one = rcgen::generate_simple_self_signed(vec!["one".to_string()]).unwrap();
    let two = rcgen::generate_simple_self_signed(vec!["two".to_string()]).unwrap();
    let fake_pem = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
    check(
        &[(
            "config",
            &kubeconfig(
                &format!(
                    "    server: https://10.0.0.1:6443\n    certificate-authority-data: {}",
                    b64(fake_pem)
                ),
                GOOD_USER,
            ),
        )],
        "kubeconfig: $D/config",
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:8:33: clusters[0].cluster.certificate-authority-data: certificate 1 is not a usable X.509 certificate: invalid peer certificate: BadEncoding
        "#]],
    );
    check(
        &[
            (
                "config",
                &kubeconfig(
                    GOOD_CLUSTER,
                    &format!(
                        "    client-certificate-data: {}\n    client-key-data: {}",
                        b64(&one.cert.pem()),
                        b64(&two.signing_key.serialize_pem())
                    ),
                ),
            ),
            ("ca.crt", ca()),
        ],
        "kubeconfig: $D/config",
        expect![[r#"
            c.yaml:4:86: services.app.router.gatewayApi.kubeconfig: $D/config:17:30: users[0].user: client certificate: the key does not match the certificate
        "#]],
    );
}
