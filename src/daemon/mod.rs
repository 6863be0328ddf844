//! `canaryd serve`: the shell around the pure core (PRODUCT.md section 7).
//!
//! - `config.rs`: the config file; `policies.rs`: the policy set and reload;
//!   `auth.rs`: tokens and roles.
//! - `driver.rs`: one task per active rollout (windows, engine steps,
//!   commit-then-act, router retries, reconcile after restart).
//! - `api.rs`: the HTTP API (axum); `push.rs`: observation batches;
//!   `view.rs`: the JSON objects; `metrics.rs`: `/metrics`.
//!
//! All state changes go through the store (`crate::store`), one
//! transaction per engine step, before anything outside is touched.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod driver;
pub mod metrics;
pub mod policies;
pub mod push;
pub mod registry;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use self::auth::{Principal, Tokens};
use self::config::{Config, Hooks, ServiceConfig};
use self::driver::{Driver, DriverHandle, DriverMsg};
use self::metrics::Metrics;
use self::policies::PolicySet;
use crate::engine::{Command, Monitor, Rejected, Rollout, RolloutSpec};
use crate::policy::ChangeType;
use crate::retry::RetryPolicy;
use crate::routers::hooks::HookEvent;
use crate::routers::{HookConfig, Router};
use crate::sources::Source;
use crate::store::{Committed, HookStatus, NewAudit, PreparedStep, RolloutRow, Store, StoreError};

/// `canaryd serve` flags; each overrides the config file.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub policies: Option<PathBuf>,
}

/// One entry of `GET /v1/rollouts/{id}/events`.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub rollout_id: String,
    /// `transition` (an engine event) or `end` (the final rollout object).
    pub kind: &'static str,
    pub data: Value,
}

/// A configured service, built: its router and pull sources.
pub struct ServiceRuntime {
    pub name: String,
    pub router: Option<Arc<dyn Router>>,
    pub pull: Vec<Arc<dyn Source>>,
    pub hooks: Hooks,
}

impl ServiceRuntime {
    pub fn source_names(&self) -> Vec<String> {
        let mut names = vec!["push".to_string()];
        names.extend(self.pull.iter().map(|s| s.describe()));
        names
    }
}

/// Everything the API handlers and the drivers share.
pub struct Shared {
    store: Mutex<Store>,
    pub config: Config,
    pub tokens: RwLock<Tokens>,
    pub policies: RwLock<PolicySet>,
    pub services: BTreeMap<String, Arc<ServiceRuntime>>,
    drivers: Mutex<HashMap<String, DriverHandle>>,
    pub metrics: Metrics,
    pub events: broadcast::Sender<StreamEvent>,
    pub ready: AtomicBool,
    pub shutdown: watch::Sender<bool>,
    fatal: Mutex<Option<String>>,
    /// Serializes rollout creation (idempotency and the one-active check).
    start_lock: tokio::sync::Mutex<()>,
    pub retry: RetryPolicy,
    pub http: reqwest::Client,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    commits: mpsc::Sender<CommitJob>,
    /// Hook runs being run now, so none runs twice at once.
    hooks_running: Mutex<std::collections::HashSet<i64>>,
}

