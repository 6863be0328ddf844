//! Intake from a model registry (PRODUCT.md section 7, `registries:`): one
//! watcher task per configured MLflow registered model, polling its alias
//! (`GET /api/2.0/mlflow/registered-models/alias`) or stage
//! (`POST /api/2.0/mlflow/registered-models/get-latest-versions`) every
//! `pollInterval`.
//!
//! - First sight: the version the alias points to is the baseline (`stable`)
//!   and starts nothing.
//! - The alias points to a new version: a rollout of it (canary) against the
//!   baseline, with the configured service and policy, actor
//!   `mlflow:<model>`; the registry event (the version's `user_id`,
//!   `last_updated_timestamp`, `run_id`, `tags`, `source`) goes to the audit
//!   log. A promoted canary becomes the next baseline.
//! - The alias moves away (to another version, back, or is removed) or the
//!   version is deleted while its rollout runs: the rollout is aborted with
//!   a reason naming what happened in the registry.
//! - When a rollout ends, its verdict is written back as version tags
//!   (`canaryd.verdict`, `canaryd.incident`, `canaryd.rollout`).
//! - Registry errors back off exponentially with jitter, show in
//!   `GET /v1/registries` and `/metrics` (`canaryd_registry_up`,
//!   `canaryd_registry_errors_total`) and are never fatal.
//!
//! # Exactly once
//!
//! `registry_versions` has one row per (watch, version), ever (its primary
//! key). The watcher commits that row (status `starting`, with the baseline
//! and the rollout's reason) *before* it creates the rollout, and marks it
//! `started` with the rollout id after. The reason is deterministic (watch,
//! version, baseline; no clock), so it is a marker: before every attempt to
//! create the rollout, the watcher looks for a rollout of the service with
//! that canary, baseline, actor and reason, active or ended, and adopts it
//! instead of starting another. The crash windows:
//!
//! - before the `starting` row commits: nothing was recorded and nothing
//!   started; the next poll sees the alias on the new version again and
//!   records it then (never lost);
//! - between `starting` and the rollout's creation (itself one transaction
//!   in the store): no rollout carries the marker, so the next poll starts
//!   it (never lost);
//! - between the rollout's creation and `started`: the marker finds the
//!   rollout (even if it already ended), so it is adopted, not started again
//!   (never doubled);
//! - after `started`: the row says so; the version is never started again.
//!
//! Only this task creates rollouts with this actor and reason, and it does
//! one thing at a time, so the look-up and the creation do not race; two
//! identical watches in the config are collapsed into one. The rollout
//! start's own idempotency (the same request returns the same active
//! rollout) is a second guard, but it alone would not do: a rollout that
//! already ended before the crash is no longer "active". A `409` (the service
//! has another active rollout) or any other refusal leaves the row
//! `starting`; it is retried at the next poll while the alias still points
//! to the version, and becomes `skipped` (never started) if the alias moves
//! away first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::auth::Principal;
use super::config::{MlflowConfig, RegistryConfig};
use super::metrics::RegistryLabels;
use super::{Shared, StartRequest};
use crate::engine::{Actor, Command, Phase};
use crate::retry;
use crate::store::NewAudit;
use crate::store::registry::{VersionRow, VersionStatus};
use crate::wire::RefusalKind;

/// Spawn one watcher per configured registry; each stops on shutdown.
pub fn spawn_all(shared: &Arc<Shared>) {
    let mut seen = BTreeSet::new();
    for rc in &shared.config.registries {
        match rc {
            RegistryConfig::Mlflow(c) => {
                let w = Watcher::new(shared.clone(), c.clone());
                if !seen.insert(w.key.clone()) {
                    tracing::warn!(watch = %w.key, "registry configured twice; watching it once");
                    continue;
                }
                shared.spawn(w.run());
            }
        }
    }
}

/// The longest wait between polls while the registry keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

struct Watcher {
    shared: Arc<Shared>,
    c: MlflowConfig,
    /// `mlflow <url> <model> alias:<alias>` (or `stage:<stage>`).
    key: String,
    /// `alias champion` or `stage Production`, for reasons.
    what: String,
    actor: String,
    labels: RegistryLabels,
    failures: u32,
    last_error: Option<String>,
    /// Why a recorded version has not started yet (a 409, say).
    waiting: Option<String>,
    /// The client for this registry (its `caFile`, `clientCert`,
    /// `clientKey`), built at the first poll and again after a failed one,
    /// so renewed certificate files are read without a restart.
    http: Option<reqwest::Client>,
}

