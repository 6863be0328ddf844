//! Parse, then compile: bytes → located YAML tree → validated [`Policy`].
//!
//! Every problem in a file is collected before anything is returned, each
//! with its line, column and field path. Nothing here panics on input: the
//! YAML layer is bounded (size, depth, nodes, aliases) and every read goes
//! through the reporting readers of `decode.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::check::{Definitions, Mismatch, resolve_gate, resolve_trigger};
use super::model::*;
use super::no_harm::implied_gates;
use super::written::*;
use crate::stats::Overdispersion;
use crate::yaml::decode::{self, Fields, found, one_of};
use crate::yaml::diag::{Diagnostics, Path, Sink};
use crate::yaml::node::{Node, Pos, Value};
use crate::yaml::{envelope, load_yaml};

/// Largest policy file accepted (every canaryd YAML file has this limit).
pub const MAX_POLICY_BYTES: usize = crate::yaml::MAX_FILE_BYTES;

pub const API_VERSION: &str = "canaryd.dev/v1";
pub const KIND: &str = "RolloutPolicy";

/// Compile one policy file. `file` names it in diagnostics.
pub fn parse_policy(file: &str, bytes: &[u8]) -> Result<Policy, Diagnostics> {
    let mut sink = Sink::new(file);
    let Some(root) = load_yaml(&mut sink, bytes) else {
        return Err(sink.finish().expect("load_yaml reports why it failed"));
    };
    let policy = compile_root(&mut sink, &root, API_VERSION, KIND);
    match (policy, sink.finish()) {
        (Some(policy), None) => Ok(policy),
        (_, Some(diags)) => Err(diags),
        // compile_root only returns None after reporting.
        (None, None) => unreachable!("compile returned nothing without a diagnostic"),
    }
}

/// A policy file: the envelope, then the spec.
pub fn compile_root(sink: &mut Sink, root: &Node, api_version: &str, kind: &str) -> Option<Policy> {
    let (name, description, mut policy) =
        envelope(sink, root, api_version, kind, "policy name", compile_spec)?;
    policy.name = name;
    policy.description = description;
    Some(policy)
}

const SPEC_FIELDS: &[&str] = &[
    "changeType",
    "analysis",
    "steps",
    "metrics",
    "triggers",
    "gates",
    "incident",
    "emergency",
    "experiment",
];

fn compile_spec(sink: &mut Sink, node: &Node, path: &Path) -> Option<Policy> {
    let f = decode::mapping(sink, node, path, SPEC_FIELDS)?;
    let change_type = match f.get("changeType") {
        None => Some(ChangeType::Standard),
        Some(n) => decode::keyword(
            sink,
            n,
            &f.child("changeType"),
            &[
                ("standard", ChangeType::Standard),
                ("emergency", ChangeType::Emergency),
                ("experiment", ChangeType::Experiment),
            ],
        ),
    };
    let steps = f
        .require(sink, "steps")
        .and_then(|n| compile_steps(sink, n, &f.child("steps")));
    let analysis = compile_analysis(
        sink,
        f.get("analysis"),
        &f.child("analysis"),
        steps.as_deref(),
    );
    let metrics = match f.get("metrics") {
        Some(n) => compile_metrics(sink, n, &f.child("metrics")),
        None => Some(Located::default()),
    };
    let triggers = match f.get("triggers") {
        Some(n) => compile_list(sink, n, &f.child("triggers"), |sink, node, path| {
            compile_trigger(sink, node, path, metrics.as_ref())
        }),
        None => Some(Vec::new()),
    };
    let gates = match f.get("gates") {
        Some(n) => compile_list(sink, n, &f.child("gates"), compile_gate),
        None => Some(Vec::new()),
    };
    let incident = match f.get("incident") {
        Some(n) => compile_incident(sink, n, &f.child("incident")),
        None => Some(IncidentSpec {
            severity: "sev2".into(),
            notify: Vec::new(),
        }),
    };
    let emergency = match f.get("emergency") {
        Some(n) => compile_emergency(sink, n, &f.child("emergency")),
        None => Some(EmergencySpec {
            bypass_for: Duration::from_secs(4 * 3600),
        }),
    };
    let experiment = match f.get("experiment") {
        Some(n) => compile_experiment(sink, n, &f.child("experiment")).map(Some),
        None => Some(None),
    };
    if change_type == Some(ChangeType::Experiment) && !f.has("experiment") {
        sink.error(
            f.pos,
            path,
            "missing required field `experiment` (an experiment needs `{ weight, duration }`)",
        );
    }

    // Cross-references, checked only on what compiled.
    let resolved_triggers = match (&metrics, &triggers) {
        (Some(metrics), Some(triggers)) => resolve_triggers(sink, metrics, triggers),
        _ => None,
    };
    let resolved_gates = match (&metrics, &gates) {
        (Some(metrics), Some(gates)) => resolve_gates(sink, metrics, gates),
        _ => None,
    };
    // The gates `requireNoHarm` implies follow the written ones; their
    // names (`no-harm:<trigger>`) cannot be written, so they never collide.
    let resolved_gates = match (resolved_gates, &resolved_triggers, &analysis) {
        (Some(mut gates), Some(triggers), Some(analysis)) => {
            if let Some(no_harm) = analysis.require_no_harm {
                gates.extend(implied_gates(triggers, no_harm));
            }
            Some(gates)
        }
        _ => None,
    };
    if let (Some(triggers), Some(gates)) = (&triggers, &gates) {
        check_unique_names(sink, triggers, gates);
    }
    // A policy that *is* an experiment must not name weights above the cap;
    // one that can also run as an experiment (`--change-type`) is capped
    // by the engine.
    if let (Some(ChangeType::Experiment), Some(Some(experiment)), Some(steps)) =
        (change_type, &experiment, &steps)
    {
        for s in steps {
            if let Step::SetWeight(w) = s.value
                && w > experiment.value.weight
            {
                sink.error(
                    s.pos,
                    &s.path,
                    format!(
                        "an experiment never goes above spec.experiment.weight ({}), got {}",
                        experiment.value.weight.percent(),
                        w.percent()
                    ),
                );
            }
        }
    }

    Some(Policy {
        name: String::new(),
        description: None,
        change_type: change_type?,
        analysis: analysis?,
        steps: steps?.into_iter().map(|s| s.value).collect(),
        metrics: metrics?
            .into_iter()
            .map(|(k, v)| Some((k, v.value?)))
            .collect::<Option<_>>()?,
        triggers: resolved_triggers?,
        gates: resolved_gates?,
        incident: incident?,
        emergency: emergency?,
        experiment: experiment?.map(|e| e.value),
    })
}

