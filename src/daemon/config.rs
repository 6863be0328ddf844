//! The daemon's config file (PRODUCT.md section 7): YAML with the policies'
//! strictness (located errors, all at once, unknown fields and duplicate
//! keys refused, strict booleans), decoded with the same readers.
//! `offline.rs` adds what needs the filesystem or the whole file.

pub mod offline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::routers::hooks::HookEvent;
use crate::routers::{
    BuiltinConfig, CommandConfig, FileConfig, HaproxyConfig, HookConfig, NginxConfig, RouterConfig,
    WebhookConfig,
};
use crate::sources::{QueryConfig, ScrapeConfig, SourceConfig};
use crate::yaml::decode::is_http_url;
use crate::yaml::decode::{self, Fields};
use crate::yaml::diag::{Diagnostics, Path, Sink};
use crate::yaml::load_yaml;
use crate::yaml::node::Node;

use super::auth::{Role, TokenEntry};
use super::notify::NotificationsConfig;

mod notifications;

// `retention:`: how long ended rollouts' data is kept.
mod retention;
pub use retention::RetentionConfig;

// `storage:` (PostgreSQL) and `audit:` (the chain's key file).
mod storage;
pub use storage::{AuditConfig, PostgresStorage};

// The TLS keys beside an endpoint's `url` (caFile, clientCert, clientKey).
mod tls;
pub use tls::ApiTls;
use tls::{client_tls, with_tls_keys};

// The `gatewayApi` router's block: its cluster access and the files it names.
mod kube;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";
pub const DEFAULT_DATA_DIR: &str = "./canaryd-data";
pub const DEFAULT_POLICIES: &str = "./rollout-policies";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    pub services: BTreeMap<String, ServiceConfig>,
    pub tokens: Vec<TokenEntry>,
    pub registries: Vec<RegistryConfig>,
    /// How much of the machine the API's clients may hold (`api:`).
    pub api: ApiLimits,
    /// The API over TLS (`tls: { cert, key }`); plain HTTP without it.
    pub tls: Option<ApiTls>,
    /// Lifecycle events to people (`notifications:`, `config/notifications.rs`).
    pub notifications: NotificationsConfig,
    /// How long ended rollouts' data is kept (`retention:`, `config/retention.rs`).
    pub retention: RetentionConfig,
    /// State on PostgreSQL (`storage.postgres`, `config/storage.rs`);
    /// SQLite under `data_dir` without it.
    pub postgres: Option<PostgresStorage>,
    /// The audit chain's key file (`audit:`).
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            data_dir: DEFAULT_DATA_DIR.into(),
            policies: DEFAULT_POLICIES.into(),
            services: BTreeMap::new(),
            tokens: Vec::new(),
            registries: Vec::new(),
            api: ApiLimits::default(),
            tls: None,
            notifications: NotificationsConfig::default(),
            retention: RetentionConfig::default(),
            postgres: None,
            audit: AuditConfig::default(),
        }
    }
}

/// The `api:` block: what the API's clients may hold, so that what a
/// rollback needs (descriptors for the router, the store and the audit
/// head; memory) is never taken by them. README's config section documents
/// each key and why its default is what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiLimits {
    /// At most this many API connections at once; `None` (`auto`): the
    /// descriptor limit less `reserved_descriptors`, at most
    /// [`ApiLimits::AUTO_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// Descriptors never given to API connections.
    pub reserved_descriptors: usize,
    /// From the moment the daemon waits for a request (a new connection, or
    /// a kept-alive one after its last answer) until that request's whole
    /// head has arrived; past it the connection is closed. It is also the
    /// idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this (408 past it).
    pub body_read_timeout: Duration,
    /// Request bodies being read, all connections together, in bytes (503
    /// beyond, to retry).
    pub body_memory_bytes: usize,
    /// Writes that commit to the store (starts, commands, reviews) per
    /// token: a bucket of `write_burst` refilled at `writes_per_second`
    /// (429 when empty).
    pub writes_per_second: f64,
    pub write_burst: u32,
    /// Observation batches per token, likewise (they only touch memory).
    pub pushes_per_second: f64,
    pub push_burst: u32,
}

