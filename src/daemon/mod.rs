//! `canaryd serve`: the shell around the pure core (PRODUCT.md section 7).
//! This file is the wiring: [`start`] opens the state, builds the services
//! and hands [`Shared`] to the API, the drivers and the background tasks;
//! [`serve`] adds the signals. Each concern of [`Shared`] lives in its own
//! file:
//!
//! - `rollouts.rs`: starting rollouts, commands, the drivers, resuming open
//!   rollouts at start; `driver.rs`: one task per active rollout (windows,
//!   engine steps, commit-then-act, router retries, reconcile after
//!   restart).
//! - `committer.rs`: the group committer, the one writer of engine steps.
//! - `outbox.rs`: webhook deliveries and lifecycle hooks after their commit.
//! - `push.rs`: observation batches; `policies.rs`: the policy set and
//!   reload; `reload.rs`: the config's tokens on SIGHUP; `registry.rs`:
//!   model-registry watchers.
//! - `services.rs`: the configured services' routers and sources;
//!   `config.rs`: the config file; `auth.rs`: tokens and roles.
//! - `api.rs`: the HTTP API (axum); `connections.rs`: its connections
//!   (cap, idle eviction, timeouts, the descriptor reserve); `view.rs`: the
//!   JSON objects;
//!   `metrics.rs`: `/metrics`; `clock.rs`: the wall clock.
//!
//! All state changes go through the store (`crate::store`), one
//! transaction per engine step, before anything outside is touched.

pub mod api;
pub mod auth;
pub mod clock;
mod committer;
pub mod config;
pub mod connections;
pub mod driver;
mod lease;
pub mod metrics;
pub mod notify;
mod outbox;
pub mod policies;
pub mod push;
pub mod registry;
mod reload;
mod retention;
mod rollouts;
pub mod series;
pub mod services;
#[cfg(test)]
mod tests;
/// The web dashboard at `/ui` (issue #18).
mod ui;
pub mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

pub use self::services::ServiceRuntime;

use self::auth::Tokens;
use self::clock::{Clock, SystemClock};
use self::committer::CommitJob;
use self::config::Config;
use self::metrics::Metrics;
use self::policies::PolicySet;
use crate::engine::{Rejected, Rollout};
use crate::monitor::Monitor;
use crate::retry::RetryPolicy;
use crate::store::{NewAudit, RolloutRow, Store, StoreError};

/// `canaryd serve` flags; each overrides the config file.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub policies: Option<PathBuf>,
}

/// One entry of `GET /v1/rollouts/{id}/events`, for the rollout it names.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub rollout_id: String,
    /// The journal seq it reflects: the stream's `id:` (`wire::stream`).
    pub seq: u64,
    /// `transition` (an engine event) or `end` (the final rollout).
    pub event: crate::wire::StreamEvent,
}

