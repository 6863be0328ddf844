//! A kubeconfig file, read the way kubectl reads it, into a
//! [`ClusterAccess`] for one context.
//!
//! The context is the router's `context` or the file's `current-context`;
//! from it come the cluster (`server`, `certificate-authority` or
//! `certificate-authority-data`) and the user (`token`, `tokenFile`,
//! `client-certificate(-data)` with `client-key(-data)`, or `exec`).
//! Relative file names are relative to the kubeconfig's own directory, as
//! in kubectl (an exec `command` too, when it has a `/` in it).
//!
//! Every problem is reported at once with its place in the kubeconfig
//! (`/home/me/.kube/config:14:7: users[1].user: ...`). Entries the context
//! does not use are only checked for a `name`: a kubeconfig with a GKE user
//! beside the one canaryd uses must still load. In the context's own
//! cluster and user, unknown keys are refused (a misspelt
//! `certificate-authority-dat` would otherwise mean "trust the system
//! roots"), and so are keys canaryd does not implement (`auth-provider`,
//! impersonation, `username`/`password`, `proxy-url`, `tls-server-name`),
//! rather than quietly connecting as someone else or some other way.
//!
//! `insecure-skip-tls-verify: true` is refused, not warned about: canaryd
//! holds the right to move production traffic, and an unverified server
//! could be anyone on the path; a warning scrolls away in a daemon's log.
//! Give the cluster's CA instead (`certificate-authority-data`).
//!
//! Files (CA, client certificate and key) are read here, so the daemon's
//! config check reports a missing one; token files are read here to check
//! them and again on every request.

use std::path::{Path as FsPath, PathBuf};

use base64::Engine as _;

use super::client::{check_ca, check_identity};
use super::exec::{ExecApiVersion, ExecPlugin, InteractiveMode};
use super::{
    ClientIdentity, ClusterAccess, Credential, KubeError, Pem, Secret, has_pem_certificate,
    has_pem_private_key, read_token_file,
};
use crate::yaml::decode::{self, found};
use crate::yaml::diag::{Diagnostic, Diagnostics, Path, Sink};
use crate::yaml::load_yaml;
use crate::yaml::node::{Node, Pos, Value};

const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "preferences",
    "clusters",
    "contexts",
    "users",
    "current-context",
    "extensions",
];
const CLUSTER_KEYS: &[&str] = &[
    "server",
    "certificate-authority",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "proxy-url",
    "disable-compression",
    "extensions",
];
const CONTEXT_KEYS: &[&str] = &["cluster", "user", "namespace", "extensions"];
const USER_KEYS: &[&str] = &[
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "token",
    "tokenFile",
    "as",
    "as-uid",
    "as-groups",
    "as-user-extra",
    "username",
    "password",
    "auth-provider",
    "exec",
    "extensions",
];
const EXEC_KEYS: &[&str] = &[
    "apiVersion",
    "command",
    "args",
    "env",
    "installHint",
    "provideClusterInfo",
    "interactiveMode",
];

/// A kubeconfig file, parsed as YAML and checked at its top level.
#[derive(Debug)]
pub struct Kubeconfig {
    file: PathBuf,
    root: Node,
}

/// One entry of `clusters`, `contexts` or `users`.
struct Named<'n> {
    name: String,
    body: Option<&'n Node>,
    pos: Pos,
    path: Path,
}

/// Read and resolve `path` for `context` (its `current-context` when
/// `None`): what the router does at start, and the config check.
pub fn resolve(path: &FsPath, context: Option<&str>) -> Result<ClusterAccess, KubeError> {
    Kubeconfig::load(path)?.resolve(context)
}