impl ApiLimits {
    /// The cap `auto` never exceeds.
    pub const AUTO_MAX_CONNECTIONS: usize = 4096;
    /// The fewest API connections the daemon starts with.
    pub const MIN_CONNECTIONS: usize = 16;
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: None,
            reserved_descriptors: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            body_memory_bytes: 64 * 1024 * 1024,
            writes_per_second: 50.0,
            write_burst: 100,
            pushes_per_second: 1000.0,
            push_burst: 2000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    /// None: decisions are recorded, traffic is moved by nobody (the
    /// service must then be started with `--dry-run`).
    pub router: Option<RouterConfig>,
    pub source: Option<SourceConfig>,
    pub hooks: Hooks,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    pub on_start: Option<HookConfig>,
    pub on_promoted: Option<HookConfig>,
    pub on_rolled_back: Option<HookConfig>,
    pub on_aborted: Option<HookConfig>,
}

impl Hooks {
    /// The hook configured for `event`, if any.
    pub fn get(&self, event: HookEvent) -> Option<&HookConfig> {
        match event {
            HookEvent::OnStart => self.on_start.as_ref(),
            HookEvent::OnPromoted => self.on_promoted.as_ref(),
            HookEvent::OnRolledBack => self.on_rolled_back.as_ref(),
            HookEvent::OnAborted => self.on_aborted.as_ref(),
        }
    }