/// A compiled value with the place it was written, for cross-checks.
#[derive(Clone, Debug)]
struct At<T> {
    value: T,
    pos: Pos,
    path: Path,
    /// Position of the `metric:` value, where a reference error points.
    metric_pos: Pos,
}

/// Compiled metrics by name; `None` for a metric that failed to compile (its
/// errors are reported; references to it are not reported again).
type Located<T> = BTreeMap<String, At<Option<T>>>;

fn compile_list<T>(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    mut each: impl FnMut(&mut Sink, &Node, &Path) -> Option<At<T>>,
) -> Option<Vec<At<T>>> {
    let items = decode::sequence(sink, node, path)?;
    let mut out = Vec::with_capacity(items.len());
    // Items that failed are left out; the sink holds their errors, and the
    // ones that compiled still get their cross-checks.
    for (i, item) in items.iter().enumerate() {
        if let Some(v) = each(sink, item, &path.index(i)) {
            out.push(v);
        }
    }
    Some(out)
}

fn compile_analysis(
    sink: &mut Sink,
    node: Option<&Node>,
    path: &Path,
    steps: Option<&[At<Step>]>,
) -> Option<AnalysisSpec> {
    let fields = match node {
        Some(n) => Some(decode::mapping(
            sink,
            n,
            path,
            &[
                "interval",
                "alpha",
                "minSamples",
                "maxDuration",
                "sampleRatioCheck",
                "warmup",
                "overdispersion",
                "requireNoHarm",
            ],
        )?),
        None => None,
    };
    let get = |key: &str| fields.as_ref().and_then(|f| f.get(key));
    let mut ok = true;

    let interval = match get("interval") {
        None => Duration::from_secs(30),
        Some(n) => match decode::duration(sink, n, &path.key("interval")) {
            Some(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => d,
            Some(d) => {
                sink.error(
                    n.pos,
                    &path.key("interval"),
                    format!(
                        "must be from 1s to 1h, got {}",
                        crate::time::format_duration(d)
                    ),
                );
                ok = false;
                Duration::ZERO
            }
            None => {
                ok = false;
                Duration::ZERO
            }
        },
    };
    let alpha = match get("alpha") {
        None => 0.05,
        Some(n) => match decode::percent(sink, n, &path.key("alpha")) {
            Some(a) if a > 0.0 && a <= 0.5 => a,
            Some(a) => {
                sink.error(
                    n.pos,
                    &path.key("alpha"),
                    format!("must be in (0, 0.5], got {a}"),
                );
                ok = false;
                0.0
            }
            None => {
                ok = false;
                0.0
            }
        },
    };
    let min_samples = match get("minSamples") {
        None => 100,
        Some(n) => match decode::integer(sink, n, &path.key("minSamples"), 1, i128::from(u64::MAX))
        {
            Some(v) => v as u64,
            None => {
                ok = false;
                0
            }
        },
    };
    let sample_ratio_check = match get("sampleRatioCheck") {
        None => true,
        Some(n) => decode::boolean(sink, n, &path.key("sampleRatioCheck")).unwrap_or_else(|| {
            ok = false;
            true
        }),
    };
    let overdispersion = match get("overdispersion") {
        None => Overdispersion::Auto,
        Some(n) => {
            compile_overdispersion(sink, n, &path.key("overdispersion")).unwrap_or_else(|| {
                ok = false;
                Overdispersion::Auto
            })
        }
    };
    let warmup = match get("warmup") {
        None => interval,
        Some(n) => decode::duration(sink, n, &path.key("warmup")).unwrap_or_else(|| {
            ok = false;
            Duration::ZERO
        }),
    };
    let require_no_harm = match get("requireNoHarm") {
        None => Some(NoHarm::default()),
        Some(n) => compile_no_harm(sink, n, &path.key("requireNoHarm")).unwrap_or_else(|| {
            ok = false;
            None
        }),
    };
    let max_duration = match get("maxDuration") {
        Some(n) => {
            decode::positive_duration(sink, n, &path.key("maxDuration")).unwrap_or_else(|| {
                ok = false;
                Duration::ZERO
            })
        }
        None => {
            let bakes: Duration = steps
                .unwrap_or_default()
                .iter()
                .map(|s| match s.value {
                    Step::Bake(d) => d,
                    _ => Duration::ZERO,
                })
                .sum();
            (bakes * 2).max(Duration::from_secs(3600))
        }
    };
    ok.then_some(AnalysisSpec {
        interval,
        alpha,
        min_samples,
        max_duration,
        sample_ratio_check,
        warmup,
        overdispersion: Some(overdispersion),
        require_no_harm,
    })
}

/// `overdispersion: auto` or a number >= 1.
fn compile_overdispersion(sink: &mut Sink, node: &Node, path: &Path) -> Option<Overdispersion> {
    match &node.value {
        Value::Str(s) if s == "auto" => Some(Overdispersion::Auto),
        Value::Int(_) | Value::Float(_) => {
            let x = decode::number(sink, node, path)?;
            let fixed = Overdispersion::fixed(x);
            if fixed.is_none() {
                sink.error(
                    node.pos,
                    path,
                    format!("expected `auto` or a number >= 1 (a variance factor), found {x}"),
                );
            }
            fixed
        }
        other => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected `auto` or a number >= 1 (a variance factor), found {}",
                    decode::found(other)
                ),
            );
            None
        }
    }
}