/// A prepared engine step waiting for the group commit.
struct CommitJob {
    step: PreparedStep,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// The most steps one transaction commits.
const MAX_GROUP_COMMIT: usize = 512;

/// Group commit: every driver's steps go through one task that commits
/// whatever has queued meanwhile in one transaction (one fsync), so a
/// thousand rollouts cost a few fsyncs per second, not thousands.
async fn committer(shared: Arc<Shared>, mut rx: mpsc::Receiver<CommitJob>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (steps, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.step, j.reply)).unzip();
        match shared.with_store(|s| s.commit_prepared(steps)) {
            Ok(committed) => {
                for (reply, c) in replies.into_iter().zip(committed) {
                    let _ = reply.send(Ok(c));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Why an operation was refused, mapped to an HTTP status by the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NotFound(String),
    Conflict(String),
    /// A field the contract refuses: (field, message).
    Invalid(String, String),
    Forbidden(String),
    Unavailable(String),
    Internal(String),
}

impl From<Rejected> for Refusal {
    fn from(r: Rejected) -> Refusal {
        match r.kind {
            crate::engine::RejectKind::Conflict => Refusal::Conflict(r.message),
            crate::engine::RejectKind::Invalid => {
                let (field, msg) = match r.message.split_once(": ") {
                    Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
                    _ => (String::new(), r.message.clone()),
                };
                Refusal::Invalid(field, msg)
            }
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound { .. } => Refusal::NotFound(e.to_string()),
            StoreError::ServiceBusy { .. } => Refusal::Conflict(e.to_string()),
            StoreError::Invalid(m) => Refusal::Conflict(m),
            other => Refusal::Internal(other.to_string()),
        }
    }
}

/// `POST /v1/rollouts`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub service: String,
    pub canary: String,
    pub baseline: String,
    pub policy: String,
    pub change_type: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl Shared {
    /// Commit a prepared step (with whatever else is queued) and wait for it.
    pub async fn commit(&self, step: PreparedStep) -> Result<Committed, String> {
        let (reply, answer) = oneshot::channel();
        self.commits
            .send(CommitJob { step, reply })
            .await
            .map_err(|_| "the committer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the committer stopped before answering".to_string())?
    }

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

    fn finished(&self, id: &str) {
        if let Ok(mut d) = self.drivers.lock() {
            d.remove(id);
        }
    }

    pub fn driver(&self, id: &str) -> Option<DriverHandle> {
        self.drivers.lock().ok()?.get(id).cloned()
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(mut t) = self.tasks.lock() {
            t.spawn(fut);
        }
    }

    fn launch(self: &Arc<Self>, driver: Driver) {
        let (tx, rx) = mpsc::channel(64);
        let handle = driver.handle(tx);
        if let Ok(mut d) = self.drivers.lock() {
            d.insert(driver.id().to_string(), handle);
        }
        self.spawn(driver.run_loop(rx));
    }

    /// A rollout's JSON object, live for active ones, from the store for
    /// finished ones.
    pub fn rollout_json(&self, id: &str) -> Result<Value, Refusal> {
        if let Some(h) = self.driver(id) {
            let v = h.view.lock().map(|v| v.clone()).unwrap_or(Value::Null);
            if !v.is_null() {
                return Ok(v);
            }
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
            .ok_or_else(|| Refusal::NotFound(format!("rollout {id} not found")))?;
        let rollout = Rollout::restore(checkpoint).map_err(Refusal::Internal)?;
        Ok(view::rollout_view(
            &row,
            &rollout,
            incidents
                .iter()
                .rfind(|i| i.trigger != "router")
                .or(incidents.last())
                .map(|i| i.id.as_str()),
            None,
            clock::now(),
        ))
    }

    pub fn rollouts_json(&self) -> Result<Vec<Value>, Refusal> {
        let rows: Vec<RolloutRow> = self.with_store(|s| s.rollouts())?;
        rows.iter().map(|r| self.rollout_json(&r.id)).collect()
    }

    /// `POST /v1/rollouts`: idempotent; 409 when another rollout of the
    /// service is active. Returns the rollout's JSON.
    pub async fn start_rollout(
        self: &Arc<Self>,
        req: StartRequest,
        by: &Principal,
    ) -> Result<Value, Refusal> {
        let invalid = |f: &str, m: &str| Refusal::Invalid(f.into(), m.into());
        for (field, value) in [
            ("service", &req.service),
            ("canary", &req.canary),
            ("baseline", &req.baseline),
            ("policy", &req.policy),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if req.canary == req.baseline {
            return Err(invalid(
                "canary",
                "must differ from baseline (a rollout compares two versions)",
            ));
        }
        let Some(service) = self.services.get(&req.service).cloned() else {
            return Err(Refusal::Invalid(
                "service".into(),
                format!(
                    "unknown service `{}`; configured: {}",
                    req.service,
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if service.router.is_none() && !req.dry_run {
            return Err(Refusal::Invalid(
                "dry_run".into(),
                format!(
                    "service `{}` has no router configured; only a dry run can start",
                    req.service
                ),
            ));
        }
        let loaded = {
            let set = self.policies.read().unwrap_or_else(|e| e.into_inner());
            set.by_name.get(&req.policy).cloned()
        };
        let Some(loaded) = loaded else {
            return Err(Refusal::Invalid(
                "policy".into(),
                format!("no loaded policy is named `{}`", req.policy),
            ));
        };
        let change_type = match req.change_type.as_deref() {
            None => loaded.policy.change_type,
            Some("standard") => ChangeType::Standard,
            Some("emergency") => ChangeType::Emergency,
            Some("experiment") => ChangeType::Experiment,
            Some(other) => {
                return Err(Refusal::Invalid(
                    "change_type".into(),
                    format!("expected `standard`, `emergency` or `experiment`, found `{other}`"),
                ));
            }
        };
        // The rest runs in its own task: a client that disconnects
        // mid-request must not leave a stored rollout without a driver.
        let shared = self.clone();
        let by = by.clone();
        tokio::spawn(async move {
            shared
                .create_and_launch(req, by, loaded, change_type, service)
                .await
        })
        .await
        .map_err(|e| Refusal::Internal(format!("the start task failed: {e}")))?
    }

    async fn create_and_launch(
        self: &Arc<Self>,
        req: StartRequest,
        by: Principal,
        loaded: policies::LoadedPolicy,
        change_type: ChangeType,
        service: Arc<ServiceRuntime>,
    ) -> Result<Value, Refusal> {
        let now = clock::now();
        let (spec, mut driver) = {
            // Held for the check and the insert only, not for router I/O.
            let _guard = self.start_lock.lock().await;
            if let Some(active) = self.with_store(|s| s.active_rollout(&req.service))? {
                let s = &active.spec;
                let same = s.canary == req.canary
                    && s.baseline == req.baseline
                    && active.policy_name == req.policy
                    && s.change_type == change_type
                    && s.dry_run == req.dry_run
                    && s.reason == req.reason
                    && s.ticket == req.ticket
                    && s.started_by == by.actor;
                if same {
                    return self.rollout_json(&active.id);
                }
                return Err(Refusal::Conflict(format!(
                    "service {} already has an active rollout {} ({} -> {}, {}); abort it or wait for it to end",
                    req.service,
                    active.id,
                    s.baseline,
                    s.canary,
                    active.phase.as_str()
                )));
            }
            let id = self.with_store(|s| s.new_rollout_id(now));
            let spec = RolloutSpec {
                id: id.clone(),
                service: req.service.clone(),
                baseline: req.baseline.clone(),
                canary: req.canary.clone(),
                change_type,
                dry_run: req.dry_run,
                started_by: by.actor.clone(),
                reason: req.reason.clone(),
                ticket: req.ticket.clone(),
            };
            let monitor = Monitor::new(&loaded.policy).map_err(Refusal::Internal)?;
            let rollout = Rollout::new(spec.clone(), (*loaded.policy).clone(), monitor, now)?;
            let row = self.with_store(|s| s.create_rollout(&rollout, &loaded.version, now))?;
            let driver = Driver::new(self.clone(), service.clone(), rollout, row, now);
            (spec, driver)
        };
        // The first step (pending -> progressing, the first weight) runs
        // before the answer, so the caller sees a rollout under way.
        driver.run(crate::engine::Input::Tick).await?;
        let view = driver.view();
        self.run_hooks_of(&spec.id);
        self.launch(driver);
        Ok(view)
    }

    /// A command for an active rollout, answered with its new JSON.
    pub async fn command(&self, id: &str, command: Command) -> Result<Value, Refusal> {
        self.require_ready()?;
        let Some(handle) = self.driver(id) else {
            let row = self.with_store(|s| s.rollout(id))?;
            return Err(match row {
                None => Refusal::NotFound(format!("rollout {id} not found")),
                Some(r) => Refusal::Conflict(format!(
                    "rollout {id} is already {}; `{}` no longer applies",
                    r.phase.as_str(),
                    command.name()
                )),
            });
        };
        let (reply, answer) = oneshot::channel();
        handle
            .tx
            .send(DriverMsg::Command { command, reply })
            .await
            .map_err(|_| Refusal::Unavailable("the rollout's driver is stopping".into()))?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(rejected)) => Err(rejected.into()),
            Err(_) => Err(Refusal::Unavailable(
                "the rollout's driver stopped before answering".into(),
            )),
        }
    }

    /// Add a validated batch to a rollout's open window.
    pub fn push(&self, id: &str, batch: &push::Batch) -> Result<push::Validated, Refusal> {
        self.require_ready()?;
        let Some(handle) = self.driver(id) else {
            let row = self.with_store(|s| s.rollout(id))?;
            return Err(match row {
                None => Refusal::NotFound(format!("rollout {id} not found")),
                Some(r) => Refusal::Conflict(format!(
                    "rollout {id} is {}; it takes no more observations",
                    r.phase.as_str()
                )),
            });
        };
        let weight_since =
            crate::time::Timestamp::from_millis(handle.weight_since.load(Ordering::SeqCst));
        let v = push::validate(batch, clock::now(), handle.started_at, weight_since)
            .map_err(|e| Refusal::Invalid(e.field, e.message))?;
        if v.stale > 0 {
            self.metrics
                .stale_events
                .get_or_create(&metrics::ServiceLabels {
                    service: handle.service.clone(),
                })
                .inc_by(v.stale);
        }
        for (arm, data) in [("baseline", &v.data.baseline), ("canary", &v.data.canary)] {
            let n = data.counter("requests");
            if n > 0 {
                self.metrics
                    .observations
                    .get_or_create(&metrics::ArmLabels {
                        service: handle.service.clone(),
                        arm: arm.into(),
                    })
                    .inc_by(n);
            }
        }
        let mut open = handle.push.lock().unwrap_or_else(|e| e.into_inner());
        driver::merge(&mut open, &v.data);
        Ok(v)
    }

    /// Commands and pushes wait until every open rollout is restored: before
    /// that, a rollout without a driver is not yet known to have ended.
    fn require_ready(&self) -> Result<(), Refusal> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Refusal::Unavailable(
                "the daemon is restoring its rollouts; retry in a moment".into(),
            ))
        }
    }

    /// Reload the policies directory; an invalid set keeps the old one.
    pub fn reload_policies(&self) -> Result<usize, Vec<String>> {
        let set = policies::load_dir(&self.config.policies)?;
        let n = set.by_name.len();
        let names: Vec<String> = set.by_name.keys().cloned().collect();
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = set;
        let _ = self.audit(NewAudit {
            at: clock::now(),
            actor: crate::engine::ENGINE.into(),
            action: "policies.reload".into(),
            rollout_id: None,
            reason: format!("{n} policies loaded"),
            ticket: None,
            details: json!({ "policies": names }),
        });
        Ok(n)
    }

    /// Deliver webhook notifications (incident `notify`) in the background,
    /// recording every attempt; a failure never blocks the rollout.
    pub fn deliver_notifications(self: &Arc<Self>, ids: Vec<i64>) {
        let shared = self.clone();
        self.spawn(async move {
            for id in ids {
                shared.deliver_one(id).await;
            }
        });
    }

    async fn deliver_one(&self, id: i64) {
        let Ok(Some(n)) = self.with_store(|s| s.notification(id)) else {
            return;
        };
        let service = n
            .payload
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Bounded: the retry policy's attempts.
        for attempt in 1..=self.retry.attempts.max(1) {
            let sent = self
                .http
                .post(&n.target)
                .timeout(Duration::from_secs(10))
                .json(&n.payload)
                .send()
                .await;
            let outcome = match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(format!("{e}")),
            };
            let ok = outcome.is_ok();
            if let Err(e) = &outcome {
                self.metrics
                    .notification_failures
                    .get_or_create(&metrics::ServiceLabels {
                        service: service.clone(),
                    })
                    .inc();
                tracing::warn!(notification = id, target = %n.target, error = %e, "webhook delivery failed");
            }
            let now = clock::now();
            if let Err(e) = self.with_store(|s| s.record_delivery(id, now, outcome)) {
                tracing::error!(notification = id, error = %e, "cannot record a delivery attempt");
            }
            if ok {
                return;
            }
            tokio::time::sleep(self.retry.delay(attempt, crate::retry::jitter())).await;
        }
    }

    /// Run a rollout's pending lifecycle hooks. The store queued each in
    /// the transaction that committed the state it reports (its outbox),
    /// so they run after that commit and survive a crash.
    pub fn run_hooks_of(self: &Arc<Self>, rollout_id: &str) {
        match self.with_store(|s| s.hook_runs_for_rollout(rollout_id)) {
            Ok(runs) => self.run_hooks(
                runs.into_iter()
                    .filter(|r| r.status == HookStatus::Pending)
                    .map(|r| r.id)
                    .collect(),
            ),
            Err(e) => tracing::error!(rollout = rollout_id, error = %e, "cannot read queued hooks"),
        }
    }

    /// Run queued hook runs in the background, one after the other: each
    /// retried, every attempt recorded, the end audited; never blocking.
    pub fn run_hooks(self: &Arc<Self>, ids: Vec<i64>) {
        let claimed: Vec<i64> = match self.hooks_running.lock() {
            Ok(mut running) => ids.into_iter().filter(|id| running.insert(*id)).collect(),
            Err(_) => return,
        };
        if claimed.is_empty() {
            return;
        }
        let shared = self.clone();
        self.spawn(async move {
            for id in claimed {
                shared.run_hook(id).await;
                if let Ok(mut running) = shared.hooks_running.lock() {
                    running.remove(&id);
                }
            }
        });
    }

    async fn run_hook(&self, id: i64) {
        let found = self.with_store(|s| -> Result<_, StoreError> {
            let Some(run) = s.hook_run(id)? else {
                return Ok(None);
            };
            Ok(s.rollout(&run.rollout_id)?.map(|row| (run, row)))
        });
        let (run, row) = match found {
            Ok(Some(x)) if x.0.status == HookStatus::Pending => x,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(hook_run = id, error = %e, "cannot read a queued hook");
                return;
            }
        };
        let event = run.event;
        let hook = self
            .services
            .get(&row.service)
            .and_then(|s| s.hooks.get(event))
            .cloned();
        let Some(hook) = hook else {
            if let Err(e) = self.with_store(|s| s.skip_hook_run(id, clock::now())) {
                tracing::error!(hook_run = id, error = %e, "cannot close a hook run");
            }
            return;
        };
        let ctx = crate::routers::hooks::HookContext {
            event,
            service: row.service.clone(),
            baseline: row.spec.baseline.clone(),
            canary: row.spec.canary.clone(),
            rollout_id: row.id.clone(),
            outcome: (event != HookEvent::OnStart)
                .then(|| row.outcome.map(|p| p.as_str().to_string()))
                .flatten(),
            reason: Some(if event == HookEvent::OnStart {
                "started".to_string()
            } else {
                row.reason.clone()
            }),
        };
        // Attempts made before a restart count against the budget; the
        // first attempt after one is always made.
        let last_attempt = self.retry.attempts.max(run.attempts + 1);
        let mut last_error = None;
        let mut attempts = run.attempts;
        for attempt in run.attempts + 1..=last_attempt {
            attempts = attempt;
            let outcome = crate::routers::hooks::run_hook(&hook, &ctx)
                .await
                .map_err(|e| e.to_string());
            last_error = outcome.as_ref().err().cloned();
            let recorded = self.with_store(|s| {
                s.record_hook_attempt(id, clock::now(), outcome, attempt == last_attempt)
            });
            if let Err(e) = recorded {
                // Still pending in the store: the next start retries it.
                tracing::error!(hook_run = id, error = %e, "cannot record a hook attempt");
                return;
            }
            if last_error.is_none() {
                break;
            }
            if attempt < last_attempt {
                tokio::time::sleep(self.retry.delay(attempt, crate::retry::jitter())).await;
            }
        }
        if last_error.is_some() {
            self.metrics
                .notification_failures
                .get_or_create(&metrics::ServiceLabels {
                    service: ctx.service.clone(),
                })
                .inc();
        }
        let _ = self.audit(NewAudit {
            at: clock::now(),
            actor: crate::engine::ENGINE.into(),
            action: format!("hook.{event}"),
            rollout_id: Some(ctx.rollout_id.clone()),
            reason: match &last_error {
                None => format!("hook {event} ran"),
                Some(e) => format!("hook {event} failed after {attempts} attempts: {e}"),
            },
            ticket: None,
            details: json!({
                "hook": hook_name(&hook),
                "hook_run": id,
                "attempts": attempts,
                "error": last_error,
            }),
        });
    }
}

fn hook_name(h: &HookConfig) -> String {
    match h {
        HookConfig::Command(c) => format!("command {}", c.program.display()),
        HookConfig::Webhook(w) => format!("webhook {}", w.url),
    }
}

/// Read the config file (when given) and apply the flags.
pub fn load_config(opts: &ServeOptions) -> anyhow::Result<Config> {
    let mut config = match &opts.config {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            config::parse_config(&path.display().to_string(), &bytes)
                .map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?
        }
        None => Config::default(),
    };
    if let Some(d) = &opts.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(l) = opts.listen {
        config.listen = l;
    }
    if let Some(p) = &opts.policies {
        config.policies = p.clone();
    }
    Ok(config)
}

async fn build_service(name: &str, sc: &ServiceConfig) -> anyhow::Result<ServiceRuntime> {
    let mut pull: Vec<Arc<dyn Source>> = Vec::new();
    let router = match &sc.router {
        Some(rc) => {
            let built = crate::routers::build(rc)
                .await
                .with_context(|| format!("service {name}: cannot set up its router"))?;
            if let Some(s) = built.source {
                pull.push(s);
            }
            Some(built.router)
        }
        None => None,
    };
    if let Some(src) = &sc.source {
        pull.push(
            crate::sources::build(src)
                .with_context(|| format!("service {name}: cannot set up its source"))?,
        );
    }
    Ok(ServiceRuntime {
        name: name.to_string(),
        router,
        pull,
        hooks: sc.hooks.clone(),
    })
}

/// Run the daemon until SIGTERM/SIGINT (or a fatal store error).
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let config = load_config(&opts)?;
    let running = start(config).await?;
    println!("canaryd listening on http://{}", running.addr);
    signals(running.shared.clone()).await;
    running.stop().await
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

/// Open the state, load policies and tokens, build the services, listen,
/// restore every open rollout, and return once ready.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("cannot open the state in {}", config.data_dir.display()))?;
    let policies = policies::load_dir(&config.policies).map_err(|errs| {
        anyhow::anyhow!(
            "cannot load the policies in {}:\n{}",
            config.policies.display(),
            errs.join("\n")
        )
    })?;
    tracing::info!(count = policies.by_name.len(), dir = %config.policies.display(), "policies loaded");
    let mut tokens = Tokens::new(&config.tokens);
    if config.tokens.is_empty() {
        let (entry, created) = auth::ensure_admin_token(&config.data_dir).with_context(|| {
            format!(
                "cannot write the admin token in {}",
                config.data_dir.display()
            )
        })?;
        tracing::info!(
            path = %auth::admin_token_path(&config.data_dir).display(),
            created,
            "no tokens configured: the admin token is in this file"
        );
        tokens.insert(entry);
    }
    let mut services = BTreeMap::new();
    for (name, sc) in &config.services {
        services.insert(name.clone(), Arc::new(build_service(name, sc).await?));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let (commits, commit_rx) = mpsc::channel(4 * MAX_GROUP_COMMIT);
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        config,
        tokens: RwLock::new(tokens),
        policies: RwLock::new(policies),
        services,
        drivers: Mutex::new(HashMap::new()),
        metrics: Metrics::new(),
        events: broadcast::channel(1024).0,
        ready: AtomicBool::new(false),
        shutdown,
        fatal: Mutex::new(None),
        start_lock: tokio::sync::Mutex::new(()),
        retry: RetryPolicy::default(),
        http: reqwest::Client::new(),
        tasks: Mutex::new(tokio::task::JoinSet::new()),
        commits,
        hooks_running: Mutex::new(std::collections::HashSet::new()),
    });
    tokio::spawn(committer(shared.clone(), commit_rx));

    let app = api::router(shared.clone());
    let mut stop = shared.shutdown.subscribe();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    tracing::info!(addr = %local, "listening");

    // Webhook deliveries pending from before a restart (read before the
    // restore, which may queue and send new ones itself).
    let pending = shared
        .with_store(|s| s.pending_notifications())
        .unwrap_or_default();
    let pending_hooks = shared
        .with_store(|s| s.pending_hook_runs())
        .unwrap_or_default();
    restore(&shared).await?;
    shared.ready.store(true, Ordering::SeqCst);
    // Hooks queued before a restart. A restored rollout that has ended but
    // whose traffic is not yet confirmed back runs its end hook when it is.
    shared.run_hooks(
        pending_hooks
            .into_iter()
            .filter(|h| h.event == HookEvent::OnStart || shared.driver(&h.rollout_id).is_none())
            .map(|h| h.id)
            .collect(),
    );
    // Model-registry intake (registries:): one watcher per registry.
    registry::spawn_all(&shared);
    shared.deliver_notifications(pending.into_iter().map(|n| n.id).collect());
    Ok(Running {
        addr: local,
        shared,
        server,
    })
}

