//! Everything about a daemon config that can be known without starting
//! anything: the parser's located diagnostics, then the checks that need
//! the filesystem or look across the file (the policies directory and the
//! policies in it, the data dir, token and socket files, programs, two
//! services that would fight over one proxy, file or route, a registry
//! naming a policy that does not exist). `canaryd config check`, the
//! daemon's start and its SIGHUP reload all call [`check_file`], so they
//! report the same problems in the same words.
//!
//! It reads files and directories and never writes, binds or connects.
//! Permission checks are made as the user running the check, so the deploy
//! guide runs `config check` as the daemon's own user (systemd's
//! `ExecReload=`). What another part of the config validates at parse time
//! (TLS files, kubeconfigs, notifications) arrives here as parser
//! diagnostics and is not checked twice.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Config, RegistryConfig, parse_config_partial};
use crate::daemon::policies;
use crate::routers::{HookConfig, RouterConfig};
use crate::sources::SourceConfig;
use crate::yaml::diag::{Diagnostic, Sink};
use crate::yaml::load_yaml;
use crate::yaml::node::{Node, Pos, Value};

/// The largest config file read (a config is a few kilobytes).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// What the command line says instead of the file (`serve`'s flags).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub policies: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The daemon would not start (or a reload is refused), or every
    /// rollout of a service would fail.
    Error,
    /// Likely wrong, or right only on another machine or as another user.
    Warning,
}

/// Where a finding's value was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the config file, at this line and column.
    At { file: String, pos: Pos },
    /// Given on the command line by this flag.
    Flag(&'static str),
    /// Not written anywhere: the default (in `file`, when there is one).
    Default { file: Option<String> },
}

/// One problem, with its place, the field path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub place: Place,
    /// Field path such as `services.web.router.file.path`; empty for the
    /// file as a whole.
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl From<Diagnostic> for Finding {
    fn from(d: Diagnostic) -> Finding {
        Finding {
            severity: Severity::Error,
            place: Place::At {
                file: d.file,
                pos: d.pos,
            },
            path: d.path,
            message: d.message,
        }
    }
}

/// `FILE:LINE:COL: path: message`, as the parser's diagnostics read, with
/// `warning: ` before the path for warnings; a value from a flag or a
/// default says so instead of a line.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        match &self.place {
            Place::At { file, pos } => write!(f, "{file}:{}:{}: {level}", pos.line, pos.col)?,
            Place::Flag(_) | Place::Default { file: None } => f.write_str(level)?,
            Place::Default { file: Some(file) } => write!(f, "{file}: {level}")?,
        }
        if !self.path.is_empty() {
            f.write_str(&self.path)?;
            match &self.place {
                Place::Flag(flag) => write!(f, " (from {flag})")?,
                Place::Default { .. } => f.write_str(" (the default)")?,
                Place::At { .. } => {}
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// A config file checked: the config (when it parsed) and every finding,
/// errors and warnings, in file order.
#[derive(Debug)]
pub struct Checked {
    pub config: Option<Config>,
    pub findings: Vec<Finding>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.is_error())
    }

    /// The config, when nothing is an error.
    pub fn into_config(self) -> Option<Config> {
        if self.has_errors() { None } else { self.config }
    }
}