/// `requireNoHarm: false | true | { margin: 2x, before: 100 }`: `None`
/// (inner) when the policy opts out; the outer `None` after an error.
fn compile_no_harm(sink: &mut Sink, node: &Node, path: &Path) -> Option<Option<NoHarm>> {
    if let Value::Bool(on) = node.value {
        return Some(on.then(NoHarm::default));
    }
    if !matches!(node.value, Value::Map(_)) {
        sink.error(
            node.pos,
            path,
            format!(
                "expected `false` (opt out), `true` or a mapping `{{ margin: 2x, before: 100 }}`, found {}",
                found(&node.value)
            ),
        );
        return None;
    }
    let f = decode::mapping(sink, node, path, &["margin", "before"])?;
    let margin = match f.get("margin") {
        None => Some(NoHarm::DEFAULT_MARGIN),
        Some(n) => margin_factor(sink, n, &f.child("margin")),
    };
    let before = match f.get("before") {
        None => Some(Weight::FULL),
        Some(n) => weight(sink, n, &f.child("before"), 1),
    };
    Some(Some(NoHarm {
        margin: margin?,
        before: before?,
    }))
}

/// A margin written `2x` (or a plain number): finite and at least 1.
fn margin_factor(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = match &node.value {
        Value::Str(s) => {
            let text = s.trim();
            match text.strip_suffix('x').map(str::trim).map(str::parse::<f64>) {
                Some(Ok(v)) => v,
                _ => {
                    sink.error(
                        node.pos,
                        path,
                        format!("expected a factor such as `2x` or `1.5`, found `{text}`"),
                    );
                    return None;
                }
            }
        }
        _ => decode::number(sink, node, path)?,
    };
    if v.is_finite() && (1.0..=1000.0).contains(&v) {
        Some(v)
    } else {
        sink.error(
            node.pos,
            path,
            format!(
                "must be from 1x to 1000x (the harm shown is below margin × each trigger's tolerance), got {v}x"
            ),
        );
        None
    }
}

const STEP_KINDS: &[&str] = &["setWeight", "bake", "approval"];

fn compile_steps(sink: &mut Sink, node: &Node, path: &Path) -> Option<Vec<At<Step>>> {
    let items = decode::sequence(sink, node, path)?;
    if items.is_empty() {
        sink.error(
            node.pos,
            path,
            "expected at least one step (`setWeight`, `bake` or `approval`), found an empty list",
        );
        return None;
    }
    compile_list(sink, node, path, compile_step)
}

fn compile_step(sink: &mut Sink, node: &Node, path: &Path) -> Option<At<Step>> {
    let f = decode::mapping(sink, node, path, STEP_KINDS)?;
    let kinds: Vec<&str> = f.keys().collect();
    if kinds.len() != 1 {
        let msg = if kinds.is_empty() {
            format!("expected exactly one of {}, found none", one_of(STEP_KINDS))
        } else {
            format!(
                "expected exactly one of {}, found {}",
                one_of(STEP_KINDS),
                one_of(&kinds)
            )
        };
        sink.error(f.pos, path, msg);
        return None;
    }
    let kind = kinds[0];
    let value = f.get(kind)?;
    let p = f.child(kind);
    let step = match kind {
        "setWeight" => Step::SetWeight(weight(sink, value, &p, 0)?),
        "bake" => Step::Bake(decode::positive_duration(sink, value, &p)?),
        _ => Step::Approval(compile_approval(sink, value, &p)?),
    };
    Some(At {
        value: step,
        pos: value.pos,
        path: p,
        metric_pos: value.pos,
    })
}

