//! Rollouts as the API and the registry watchers see them: starting one
//! (idempotent; one active per service, checked and inserted under one
//! lock), commands to a running one, the drivers that run them, and, at
//! start, resuming every open rollout; and the list, filtered and paged
//! (`GET /v1/rollouts?service=&state=&limit=&cursor=`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::auth::Principal;
use super::driver::{Driver, DriverHandle, DriverMsg};
use super::policies::LoadedPolicy;
use super::services::ServiceRuntime;
use super::{Refusal, Shared, StartRequest};
use crate::engine::{Command, Phase, Rollout, RolloutSpec};
use crate::monitor::Monitor;
use crate::policy::ChangeType;
use crate::time::Timestamp;

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
        self.spawn(Box::new(driver).run_loop(rx));
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
            // The same start again is answered with the rollout it made;
            // another is refused while one is active.
            let answer_active = |active: crate::store::RolloutRow| {
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
                Err(Refusal::conflict(format!(
                    "service {} already has an active rollout {} ({} -> {}, {}); abort it or wait for it to end",
                    req.service,
                    active.id,
                    s.baseline,
                    s.canary,
                    active.phase.as_str()
                )))
            };
            if let Some(active) = self.with_store(|s| s.active_rollout(&req.service))? {
                return answer_active(active);
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
            let driver = match &self.config.postgres {
                None => {
                    let row =
                        self.with_store(|s| s.create_rollout(&rollout, &loaded.version, now))?;
                    Driver::new(self.clone(), service.clone(), rollout, row, now)
                }
                // Several daemons: leased to this one as it is created.
                Some(pg) => {
                    let created = self.with_store(|s| {
                        s.create_rollout_leased(
                            &rollout,
                            &loaded.version,
                            now,
                            &pg.instance,
                            pg.lease,
                        )
                    });
                    let (row, fence) = match created {
                        Ok(created) => created,
                        // Another daemon started one for the service since
                        // the check above (the database's unique index
                        // refused this one): answered as if it had been
                        // found there.
                        Err(e) => match self.with_store(|s| s.active_rollout(&req.service))? {
                            Some(active) => return answer_active(active),
                            None => return Err(e.into()),
                        },
                    };
                    let lease = self.hold_lease(&row.id, fence);
                    Driver::new(self.clone(), service.clone(), rollout, row, now).with_lease(lease)
                }
            };
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
                // Several daemons share the database: the one that drives
                // it applies the command from the queue.
                Some(r) if r.outcome.is_none() && self.config.postgres.is_some() => {
                    return self.command_through_queue(id, command).await;
                }
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
            .send(DriverMsg::Command {
                order: Box::new(super::driver::Order {
                    command,
                    queued: None,
                }),
                reply,
            })
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

/// What `GET /v1/rollouts` was asked for, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    pub service: Option<String>,
    /// A phase's name (`progressing`, `rolled-back`, ...).
    pub state: Option<String>,
    pub limit: Option<usize>,
    /// Where the previous page ended: `<created_at ms>.<id>`.
    pub cursor: Option<(Timestamp, String)>,
}

/// The most rollouts one page holds, and a page's size when only `cursor`
/// is given.
pub const MAX_PAGE: usize = 500;
pub const DEFAULT_PAGE: usize = 50;

impl ListQuery {
    /// The query string's parameters, each checked; an unknown one is
    /// refused rather than ignored (a typo would otherwise list everything).
    pub fn read(params: &BTreeMap<String, String>) -> Result<ListQuery, Refusal> {
        let mut q = ListQuery::default();
        for (key, value) in params {
            match key.as_str() {
                "service" => q.service = Some(value.clone()).filter(|v| !v.is_empty()),
                "state" if value.is_empty() => {}
                "state" => {
                    let known = Phase::ALL.iter().any(|p| p.as_str() == value);
                    if !known {
                        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
                        return Err(Refusal::invalid(
                            "state",
                            format!("expected one of {}, got {value:?}", names.join(", ")),
                        ));
                    }
                    q.state = Some(value.clone());
                }
                "limit" => {
                    let n = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            Refusal::invalid(
                                "limit",
                                format!(
                                    "expected a whole number from 1 to {MAX_PAGE}, got {value:?}"
                                ),
                            )
                        })?;
                    q.limit = Some(n);
                }
                "cursor" => q.cursor = Some(read_cursor(value)?),
                other => {
                    return Err(Refusal::invalid(
                        other,
                        "unknown parameter; expected service, state, limit or cursor",
                    ));
                }
            }
        }
        Ok(q)
    }

    /// Asked for a page (`limit` or `cursor`) rather than the whole list.
    pub fn paged(&self) -> bool {
        self.limit.is_some() || self.cursor.is_some()
    }
}

fn read_cursor(value: &str) -> Result<(Timestamp, String), Refusal> {
    value
        .split_once('.')
        .and_then(|(at, id)| {
            let at = at.parse::<u64>().ok()?;
            (!id.is_empty()).then(|| (Timestamp::from_millis(at), id.to_string()))
        })
        .ok_or_else(|| {
            Refusal::invalid(
                "cursor",
                format!("expected the `next` of a previous page, got {value:?}"),
            )
        })
}

impl Shared {
    /// Every rollout of `query`'s service and state, oldest first: the
    /// unpaged list.
    pub fn rollouts_filtered(
        &self,
        query: &ListQuery,
    ) -> Result<Vec<crate::wire::Rollout>, Refusal> {
        let rows = self.with_store(|s| s.rollouts())?;
        rows.iter()
            .filter(|r| query.service.as_deref().is_none_or(|s| r.service == s))
            .filter(|r| query.state.as_deref().is_none_or(|p| r.phase.as_str() == p))
            .map(|r| self.rollout(&r.id))
            .collect()
    }

    /// One page of rollouts, newest first, and the cursor of the next.
    pub fn rollout_page(&self, query: &ListQuery) -> Result<crate::wire::RolloutPage, Refusal> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        let mut rows = self.with_store(|s| {
            s.rollouts_page(
                query.service.as_deref(),
                query.state.as_deref(),
                query.cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
                limit + 1,
            )
        })?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last()
                .map(|r| format!("{}.{}", r.created_at.as_millis(), r.id))
        } else {
            None
        };
        let items = rows
            .iter()
            .map(|r| self.rollout(&r.id))
            .collect::<Result<_, _>>()?;
        Ok(crate::wire::RolloutPage { items, next })
    }
}
