//! The outbox: webhook deliveries of incidents and lifecycle hook runs,
//! each queued by the store in the transaction that committed what it
//! reports, sent in the background after that commit, every attempt
//! recorded, pending ones picked up again at start.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::metrics;
use super::{Shared, clock};
use crate::routers::HookConfig;
use crate::routers::hooks::HookEvent;
use crate::store::{HookStatus, NewAudit, StoreError};

impl Shared {
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