fn weight(sink: &mut Sink, node: &Node, path: &Path, min: u8) -> Option<Weight> {
    let v = decode::integer(sink, node, path, i128::from(min), 100)?;
    Weight::new(v as u8)
}

fn compile_approval(sink: &mut Sink, node: &Node, path: &Path) -> Option<Approval> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &["roles", "distinct", "timeout", "onTimeout"],
    )?;
    let roles = f.require(sink, "roles").and_then(|n| {
        let p = f.child("roles");
        let items = decode::sequence(sink, n, &p)?;
        if items.is_empty() {
            sink.error(n.pos, &p, "expected at least one role, found an empty list");
            return None;
        }
        let mut roles: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match decode::identifier(sink, item, &p.index(i), "role name") {
                Some(r) if roles.contains(&r) => {
                    sink.error(item.pos, &p.index(i), format!("role `{r}` is listed twice"));
                    ok = false;
                }
                Some(r) => roles.push(r),
                None => ok = false,
            }
        }
        ok.then_some(roles)
    });
    let distinct = match f.get("distinct") {
        None => Some(true),
        Some(n) => decode::boolean(sink, n, &f.child("distinct")),
    };
    let timeout = match f.get("timeout") {
        None => Some(None),
        Some(n) => decode::positive_duration(sink, n, &f.child("timeout")).map(Some),
    };
    let on_timeout = match f.get("onTimeout") {
        None => Some(OnTimeout::Rollback),
        Some(n) => decode::keyword(
            sink,
            n,
            &f.child("onTimeout"),
            &[
                ("rollback", OnTimeout::Rollback),
                ("pause", OnTimeout::Pause),
            ],
        ),
    };
    if f.has("onTimeout") && !f.has("timeout") {
        sink.error(f.pos, path, "`onTimeout` needs a `timeout` to act on");
        return None;
    }
    Some(Approval {
        roles: roles?,
        distinct: distinct?,
        timeout: timeout?,
        on_timeout: on_timeout?,
    })
}

const METRIC_KINDS: &[&str] = &["ratio", "latency", "mean"];

fn compile_metrics(sink: &mut Sink, node: &Node, path: &Path) -> Option<Located<Metric>> {
    let entries = decode::free_mapping(sink, node, path)?;
    let mut out = Located::new();
    for (name, key_pos, value) in entries {
        let p = path.key(name);
        if !decode::is_identifier(name) {
            sink.error(
                key_pos,
                &p,
                "expected a metric name of 1 to 128 characters from letters, digits, `_`, `-`, `.` and `:`",
            );
            continue;
        }
        let metric = compile_metric(sink, value, &p);
        out.insert(
            name.to_owned(),
            At {
                value: metric,
                pos: key_pos,
                path: p,
                metric_pos: key_pos,
            },
        );
    }
    Some(out)
}

fn compile_metric(sink: &mut Sink, node: &Node, path: &Path) -> Option<Metric> {
    // Read `kind` first so that the allowed fields can follow it.
    let kind = match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find_map(|(k, v)| (k.value == Value::Str("kind".into())).then_some(v)),
        _ => None,
    };
    let kind_name = kind.and_then(|k| match &k.value {
        Value::Str(s) if METRIC_KINDS.contains(&s.as_str()) => Some(s.as_str()),
        _ => None,
    });
    let allowed: &[&str] = match kind_name {
        Some("ratio") => &["kind", "numerator", "denominator", "groupBy"],
        Some(_) => &["kind", "signal"],
        None => &["kind", "numerator", "denominator", "groupBy", "signal"],
    };
    let f = decode::mapping(sink, node, path, allowed)?;
    let kind_node = f.require(sink, "kind")?;
    let Some(kind_name) = kind_name else {
        sink.error(
            kind_node.pos,
            &f.child("kind"),
            format!(
                "expected one of {}, found {}",
                one_of(METRIC_KINDS),
                found(&kind_node.value)
            ),
        );
        return None;
    };
    let signal = |sink: &mut Sink, key: &str| {
        f.require(sink, key)
            .and_then(|n| decode::identifier(sink, n, &f.child(key), "signal name"))
    };
    match kind_name {
        "ratio" => {
            let numerator = signal(sink, "numerator");
            let denominator = signal(sink, "denominator");
            let group_by = match f.get("groupBy") {
                None => Some(None),
                Some(n) => {
                    decode::identifier(sink, n, &f.child("groupBy"), "group label").map(Some)
                }
            };
            Some(Metric::Ratio {
                numerator: numerator?,
                denominator: denominator?,
                group_by: group_by?,
            })
        }
        "latency" => Some(Metric::Latency {
            signal: signal(sink, "signal")?,
        }),
        _ => Some(Metric::Mean {
            signal: signal(sink, "signal")?,
        }),
    }
}

const TRIGGER_RULES: &[&str] = &["vsBaseline", "threshold", "burnRate", "disparity", "noData"];

