//! Rollouts as the API and the registry watchers see them: starting one
//! (idempotent; one active per service, checked and inserted under one
//! lock), commands to a running one, the drivers that run them, and, at
//! start, resuming every open rollout.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::auth::Principal;
use super::driver::{Driver, DriverHandle, DriverMsg};
use super::policies::LoadedPolicy;
use super::services::ServiceRuntime;
use super::{Refusal, Shared, StartRequest};
use crate::engine::{Command, Rollout, RolloutSpec};
use crate::monitor::Monitor;
use crate::policy::ChangeType;

/// The drivers of the rollouts running now, by id, and the lock under
/// which a start checks and inserts.
#[derive(Default)]
pub(super) struct Drivers {
    active: Mutex<HashMap<String, DriverHandle>>,
    /// Serializes rollout creation (idempotency and the one-active check).
    start_lock: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn finished(&self, id: &str) {
        if let Ok(mut d) = self.drivers.active.lock() {
            d.remove(id);
        }
    }

    pub fn driver(&self, id: &str) -> Option<DriverHandle> {
        self.drivers.active.lock().ok()?.get(id).cloned()
    }

    pub(super) fn launch(self: &Arc<Self>, driver: Driver) {
        let (tx, rx) = mpsc::channel(64);
        let handle = driver.handle(tx);
        if let Ok(mut d) = self.drivers.active.lock() {
            d.insert(driver.id().to_string(), handle);
        }
        self.spawn(driver.run_loop(rx));
    }

    /// `POST /v1/rollouts`: idempotent; 409 when another rollout of the
    /// service is active. Returns the rollout's JSON.
    pub async fn start_rollout(
        self: &Arc<Self>,
        req: StartRequest,
        by: &Principal,
    ) -> Result<crate::wire::Rollout, Refusal> {
        let invalid = Refusal::invalid;
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
        for (field, version) in [("canary", &req.canary), ("baseline", &req.baseline)] {
            crate::wire::check_version(version).map_err(|e| Refusal::invalid(field, e))?;
        }
        if req.canary == req.baseline {
            return Err(invalid(
                "canary",
                "must differ from baseline (a rollout compares two versions)",
            ));
        }
        let Some(service) = self.services.get(&req.service).cloned() else {
            return Err(Refusal::invalid(
                "service",
                format!(
                    "unknown service `{}`; configured: {}",
                    req.service,
                    self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if service.router.is_none() && !req.dry_run {
            return Err(Refusal::invalid(
                "dry_run",
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
            return Err(Refusal::invalid(
                "policy",
                format!("no loaded policy is named `{}`", req.policy),
            ));
        };
        let change_type = match req.change_type.as_deref() {
            None => loaded.policy.change_type,
            Some("standard") => ChangeType::Standard,
            Some("emergency") => ChangeType::Emergency,
            Some("experiment") => ChangeType::Experiment,
            Some(other) => {
                return Err(Refusal::invalid(
                    "change_type",
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
        .map_err(|e| Refusal::internal(format!("the start task failed: {e}")))?
    }

    async fn create_and_launch(
        self: &Arc<Self>,
        req: StartRequest,
        by: Principal,
        loaded: LoadedPolicy,
        change_type: ChangeType,
        service: Arc<ServiceRuntime>,
    ) -> Result<crate::wire::Rollout, Refusal> {
        let now = self.clock.now();
        let (spec, mut driver) = {
            // Held for the check and the insert only, not for router I/O.
            let _guard = self.drivers.start_lock.lock().await;
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
                    return self.rollout(&active.id);
                }
                return Err(Refusal::conflict(format!(
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
            let monitor =
                Monitor::new(&loaded.policy).map_err(|e| Refusal::internal(e.to_string()))?;
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
    pub async fn command(
        &self,
        id: &str,
        command: Command,
    ) -> Result<crate::wire::Rollout, Refusal> {
        self.require_ready()?;
        let Some(handle) = self.driver(id) else {
            let row = self.with_store(|s| s.rollout(id))?;
            return Err(match row {
                None => Refusal::not_found(format!("rollout {id} not found")),
                Some(r) => Refusal::conflict(format!(
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
            .map_err(|_| Refusal::unavailable("the rollout's driver is stopping"))?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(rejected)) => Err(rejected.into()),
            Err(_) => Err(Refusal::unavailable(
                "the rollout's driver stopped before answering",
            )),
        }
    }

    /// Commands and pushes wait until every open rollout is restored: before
    /// that, a rollout without a driver is not yet known to have ended.
    pub(super) fn require_ready(&self) -> Result<(), Refusal> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Refusal::unavailable(
                "the daemon is restoring its rollouts; retry in a moment",
            ))
        }
    }

    /// Resume every open rollout from its checkpoint and journal, then make the
    /// routers match.
    pub(super) async fn restore_open_rollouts(self: &Arc<Self>) -> anyhow::Result<()> {
        let open = self.with_store(|s| s.open_rollouts::<Monitor>())?;
        let now = self.clock.now();
        for o in open {
            let id = o.row.id.clone();
            let Some(service) = self.services.get(&o.row.service).cloned() else {
                tracing::error!(rollout = %id, service = %o.row.service, "the service of an open rollout is no longer configured; it stays as it is until it is configured again");
                continue;
            };
            let mut driver = Driver::restore(self.clone(), service, o, now)
                .map_err(|e| anyhow::anyhow!("rollout {id}: cannot restore: {e}"))?;
            if let Err(e) = driver.reconcile().await {
                tracing::error!(rollout = %id, error = %e, "cannot reconcile the router after restart; the driver keeps retrying");
            }
            tracing::info!(rollout = %id, "rollout resumed");
            self.launch(driver);
        }
        Ok(())
    }
}