/// A poll that failed: the registry could not be read (backs off).
struct RegistryError(String);

impl Watcher {
    fn new(shared: Arc<Shared>, c: MlflowConfig) -> Watcher {
        let url = c.url.trim_end_matches('/').to_string();
        let what = match (&c.alias, &c.stage) {
            (Some(a), _) => format!("alias {a}"),
            (None, Some(s)) => format!("stage {s}"),
            (None, None) => "alias".to_string(),
        };
        let target = what.replacen(' ', ":", 1);
        Watcher {
            key: format!("mlflow {url} {} {target}", c.model),
            actor: format!("mlflow:{}", c.model),
            labels: RegistryLabels {
                registry: url.clone(),
                model: c.model.clone(),
                target,
            },
            what,
            c: MlflowConfig { url, ..c },
            shared,
            failures: 0,
            last_error: None,
            waiting: None,
            http: None,
        }
    }

    async fn run(mut self) {
        let mut stop = self.shared.shutdown.subscribe();
        self.publish(None, None);
        loop {
            if *stop.borrow() {
                return;
            }
            let result = self.poll().await;
            let delay = match result {
                Ok(()) => {
                    self.failures = 0;
                    self.last_error = None;
                    self.shared
                        .metrics
                        .registry_up
                        .get_or_create(&self.labels)
                        .set(1);
                    self.c.poll_interval
                }
                Err(RegistryError(e)) => {
                    // Rebuilt (the TLS files read again) for the next poll.
                    self.http = None;
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(watch = %self.key, failures = self.failures, error = %e, "registry poll failed; backing off");
                    self.last_error = Some(e);
                    self.shared
                        .metrics
                        .registry_up
                        .get_or_create(&self.labels)
                        .set(0);
                    self.shared
                        .metrics
                        .registry_errors
                        .get_or_create(&self.labels)
                        .inc();
                    backoff(self.c.poll_interval, self.failures, retry::jitter())
                }
            };
            let state = self
                .shared
                .with_store(|s| s.registry_watch(&self.key))
                .ok()
                .flatten();
            self.publish(
                state.as_ref().and_then(|w| w.current.clone()),
                state.and_then(|w| w.stable),
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The watcher's status for `GET /v1/registries`.
    fn publish(&self, current: Option<String>, stable: Option<String>) {
        let status = json!({
            "watch": self.key,
            "kind": "mlflow",
            "url": self.c.url,
            "model": self.c.model,
            "alias": self.c.alias,
            "stage": self.c.stage,
            "service": self.c.service,
            "policy": self.c.policy,
            "up": self.failures == 0 && self.last_error.is_none(),
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "current": current,
            "baseline": stable,
            "waiting": self.waiting,
        });
        if let Ok(mut m) = self.shared.metrics.registries.lock() {
            m.insert(self.key.clone(), status);
        }
    }

    /// The client [`Watcher::poll`] built.
    fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        self.http
            .as_ref()
            .ok_or_else(|| RegistryError("no HTTP client yet".to_owned()))
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.c.url)
    }

    /// GET or POST against the registry: `Ok(None)` for a 404 (no such
    /// model, alias or version), `Err` for anything else that is not 2xx.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Option<Value>, RegistryError> {
        let resp =
            req.timeout(HTTP_TIMEOUT).send().await.map_err(|e| {
                RegistryError(format!("{what}: {}", crate::causes::with_causes(&e)))
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND || is_missing_alias(status, &text) {
            return Ok(None);
        }
        if !status.is_success() {
            let snippet: String = text.chars().take(300).collect();
            return Err(RegistryError(format!("{what}: HTTP {status}: {snippet}")));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RegistryError(format!("{what}: not JSON: {e}")))
    }

    /// The model version the alias (or stage) points to now.
    async fn target(&self) -> Result<Option<Value>, RegistryError> {
        let http = self.http()?;
        if let Some(alias) = &self.c.alias {
            let req = http
                .get(self.api("registered-models/alias"))
                .query(&[("name", &self.c.model), ("alias", alias)]);
            let body = self.call(req, "get model version by alias").await?;
            return Ok(body.and_then(|b| b.get("model_version").cloned()));
        }
        let stage = self.c.stage.clone().unwrap_or_default();
        let req = http
            .post(self.api("registered-models/get-latest-versions"))
            .json(&json!({ "name": self.c.model, "stages": [stage] }));
        let body = self.call(req, "get latest versions").await?;
        Ok(body.and_then(|b| {
            b.get("model_versions")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|v| {
                            v.get("current_stage")
                                .and_then(Value::as_str)
                                .is_none_or(|s| s.eq_ignore_ascii_case(&stage))
                        })
                        .cloned()
                })
        }))
    }

    /// Whether the version still exists in the registry.
    async fn version_exists(&self, version: &str) -> Result<bool, RegistryError> {
        let req = self
            .http()?
            .get(self.api("model-versions/get"))
            .query(&[("name", self.c.model.as_str()), ("version", version)]);
        Ok(self.call(req, "get model version").await?.is_some())
    }

    fn audit(
        &self,
        action: &str,
        rollout_id: Option<&str>,
        reason: &str,
        details: Value,
    ) -> NewAudit {
        NewAudit {
            at: self.shared.clock.now(),
            actor: self.actor.clone(),
            action: action.into(),
            rollout_id: rollout_id.map(str::to_string),
            reason: reason.into(),
            ticket: None,
            details,
        }
    }

    fn start_reason(&self, version: &str, baseline: &str) -> String {
        format!(
            "MLflow registry {}: model {} {} now points to version {version} (baseline {baseline})",
            self.c.url, self.c.model, self.what
        )
    }

    /// The registry event for the audit log.
    fn event(&self, mv: &Value, baseline: &str) -> Value {
        json!({
            "registry": self.c.url,
            "model": self.c.model,
            "alias": self.c.alias,
            "stage": self.c.stage,
            "version": version_of(mv),
            "previous": baseline,
            // MLflow records who created the version; it does not record
            // who moved an alias.
            "user_id": mv.get("user_id"),
            "last_updated_timestamp": mv.get("last_updated_timestamp"),
            "creation_timestamp": mv.get("creation_timestamp"),
            "run_id": mv.get("run_id"),
            "source": mv.get("source"),
            "tags": mv.get("tags"),
            "aliases": mv.get("aliases"),
            "current_stage": mv.get("current_stage"),
            "status": mv.get("status"),
        })
    }

    /// One poll. `Err` only when the registry could not be read; store
    /// errors and refused starts are logged and retried at the next poll.
    async fn poll(&mut self) -> Result<(), RegistryError> {
        if self.http.is_none() {
            let client = self
                .c
                .tls
                .http_client_builder()
                .and_then(|b| {
                    b.build().map_err(|e| crate::tls::TlsError::Setup {
                        detail: e.to_string(),
                    })
                })
                .map_err(|e| RegistryError(format!("cannot set up the HTTP client: {e}")))?;
            self.http = Some(client);
        }
        let target = self.target().await?;
        let version = target.as_ref().and_then(version_of);
        // A version the API would refuse never starts a rollout (nor
        // becomes a baseline): the watch reports it and polls again.
        if let Some(v) = &version {
            crate::wire::check_version(v).map_err(|e| {
                RegistryError(format!(
                    "model {} {} points to a version canaryd refuses: {e}",
                    self.c.model, self.what
                ))
            })?;
        }
        let state = match self.shared.with_store(|s| s.registry_watch(&self.key)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(watch = %self.key, error = %e, "cannot read the watch state");
                return Ok(());
            }
        };
        // First sight (or the first version ever seen): the baseline.
        let Some(state) = state.filter(|s| s.stable.is_some() || version.is_none()) else {
            let reason = match &version {
                Some(v) => format!(
                    "first sight of model {} {}: version {v} is the baseline; nothing starts",
                    self.c.model, self.what
                ),
                None => format!(
                    "first sight of model {}: {} points to no version yet",
                    self.c.model, self.what
                ),
            };
            let details = match &target {
                Some(mv) => self.event(mv, ""),
                None => json!({ "registry": self.c.url, "model": self.c.model }),
            };
            let audit = vec![self.audit("registry.baseline", None, &reason, details)];
            let v = version.as_deref();
            if let Err(e) = self.shared.with_store(|s| {
                s.registry_set_watch(&self.key, v, v, self.shared.clock.now(), audit)
            }) {
                tracing::error!(watch = %self.key, error = %e, "cannot record the baseline");
            } else {
                tracing::info!(watch = %self.key, version = ?v, "registry baseline recorded");
            }
            return Ok(());
        };
        let mut stable = state.stable.clone();
        let rows = self
            .shared
            .with_store(|s| s.registry_versions(&self.key))
            .unwrap_or_default();

        // Follow every version this watch meant to roll out.
        // Rows are oldest first, so the last promoted one is the baseline.
        for row in rows.iter().filter(|r| r.status != VersionStatus::Skipped) {
            if let Some(promoted) = self.follow(row, version.as_deref()).await? {
                stable = Some(promoted);
            }
        }

        // A new version: record the intent, then start it.
        if let (Some(v), Some(mv)) = (&version, &target) {
            let known = rows.iter().any(|r| &r.version == v);
            if Some(v) != stable.as_ref() && !known {
                let baseline = stable.clone().unwrap_or_default();
                let reason = self.start_reason(v, &baseline);
                let event = self.event(mv, &baseline);
                let audit = vec![self.audit(
                    "registry.promoted",
                    None,
                    &format!(
                        "model {} {} moved to version {v} (baseline {baseline}); starting a rollout",
                        self.c.model, self.what
                    ),
                    event.clone(),
                )];
                let now = self.shared.clock.now();
                match self.shared.with_store(|s| {
                    s.registry_intend(&self.key, v, &baseline, &reason, &event, now, audit)
                }) {
                    Ok(()) => {
                        let row = VersionRow {
                            watch: self.key.clone(),
                            version: v.clone(),
                            baseline,
                            reason,
                            status: VersionStatus::Starting,
                            rollout_id: None,
                            outcome: None,
                            event,
                            tags_written: false,
                        };
                        self.try_start(&row).await;
                    }
                    Err(e) => {
                        tracing::error!(watch = %self.key, version = %v, error = %e, "cannot record the new version; retrying at the next poll");
                        return Ok(());
                    }
                }
            }
        }

        if state.current != version || state.stable != stable {
            let moved = state.current != version;
            let audit = if moved {
                vec![self.audit(
                    "registry.moved",
                    None,
                    &format!(
                        "model {} {} moved from {} to {}",
                        self.c.model,
                        self.what,
                        state.current.as_deref().unwrap_or("nothing"),
                        version.as_deref().unwrap_or("nothing"),
                    ),
                    json!({ "from": state.current, "to": version, "baseline": stable }),
                )]
            } else {
                Vec::new()
            };
            if let Err(e) = self.shared.with_store(|s| {
                s.registry_set_watch(
                    &self.key,
                    version.as_deref(),
                    stable.as_deref(),
                    self.shared.clock.now(),
                    audit,
                )
            }) {
                tracing::error!(watch = %self.key, error = %e, "cannot record the watch state");
            }
        }
        Ok(())
    }

    /// Drive one recorded version; returns the version when its rollout was
    /// promoted (the new baseline).
    async fn follow(
        &mut self,
        row: &VersionRow,
        target: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        let points_here = target == Some(row.version.as_str());
        match row.status {
            VersionStatus::Starting => {
                if let Some(id) = self.find_marked(row) {
                    self.mark_started(row, &id);
                    return Ok(None);
                }
                if points_here {
                    self.try_start(row).await;
                } else {
                    let reason = format!(
                        "model {} {} moved away from version {} before its rollout could start; it will not start",
                        self.c.model, self.what, row.version
                    );
                    let audit = vec![self.audit(
                        "registry.skipped",
                        None,
                        &reason,
                        json!({ "version": row.version, "now": target }),
                    )];
                    let _ = self.shared.with_store(|s| {
                        s.registry_set_version(
                            &self.key,
                            &row.version,
                            VersionStatus::Skipped,
                            None,
                            None,
                            self.shared.clock.now(),
                            audit,
                        )
                    });
                    self.waiting = None;
                }
                Ok(None)
            }
            VersionStatus::Started => {
                let Some(id) = row.rollout_id.clone() else {
                    return Ok(None);
                };
                let rollout = self.shared.with_store(|s| s.rollout(&id)).ok().flatten();
                let Some(rollout) = rollout else {
                    return Ok(None);
                };
                if let Some(outcome) = rollout.outcome {
                    let audit = vec![self.audit(
                        "registry.ended",
                        Some(&id),
                        &format!(
                            "rollout {id} of version {} ended {}",
                            row.version,
                            outcome.as_str()
                        ),
                        json!({ "version": row.version, "outcome": outcome.as_str() }),
                    )];
                    let recorded = self.shared.with_store(|s| {
                        s.registry_set_version(
                            &self.key,
                            &row.version,
                            VersionStatus::Ended,
                            None,
                            Some(outcome.as_str()),
                            self.shared.clock.now(),
                            audit,
                        )
                    });
                    if recorded.is_ok() {
                        let mut ended = row.clone();
                        ended.status = VersionStatus::Ended;
                        ended.outcome = Some(outcome.as_str().to_string());
                        self.write_back(&ended).await;
                    }
                    return Ok((outcome == Phase::Promoted).then(|| row.version.clone()));
                }
                if !points_here {
                    let reason = match target {
                        Some(t) => format!(
                            "MLflow: model {} {} moved from version {} to {t}",
                            self.c.model, self.what, row.version
                        ),
                        None if !self.version_exists(&row.version).await? => format!(
                            "MLflow: version {} of model {} was deleted from the registry",
                            row.version, self.c.model
                        ),
                        None => format!(
                            "MLflow: model {} {} was removed from version {}",
                            self.c.model, self.what, row.version
                        ),
                    };
                    self.abort(&id, &reason).await;
                }
                Ok(None)
            }
            VersionStatus::Ended => {
                if !row.tags_written {
                    self.write_back(row).await;
                }
                Ok((row.outcome.as_deref() == Some(Phase::Promoted.as_str()))
                    .then(|| row.version.clone()))
            }
            VersionStatus::Skipped => Ok(None),
        }
    }

    /// A rollout created for this row before a crash: same service, canary,
    /// baseline, actor and (deterministic) reason; active or ended.
    fn find_marked(&self, row: &VersionRow) -> Option<String> {
        let rows = self.shared.with_store(|s| s.rollouts()).ok()?;
        rows.into_iter()
            .rev()
            .find(|r| {
                r.service == self.c.service
                    && r.spec.canary == row.version
                    && r.spec.baseline == row.baseline
                    && r.spec.started_by == self.actor
                    && r.spec.reason.as_deref() == Some(row.reason.as_str())
            })
            .map(|r| r.id)
    }

    fn mark_started(&mut self, row: &VersionRow, id: &str) {
        let audit = vec![self.audit(
            "registry.started",
            Some(id),
            &format!(
                "rollout {id} of version {} (baseline {}) started",
                row.version, row.baseline
            ),
            json!({ "version": row.version, "baseline": row.baseline, "rollout": id }),
        )];
        if let Err(e) = self.shared.with_store(|s| {
            s.registry_set_version(
                &self.key,
                &row.version,
                VersionStatus::Started,
                Some(id),
                None,
                self.shared.clock.now(),
                audit,
            )
        }) {
            // The marker finds the rollout at the next poll.
            tracing::error!(watch = %self.key, rollout = %id, error = %e, "cannot record the started rollout");
        }
        self.waiting = None;
    }

    async fn try_start(&mut self, row: &VersionRow) {
        if let Some(id) = self.find_marked(row) {
            self.mark_started(row, &id);
            return;
        }
        let req = StartRequest {
            service: self.c.service.clone(),
            canary: row.version.clone(),
            baseline: row.baseline.clone(),
            policy: self.c.policy.clone(),
            change_type: None,
            reason: Some(row.reason.clone()),
            ticket: None,
            dry_run: false,
        };
        let by = Principal {
            actor: self.actor.clone(),
            roles: Vec::new(),
        };
        match self.shared.start_rollout(req, &by).await {
            Ok(view) => {
                let id = view.id;
                tracing::info!(watch = %self.key, version = %row.version, rollout = %id, "rollout started from the registry");
                self.mark_started(row, &id);
            }
            Err(refusal) => {
                let why = match refusal.kind {
                    RefusalKind::Conflict => format!(
                        "service busy, retrying at the next poll: {}",
                        refusal.message
                    ),
                    _ => format!("start refused, retrying at the next poll: {refusal}"),
                };
                tracing::warn!(watch = %self.key, version = %row.version, reason = %why, "rollout not started");
                self.waiting = Some(why);
            }
        }
    }

    async fn abort(&self, id: &str, reason: &str) {
        let command = Command::Abort {
            by: Actor {
                name: self.actor.clone(),
                reason: reason.to_string(),
                ticket: None,
            },
        };
        match self.shared.command(id, command).await {
            Ok(_) => {
                tracing::info!(watch = %self.key, rollout = %id, reason, "rollout aborted from the registry")
            }
            Err(e) => {
                tracing::warn!(watch = %self.key, rollout = %id, error = ?e, "cannot abort; retrying at the next poll")
            }
        }
    }

    /// Write the verdict back as version tags (idempotent; retried at each
    /// poll until it succeeds, unless the version is gone).
    async fn write_back(&self, row: &VersionRow) {
        let verdict = row.outcome.clone().unwrap_or_default();
        let rollout = row.rollout_id.clone().unwrap_or_default();
        let incident = self
            .shared
            .with_store(|s| s.incidents_for_rollout(&rollout))
            .ok()
            .and_then(|i| i.last().map(|i| i.id.clone()))
            .unwrap_or_default();
        let mut tags = vec![
            ("canaryd.verdict", verdict.clone()),
            ("canaryd.rollout", rollout.clone()),
        ];
        if !incident.is_empty() {
            tags.push(("canaryd.incident", incident.clone()));
        }
        let Ok(http) = self.http() else {
            tracing::warn!(watch = %self.key, version = %row.version, "no HTTP client to write the verdict back; retrying at the next poll");
            return;
        };
        for (key, value) in &tags {
            let req = http.post(self.api("model-versions/set-tag")).json(&json!({
                "name": self.c.model, "version": row.version, "key": key, "value": value,
            }));
            match self.call(req, "set model version tag").await {
                Ok(Some(_)) => {}
                Ok(None) => break, // the version is gone: nothing to tag
                Err(RegistryError(e)) => {
                    tracing::warn!(watch = %self.key, version = %row.version, error = %e, "cannot write the verdict back; retrying at the next poll");
                    return;
                }
            }
        }
        let audit = vec![self.audit(
            "registry.verdict",
            Some(&rollout),
            &format!("verdict {verdict} written back to version {} as tags", row.version),
            json!({ "version": row.version, "tags": tags.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<std::collections::BTreeMap<_, _>>() }),
        )];
        if let Err(e) = self.shared.with_store(|s| {
            s.registry_tags_written(&self.key, &row.version, self.shared.clock.now(), audit)
        }) {
            tracing::error!(watch = %self.key, error = %e, "cannot record the written verdict");
        }
    }
}