fn compile_trigger(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    metrics: Option<&Located<Metric>>,
) -> Option<At<WrittenTrigger>> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &[
            "name",
            "metric",
            "quantile",
            "vsBaseline",
            "threshold",
            "burnRate",
            "disparity",
            "noData",
            "action",
        ],
    )?;
    let name = f
        .require(sink, "name")
        .and_then(|n| decode::name(sink, n, &f.child("name"), "trigger name"));
    let metric = match f.get("metric") {
        None => Some(None),
        Some(n) => decode::identifier(sink, n, &f.child("metric"), "metric name").map(Some),
    };
    let quantile = optional_quantile(sink, &f);
    let action = match f.get("action") {
        None => Some(Action::Rollback),
        Some(n) => decode::keyword(
            sink,
            n,
            &f.child("action"),
            &[("rollback", Action::Rollback), ("pause", Action::Pause)],
        ),
    };
    let rules: Vec<&str> = f.keys().filter(|k| TRIGGER_RULES.contains(k)).collect();
    if rules.len() != 1 {
        let what = if rules.is_empty() {
            "none".to_owned()
        } else {
            one_of(&rules)
        };
        sink.error(
            f.pos,
            path,
            format!(
                "expected exactly one rule of {}, found {what}",
                one_of(TRIGGER_RULES)
            ),
        );
        return None;
    }
    let rule_key = rules[0];
    let rule_node = f.get(rule_key)?;
    let rp = f.child(rule_key);
    let rule = match rule_key {
        "vsBaseline" => compile_vs_baseline(sink, rule_node, &rp).map(TriggerRule::VsBaseline),
        "threshold" => {
            // The bound's unit follows the metric's kind (when it is defined;
            // an undefined metric is reported by `check_triggers`).
            let kind = f
                .get("metric")
                .and_then(|n| match &n.value {
                    Value::Str(s) => metrics.and_then(|m| m.get(s)),
                    _ => None,
                })
                .and_then(|m| m.value.as_ref())
                .map(ThresholdUnit::of);
            compile_threshold(sink, rule_node, &rp, kind)
        }
        "burnRate" => compile_burn_rate(sink, rule_node, &rp),
        "disparity" => {
            let g = decode::mapping(sink, rule_node, &rp, &["minRatio"])?;
            g.require(sink, "minRatio").and_then(|n| {
                let p = g.child("minRatio");
                let v = decode::percent(sink, n, &p)?;
                if v > 0.0 && v <= 1.0 {
                    Some(TriggerRule::Disparity { min_ratio: v })
                } else {
                    sink.error(n.pos, &p, format!("must be in (0, 1], got {v}"));
                    None
                }
            })
        }
        _ => {
            let g = decode::mapping(sink, rule_node, &rp, &["for"])?;
            g.require(sink, "for")
                .and_then(|n| decode::positive_duration(sink, n, &g.child("for")))
                .map(|d| TriggerRule::NoData { for_duration: d })
        }
    };
    if rule_key == "noData"
        && let Some(q) = f.get("quantile")
    {
        sink.error(
            q.pos,
            &f.child("quantile"),
            "`quantile` has no meaning for a `noData` trigger (it watches whether data arrives at all)",
        );
        return None;
    }
    if rule_key != "noData" && !f.has("metric") {
        sink.error(
            f.pos,
            path,
            format!("missing required field `metric` (a `{rule_key}` trigger tests a metric)"),
        );
        return None;
    }
    let metric_pos = f.get("metric").map_or(f.pos, |n| n.pos);
    Some(At {
        value: WrittenTrigger {
            name: name?,
            metric: metric?,
            quantile: quantile?,
            rule: rule?,
            action: action?,
        },
        pos: f.pos,
        path: path.clone(),
        metric_pos,
    })
}

fn optional_quantile(sink: &mut Sink, f: &Fields<'_>) -> Option<Option<f64>> {
    match f.get("quantile") {
        None => Some(None),
        Some(n) => {
            let p = f.child("quantile");
            let q = decode::percent(sink, n, &p)?;
            if q > 0.0 && q < 1.0 {
                Some(Some(q))
            } else {
                sink.error(n.pos, &p, format!("must be in (0, 1), got {q}"));
                None
            }
        }
    }
}

fn compile_vs_baseline(sink: &mut Sink, node: &Node, path: &Path) -> Option<Regression> {
    let f = decode::mapping(sink, node, path, &["relativeDrop", "relativeIncrease"])?;
    match (f.get("relativeDrop"), f.get("relativeIncrease")) {
        (Some(n), None) => {
            decode::open_percent(sink, n, &f.child("relativeDrop")).map(Regression::RelativeDrop)
        }
        (None, Some(n)) => {
            let p = f.child("relativeIncrease");
            let v = decode::percent(sink, n, &p)?;
            if v > 0.0 {
                Some(Regression::RelativeIncrease(v))
            } else {
                sink.error(
                    n.pos,
                    &p,
                    format!(
                        "must be greater than 0%, got {}",
                        crate::yaml::units::format_percent(v)
                    ),
                );
                None
            }
        }
        _ => {
            sink.error(
                f.pos,
                path,
                "expected exactly one of `relativeDrop`, `relativeIncrease`",
            );
            None
        }
    }
}