/// Read, parse and check a config file (`None`: the defaults, as `serve`
/// without `--config`), with `overrides` applied as `serve` applies them.
/// A file that cannot be read is a finding too, so every caller reports it
/// the same way.
pub fn check_file(file: Option<&Path>, overrides: &Overrides) -> Checked {
    let Some(path) = file else {
        return check_bytes(None, b"{}", overrides);
    };
    let name = path.display().to_string();
    match read_bounded(path) {
        Ok(bytes) => check_bytes(Some(&name), &bytes, overrides),
        Err(e) => Checked {
            config: None,
            findings: vec![Finding {
                severity: Severity::Error,
                place: Place::Default { file: Some(name) },
                path: String::new(),
                message: format!("cannot read the config file: {e}"),
            }],
        },
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    // One byte over the limit is enough for the parser to say it is too big.
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// As [`check_file`], for bytes already read; `file` names them.
///
/// The offline checks run on whatever the parser could decode, so one
/// mistyped service does not hide a missing policies directory; a check
/// whose value the parser already refused (or whose place a refused entry
/// would shift) is left out rather than reported twice or wrongly.
pub fn check_bytes(file: Option<&str>, bytes: &[u8], overrides: &Overrides) -> Checked {
    let name = file.unwrap_or("");
    let (parsed, diags) = parse_config_partial(name, bytes);
    let mut findings: Vec<Finding> = diags
        .map(|d| d.0.into_iter().map(Finding::from).collect())
        .unwrap_or_default();
    let Some((mut config, complete)) = parsed else {
        return Checked {
            config: None,
            findings,
        };
    };
    let mut flags = BTreeMap::new();
    if let Some(d) = &overrides.data_dir {
        config.data_dir = d.clone();
        flags.insert("dataDir", "--data-dir");
    }
    if let Some(l) = overrides.listen {
        config.listen = l;
        flags.insert("listen", "--listen");
    }
    if let Some(p) = &overrides.policies {
        config.policies = p.clone();
        flags.insert("policies", "--policies");
    }
    // The parser accepted the bytes as YAML, so they load again; the tree
    // only gives places.
    let root = file.and_then(|_| load_yaml(&mut Sink::new(name), bytes));
    let refused: Vec<String> = findings.iter().map(|f| f.path.clone()).collect();
    let mut run = Run {
        file,
        root: root.as_ref(),
        flags,
        refused: &refused,
        findings: Vec::new(),
    };
    run.everything(&config);
    let offline = run.findings;
    findings.extend(
        offline
            .into_iter()
            .filter(|f| !refused.iter().any(|r| is_under(&f.path, r))),
    );
    // File order, then flags and defaults; stable within one place.
    findings.sort_by_key(|f| match &f.place {
        Place::At { pos, .. } => (0, *pos),
        Place::Flag(_) => (1, Pos::default()),
        Place::Default { .. } => (2, Pos::default()),
    });
    Checked {
        config: complete.then_some(config),
        findings,
    }
}

/// Whether field path `path` is `parent` or inside it (an empty parent is
/// the whole file).
fn is_under(path: &str, parent: &str) -> bool {
    parent.is_empty()
        || path
            .strip_prefix(parent)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// One segment of a field path.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A field path that can also be found in the YAML tree.
#[derive(Clone, Debug, Default)]
struct Field(Vec<Seg>);

impl Field {
    fn key(&self, k: &str) -> Field {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_owned()));
        Field(v)
    }

    fn index(&self, i: usize) -> Field {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Field(v)
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

fn field(keys: &[&str]) -> Field {
    keys.iter().fold(Field::default(), |f, k| f.key(k))
}

/// Where `field`'s value is written in `root`: the value's position (for
/// a missing leaf, its nearest written ancestor's).
fn locate(root: &Node, field: &Field) -> Option<Pos> {
    let mut node = root;
    for seg in &field.0 {
        node = match (seg, &node.value) {
            (Seg::Key(k), Value::Map(entries)) => {
                &entries
                    .iter()
                    .find(|(key, _)| matches!(&key.value, Value::Str(s) if s == k))?
                    .1
            }
            (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node.pos)
}

struct Run<'a> {
    file: Option<&'a str>,
    root: Option<&'a Node>,
    /// Top-level keys given by a flag instead.
    flags: BTreeMap<&'static str, &'static str>,
    /// Paths the parser refused (their values are defaults or left out).
    refused: &'a [String],
    findings: Vec<Finding>,
}

impl Run<'_> {
    /// The parser refused something at or inside top-level `key`.
    fn refused(&self, key: &str) -> bool {
        self.refused
            .iter()
            .any(|r| is_under(r, key) || r.is_empty())
    }

    fn report(&mut self, severity: Severity, at: &Field, message: String) {
        let top = match at.0.first() {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        let place = if let Some(flag) = self.flags.get(top) {
            Place::Flag(flag)
        } else {
            match (self.file, self.root.and_then(|r| locate(r, at))) {
                (Some(file), Some(pos)) => Place::At {
                    file: file.to_owned(),
                    pos,
                },
                (file, _) => Place::Default {
                    file: file.map(str::to_owned),
                },
            }
        };
        self.findings.push(Finding {
            severity,
            place,
            path: at.text(),
            message,
        });
    }

    fn error(&mut self, at: &Field, message: String) {
        self.report(Severity::Error, at, message);
    }

    fn warning(&mut self, at: &Field, message: String) {
        self.report(Severity::Warning, at, message);
    }

    fn everything(&mut self, config: &Config) {
        self.listen(config);
        self.data_dir(&config.data_dir);
        // Not the default directory in place of one the parser refused.
        let policies = if self.refused("policies") {
            None
        } else {
            self.policies(&config.policies)
        };
        self.services(config);
        self.registries(config, policies.as_ref());
    }

    fn listen(&mut self, config: &Config) {
        if !config.listen.ip().is_loopback() && config.tokens.is_empty() {
            self.warning(
                &field(&["listen"]),
                format!(
                    "the API listens on {} beyond loopback and no `tokens` are configured: \
                     the admin token file is its only credential",
                    config.listen
                ),
            );
        }
    }

    /// The data dir must be a writable directory, or creatable.
    fn data_dir(&mut self, dir: &Path) {
        let at = field(&["dataDir"]);
        let shown = dir.display();
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => self.error(&at, format!("{shown} is not a directory")),
            Ok(m) => {
                if !writable(&m) {
                    self.error(&at, format!("{shown} is not writable by {}", whoami()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Created at start with its missing parents: the nearest
                // one that exists must let this user create them.
                let existing = dir
                    .ancestors()
                    .skip(1)
                    .map(|a| {
                        if a.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            a
                        }
                    })
                    .find(|a| a.exists());
                let Some(existing) = existing else {
                    return;
                };
                match std::fs::metadata(existing) {
                    Ok(m) if !m.is_dir() => self.error(
                        &at,
                        format!(
                            "{shown} cannot be created: {} is not a directory",
                            existing.display()
                        ),
                    ),
                    Ok(m) if !writable(&m) => self.error(
                        &at,
                        format!(
                            "{shown} does not exist and cannot be created: {} is not writable by {}",
                            existing.display(),
                            whoami()
                        ),
                    ),
                    _ => {}
                }
            }
            Err(e) => self.error(&at, format!("cannot read {shown}: {e}")),
        }
    }

    /// The policy set as the daemon loads it (the same function), or `None`
    /// after reporting why not.
    fn policies(&mut self, dir: &Path) -> Option<policies::PolicySet> {
        let at = field(&["policies"]);
        let shown = dir.display();
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                self.error(&at, format!("{shown} is not a directory"));
                return None;
            }
            Err(e) => {
                self.error(
                    &at,
                    format!("cannot read the policies directory {shown}: {e}"),
                );
                return None;
            }
        }
        match policies::load_dir(dir) {
            Ok(set) => {
                if set.by_name.is_empty() {
                    self.warning(
                        &at,
                        format!("{shown} holds no policy (`*.yaml`): no rollout can start"),
                    );
                }
                Some(set)
            }
            Err(lines) => {
                for line in lines {
                    self.error(&at, format!("invalid policy: {line}"));
                }
                None
            }
        }
    }

    fn services(&mut self, config: &Config) {
        // What two services must not share: the value, and who has it.
        let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut claim = |run: &mut Run<'_>, at: &Field, what: &str, key: String, service: &str| {
            if let Some(first) = claimed.get(&(what.to_owned(), key.clone())) {
                run.error(
                    at,
                    format!(
                        "service `{first}` already uses {what} {key}; two services would fight over it"
                    ),
                );
            } else {
                claimed.insert((what.to_owned(), key), service.to_owned());
            }
        };
        for (name, service) in &config.services {
            let sf = field(&["services", name]);
            if let Some(router) = &service.router {
                let rf = sf.key("router");
                match router {
                    RouterConfig::Builtin(b) => {
                        let rf = rf.key("builtin");
                        let lf = rf.key("listen");
                        if b.listen.parse::<SocketAddr>().ok() == Some(config.listen)
                            && config.listen.port() != 0
                            && !self.refused("listen")
                        {
                            self.error(&lf, format!("{} is the API's own `listen`", b.listen));
                        }
                        if !b.listen.ends_with(":0") {
                            claim(self, &lf, "the proxy address", b.listen.clone(), name);
                        }
                        self.distinct_arms(&rf, &b.baseline, &b.canary);
                    }
                    RouterConfig::Haproxy(h) => {
                        let rf = rf.key("haproxy");
                        self.socket(&rf.key("socket"), &h.socket);
                        claim(
                            self,
                            &rf.key("backend"),
                            "the HAProxy backend",
                            format!("{} on {}", h.backend, h.socket.display()),
                            name,
                        );
                        self.distinct_arms(&rf, &h.baseline, &h.canary);
                    }
                    RouterConfig::Nginx(n) => {
                        let rf = rf.key("nginx");
                        self.written_file(&rf.key("config"), &n.config);
                        claim(
                            self,
                            &rf.key("config"),
                            "the nginx config file",
                            n.config.display().to_string(),
                            name,
                        );
                        if let Some(program) = n.reload.first() {
                            self.program(&rf.key("reload"), Path::new(program));
                        }
                        self.distinct_arms(&rf, &n.baseline, &n.canary);
                    }
                    RouterConfig::GatewayApi(g) => {
                        let rf = rf.key("gatewayApi");
                        // Its files (token, kubeconfig, CA) are read at
                        // parse time (`config/kube.rs`).
                        use crate::routers::gateway_api::kube::ClusterSource;
                        let cluster = match &g.cluster {
                            ClusterSource::Explicit { server, .. } => server.clone(),
                            ClusterSource::Kubeconfig {
                                path,
                                context,
                                server,
                            } => format!(
                                "{} (kubeconfig {}, context {})",
                                server.as_deref().unwrap_or("its server"),
                                path.display(),
                                context.as_deref().unwrap_or("current")
                            ),
                            ClusterSource::InCluster { .. } => "this cluster".to_owned(),
                        };
                        claim(
                            self,
                            &rf.key("route"),
                            "the HTTPRoute",
                            format!("{}/{} on {cluster}", g.namespace, g.route),
                            name,
                        );
                        self.distinct_arms(&rf, &g.baseline, &g.canary);
                    }
                    RouterConfig::Command(c) => {
                        self.program(&rf.key("command").key("program"), &c.program);
                    }
                    RouterConfig::Webhook(_) => {}
                    RouterConfig::File(f) => {
                        let pf = rf.key("file").key("path");
                        self.written_file(&pf, &f.path);
                        claim(
                            self,
                            &pf,
                            "the weights file",
                            f.path.display().to_string(),
                            name,
                        );
                    }
                }
            }
            if let Some(SourceConfig::PrometheusScrape(s)) = &service.source {
                self.distinct_arms(
                    &sf.key("source").key("prometheusScrape"),
                    &s.baseline,
                    &s.canary,
                );
            }
            for event in crate::routers::hooks::HookEvent::ALL {
                if let Some(HookConfig::Command(c)) = service.hooks.get(event) {
                    self.program(
                        &sf.key("hooks")
                            .key(event.as_str())
                            .key("command")
                            .key("program"),
                        &c.program,
                    );
                }
            }
        }
    }

    /// Baseline and canary must be two things, or there is no comparison.
    fn distinct_arms(&mut self, at: &Field, baseline: &str, canary: &str) {
        if baseline.trim_end_matches('/') == canary.trim_end_matches('/') {
            self.error(
                &at.key("canary"),
                format!("the same as `baseline` ({canary}); the canary must be another target"),
            );
        }
    }

    /// An admin socket: absent is a warning (HAProxy may start later), a
    /// file that is not a socket an error.
    fn socket(&mut self, at: &Field, path: &Path) {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => self.error(at, format!("{} is not a socket", path.display())),
            Err(e) => self.warning(
                at,
                format!(
                    "{}: {e}; weight changes fail until HAProxy listens there",
                    path.display()
                ),
            ),
        }
    }

    /// A file the daemon writes (atomically, beside itself): it must not be
    /// a directory, and its directory must be writable. A directory not
    /// there yet is a warning (another unit may make it, a mount may bring
    /// it; until then the router fails and is retried, and a rollout's
    /// status says so), as a missing HAProxy socket is.
    fn written_file(&mut self, at: &Field, path: &Path) {
        if path.is_dir() {
            self.error(at, format!("{} is a directory", path.display()));
            return;
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() && writable(&m) => {}
            Ok(m) if m.is_dir() => self.error(
                at,
                format!(
                    "its directory {} is not writable by {}",
                    dir.display(),
                    whoami()
                ),
            ),
            Ok(_) => self.error(at, format!("{} is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.warning(
                at,
                format!(
                    "its directory {} does not exist (yet): writes fail until it does",
                    dir.display()
                ),
            ),
            Err(e) => self.error(at, format!("its directory {}: {e}", dir.display())),
        }
    }

    /// A program the daemon runs: with a `/`, it must be an executable
    /// file; a bare name is looked up on this PATH (the daemon's may
    /// differ, so a miss is a warning).
    fn program(&mut self, at: &Field, program: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let executable = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if program.components().count() > 1 || program.is_absolute() {
            if !executable(program) {
                let why = match std::fs::metadata(program) {
                    Err(e) => e.to_string(),
                    Ok(m) if !m.is_file() => "not a file".to_owned(),
                    Ok(_) => "not executable".to_owned(),
                };
                self.error(at, format!("{}: {why}", program.display()));
            }
            return;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
            self.warning(
                at,
                format!(
                    "`{}` is not on this PATH; the daemon's PATH must have it",
                    program.display()
                ),
            );
        }
    }

    fn registries(&mut self, config: &Config, policies: Option<&policies::PolicySet>) {
        // A refused entry is left out, so indexes would name the wrong one.
        if self.refused("registries") {
            return;
        }
        let mut fed: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in config.registries.iter().enumerate() {
            let RegistryConfig::Mlflow(m) = r;
            let rf = field(&["registries"]).index(i).key("mlflow");
            if let Some(set) = policies
                && !set.by_name.contains_key(&m.policy)
            {
                let known: Vec<&str> = set.by_name.keys().map(String::as_str).collect();
                self.error(
                    &rf.key("policy"),
                    format!(
                        "no policy named `{}` in {} (it has: {})",
                        m.policy,
                        config.policies.display(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if let Some(j) = fed.insert(&m.service, i) {
                self.error(
                    &rf.key("service"),
                    format!(
                        "service `{}` is already fed by registries[{j}]; one registry per service",
                        m.service
                    ),
                );
            }
        }
    }
}

/// Whether this process may create files in (or write) what `m` describes,
/// from its mode bits, owner and group. (ACLs and read-only mounts are not
/// seen; the start then fails with the OS's own error.)
fn writable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return true;
    }
    let mode = m.mode();
    if m.uid() == uid {
        return mode & 0o200 != 0;
    }
    let in_group = rustix::process::getegid().as_raw() == m.gid()
        || rustix::process::getgroups().is_ok_and(|gs| gs.iter().any(|g| g.as_raw() == m.gid()));
    if in_group {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

/// The user the checks ran as, for messages.
fn whoami() -> String {
    format!("uid {}", rustix::process::geteuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_where_they_are_written() {
        let yaml = b"listen: 127.0.0.1:1\nservices:\n  web:\n    router: { file: { path: /x } }\nregistries:\n  - mlflow: { policy: p }\n";
        let root = load_yaml(&mut Sink::new("c"), yaml).unwrap();
        let at = |f: Field| locate(&root, &f).map(|p| (p.line, p.col));
        assert_eq!(at(field(&["listen"])), Some((1, 9)));
        assert_eq!(
            at(field(&["services", "web", "router", "file", "path"])),
            Some((4, 29))
        );
        assert_eq!(
            at(field(&["registries"]).index(0).key("mlflow").key("policy")),
            Some((6, 23))
        );
        assert_eq!(at(field(&["dataDir"])), None);
        assert_eq!(
            field(&["registries"]).index(0).key("mlflow").text(),
            "registries[0].mlflow"
        );
    }

    #[test]
    fn flags_and_defaults_say_where_the_value_came_from() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nowhere");
        let c = check_bytes(
            Some("c.yaml"),
            format!("dataDir: {}\n", tmp.path().join("data").display()).as_bytes(),
            &Overrides {
                policies: Some(missing.clone()),
                ..Overrides::default()
            },
        );
        let text: Vec<String> = c.findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [format!(
                "policies (from --policies): cannot read the policies directory {}: No such file or directory (os error 2)",
                missing.display()
            )]
        );
        assert!(c.has_errors() && c.into_config().is_none());
    }
}