/// MLflow answers a missing alias with 400 `INVALID_PARAMETER_VALUE`
/// ("Registered model alias champion not found."), not 404.
fn is_missing_alias(status: reqwest::StatusCode, body: &str) -> bool {
    if status != reqwest::StatusCode::BAD_REQUEST {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let message = v.get("message").and_then(Value::as_str).unwrap_or("");
    v.get("error_code").and_then(Value::as_str) == Some("INVALID_PARAMETER_VALUE")
        && message.contains("alias")
        && message.contains("not found")
}

/// A model version's number as a string (MLflow sends a string; accept a
/// number too).
fn version_of(mv: &Value) -> Option<String> {
    match mv.get("version")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Exponential backoff from the poll interval, capped at ten intervals (and
/// at [`MAX_BACKOFF`]), with jitter in [0.5, 1.5).
fn backoff(poll: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = poll.saturating_mul(1u32 << failures.saturating_sub(1).min(8));
    let cap = poll.saturating_mul(10).min(MAX_BACKOFF).max(poll);
    exp.min(cap).mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Duration::from_secs(1);
        assert_eq!(backoff(p, 1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(p, 3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(p, 30, 0.5), Duration::from_secs(10));
        assert!(backoff(Duration::from_secs(60), 30, 0.99) <= Duration::from_secs(450));
        assert!(backoff(Duration::from_secs(60), 30, 0.5) == MAX_BACKOFF);
        assert!(backoff(p, 2, 0.0) >= Duration::from_secs(1));
    }

    #[test]
    fn missing_alias_is_no_version() {
        let body = r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "Registered model alias champion not found."}"#;
        assert!(is_missing_alias(reqwest::StatusCode::BAD_REQUEST, body));
        let other = r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "Missing value for required parameter 'name'."}"#;
        assert!(!is_missing_alias(reqwest::StatusCode::BAD_REQUEST, other));
        assert!(!is_missing_alias(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            body
        ));
    }

    #[test]
    fn version_numbers() {
        assert_eq!(version_of(&json!({"version": "2"})), Some("2".into()));
        assert_eq!(version_of(&json!({"version": 3})), Some("3".into()));
        assert_eq!(version_of(&json!({})), None);
    }
}