fn compile_threshold(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    unit: Option<ThresholdUnit>,
) -> Option<TriggerRule> {
    let f = decode::mapping(sink, node, path, &["above", "below", "for"])?;
    let sustained_for = match f.get("for") {
        None => Some(None),
        Some(n) => decode::positive_duration(sink, n, &f.child("for")).map(Some),
    };
    let statistical = !f.has("for");
    let bound = match (f.get("above"), f.get("below")) {
        (Some(n), None) => {
            threshold_value(sink, n, &f.child("above"), unit, statistical).map(Bound::Above)
        }
        (None, Some(n)) => {
            threshold_value(sink, n, &f.child("below"), unit, statistical).map(Bound::Below)
        }
        _ => {
            sink.error(f.pos, path, "expected exactly one of `above`, `below`");
            None
        }
    };
    Some(TriggerRule::Threshold {
        bound: bound?,
        sustained_for: sustained_for?,
    })
}

/// How a threshold is written for a metric of a given kind.
#[derive(Clone, Copy)]
enum ThresholdUnit {
    /// A rate: `0.5%` or a fraction in [0, 1].
    Fraction,
    /// A latency with its unit: `200ms`.
    Latency,
    /// A mean: a latency with its unit, or a plain number.
    Any,
}

impl ThresholdUnit {
    fn of(metric: &Metric) -> ThresholdUnit {
        match metric {
            Metric::Ratio { .. } => ThresholdUnit::Fraction,
            Metric::Latency { .. } => ThresholdUnit::Latency,
            Metric::Mean { .. } => ThresholdUnit::Any,
        }
    }
}

fn threshold_value(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    unit: Option<ThresholdUnit>,
    statistical: bool,
) -> Option<f64> {
    let has_time_unit = matches!(&node.value, Value::Str(s) if s.trim_end().ends_with('s'));
    match unit {
        Some(ThresholdUnit::Latency) => {
            let ms = decode::latency_ms(sink, node, path)?;
            if ms > 0.0 {
                Some(ms)
            } else {
                sink.error(
                    node.pos,
                    path,
                    "a latency threshold must be greater than 0ms",
                );
                None
            }
        }
        Some(ThresholdUnit::Fraction) => {
            if has_time_unit {
                sink.error(
                    node.pos,
                    path,
                    format!(
                        "the metric is a ratio: expected a percentage such as `0.5%` or a fraction, found {}",
                        found(&node.value)
                    ),
                );
                return None;
            }
            let v = decode::percent(sink, node, path)?;
            if statistical && (v == 0.0 || v == 1.0) {
                sink.error(
                    node.pos,
                    path,
                    format!(
                        "a rate can never be shown beyond {}: use a bound between 0% and 100% (exclusive), or add `for` for a rule applied as written",
                        crate::yaml::units::format_percent(v)
                    ),
                );
                None
            } else if (0.0..=1.0).contains(&v) {
                Some(v)
            } else {
                sink.error(
                    node.pos,
                    path,
                    format!(
                        "the metric is a ratio: must be from 0% to 100%, got {}",
                        crate::yaml::units::format_percent(v)
                    ),
                );
                None
            }
        }
        Some(ThresholdUnit::Any) | None if has_time_unit => decode::latency_ms(sink, node, path),
        Some(ThresholdUnit::Any) | None => decode::number(sink, node, path),
    }
}

