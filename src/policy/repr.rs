//! The serialized form of a compiled [`Policy`], as checkpoints hold it:
//! triggers and gates as written (metric name, quantile, rule), exactly the
//! shape of checkpoint version 1. Serializing flattens each resolved check
//! back to that form; deserializing resolves it again with the same
//! functions the compiler uses, so a checkpoint can never hold a
//! combination the compiler would refuse. The gates `requireNoHarm` implies
//! are not written: they are derived again from the setting the analysis
//! records (see `no_harm.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::check::{Definitions, Mismatch, resolve_gate, resolve_trigger};
use super::model::{
    Action, AnalysisSpec, ChangeType, EmergencySpec, ExperimentSpec, Gate, IncidentSpec, Policy,
    Step, Trigger, Weight,
};
use super::no_harm::implied_gates;
use super::written::{GateRequirement, Metric, TriggerRule};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyRepr {
    name: String,
    description: Option<String>,
    change_type: ChangeType,
    analysis: AnalysisSpec,
    steps: Vec<Step>,
    metrics: BTreeMap<String, Metric>,
    triggers: Vec<TriggerRepr>,
    gates: Vec<GateRepr>,
    incident: IncidentSpec,
    emergency: EmergencySpec,
    experiment: Option<ExperimentSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TriggerRepr {
    name: String,
    metric: Option<String>,
    quantile: Option<f64>,
    rule: TriggerRule,
    action: Action,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct GateRepr {
    name: String,
    metric: String,
    quantile: Option<f64>,
    requirement: GateRequirement,
    before: Weight,
}

impl From<Policy> for PolicyRepr {
    fn from(p: Policy) -> PolicyRepr {
        PolicyRepr {
            triggers: p
                .triggers
                .into_iter()
                .map(|t| {
                    let (metric, quantile, rule) = t.check.written();
                    TriggerRepr {
                        name: t.name,
                        metric,
                        quantile,
                        rule,
                        action: t.action,
                    }
                })
                .collect(),
            // Implied gates are not written: reading derives them again
            // from `analysis.require_no_harm` (absent in checkpoints that
            // predate it, so those rollouts keep running without them).
            gates: p
                .gates
                .into_iter()
                .filter(|g| !g.is_implied())
                .map(|g| GateRepr {
                    metric: g.check.metric_name().to_owned(),
                    quantile: g.check.quantile(),
                    requirement: g.check.requirement(),
                    name: g.name,
                    before: g.before,
                })
                .collect(),
            name: p.name,
            description: p.description,
            change_type: p.change_type,
            analysis: p.analysis,
            steps: p.steps,
            metrics: p.metrics,
            incident: p.incident,
            emergency: p.emergency,
            experiment: p.experiment,
        }
    }
}

/// A stored trigger or gate that does not fit its metric (the compiler
/// would have refused it: the checkpoint was altered or is corrupt).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{what} `{name}` does not fit its metric: {problems:?}")]
pub struct Unresolved {
    what: &'static str,
    name: String,
    problems: Vec<Mismatch>,
}

impl TryFrom<PolicyRepr> for Policy {
    type Error = Unresolved;

    fn try_from(r: PolicyRepr) -> Result<Policy, Unresolved> {
        let defined: Definitions<'_> = r
            .metrics
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v)))
            .collect();
        let refused = |what: &'static str, name: &str, problems: Vec<Mismatch>| Unresolved {
            what,
            name: name.to_owned(),
            problems,
        };
        let triggers = r
            .triggers
            .iter()
            .map(|t| {
                resolve_trigger(&defined, t.metric.as_deref(), t.quantile, &t.rule)
                    .map(|check| Trigger {
                        name: t.name.clone(),
                        check,
                        action: t.action,
                    })
                    .map_err(|p| refused("trigger", &t.name, p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gates = r
            .gates
            .iter()
            .map(|g| {
                resolve_gate(&defined, &g.metric, g.quantile, g.requirement)
                    .map(|check| Gate {
                        name: g.name.clone(),
                        check,
                        before: g.before,
                        implied_by: None,
                    })
                    .map_err(|p| refused("gate", &g.name, p))
            })
            .chain(
                r.analysis
                    .require_no_harm
                    .map(|no_harm| implied_gates(&triggers, no_harm))
                    .unwrap_or_default()
                    .into_iter()
                    .map(Ok),
            )
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            name: r.name,
            description: r.description,
            change_type: r.change_type,
            analysis: r.analysis,
            steps: r.steps,
            metrics: r.metrics,
            triggers,
            gates,
            incident: r.incident,
            emergency: r.emergency,
            experiment: r.experiment,
        })
    }
}