/// Everything the API handlers and the drivers share.
pub struct Shared {
    // What it was started with.
    pub config: Config,
    /// The one source of the time (`clock.rs`).
    pub clock: Arc<dyn Clock>,
    pub services: BTreeMap<String, Arc<ServiceRuntime>>,
    pub tokens: RwLock<Tokens>,
    pub policies: RwLock<PolicySet>,
    // State, and the ways into it.
    store: Mutex<Store>,
    /// The group committer's queue (`committer.rs`).
    commits: mpsc::Sender<CommitJob>,
    /// Steps with a checkpoint between its serialization and its commit
    /// (`driver.rs`, [`driver::CHECKPOINTS_IN_FLIGHT`]).
    pub(super) checkpoints_in_flight: Arc<tokio::sync::Semaphore>,
    /// Deliveries and hook runs to send (`outbox.rs`).
    outbox: outbox::Outbox,
    /// The running rollouts (`rollouts.rs`).
    drivers: rollouts::Drivers,
    /// The leases this daemon holds (`storage.postgres`, `lease.rs`).
    leases: lease::Held,
    /// The data dir's lock when the store is not there (PostgreSQL).
    _dir_lock: Option<std::fs::File>,
    // Out of the process.
    /// Routers, deliveries and hooks retry on this schedule.
    pub retry: RetryPolicy,
    pub http: reqwest::Client,
    pub metrics: Metrics,
    pub events: broadcast::Sender<StreamEvent>,
    // What API clients may take (`api:` in the config).
    /// Bytes of request bodies being read, all requests together.
    pub body_memory: Arc<tokio::sync::Semaphore>,
    /// Event streams open at once: a quarter of the connection cap, so
    /// streams (never idle, so never evicted) cannot hold every connection.
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Store-committing writes per token.
    pub write_rate: auth::WriteRate,
    /// Observation batches per token.
    pub push_rate: auth::WriteRate,
    /// The API's TLS (`tls:`), reloaded on SIGHUP.
    api_tls: Option<Arc<connections::ApiTlsAcceptor>>,
    // Life cycle.
    pub ready: AtomicBool,
    pub shutdown: watch::Sender<bool>,
    fatal: Mutex<Option<String>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// Why an operation was refused (the API answers it with its status and
/// error body), and what a start asks for: both are the wire's.
pub use crate::wire::{Refusal, StartRequest};

impl From<Rejected> for Refusal {
    fn from(r: Rejected) -> Refusal {
        match r.kind {
            crate::engine::RejectKind::Conflict => Refusal::conflict(r.message),
            crate::engine::RejectKind::Invalid => Refusal::invalid(r.field, r.message),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound { .. } => Refusal::not_found(e.to_string()),
            StoreError::ServiceBusy { .. } => Refusal::conflict(e.to_string()),
            StoreError::Invalid(m) => Refusal::conflict(m),
            other => Refusal::internal(other.to_string()),
        }
    }
}

impl Shared {
    /// Run `f` on the store. Store calls are short synchronous SQLite work;
    /// `block_in_place` keeps them off the async workers' queue.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        tokio::task::block_in_place(|| {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        })
    }

    pub fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        self.with_store(|s| s.append_audit(&[entry]).map(|_| ()))
    }

    /// Stop the daemon because state could not be made durable.
    pub fn fatal(&self, message: String) {
        tracing::error!(error = %message, "fatal: stopping the daemon");
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(message);
        }
        let _ = self.shutdown.send(true);
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(mut t) = self.tasks.lock() {
            t.spawn(fut);
        }
    }

    /// A rollout as the API shows it: live for active ones, from the store
    /// for finished ones.
    pub fn rollout(&self, id: &str) -> Result<crate::wire::Rollout, Refusal> {
        // A live rollout that never queued a webhook delivery has no
        // notifications: answered without waiting for the store.
        if let Some(h) = self.driver(id)
            && !h.deliveries.load(Ordering::SeqCst)
        {
            return Ok(driver::live_view(&h.view));
        }
        let mut rollout = self.rollout_state(id)?;
        rollout.notifications = self.with_store(|s| view::notifications(s, id))?;
        Ok(rollout)
    }

    /// [`Self::rollout`] without its notifications.
    fn rollout_state(&self, id: &str) -> Result<crate::wire::Rollout, Refusal> {
        if let Some(h) = self.driver(id) {
            return Ok(driver::live_view(&h.view));
        }
        let (row, checkpoint, incidents) = self
            .with_store(|s| {
                let row = s.rollout(id)?;
                let Some(row) = row else {
                    return Ok::<_, StoreError>(None);
                };
                let cp = s.checkpoint::<Monitor>(id)?;
                let inc = s.incidents_for_rollout(id)?;
                Ok(Some((row, cp, inc)))
            })?
            .ok_or_else(|| Refusal::not_found(format!("rollout {id} not found")))?;
        let rollout = Rollout::restore(checkpoint).map_err(|e| Refusal::internal(e.to_string()))?;
        Ok(view::rollout_view(
            &row,
            &rollout,
            incidents
                .iter()
                .rfind(|i| i.trigger != "router")
                .or(incidents.last())
                .map(|i| i.id.as_str()),
            None,
            self.clock.now(),
        ))
    }

    pub fn rollouts(&self) -> Result<Vec<crate::wire::Rollout>, Refusal> {
        let rows: Vec<RolloutRow> = self.with_store(|s| s.rollouts())?;
        rows.iter().map(|r| self.rollout(&r.id)).collect()
    }
}