/// Resume every open rollout from its checkpoint and journal, then make the
/// routers match.
async fn restore(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let open = shared.with_store(|s| s.open_rollouts::<Monitor>())?;
    let now = clock::now();
    for o in open {
        let id = o.row.id.clone();
        let Some(service) = shared.services.get(&o.row.service).cloned() else {
            tracing::error!(rollout = %id, service = %o.row.service, "the service of an open rollout is no longer configured; it stays as it is until it is configured again");
            continue;
        };
        let mut driver = Driver::restore(shared.clone(), service, o, now)
            .map_err(|e| anyhow::anyhow!("rollout {id}: cannot restore: {e}"))?;
        if let Err(e) = driver.reconcile().await {
            tracing::error!(rollout = %id, error = %e, "cannot reconcile the router after restart; the driver keeps retrying");
        }
        tracing::info!(rollout = %id, "rollout resumed");
        shared.launch(driver);
    }
    Ok(())
}

async fn signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); return; }
            _ = stop.wait_for(|s| *s) => return,
            _ = hup.recv() => match shared.reload_policies() {
                Ok(n) => tracing::info!(count = n, "SIGHUP: policies reloaded"),
                Err(errs) => {
                    for e in &errs {
                        tracing::error!(error = %e, "SIGHUP: invalid policy; the previous policies stay loaded");
                    }
                }
            },
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