impl Kubeconfig {
    /// Read the file: YAML, a mapping of the known top-level keys.
    pub fn load(path: &FsPath) -> Result<Kubeconfig, KubeError> {
        let name = path.display().to_string();
        let mut sink = Sink::new(&name);
        let bytes = std::fs::read(path).map_err(|e| KubeError::KubeconfigUnreadable {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        let root = load_yaml(&mut sink, &bytes);
        if let Some(root) = &root
            && let Some(top) = decode::mapping(&mut sink, root, &Path::root(), TOP_KEYS)
        {
            for (key, want) in [("apiVersion", "v1"), ("kind", "Config")] {
                if let Some(n) = top.get(key)
                    && let Some(s) = decode::string(&mut sink, n, &top.child(key))
                    && s != want
                {
                    sink.error(
                        n.pos,
                        &top.child(key),
                        format!("expected `{want}`, found `{s}`"),
                    );
                }
            }
        }
        match (root, sink.finish()) {
            (Some(root), None) => Ok(Kubeconfig {
                file: path.to_path_buf(),
                root,
            }),
            (_, Some(d)) => Err(KubeError::Kubeconfig(d)),
            // `load_yaml` reports whenever it returns nothing.
            (None, None) => Err(KubeError::KubeconfigUnreadable {
                path: name,
                detail: "not YAML".into(),
            }),
        }
    }

    fn top(&self) -> Vec<(&str, &Node)> {
        match &self.root.value {
            Value::Map(entries) => entries
                .iter()
                .filter_map(|(k, v)| match &k.value {
                    Value::Str(s) => Some((s.as_str(), v)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        self.top()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The names of the file's contexts, in file order.
    pub fn context_names(&self) -> Vec<String> {
        let mut sink = Sink::new("");
        self.get("contexts")
            .map(|n| named(&mut sink, n, &Path::root().key("contexts"), "context"))
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    /// The access `context` (its `current-context` when `None`) grants.
    pub fn resolve(&self, context: Option<&str>) -> Result<ClusterAccess, KubeError> {
        let mut sink = Sink::new(&self.file.display().to_string());
        let access = self.resolve_into(&mut sink, context);
        match (access, sink.finish()) {
            (Some(a), None) => Ok(a),
            (_, Some(d)) => Err(KubeError::Kubeconfig(d)),
            // Every reader reports before it returns nothing; should one
            // not, the file is still refused, saying so.
            (None, None) => Err(KubeError::Kubeconfig(Diagnostics(vec![Diagnostic {
                file: self.file.display().to_string(),
                pos: self.root.pos,
                path: String::new(),
                message: "cannot be used (no detail was reported)".into(),
            }]))),
        }
    }

    fn dir(&self) -> PathBuf {
        match self.file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn resolve_into(&self, sink: &mut Sink, context: Option<&str>) -> Option<ClusterAccess> {
        let root = Path::root();
        let mut list = |key: &str, body: &str| {
            self.get(key)
                .map(|n| named(sink, n, &root.key(key), body))
                .unwrap_or_default()
        };
        let clusters = list("clusters", "cluster");
        let contexts = list("contexts", "context");
        let users = list("users", "user");

        let (context_name, context_ref) = match context {
            Some(c) => (
                c.to_string(),
                (self.list_pos("contexts"), root.key("contexts")),
            ),
            None => {
                let Some(n) = self.get("current-context") else {
                    sink.error(
                        self.root.pos,
                        &root,
                        "no `current-context`, and the router config names no `context`",
                    );
                    return None;
                };
                let name = decode::string(sink, n, &root.key("current-context"))?;
                if name.is_empty() {
                    sink.error(
                        n.pos,
                        &root.key("current-context"),
                        "is empty, and the router config names no `context`",
                    );
                    return None;
                }
                (name, (n.pos, root.key("current-context")))
            }
        };
        let ctx = pick(sink, &contexts, &context_name, "context", context_ref)?;
        let ctx_body = body(sink, ctx, "context")?;
        let f = decode::mapping(sink, ctx_body, &ctx.path.key("context"), CONTEXT_KEYS)?;
        let reference = |sink: &mut Sink, key: &str| {
            let n = f.require(sink, key)?;
            let name = decode::string(sink, n, &f.child(key))?;
            Some((name, (n.pos, f.child(key))))
        };
        let cluster_name = reference(sink, "cluster");
        let user_name = reference(sink, "user");
        if let Some(n) = f.get("namespace") {
            decode::string(sink, n, &f.child("namespace"));
        }
        let cluster =
            cluster_name.and_then(|(name, at)| pick(sink, &clusters, &name, "cluster", at));
        let user = user_name.and_then(|(name, at)| pick(sink, &users, &name, "user", at));

        let cluster = cluster.and_then(|c| self.cluster(sink, c));
        let credential = user.and_then(|u| self.user(sink, u));
        let (server, ca) = cluster?;
        let credential = match credential? {
            // The cluster the plugin is told about (`provideClusterInfo`).
            Credential::Exec(mut plugin) => {
                plugin.cluster_server = Some(server.clone());
                plugin.cluster_ca = ca.as_ref().map(|p| p.bytes.clone());
                Credential::Exec(plugin)
            }
            other => other,
        };
        Some(ClusterAccess {
            server,
            ca,
            credential,
            origin: self.origin(&context_name),
        })
    }

    fn origin(&self, context: &str) -> String {
        format!("kubeconfig {}, context {context}", self.file.display())
    }

    fn list_pos(&self, key: &str) -> Pos {
        self.get(key).map_or(self.root.pos, |n| n.pos)
    }

    /// A file named in the kubeconfig, relative to its directory.
    fn local(&self, name: &str) -> PathBuf {
        let p = PathBuf::from(name);
        if p.is_absolute() {
            p
        } else {
            self.dir().join(p)
        }
    }

    fn cluster(&self, sink: &mut Sink, c: &Named<'_>) -> Option<(String, Option<Pem>)> {
        let node = body(sink, c, "cluster")?;
        let path = c.path.key("cluster");
        let f = decode::mapping(sink, node, &path, CLUSTER_KEYS)?;
        let mut ok = true;
        for key in ["tls-server-name", "proxy-url"] {
            if let Some(n) = f.get(key) {
                ok = false;
                sink.error(
                    n.pos,
                    &f.child(key),
                    format!(
                        "`{key}` is not supported by canaryd; remove it or use a context without it"
                    ),
                );
            }
        }
        if let Some(n) = f.get("insecure-skip-tls-verify")
            && let skip = decode::boolean(sink, n, &f.child("insecure-skip-tls-verify"))
            && skip != Some(false)
        {
            ok = false;
        }
        if let Some(n) = f.get("insecure-skip-tls-verify")
            && n.value == Value::Bool(true)
        {
            sink.error(
                n.pos,
                &f.child("insecure-skip-tls-verify"),
                "refused: canaryd does not talk to an API server it cannot verify; give the cluster's CA (`certificate-authority-data` or `certificate-authority`)",
            );
        }
        if let Some(n) = f.get("disable-compression") {
            ok &= decode::boolean(sink, n, &f.child("disable-compression")).is_some();
        }
        let server = f.require(sink, "server").and_then(|n| {
            let s = decode::string(sink, n, &f.child("server"))?;
            if !decode::is_http_url(&s) {
                sink.error(
                    n.pos,
                    &f.child("server"),
                    format!("expected an https:// URL, found `{s}`"),
                );
                return None;
            }
            Some(s.trim_end_matches('/').to_string())
        });
        let ca = self.pem_pair(
            sink,
            &f,
            "certificate-authority",
            "certificate-authority-data",
            PemKind::Certificate,
        );
        if let Some(Some((pem, pos))) = &ca
            && let Err(e) = check_ca(pem)
        {
            ok = false;
            let key = if f.has("certificate-authority") {
                "certificate-authority"
            } else {
                "certificate-authority-data"
            };
            sink.error(*pos, &f.child(key), tls_detail(&e, &pem.origin));
        }
        if let (Some(s), Some(Some(_))) = (&server, &ca)
            && s.starts_with("http://")
            && let Some(n) = f
                .get("certificate-authority")
                .or(f.get("certificate-authority-data"))
        {
            ok = false;
            sink.error(
                n.pos,
                &path,
                format!("a CA for the plain-HTTP server `{s}` would never be used; use https:// or drop the CA"),
            );
        }
        if !ok {
            return None;
        }
        Some((server?, ca?.map(|(pem, _)| pem)))
    }

    fn user(&self, sink: &mut Sink, u: &Named<'_>) -> Option<Credential> {
        let node = body(sink, u, "user")?;
        let path = u.path.key("user");
        let f = decode::mapping(sink, node, &path, USER_KEYS)?;
        let mut ok = true;
        for (key, why) in [
            (
                "auth-provider",
                "use an `exec` plugin instead (for GKE: gke-gcloud-auth-plugin; for Azure: kubelogin)",
            ),
            (
                "username",
                "basic authentication is not supported; use a token, a client certificate or `exec`",
            ),
            (
                "password",
                "basic authentication is not supported; use a token, a client certificate or `exec`",
            ),
            (
                "as",
                "impersonation is not supported; give canaryd its own user",
            ),
            (
                "as-uid",
                "impersonation is not supported; give canaryd its own user",
            ),
            (
                "as-groups",
                "impersonation is not supported; give canaryd its own user",
            ),
            (
                "as-user-extra",
                "impersonation is not supported; give canaryd its own user",
            ),
        ] {
            if let Some(n) = f.get(key) {
                ok = false;
                sink.error(
                    n.pos,
                    &f.child(key),
                    format!("`{key}` is not supported by canaryd: {why}"),
                );
            }
        }
        let cert = self.pem_pair(
            sink,
            &f,
            "client-certificate",
            "client-certificate-data",
            PemKind::Certificate,
        );
        let key = self.pem_pair(
            sink,
            &f,
            "client-key",
            "client-key-data",
            PemKind::PrivateKey,
        );
        let token = f.get("token").and_then(|n| {
            let s = decode::string(sink, n, &f.child("token"))?;
            if s.trim().is_empty() {
                sink.error(n.pos, &f.child("token"), "is empty");
                return None;
            }
            Some(Secret(s.trim().to_string()))
        });
        let token_file = f.get("tokenFile").and_then(|n| {
            let s = decode::string(sink, n, &f.child("tokenFile"))?;
            let p = self.local(&s);
            if let Err(e) = read_token_file(&p) {
                sink.error(n.pos, &f.child("tokenFile"), e.to_string());
                return None;
            }
            Some(p)
        });
        let exec = match f.get("exec") {
            None => Some(None),
            Some(n) => self.exec(sink, n, &f.child("exec")).map(Some),
        };
        let token = match f.get("token") {
            None => Some(None),
            Some(_) => token.map(Some),
        };
        let token_file = match f.get("tokenFile") {
            None => Some(None),
            Some(_) => token_file.map(Some),
        };
        let (Some(cert), Some(key), Some(token), Some(token_file), Some(exec), true) =
            (cert, key, token, token_file, exec, ok)
        else {
            return None;
        };
        let mut given: Vec<(&str, Credential)> = Vec::new();
        match (cert, key) {
            (Some((certificate, pos)), Some((key, _))) => {
                let identity = ClientIdentity {
                    certificate,
                    // Checked to be UTF-8 PEM by `pem_pair`.
                    key: Secret(String::from_utf8_lossy(&key.bytes).into_owned()),
                };
                if let Err(e) = check_identity(&identity) {
                    let detail = tls_detail(&e, &identity.certificate.origin);
                    sink.error(pos, &path, format!("client certificate: {detail}"));
                    return None;
                }
                given.push((
                    "client-certificate",
                    Credential::ClientCertificate(identity),
                ));
            }
            (Some((_, pos)), None) => {
                sink.error(
                    pos,
                    &path,
                    "a client certificate needs `client-key` or `client-key-data`",
                );
                return None;
            }
            (None, Some((_, pos))) => {
                sink.error(
                    pos,
                    &path,
                    "a client key needs `client-certificate` or `client-certificate-data`",
                );
                return None;
            }
            (None, None) => {}
        }
        if let Some(t) = token {
            given.push(("token", Credential::Token(t)));
        }
        if let Some(p) = token_file {
            given.push(("tokenFile", Credential::TokenFile(p)));
        }
        if let Some(e) = exec {
            given.push(("exec", Credential::Exec(e)));
        }
        match given.len() {
            1 => given.pop().map(|(_, c)| c),
            0 => {
                sink.error(
                    node.pos,
                    &path,
                    "no credential: expected one of `token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`, or `exec`",
                );
                None
            }
            _ => {
                let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
                sink.error(
                    node.pos,
                    &path,
                    format!(
                        "{} are given; canaryd uses exactly one credential, keep one",
                        decode::one_of(&names).replace(", ", " and ")
                    ),
                );
                None
            }
        }
    }

    /// `file_key` or `data_key` (not both): the PEM read or decoded, and
    /// the key's position. `None`: a problem was reported; `Some(None)`:
    /// neither given.
    fn pem_pair(
        &self,
        sink: &mut Sink,
        f: &decode::Fields<'_>,
        file_key: &str,
        data_key: &str,
        kind: PemKind,
    ) -> Option<Option<(Pem, Pos)>> {
        match (f.get(file_key), f.get(data_key)) {
            (Some(_), Some(d)) => {
                sink.error(
                    d.pos,
                    &f.child(data_key),
                    format!("`{file_key}` and `{data_key}` are both given; keep one"),
                );
                None
            }
            (Some(n), None) => {
                let p = f.child(file_key);
                let name = decode::string(sink, n, &p)?;
                let file = self.local(&name);
                let bytes = match std::fs::read(&file) {
                    Ok(b) => b,
                    Err(e) => {
                        sink.error(n.pos, &p, format!("cannot read {}: {e}", file.display()));
                        return None;
                    }
                };
                let origin = file.display().to_string();
                check_pem(sink, n.pos, &p, &bytes, kind, &origin)?;
                Some(Some((Pem { bytes, origin }, n.pos)))
            }
            (None, Some(n)) => {
                let p = f.child(data_key);
                let text = decode::string(sink, n, &p)?;
                let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = match base64::engine::general_purpose::STANDARD.decode(compact) {
                    Ok(b) => b,
                    Err(e) => {
                        let e = e.to_string();
                        sink.error(
                            n.pos,
                            &p,
                            format!("is not base64: {}", e.trim_end_matches('.')),
                        );
                        return None;
                    }
                };
                check_pem(sink, n.pos, &p, &bytes, kind, "the decoded data")?;
                Some(Some((
                    Pem {
                        bytes,
                        origin: format!("{}: {p}", self.file.display()),
                    },
                    n.pos,
                )))
            }
            (None, None) => Some(None),
        }
    }

    fn exec(&self, sink: &mut Sink, node: &Node, path: &Path) -> Option<ExecPlugin> {
        let f = decode::mapping(sink, node, path, EXEC_KEYS)?;
        let api_version = f.require(sink, "apiVersion").and_then(|n| {
            let s = decode::string(sink, n, &f.child("apiVersion"))?;
            let v = ExecApiVersion::parse(&s);
            if v.is_none() {
                sink.error(
                    n.pos,
                    &f.child("apiVersion"),
                    format!(
                        "expected `client.authentication.k8s.io/v1` or `client.authentication.k8s.io/v1beta1`, found `{s}`"
                    ),
                );
            }
            v
        });
        let command = f.require(sink, "command").and_then(|n| {
            let s = decode::string(sink, n, &f.child("command"))?;
            if s.trim().is_empty() {
                sink.error(n.pos, &f.child("command"), "is empty");
                return None;
            }
            // kubectl: a command with a `/` is a path, relative to the
            // kubeconfig; a bare name is looked up on PATH.
            Some(if s.contains('/') {
                self.local(&s)
            } else {
                PathBuf::from(s)
            })
        });
        let args = match f.get("args") {
            None => Some(Vec::new()),
            Some(n) => strings(sink, n, &f.child("args")),
        };
        let env = match f.get("env") {
            None => Some(Vec::new()),
            Some(n) => env_list(sink, n, &f.child("env")),
        };
        let provide_cluster_info = match f.get("provideClusterInfo") {
            None => Some(false),
            Some(n) => decode::boolean(sink, n, &f.child("provideClusterInfo")),
        };
        let interactive = match f.get("interactiveMode") {
            None => Some(InteractiveMode::Never),
            Some(n) => decode::keyword(
                sink,
                n,
                &f.child("interactiveMode"),
                &[
                    ("Never", InteractiveMode::Never),
                    ("IfAvailable", InteractiveMode::IfAvailable),
                    ("Always", InteractiveMode::Always),
                ],
            ),
        };
        let install_hint = f
            .get("installHint")
            .and_then(|n| decode::string(sink, n, &f.child("installHint")));
        if interactive == Some(InteractiveMode::Always)
            && let Some(n) = f.get("interactiveMode")
        {
            sink.error(
                n.pos,
                &f.child("interactiveMode"),
                "`Always` needs a terminal, and canaryd is a daemon: use a plugin that runs unattended (`Never` or `IfAvailable`)",
            );
            return None;
        }
        Some(ExecPlugin {
            api_version: api_version?,
            command: command?,
            args: args?,
            env: env?,
            provide_cluster_info: provide_cluster_info?,
            interactive: interactive?,
            install_hint,
            cluster_server: None,
            cluster_ca: None,
        })
    }
}

/// A TLS error's message, without the name of the data it is about (the
/// diagnostic's place says it).
fn tls_detail(e: &KubeError, origin: &str) -> String {
    let detail = match e {
        KubeError::Tls(detail) => detail.clone(),
        other => other.to_string(),
    };
    for prefix in [
        format!("{origin}: "),
        format!("client certificate {origin}: "),
    ] {
        if let Some(rest) = detail.strip_prefix(&prefix) {
            return rest.to_string();
        }
    }
    detail
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

fn check_pem(
    sink: &mut Sink,
    pos: Pos,
    path: &Path,
    bytes: &[u8],
    kind: PemKind,
    what: &str,
) -> Option<()> {
    let (ok, want) = match kind {
        PemKind::Certificate => (
            has_pem_certificate(bytes),
            "PEM certificate (`-----BEGIN CERTIFICATE-----`)",
        ),
        PemKind::PrivateKey => (
            has_pem_private_key(bytes) && std::str::from_utf8(bytes).is_ok(),
            "PEM private key (`-----BEGIN PRIVATE KEY-----`, or RSA/EC)",
        ),
    };
    if ok {
        Some(())
    } else {
        sink.error(pos, path, format!("{what} holds no {want}"));
        None
    }
}

/// The entries of a `clusters`/`contexts`/`users` list: each a mapping with
/// a `name` and a body under `body_key`.
fn named<'n>(sink: &mut Sink, node: &'n Node, path: &Path, body_key: &str) -> Vec<Named<'n>> {
    if node.value == Value::Null {
        return Vec::new();
    }
    let Some(items) = decode::sequence(sink, node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Value::Map(entries) = &item.value else {
            sink.error(
                item.pos,
                &p,
                format!(
                    "expected a mapping with `name` and `{body_key}`, found {}",
                    found(&item.value)
                ),
            );
            continue;
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.value == Value::Str(k.to_string()))
                .map(|(_, v)| v)
        };
        let Some(name_node) = get("name") else {
            sink.error(item.pos, &p, "missing required field `name`");
            continue;
        };
        let Some(name) = decode::string(sink, name_node, &p.key("name")) else {
            continue;
        };
        out.push(Named {
            name,
            body: get(body_key),
            pos: item.pos,
            path: p,
        });
    }
    out
}

/// The one entry named `name`, or an error at the reference `at` listing
/// the names there are.
fn pick<'a, 'n>(
    sink: &mut Sink,
    list: &'a [Named<'n>],
    name: &str,
    what: &str,
    at: (Pos, Path),
) -> Option<&'a Named<'n>> {
    let plural = format!("{what}s");
    let found: Vec<&Named<'n>> = list.iter().filter(|n| n.name == name).collect();
    match found.as_slice() {
        [one] => Some(one),
        [] => {
            let names: Vec<&str> = list.iter().map(|n| n.name.as_str()).collect();
            let have = if names.is_empty() {
                format!("there are no {plural}")
            } else {
                format!("there are {}", decode::one_of(&names))
            };
            sink.error(at.0, &at.1, format!("no {what} named `{name}`; {have}"));
            None
        }
        [_, second, ..] => {
            sink.error(
                second.pos,
                &second.path,
                format!("a second {what} named `{name}`; names must be unique"),
            );
            None
        }
    }
}

fn body<'n>(sink: &mut Sink, n: &Named<'n>, key: &str) -> Option<&'n Node> {
    if n.body.is_none() {
        sink.error(n.pos, &n.path, format!("missing required field `{key}`"));
    }
    n.body
}

fn strings(sink: &mut Sink, node: &Node, path: &Path) -> Option<Vec<String>> {
    if node.value == Value::Null {
        return Some(Vec::new());
    }
    let items = decode::sequence(sink, node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match decode::string(sink, item, &path.index(i)) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn env_list(sink: &mut Sink, node: &Node, path: &Path) -> Option<Vec<(String, String)>> {
    if node.value == Value::Null {
        return Some(Vec::new());
    }
    let items = decode::sequence(sink, node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(f) = decode::mapping(sink, item, &p, &["name", "value"]) else {
            ok = false;
            continue;
        };
        let name = f
            .require(sink, "name")
            .and_then(|n| decode::string(sink, n, &f.child("name")));
        let value = f
            .require(sink, "value")
            .and_then(|n| decode::string(sink, n, &f.child("value")));
        match (name, value) {
            (Some(n), Some(v)) if !n.is_empty() && !n.contains('=') => out.push((n, v)),
            (Some(n), Some(_)) => {
                sink.error(
                    f.pos,
                    &f.child("name"),
                    format!("`{n}` is not an environment variable name"),
                );
                ok = false;
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}