/// Read the config file (when given), apply the flags and check what can
/// be checked offline: the same findings, in the same words, as `canaryd
/// config check` (`config/offline.rs`). Warnings are logged; any error
/// stops the start with every error listed.
pub fn load_config(opts: &ServeOptions) -> anyhow::Result<Config> {
    let checked = config::offline::check_file(opts.config.as_deref(), &opts.overrides());
    for w in checked.warnings() {
        tracing::warn!(warning = %w, "config");
    }
    if checked.has_errors() {
        let lines: Vec<String> = checked.errors().map(ToString::to_string).collect();
        anyhow::bail!("invalid config:\n{}", lines.join("\n"));
    }
    checked
        .into_config()
        .context("the config check returned no config and no error")
}

impl ServeOptions {
    /// What the flags say instead of the config file.
    pub fn overrides(&self) -> config::offline::Overrides {
        config::offline::Overrides {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            policies: self.policies.clone(),
        }
    }
}

/// Run the daemon until SIGTERM/SIGINT (or a fatal store error): bind
/// `listen`, then [`start`] on the system clock.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let config = load_config(&opts)?;
    connections::raise_descriptor_limit();
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            // A second daemon of the same config: the data dir's lock is
            // the clearer error (one daemon per data dir), as it was when
            // the state was opened before the port.
            if config.postgres.is_none()
                && let Err(locked @ StoreError::Locked { .. }) = Store::open(&config.data_dir)
            {
                return Err(anyhow::Error::new(locked).context(format!(
                    "cannot open the state in {}",
                    config.data_dir.display()
                )));
            }
            return Err(e).with_context(|| format!("cannot listen on {}", config.listen));
        }
    };
    // Installed before anything starts, so a SIGTERM during the start
    // drains instead of killing the process with its default action.
    let signals = Signals::install()?;
    let running = start(config, listener, Arc::new(SystemClock)).await?;
    let scheme = if running.shared.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("canaryd listening on {scheme}://{}", running.addr);
    signals.run(running.shared.clone(), &opts).await;
    running.stop().await
}

/// The state: SQLite in the data dir, or the PostgreSQL database the
/// config names (with the shared key). The PostgreSQL client blocks: it
/// runs outside the async workers, as every store call does.
fn open_store(config: &Config) -> anyhow::Result<(Store, Option<std::fs::File>)> {
    match &config.postgres {
        None => Store::open(&config.data_dir)
            .map(|s| (s, None))
            .with_context(|| format!("cannot open the state in {}", config.data_dir.display())),
        Some(pg) => {
            let key_file = config
                .audit
                .key_file
                .as_ref()
                .context("storage.postgres needs audit.keyFile")?;
            // The data dir keeps this daemon's own files (the admin
            // token): still one daemon's.
            let lock = crate::store::lock_data_dir(&config.data_dir).with_context(|| {
                format!("cannot use the data dir {}", config.data_dir.display())
            })?;
            let store = tokio::task::block_in_place(|| {
                let key = crate::store::postgres::load_key_file(key_file)?;
                Store::open_postgres(&pg.options, key, &config.data_dir)
            })
            .with_context(|| format!("cannot open the state in {}", pg.options.display))?;
            Ok((store, Some(lock)))
        }
    }
}