fn compile_burn_rate(sink: &mut Sink, node: &Node, path: &Path) -> Option<TriggerRule> {
    let f = decode::mapping(sink, node, path, &["slo", "windows"])?;
    let slo = f
        .require(sink, "slo")
        .and_then(|n| decode::open_percent(sink, n, &f.child("slo")));
    let windows = f.require(sink, "windows").and_then(|n| {
        let p = f.child("windows");
        let items = decode::sequence(sink, n, &p)?;
        if items.is_empty() {
            sink.error(
                n.pos,
                &p,
                "expected at least one window, found an empty list",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let wp = p.index(i);
            let Some(w) = decode::mapping(sink, item, &wp, &["long", "short", "factor"]) else {
                ok = false;
                continue;
            };
            let long = w
                .require(sink, "long")
                .and_then(|n| decode::positive_duration(sink, n, &w.child("long")));
            let short = w
                .require(sink, "short")
                .and_then(|n| decode::positive_duration(sink, n, &w.child("short")));
            let factor = w.require(sink, "factor").and_then(|n| {
                let v = decode::number(sink, n, &w.child("factor"))?;
                if v > 0.0 {
                    Some(v)
                } else {
                    sink.error(
                        n.pos,
                        &w.child("factor"),
                        format!("must be greater than 0, got {v}"),
                    );
                    None
                }
            });
            match (long, short, factor) {
                (Some(long), Some(short), Some(factor)) => {
                    if short >= long {
                        sink.error(
                            w.pos,
                            &wp,
                            format!(
                                "`short` ({}) must be shorter than `long` ({})",
                                crate::time::format_duration(short),
                                crate::time::format_duration(long)
                            ),
                        );
                        ok = false;
                    } else {
                        out.push(BurnWindow {
                            long,
                            short,
                            factor,
                        });
                    }
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    });
    Some(TriggerRule::BurnRate {
        slo: slo?,
        windows: windows?,
    })
}

fn compile_gate(sink: &mut Sink, node: &Node, path: &Path) -> Option<At<WrittenGate>> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &["name", "metric", "quantile", "vsBaseline", "before"],
    )?;
    let name = f
        .require(sink, "name")
        .and_then(|n| decode::name(sink, n, &f.child("name"), "gate name"));
    let metric = f
        .require(sink, "metric")
        .and_then(|n| decode::identifier(sink, n, &f.child("metric"), "metric name"));
    let quantile = optional_quantile(sink, &f);
    let before = f
        .require(sink, "before")
        .and_then(|n| weight(sink, n, &f.child("before"), 1));
    let requirement = f.require(sink, "vsBaseline").and_then(|n| {
        let p = f.child("vsBaseline");
        let g = decode::mapping(sink, n, &p, &["minGain", "maxIncrease", "maxDrop"])?;
        let present: Vec<&str> = g.keys().collect();
        if present.len() != 1 {
            sink.error(
                g.pos,
                &p,
                "expected exactly one of `minGain`, `maxIncrease`, `maxDrop`",
            );
            return None;
        }
        let key = present[0];
        let vn = g.get(key)?;
        let vp = g.child(key);
        let v = decode::percent(sink, vn, &vp)?;
        let pct = crate::yaml::units::format_percent(v);
        match key {
            "minGain" | "maxIncrease" if v <= 0.0 => {
                sink.error(vn.pos, &vp, format!("must be greater than 0%, got {pct}"));
                None
            }
            "maxDrop" if !(v > 0.0 && v < 1.0) => {
                sink.error(vn.pos, &vp, format!("must be in (0%, 100%), got {pct}"));
                None
            }
            "minGain" => Some(GateRequirement::MinGain(v)),
            "maxIncrease" => Some(GateRequirement::MaxIncrease(v)),
            _ => Some(GateRequirement::MaxDrop(v)),
        }
    });
    let metric_pos = f.get("metric").map_or(f.pos, |n| n.pos);
    Some(At {
        value: WrittenGate {
            name: name?,
            metric: metric?,
            quantile: quantile?,
            requirement: requirement?,
            before: before?,
        },
        pos: f.pos,
        path: path.clone(),
        metric_pos,
    })
}

fn compile_incident(sink: &mut Sink, node: &Node, path: &Path) -> Option<IncidentSpec> {
    let f = decode::mapping(sink, node, path, &["severity", "notify"])?;
    let severity = match f.get("severity") {
        None => Some("sev2".to_owned()),
        Some(n) => {
            let p = f.child("severity");
            decode::string(sink, n, &p).and_then(|s| {
                if matches!(s.as_str(), "sev1" | "sev2" | "sev3" | "sev4" | "sev5") {
                    Some(s)
                } else {
                    sink.error(
                        n.pos,
                        &p,
                        format!("expected one of `sev1` to `sev5`, found `{s}`"),
                    );
                    None
                }
            })
        }
    };
    let notify = match f.get("notify") {
        None => Some(Vec::new()),
        Some(n) => {
            let p = f.child("notify");
            let items = decode::sequence(sink, n, &p)?;
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let ip = p.index(i);
                let url = decode::mapping(sink, item, &ip, &["webhook"]).and_then(|w| {
                    let un = w.require(sink, "webhook")?;
                    let up = w.child("webhook");
                    let url = decode::string(sink, un, &up)?;
                    if decode::is_http_url(&url) {
                        Some(url)
                    } else {
                        sink.error(
                            un.pos,
                            &up,
                            format!("expected an http:// or https:// URL, found `{url}`"),
                        );
                        None
                    }
                });
                match url {
                    Some(u) => out.push(Notify::Webhook(u)),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    };
    Some(IncidentSpec {
        severity: severity?,
        notify: notify?,
    })
}

fn compile_emergency(sink: &mut Sink, node: &Node, path: &Path) -> Option<EmergencySpec> {
    let f = decode::mapping(sink, node, path, &["bypassFor"])?;
    let bypass_for = match f.get("bypassFor") {
        None => Some(Duration::from_secs(4 * 3600)),
        Some(n) => decode::positive_duration(sink, n, &f.child("bypassFor")),
    };
    Some(EmergencySpec {
        bypass_for: bypass_for?,
    })
}

fn compile_experiment(sink: &mut Sink, node: &Node, path: &Path) -> Option<At<ExperimentSpec>> {
    let f = decode::mapping(sink, node, path, &["weight", "duration"])?;
    let weight = f.require(sink, "weight").and_then(|n| {
        let p = f.child("weight");
        let v = decode::integer(sink, n, &p, 1, 99)?;
        Weight::new(v as u8)
    });
    let duration = f
        .require(sink, "duration")
        .and_then(|n| decode::positive_duration(sink, n, &f.child("duration")));
    Some(At {
        value: ExperimentSpec {
            weight: weight?,
            duration: duration?,
        },
        pos: f.pos,
        path: path.clone(),
        metric_pos: f.pos,
    })
}

/// A trigger as written, before it is resolved against its metric.
#[derive(Clone, Debug)]
struct WrittenTrigger {
    name: String,
    metric: Option<String>,
    quantile: Option<f64>,
    rule: TriggerRule,
    action: Action,
}

/// A gate as written, before it is resolved against its metric.
#[derive(Clone, Debug)]
struct WrittenGate {
    name: String,
    metric: String,
    quantile: Option<f64>,
    requirement: GateRequirement,
    before: Weight,
}

fn definitions(metrics: &Located<Metric>) -> Definitions<'_> {
    metrics
        .iter()
        .map(|(name, m)| (name.as_str(), m.value.as_ref()))
        .collect()
}

/// Each trigger resolved against its metric (`check::resolve_trigger`):
/// every reference that is not defined and every rule that does not fit its
/// metric's kind is reported. `None` when anything was.
fn resolve_triggers(
    sink: &mut Sink,
    metrics: &Located<Metric>,
    triggers: &[At<WrittenTrigger>],
) -> Option<Vec<Trigger>> {
    let defined = definitions(metrics);
    let mut out = Vec::new();
    for t in triggers {
        let w = &t.value;
        match resolve_trigger(&defined, w.metric.as_deref(), w.quantile, &w.rule) {
            Ok(check) => out.push(Trigger {
                name: w.name.clone(),
                check,
                action: w.action,
            }),
            Err(problems) => {
                for p in problems {
                    report_mismatch(sink, t, p);
                }
                return None;
            }
        }
    }
    Some(out)
}

/// Each gate resolved against its metric (`check::resolve_gate`).
fn resolve_gates(
    sink: &mut Sink,
    metrics: &Located<Metric>,
    gates: &[At<WrittenGate>],
) -> Option<Vec<Gate>> {
    let defined = definitions(metrics);
    let mut out = Vec::new();
    let mut ok = true;
    for g in gates {
        let w = &g.value;
        match resolve_gate(&defined, &w.metric, w.quantile, w.requirement) {
            Ok(check) => out.push(Gate {
                name: w.name.clone(),
                check,
                before: w.before,
                implied_by: None,
            }),
            Err(problems) => {
                ok = false;
                for p in problems {
                    report_mismatch(sink, g, p);
                }
            }
        }
    }
    ok.then_some(out)
}

/// A mismatch where it was written.
fn report_mismatch<T>(sink: &mut Sink, at: &At<T>, mismatch: Mismatch) {
    let metric_path = at.path.key("metric");
    match mismatch {
        Mismatch::UndefinedMetric { name, defined } => {
            let msg = if defined.is_empty() {
                format!("metric `{name}` is not defined (spec.metrics is empty)")
            } else {
                let defined: Vec<&str> = defined.iter().map(String::as_str).collect();
                format!(
                    "metric `{name}` is not defined; defined metrics: {}",
                    one_of(&defined)
                )
            };
            sink.error(at.metric_pos, &metric_path, msg);
        }
        Mismatch::MissingQuantile => sink.error(
            at.pos,
            &at.path,
            "missing required field `quantile` (a latency metric is tested at a quantile, e.g. `quantile: 0.95`)",
        ),
        Mismatch::QuantileOnNonLatency { kind } => sink.error(
            at.pos,
            &at.path.key("quantile"),
            format!("`quantile` applies to latency metrics only; this metric is a {kind} metric"),
        ),
        Mismatch::LatencyDrop { metric } => sink.error(
            at.pos,
            &at.path.key("vsBaseline").key("relativeDrop"),
            format!(
                "`{metric}` is a latency: a drop is an improvement, not a regression; use `relativeIncrease`"
            ),
        ),
        Mismatch::LatencyBelow { metric } => sink.error(
            at.pos,
            &at.path.key("threshold").key("below"),
            format!(
                "`{metric}` is a latency: a latency trigger fires when it is too high; use `above`"
            ),
        ),
        Mismatch::BurnRateNeedsRatio { metric, kind } => sink.error(
            at.metric_pos,
            &metric_path,
            format!(
                "a `burnRate` trigger needs a ratio metric (bad events / all events); `{metric}` is a {kind} metric"
            ),
        ),
        Mismatch::DisparityNeedsGroups { metric } => sink.error(
            at.metric_pos,
            &metric_path,
            format!(
                "a `disparity` trigger needs a ratio metric with `groupBy`; `{metric}` has no groups"
            ),
        ),
        Mismatch::LatencyGateRequirement { metric, key } => sink.error(
            at.pos,
            &at.path.key("vsBaseline").key(key),
            format!(
                "`{metric}` is a latency: a latency gate bounds its increase; use `maxIncrease`"
            ),
        ),
    }
}

fn check_unique_names(sink: &mut Sink, triggers: &[At<WrittenTrigger>], gates: &[At<WrittenGate>]) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for t in triggers {
        if !seen.insert(&t.value.name) {
            sink.error(
                t.pos,
                &t.path.key("name"),
                format!("trigger name `{}` is used twice", t.value.name),
            );
        }
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for g in gates {
        if !seen.insert(&g.value.name) {
            sink.error(
                g.pos,
                &g.path.key("name"),
                format!("gate name `{}` is used twice", g.value.name),
            );
        }
    }
}
