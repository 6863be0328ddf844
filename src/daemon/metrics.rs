//! The daemon's own metrics (`GET /metrics`), with prometheus-client.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub rollout: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub rollout: String,
    pub service: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub service: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    pub service: String,
    pub arm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub rollout: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

/// A notification's receiver (`notifications.receivers`; incident webhooks
/// of policies are `incident-webhook`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub service: String,
    pub receiver: String,
}

/// A model-registry watch (src/daemon/registry.rs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
    pub model: String,
    /// `alias:<alias>` or `stage:<stage>`.
    pub target: String,
}

pub struct Metrics {
    registry: Registry,
    pub phase: Family<PhaseLabels, Gauge>,
    pub weight: Family<RolloutLabels, Gauge>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub observations: Family<ArmLabels, Counter>,
    pub stale_events: Family<ServiceLabels, Counter>,
    pub trigger_estimate: Family<TriggerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub trigger_boundary: Family<TriggerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub trigger_fired: Family<TriggerLabels, Gauge>,
    pub router_errors: Family<ServiceLabels, Counter>,
    pub source_errors: Family<ServiceLabels, Counter>,
    pub source_up: Family<ServiceLabels, Gauge>,
    pub notification_failures: Family<ServiceLabels, Counter>,
    pub notifications_delivered: Family<ReceiverLabels, Counter>,
    pub notifications_given_up: Family<ReceiverLabels, Counter>,
    pub registry_up: Family<RegistryLabels, Gauge>,
    pub registry_errors: Family<RegistryLabels, Counter>,
    /// Each registry watcher's status for `GET /v1/registries`, by watch.
    pub registries: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Serializes encoding (the registry is read-only after setup).
    encode_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("canaryd");
        let m = Metrics {
            phase: Family::default(),
            weight: Family::default(),
            decisions: Family::default(),
            observations: Family::default(),
            stale_events: Family::default(),
            trigger_estimate: Family::default(),
            trigger_boundary: Family::default(),
            trigger_fired: Family::default(),
            router_errors: Family::default(),
            source_errors: Family::default(),
            source_up: Family::default(),
            notification_failures: Family::default(),
            notifications_delivered: Family::default(),
            notifications_given_up: Family::default(),
            registry_up: Family::default(),
            registry_errors: Family::default(),
            registries: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
            encode_lock: Mutex::new(()),
        };
        registry.register(
            "rollout_phase",
            "1 for the rollout's current phase",
            m.phase.clone(),
        );
        registry.register(
            "rollout_canary_weight_percent",
            "The canary weight the router confirmed",
            m.weight.clone(),
        );
        registry.register(
            "decisions",
            "Engine decisions (weight changes, approvals asked, promotions, rollbacks, pauses)",
            m.decisions.clone(),
        );
        registry.register(
            "observations",
            "Requests ingested per arm (pushed, proxied or pulled)",
            m.observations.clone(),
        );
        registry.register(
            "stale_events",
            "Pushed events left out: their `at` is before the weight in force took effect",
            m.stale_events.clone(),
        );
        registry.register(
            "trigger_estimate",
            "Each trigger's current estimate",
            m.trigger_estimate.clone(),
        );
        registry.register(
            "trigger_boundary",
            "Each trigger's boundary",
            m.trigger_boundary.clone(),
        );
        registry.register(
            "trigger_fired",
            "1 when the trigger's condition is met",
            m.trigger_fired.clone(),
        );
        registry.register(
            "router_errors",
            "Failed router attempts",
            m.router_errors.clone(),
        );
        registry.register(
            "source_errors",
            "Failed metric source pulls",
            m.source_errors.clone(),
        );
        registry.register(
            "source_up",
            "1 when the service's last pull succeeded",
            m.source_up.clone(),
        );
        registry.register(
            "notification_failures",
            "Failed webhook and hook deliveries",
            m.notification_failures.clone(),
        );
        registry.register(
            "notifications_delivered",
            "Notifications and incident webhooks delivered, per receiver",
            m.notifications_delivered.clone(),
        );
        registry.register(
            "notifications_given_up",
            "Notifications and incident webhooks given up after their retry time",
            m.notifications_given_up.clone(),
        );
        registry.register(
            "registry_up",
            "1 when the model registry watch's last poll succeeded",
            m.registry_up.clone(),
        );
        registry.register(
            "registry_errors",
            "Failed model registry polls",
            m.registry_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let _guard = self.encode_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Forget a finished rollout's per-rollout series except its final
    /// phase and weight.
    pub fn forget_triggers(&self, rollout: &str, triggers: &[String]) {
        for t in triggers {
            let l = TriggerLabels {
                rollout: rollout.to_string(),
                trigger: t.clone(),
            };
            self.trigger_estimate.remove(&l);
            self.trigger_boundary.remove(&l);
            self.trigger_fired.remove(&l);
        }
    }
}