/// Bind the API's address, for callers of [`start`].
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// A daemon running inside the caller's runtime (the binary, benches).
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Drain and stop: drivers finish the step they are in (steps are
    /// atomic) and return; the API stops accepting; nothing is half-written.
    pub async fn stop(self) -> anyhow::Result<()> {
        let shared = self.shared;
        let _ = shared.shutdown.send(true);
        let mut tasks =
            std::mem::take(&mut *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let drained = tokio::time::timeout(Duration::from_secs(20), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some tasks did not stop within 20s; exiting anyway");
        } else {
            shared.release_all_leases();
        }
        // Open event streams end at shutdown; bound the wait regardless.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        let fatal = shared.fatal.lock().ok().and_then(|f| f.clone());
        match fatal {
            Some(m) => anyhow::bail!("stopped: {m}"),
            None => Ok(()),
        }
    }
}

/// Open the state, load policies and tokens, build the services, serve the
/// API on `listener`, restore every open rollout, and return once ready.
/// The daemon reads the time from `clock` only. `config.listen` is for the
/// caller that bound `listener` ([`serve`]); tests bind `127.0.0.1:0`.
pub async fn start(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Running> {
    // The API's share of descriptors, decided before anything is opened.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let max_connections =
        connections::connection_cap(&config.api, nofile).map_err(anyhow::Error::msg)?;
    let (store, dir_lock) = open_store(&config)?;
    let policies = policies::load_dir(&config.policies).map_err(|errs| {
        anyhow::anyhow!(
            "cannot load the policies in {}:\n{}",
            config.policies.display(),
            errs.join("\n")
        )
    })?;
    tracing::info!(count = policies.by_name.len(), dir = %config.policies.display(), "policies loaded");
    let (tokens, admin) = auth::token_set(&config.tokens, &config.data_dir).with_context(|| {
        format!(
            "cannot write the admin token in {}",
            config.data_dir.display()
        )
    })?;
    match admin {
        auth::AdminTokenFile::InForce(created) => tracing::info!(
            path = %auth::admin_token_path(&config.data_dir).display(),
            created,
            "no tokens configured: the admin token is in this file"
        ),
        auth::AdminTokenFile::Retired(true) => tracing::info!(
            "tokens are configured: the admin token file left from before was removed"
        ),
        auth::AdminTokenFile::Retired(false) => {}
    }
    let services = services::build_all(&config.services).await?;
    let api_tls = match &config.tls {
        Some(files) => Some(Arc::new(
            connections::ApiTlsAcceptor::load(files).context("cannot serve the API over TLS")?,
        )),
        None => None,
    };
    let local = listener.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let (commits, commit_rx) = committer::queue();
    let (outbox, outbox_queue) = outbox::queue(&config.notifications)?;
    let limits = config.api.clone();
    let shared = Arc::new(Shared {
        body_memory: Arc::new(tokio::sync::Semaphore::new(limits.body_memory_bytes)),
        event_streams: Arc::new(tokio::sync::Semaphore::new((max_connections / 4).max(1))),
        write_rate: auth::WriteRate::new(limits.writes_per_second, limits.write_burst),
        push_rate: auth::WriteRate::new(limits.pushes_per_second, limits.push_burst),
        store: Mutex::new(store),
        clock,
        config,
        tokens: RwLock::new(tokens),
        policies: RwLock::new(policies),
        services,
        drivers: rollouts::Drivers::default(),
        leases: lease::Held::default(),
        _dir_lock: dir_lock,
        metrics: Metrics::new(),
        events: broadcast::channel(1024).0,
        ready: AtomicBool::new(false),
        shutdown,
        fatal: Mutex::new(None),
        retry: RetryPolicy::default(),
        http: reqwest::Client::new(),
        tasks: Mutex::new(tokio::task::JoinSet::new()),
        commits,
        checkpoints_in_flight: Arc::new(tokio::sync::Semaphore::new(driver::CHECKPOINTS_IN_FLIGHT)),
        outbox,
        api_tls,
    });
    shared.metrics.init_configured(
        &shared
            .services
            .iter()
            .map(|(name, s)| (name.clone(), s.pull.iter().map(|p| p.describe()).collect()))
            .collect::<Vec<_>>(),
        &shared
            .config
            .notifications
            .receivers
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
    );
    tokio::spawn(committer::run(shared.clone(), commit_rx));
    shared.spawn(outbox::run(shared.clone(), outbox_queue));
    // Pruning of ended rollouts' data (`retention:`), online.
    shared.spawn(retention::run(shared.clone()));

    let app = api::router(shared.clone());
    let server = tokio::spawn(connections::serve(
        listener,
        app,
        max_connections,
        limits.header_read_timeout,
        shared.api_tls.clone(),
        shared.shutdown.subscribe(),
    ));
    tracing::info!(addr = %local, tls = shared.api_tls.is_some(), max_connections, descriptor_limit = nofile, "listening");
    if shared.api_tls.is_none() && !local.ip().is_loopback() {
        let warning = format!(
            "the API listens on {local}, beyond loopback, WITHOUT TLS: bearer tokens cross the network in clear text; set `tls: {{ cert, key }}` in the config (docs/tls.md) or listen on 127.0.0.1 behind a TLS proxy"
        );
        tracing::warn!("{warning}");
        eprintln!("canaryd: WARNING: {warning}");
    }

    let pending = shared.pending_outbox();
    if shared.config.postgres.is_some() {
        // Several daemons share the database: resume the open rollouts
        // whose leases this one gets, and deliver what is theirs.
        let taken = shared.lease_round().await;
        tracing::info!(taken, "leases taken at start");
        let pending = shared.outbox_of_mine(pending);
        shared.ready.store(true, Ordering::SeqCst);
        shared.resume_outbox(pending);
        shared.spawn(lease::run(shared.clone()));
        shared.spawn(lease::run_commands(shared.clone()));
        shared.spawn(lease::run_relay(shared.clone()));
    } else {
        shared.restore_open_rollouts().await?;
        shared.ready.store(true, Ordering::SeqCst);
        shared.resume_outbox(pending);
    }
    // Model-registry intake (registries:): one watcher per registry.
    registry::spawn_all(&shared);
    Ok(Running {
        addr: local,
        shared,
        server,
    })
}

/// SIGTERM, SIGINT (drain and stop) and SIGHUP (reload policies, then
/// the config file's tokens: `auth.rs`).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind| signal(kind).context("cannot install signal handlers");
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Until a stop signal (or the daemon stops itself).
    async fn run(mut self, shared: Arc<Shared>, opts: &ServeOptions) {
        let mut stop = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM: draining"); return; }
                _ = self.int.recv() => { tracing::info!("SIGINT: draining"); return; }
                _ = stop.wait_for(|s| *s) => return,
                _ = self.hup.recv() => {
                    match shared.reload_policies() {
                        Ok(n) => tracing::info!(count = n, "SIGHUP: policies reloaded"),
                        Err(errs) => {
                            for e in &errs {
                                tracing::error!(error = %e, "SIGHUP: invalid policy; the previous policies stay loaded");
                            }
                        }
                    }
                    match shared.reload_tokens(opts) {
                        Ok(n) => tracing::info!(count = n, "SIGHUP: tokens reloaded"),
                        Err(errs) => {
                            for e in &errs {
                                tracing::error!(error = %e, "SIGHUP: invalid config; the previous tokens stay");
                            }
                        }
                    }
                    if let Some(tls) = &shared.api_tls {
                        match tls.reload() {
                            Ok(()) => tracing::info!("SIGHUP: the API's TLS certificate reloaded"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: the API's TLS certificate cannot be loaded; the previous one stays"),
                        }
                    }
                }
            }
        }
    }
}

/// The admin token file's token, for the CLI when no token is given.
pub fn read_admin_token(data_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(auth::admin_token_path(data_dir))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