    fn slot(&mut self, event: HookEvent) -> &mut Option<HookConfig> {
        match event {
            HookEvent::OnStart => &mut self.on_start,
            HookEvent::OnPromoted => &mut self.on_promoted,
            HookEvent::OnRolledBack => &mut self.on_rolled_back,
            HookEvent::OnAborted => &mut self.on_aborted,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RegistryConfig {
    Mlflow(MlflowConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MlflowConfig {
    pub url: String,
    pub model: String,
    /// Exactly one of `alias` and `stage`.
    pub alias: Option<String>,
    pub stage: Option<String>,
    pub service: String,
    pub policy: String,
    pub poll_interval: Duration,
    /// `caFile`, `clientCert`, `clientKey` (src/tls.rs).
    pub tls: crate::tls::ClientTls,
}

/// Parse a config file. `file` names it in diagnostics.
pub fn parse_config(file: &str, bytes: &[u8]) -> Result<Config, Diagnostics> {
    match parse_config_partial(file, bytes) {
        (Some((c, true)), None) => Ok(c),
        (_, Some(d)) => Err(d),
        (_, None) => unreachable!("the decoder returns nothing only after reporting"),
    }
}

/// As [`parse_config`], and with problems also what did decode (`false`:
/// only part of it: sections and entries with problems are left out, or
/// at their defaults), so `offline.rs` can check the rest in the same run.
pub fn parse_config_partial(
    file: &str,
    bytes: &[u8],
) -> (Option<(Config, bool)>, Option<Diagnostics>) {
    let mut sink = Sink::new(file);
    let config = load_yaml(&mut sink, bytes).and_then(|root| decode_root(&mut sink, &root));
    (config, sink.finish())
}

fn decode_root(sink: &mut Sink, root: &Node) -> Option<(Config, bool)> {
    let path = Path::root();
    let f = decode::mapping(
        sink,
        root,
        &path,
        &[
            "listen",
            "dataDir",
            "policies",
            "services",
            "tokens",
            "registries",
            "api",
            "tls",
            "notifications",
            "retention",
            "storage",
            "audit",
        ],
    )?;
    let mut config = Config::default();
    let mut ok = true;
    if let Some(n) = f.get("storage") {
        match storage::storage(sink, n, &f.child("storage")) {
            Some(s) => config.postgres = s,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("audit") {
        match storage::audit(sink, n, &f.child("audit")) {
            Some(a) => config.audit = a,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("api") {
        match api_limits(sink, n, &f.child("api")) {
            Some(a) => config.api = a,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("retention") {
        match retention::retention(sink, n, &f.child("retention")) {
            Some(r) => config.retention = r,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("tls") {
        match tls::api_tls(sink, n, &f.child("tls")) {
            Some(t) => config.tls = Some(t),
            None => ok = false,
        }
    }
    if let Some(n) = f.get("listen") {
        match socket_addr(sink, n, &f.child("listen")) {
            Some(a) => config.listen = a,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("dataDir") {
        match non_empty(sink, n, &f.child("dataDir")) {
            Some(s) => config.data_dir = s.into(),
            None => ok = false,
        }
    }
    if let Some(n) = f.get("policies") {
        match non_empty(sink, n, &f.child("policies")) {
            Some(s) => config.policies = s.into(),
            None => ok = false,
        }
    }
    if let Some(n) = f.get("services") {
        let p = f.child("services");
        match decode::free_mapping(sink, n, &p) {
            Some(entries) => {
                for (name, pos, node) in entries {
                    let sp = p.key(name);
                    if !valid_name(name) {
                        sink.error(
                            pos,
                            &sp,
                            format!(
                                "service name `{name}`: expected 1 to 63 characters from `a-z`, `0-9` and `-`"
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    match service(sink, node, &sp) {
                        Some(s) => {
                            config.services.insert(name.to_string(), s);
                        }
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.get("tokens") {
        let p = f.child("tokens");
        match decode::sequence(sink, n, &p) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match token(sink, item, &p.index(i)) {
                        Some(t) => config.tokens.push(t),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
        let mut seen = BTreeMap::new();
        for (i, t) in config.tokens.iter().enumerate() {
            if let Some(j) = seen.insert(t.sha256.clone(), i) {
                sink.error(
                    n.pos,
                    &p.index(i),
                    format!("the same token hash as tokens[{j}]; each token maps to one actor"),
                );
                ok = false;
            }
        }
    }
    if let Some(n) = f.get("notifications") {
        let services = config.services.keys().map(String::as_str).collect();
        match notifications::notifications(sink, n, &f.child("notifications"), &services) {
            Some(c) => config.notifications = c,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("registries") {
        let p = f.child("registries");
        match decode::sequence(sink, n, &p) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match registry(sink, item, &p.index(i), &config.services) {
                        Some(r) => config.registries.push(r),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    ok &= storage_rules(sink, &f, &config);
    Some((config, ok))
}

/// What `storage.postgres` asks of the rest of the config: the shared key,
/// and no router that lives inside one daemon.
fn storage_rules(sink: &mut Sink, f: &Fields<'_>, config: &Config) -> bool {
    let mut ok = true;
    match (&config.postgres, &config.audit.key_file) {
        (Some(_), None) if f.has("storage") => {
            sink.error(
                f.get("storage").map_or(f.pos, |n| n.pos),
                &f.child("storage"),
                "`storage.postgres` needs `audit: { keyFile: PATH }`: every daemon sharing the database names the same key (32 random bytes, mode 0600)",
            );
            ok = false;
        }
        (None, Some(_)) if !f.has("storage") => {
            let n = f.get("audit").map_or(f.pos, |n| n.pos);
            sink.error(
                n,
                &f.child("audit").key("keyFile"),
                "`audit.keyFile` applies with `storage.postgres`; a SQLite data dir keeps its key in <dataDir>/audit.key",
            );
            ok = false;
        }
        _ => {}
    }
    if config.postgres.is_some() {
        for (name, service) in &config.services {
            if let Some(RouterConfig::Builtin(_)) = &service.router {
                sink.error(
                    f.get("services").map_or(f.pos, |n| n.pos),
                    &f.child("services").key(name).key("router"),
                    "the `builtin` router proxies inside one daemon; with `storage.postgres` several daemons share rollouts, so use a router they can all drive (haproxy, nginx, gatewayApi, file, command, webhook)",
                );
                ok = false;
            }
        }
    }
    ok
}

fn api_limits(sink: &mut Sink, node: &Node, path: &Path) -> Option<ApiLimits> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &[
            "maxConnections",
            "reservedDescriptors",
            "headerReadTimeout",
            "bodyReadTimeout",
            "bodyMemoryMiB",
            "writeRateLimit",
            "pushRateLimit",
        ],
    )?;
    let mut out = ApiLimits::default();
    let mut ok = true;
    if let Some(n) = f.get("maxConnections") {
        let p = f.child("maxConnections");
        if matches!(&n.value, crate::yaml::node::Value::Str(s) if s == "auto") {
            out.max_connections = None;
        } else {
            match decode::integer(sink, n, &p, ApiLimits::MIN_CONNECTIONS as i128, 1_000_000) {
                Some(v) => out.max_connections = Some(v as usize),
                None => ok = false,
            }
        }
    }
    if let Some(n) = f.get("reservedDescriptors") {
        match decode::integer(sink, n, &f.child("reservedDescriptors"), 32, 1_000_000) {
            Some(v) => out.reserved_descriptors = v as usize,
            None => ok = false,
        }
    }
    for (key, slot) in [
        ("headerReadTimeout", &mut out.header_read_timeout),
        ("bodyReadTimeout", &mut out.body_read_timeout),
    ] {
        if let Some(n) = f.get(key) {
            match decode::positive_duration(sink, n, &f.child(key)) {
                Some(d) => *slot = d,
                None => ok = false,
            }
        }
    }
    if let Some(n) = f.get("bodyMemoryMiB") {
        // At least one whole observation batch (8 MiB) must fit.
        match decode::integer(sink, n, &f.child("bodyMemoryMiB"), 9, 1 << 20) {
            Some(v) => out.body_memory_bytes = v as usize * 1024 * 1024,
            None => ok = false,
        }
    }
    for (key, per_second, burst) in [
        (
            "writeRateLimit",
            &mut out.writes_per_second,
            &mut out.write_burst,
        ),
        (
            "pushRateLimit",
            &mut out.pushes_per_second,
            &mut out.push_burst,
        ),
    ] {
        if let Some(n) = f.get(key) {
            ok &= rate_limit(sink, n, &f.child(key), per_second, burst);
        }
    }
    ok.then_some(out)
}

/// `{ perSecond, burst }` into the two slots; false after reporting.
fn rate_limit(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    per_second: &mut f64,
    burst: &mut u32,
) -> bool {
    let Some(w) = decode::mapping(sink, node, path, &["perSecond", "burst"]) else {
        return false;
    };
    let mut ok = true;
    if let Some(n) = w.get("perSecond") {
        match decode::number(sink, n, &w.child("perSecond")) {
            Some(v) if v > 0.0 && v.is_finite() => *per_second = v,
            Some(v) => {
                sink.error(
                    n.pos,
                    &w.child("perSecond"),
                    format!("expected a positive number per second, found {v}"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(n) = w.get("burst") {
        match decode::integer(sink, n, &w.child("burst"), 1, 1_000_000) {
            Some(v) => *burst = v as u32,
            None => ok = false,
        }
    }
    ok
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn non_empty(sink: &mut Sink, node: &Node, path: &Path) -> Option<String> {
    let s = decode::string(sink, node, path)?;
    if s.trim().is_empty() {
        sink.error(node.pos, path, "expected a non-empty string");
        return None;
    }
    Some(s)
}

fn socket_addr(sink: &mut Sink, node: &Node, path: &Path) -> Option<SocketAddr> {
    let s = decode::string(sink, node, path)?;
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            sink.error(
                node.pos,
                path,
                format!("expected an address `IP:PORT` (e.g. 127.0.0.1:7600), found `{s}`"),
            );
            None
        }
    }
}

fn url(sink: &mut Sink, node: &Node, path: &Path) -> Option<String> {
    let s = decode::string(sink, node, path)?;
    if is_http_url(&s) {
        Some(s.trim_end_matches('/').to_string())
    } else {
        sink.error(
            node.pos,
            path,
            format!("expected an http:// or https:// URL, found `{s}`"),
        );
        None
    }
}

/// The single key of a `{ kind: { ... } }` mapping.
fn one_key<'n>(
    sink: &mut Sink,
    node: &'n Node,
    path: &Path,
    kinds: &[&str],
) -> Option<(String, &'n Node, Path)> {
    let f = decode::mapping(sink, node, path, kinds)?;
    let keys: Vec<&str> = f.keys().collect();
    match keys.as_slice() {
        [k] => {
            let k = k.to_string();
            let child = f.child(&k);
            Some((k.clone(), f.get(&k).expect("the key is present"), child))
        }
        [] => {
            sink.error(
                node.pos,
                path,
                format!("expected one of {}", decode::one_of(kinds)),
            );
            None
        }
        many => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected exactly one of {}, found {}",
                    decode::one_of(kinds),
                    many.join(", ")
                ),
            );
            None
        }
    }
}

fn req_string(sink: &mut Sink, f: &Fields<'_>, key: &str) -> Option<String> {
    let n = f.require(sink, key)?;
    non_empty(sink, n, &f.child(key))
}

fn req_url(sink: &mut Sink, f: &Fields<'_>, key: &str) -> Option<String> {
    let n = f.require(sink, key)?;
    url(sink, n, &f.child(key))
}

fn string_list(sink: &mut Sink, f: &Fields<'_>, key: &str) -> Option<Vec<String>> {
    let Some(n) = f.get(key) else {
        return Some(Vec::new());
    };
    let p = f.child(key);
    let items = decode::sequence(sink, n, &p)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match decode::string(sink, item, &p.index(i)) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn router(sink: &mut Sink, node: &Node, path: &Path) -> Option<RouterConfig> {
    let kinds = [
        "builtin",
        "haproxy",
        "nginx",
        "gatewayApi",
        "command",
        "webhook",
        "file",
    ];
    let (kind, n, p) = one_key(sink, node, path, &kinds)?;
    Some(match kind.as_str() {
        "builtin" => {
            let f = decode::mapping(sink, n, &p, &["listen", "baseline", "canary"])?;
            let listen = f
                .require(sink, "listen")
                .and_then(|n| socket_addr(sink, n, &f.child("listen")));
            let baseline = req_url(sink, &f, "baseline");
            let canary = req_url(sink, &f, "canary");
            RouterConfig::Builtin(BuiltinConfig {
                listen: listen?.to_string(),
                baseline: baseline?,
                canary: canary?,
            })
        }
        "haproxy" => {
            let f = decode::mapping(sink, n, &p, &["socket", "backend", "baseline", "canary"])?;
            let socket = req_string(sink, &f, "socket");
            let backend = req_string(sink, &f, "backend");
            let baseline = req_string(sink, &f, "baseline");
            let canary = req_string(sink, &f, "canary");
            RouterConfig::Haproxy(HaproxyConfig {
                socket: socket?.into(),
                backend: backend?,
                baseline: baseline?,
                canary: canary?,
            })
        }
        "nginx" => {
            let f = decode::mapping(
                sink,
                n,
                &p,
                &["config", "upstream", "baseline", "canary", "reload"],
            )?;
            let config = req_string(sink, &f, "config");
            let upstream = req_string(sink, &f, "upstream");
            let baseline = req_string(sink, &f, "baseline");
            let canary = req_string(sink, &f, "canary");
            let reload = match f.get("reload") {
                None => Some(vec!["nginx".to_string(), "-s".into(), "reload".into()]),
                Some(n) => non_empty(sink, n, &f.child("reload"))
                    .map(|s| s.split_whitespace().map(str::to_string).collect()),
            };
            RouterConfig::Nginx(NginxConfig {
                config: config?.into(),
                upstream: upstream?,
                baseline: baseline?,
                canary: canary?,
                reload: reload?,
            })
        }
        "gatewayApi" => RouterConfig::GatewayApi(kube::gateway_api(sink, n, &p)?),
        "command" => RouterConfig::Command(command(sink, n, &p)?),
        "webhook" => RouterConfig::Webhook(webhook(sink, n, &p)?),
        "file" => {
            let f = decode::mapping(sink, n, &p, &["path"])?;
            RouterConfig::File(FileConfig {
                path: req_string(sink, &f, "path")?.into(),
            })
        }
        _ => unreachable!("one_key only returns allowed kinds"),
    })
}

fn command(sink: &mut Sink, node: &Node, path: &Path) -> Option<CommandConfig> {
    let f = decode::mapping(sink, node, path, &["program", "args"])?;
    let program = req_string(sink, &f, "program");
    let args = string_list(sink, &f, "args");
    Some(CommandConfig {
        program: program?.into(),
        args: args?,
    })
}

fn webhook(sink: &mut Sink, node: &Node, path: &Path) -> Option<WebhookConfig> {
    let f = decode::mapping(sink, node, path, &with_tls_keys(&["url"]))?;
    let url = req_url(sink, &f, "url");
    let tls = client_tls(sink, &f, &[url.as_deref()]);
    Some(WebhookConfig {
        url: url?,
        tls: tls?,
    })
}

fn hook(sink: &mut Sink, node: &Node, path: &Path) -> Option<HookConfig> {
    let (kind, n, p) = one_key(sink, node, path, &["command", "webhook"])?;
    Some(match kind.as_str() {
        "command" => HookConfig::Command(command(sink, n, &p)?),
        _ => HookConfig::Webhook(webhook(sink, n, &p)?),
    })
}

fn signals(sink: &mut Sink, f: &Fields<'_>) -> Option<BTreeMap<String, String>> {
    let n = f.require(sink, "signals")?;
    let p = f.child("signals");
    let entries = decode::free_mapping(sink, n, &p)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, pos, value) in entries {
        if !decode::is_identifier(name) {
            sink.error(
                pos,
                &p.key(name),
                format!("signal name `{name}`: expected letters, digits, `_`, `-`, `.` and `:`"),
            );
            ok = false;
            continue;
        }
        match non_empty(sink, value, &p.key(name)) {
            Some(q) => {
                out.insert(name.to_string(), q);
            }
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        sink.error(n.pos, &p, "expected at least one signal");
        return None;
    }
    ok.then_some(out)
}

fn timeout(sink: &mut Sink, f: &Fields<'_>) -> Option<Duration> {
    match f.get("timeout") {
        None => Some(Duration::from_secs(5)),
        Some(n) => decode::positive_duration(sink, n, &f.child("timeout")),
    }
}

fn source(sink: &mut Sink, node: &Node, path: &Path) -> Option<SourceConfig> {
    let (kind, n, p) = one_key(
        sink,
        node,
        path,
        &["push", "prometheusScrape", "prometheusQuery"],
    )?;
    match kind.as_str() {
        "push" => {
            // `push: {}` says explicitly what an absent source means.
            decode::mapping(sink, n, &p, &[])?;
            None
        }
        "prometheusScrape" => {
            let f = decode::mapping(
                sink,
                n,
                &p,
                &with_tls_keys(&["baseline", "canary", "signals", "timeout"]),
            )?;
            let baseline = req_url(sink, &f, "baseline");
            let canary = req_url(sink, &f, "canary");
            let signals = signals(sink, &f);
            let timeout = timeout(sink, &f);
            let tls = client_tls(sink, &f, &[baseline.as_deref(), canary.as_deref()]);
            Some(SourceConfig::PrometheusScrape(ScrapeConfig {
                baseline: baseline?,
                canary: canary?,
                signals: signals?,
                timeout: timeout?,
                tls: tls?,
            }))
        }
        _ => {
            let f = decode::mapping(sink, n, &p, &with_tls_keys(&["url", "signals", "timeout"]))?;
            let url = req_url(sink, &f, "url");
            let signals = signals(sink, &f);
            let timeout = timeout(sink, &f);
            let tls = client_tls(sink, &f, &[url.as_deref()]);
            Some(SourceConfig::PrometheusQuery(QueryConfig {
                url: url?,
                signals: signals?,
                timeout: timeout?,
                tls: tls?,
            }))
        }
    }
}

fn service(sink: &mut Sink, node: &Node, path: &Path) -> Option<ServiceConfig> {
    let f = decode::mapping(sink, node, path, &["router", "source", "hooks"])?;
    let mut ok = true;
    let router = match f.get("router") {
        None => None,
        Some(n) => {
            let r = router(sink, n, &f.child("router"));
            ok &= r.is_some();
            r
        }
    };
    let source = match f.get("source") {
        None => None,
        Some(n) => {
            let before = sink.is_empty();
            let s = source(sink, n, &f.child("source"));
            ok &= !before || sink.is_empty();
            s
        }
    };
    let mut hooks = Hooks::default();
    if let Some(n) = f.get("hooks") {
        let p = f.child("hooks");
        let names = HookEvent::ALL.map(HookEvent::as_str);
        match decode::mapping(sink, n, &p, &names) {
            Some(h) => {
                for event in HookEvent::ALL {
                    let name = event.as_str();
                    let Some(n) = h.get(name) else { continue };
                    let parsed = hook(sink, n, &h.child(name));
                    ok &= parsed.is_some();
                    *hooks.slot(event) = parsed;
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(ServiceConfig {
        router,
        source,
        hooks,
    })
}

fn token(sink: &mut Sink, node: &Node, path: &Path) -> Option<TokenEntry> {
    let f = decode::mapping(sink, node, path, &["actor", "sha256", "roles"])?;
    let actor = req_string(sink, &f, "actor");
    let sha256 = f.require(sink, "sha256").and_then(|n| {
        let s = decode::string(sink, n, &f.child("sha256"))?;
        let ok = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Some(s.to_ascii_lowercase())
        } else {
            sink.error(
                n.pos,
                &f.child("sha256"),
                "expected the token's SHA-256 as 64 hex digits (`canaryd token create` prints it)",
            );
            None
        }
    });
    let roles = f.require(sink, "roles").and_then(|n| {
        let p = f.child("roles");
        let items = decode::sequence(sink, n, &p)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let Some(s) = decode::string(sink, item, &p.index(i)) else {
                ok = false;
                continue;
            };
            match Role::parse(&s) {
                Ok(r) => out.push(r),
                Err(e) => {
                    sink.error(item.pos, &p.index(i), e);
                    ok = false;
                }
            }
        }
        if out.is_empty() && ok {
            sink.error(n.pos, &p, "expected at least one role");
            return None;
        }
        ok.then_some(out)
    });
    Some(TokenEntry {
        actor: actor?,
        sha256: sha256?,
        roles: roles?,
    })
}

fn registry(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    services: &BTreeMap<String, ServiceConfig>,
) -> Option<RegistryConfig> {
    let (_, n, p) = one_key(sink, node, path, &["mlflow"])?;
    let f = decode::mapping(
        sink,
        n,
        &p,
        &with_tls_keys(&[
            "url",
            "model",
            "alias",
            "stage",
            "service",
            "policy",
            "pollInterval",
        ]),
    )?;
    let url = req_url(sink, &f, "url");
    let tls = client_tls(sink, &f, &[url.as_deref()]);
    let model = req_string(sink, &f, "model");
    let alias = f
        .get("alias")
        .map(|n| non_empty(sink, n, &f.child("alias")));
    let stage = f
        .get("stage")
        .map(|n| non_empty(sink, n, &f.child("stage")));
    let mut ok = true;
    if alias.is_some() == stage.is_some() {
        sink.error(f.pos, &p, "expected exactly one of `alias` and `stage`");
        ok = false;
    }
    let service = f.require(sink, "service").and_then(|n| {
        let s = decode::string(sink, n, &f.child("service"))?;
        if !services.contains_key(&s) {
            sink.error(
                n.pos,
                &f.child("service"),
                format!("service `{s}` is not defined under `services`"),
            );
            return None;
        }
        Some(s)
    });
    let policy = f
        .require(sink, "policy")
        .and_then(|n| decode::name(sink, n, &f.child("policy"), "policy name"));
    let poll_interval = match f.get("pollInterval") {
        None => Some(Duration::from_secs(30)),
        Some(n) => decode::positive_duration(sink, n, &f.child("pollInterval")),
    };
    if alias.as_ref().is_some_and(Option::is_none) || stage.as_ref().is_some_and(Option::is_none) {
        ok = false;
    }
    let config = MlflowConfig {
        url: url?,
        model: model?,
        alias: alias.flatten(),
        stage: stage.flatten(),
        service: service?,
        policy: policy?,
        poll_interval: poll_interval?,
        tls: tls?,
    };
    ok.then_some(RegistryConfig::Mlflow(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
listen: 127.0.0.1:7600
dataDir: ./canaryd-data
policies: ./rollout-policies
services:
  recommender:
    router: { haproxy: { socket: /run/haproxy/admin.sock, backend: be_app, baseline: stable, canary: canary } }
    source:
      prometheusQuery:
        url: http://127.0.0.1:9090
        signals:
          requests: 'sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))'
          errors:   'sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{window}}]))'
          latency_ms: 'http_request_duration_seconds{version="{{version}}"}'   # histogram
    hooks:
      onStart:      { webhook: { url: "http://127.0.0.1:9000/deploy/started" } }
      onPromoted:   { command: { program: /usr/local/bin/finalize, args: ["{{service}}", "{{canary}}"] } }
  search:
    router: { nginx: { config: /etc/nginx/conf.d/search-split.conf, upstream: search,
                       baseline: 127.0.0.1:9101, canary: 127.0.0.1:9102 } }
    source:
      prometheusScrape:
        baseline: http://127.0.0.1:9101/metrics
        canary: http://127.0.0.1:9102/metrics
        signals:
          requests: 'http_requests_total'
          errors: 'http_requests_total{code=~"5.."}'
          latency_ms: 'http_request_duration_seconds'
  checkout:
    router: { builtin: { listen: 127.0.0.1:8080, baseline: http://127.0.0.1:9001, canary: http://127.0.0.1:9002 } }
tokens:
  - { actor: alice, sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", roles: [operator, "approver:model-owner"] }
registries:
  - mlflow: { url: http://127.0.0.1:5000, model: recommender, alias: champion,
              service: recommender, policy: recommender-ctr, pollInterval: 30s }
"#;

    #[test]
    fn the_product_example_parses() {
        let c = parse_config("canaryd.yaml", EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.services.len(), 3);
        assert!(matches!(
            c.services["search"].router,
            Some(RouterConfig::Nginx(ref n)) if n.reload == ["nginx", "-s", "reload"]
        ));
        assert!(c.services["checkout"].source.is_none());
        assert!(c.services["recommender"].hooks.on_promoted.is_some());
        assert_eq!(c.tokens[0].roles.len(), 2);
        assert!(
            matches!(&c.registries[0], RegistryConfig::Mlflow(m) if m.alias.as_deref() == Some("champion"))
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let bad = r#"
listen: localhost
services:
  Bad_Name: {}
  web:
    router: { file: { path: /tmp/x }, webhook: { url: "http://x" } }
    source: { prometheusQuery: { url: ftp://x, signals: {} } }
    extra: 1
tokens:
  - { actor: bob, sha256: abc, roles: [boss] }
registries:
  - mlflow: { url: http://127.0.0.1:5000, model: m, service: nowhere, policy: p }
"#;
        let d = parse_config("c.yaml", bad.as_bytes())
            .unwrap_err()
            .to_string();
        for want in [
            "c.yaml:2:9: listen: expected an address",
            "services.Bad_Name: service name",
            "services.web.router: expected exactly one of",
            "services.web.source.prometheusQuery.url: expected an http",
            "services.web.source.prometheusQuery.signals: expected at least one signal",
            "services.web.extra: unknown field `extra`",
            "tokens[0].sha256: expected the token's SHA-256",
            "tokens[0].roles[0]: unknown role `boss`",
            "registries[0].mlflow: expected exactly one of `alias` and `stage`",
            "registries[0].mlflow.service: service `nowhere` is not defined",
        ] {
            assert!(d.contains(want), "missing {want:?} in:\n{d}");
        }
    }

    #[test]
    fn api_limits_are_read_and_checked() {
        let c = parse_config(
            "c.yaml",
            b"api: { maxConnections: 100, reservedDescriptors: 64, headerReadTimeout: 2s,\n       bodyReadTimeout: 3s, bodyMemoryMiB: 16, writeRateLimit: { perSecond: 5, burst: 10 } }",
        )
        .unwrap();
        assert_eq!(
            c.api,
            ApiLimits {
                max_connections: Some(100),
                reserved_descriptors: 64,
                header_read_timeout: Duration::from_secs(2),
                body_read_timeout: Duration::from_secs(3),
                body_memory_bytes: 16 * 1024 * 1024,
                writes_per_second: 5.0,
                write_burst: 10,
                ..ApiLimits::default()
            }
        );
        let auto = parse_config("c.yaml", b"api: { maxConnections: auto }").unwrap();
        assert_eq!(auto.api.max_connections, None);
        let bad = parse_config(
            "c.yaml",
            b"api: { maxConnections: 3, headerReadTimeout: 0s, writeRateLimit: { perSecond: -1 }, extra: 1 }",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "api.maxConnections",
            "api.headerReadTimeout",
            "api.writeRateLimit.perSecond",
            "api.extra: unknown field",
        ] {
            assert!(bad.contains(want), "missing {want:?} in:\n{bad}");
        }
    }

    #[test]
    fn an_empty_mapping_is_all_defaults() {
        let c = parse_config("c.yaml", b"{}").unwrap();
        assert_eq!(c, Config::default());
    }
}
