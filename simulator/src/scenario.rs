//! Scenario files (PRODUCT.md section 9): bytes → validated [`Scenario`].
//!
//! The same located-YAML machinery as policies (`canaryd::yaml::node`,
//! `decode`, `diag`): every mistake in a file is reported at once, each as
//! `FILE:LINE:COL: field.path: message`, unknown fields and duplicate keys are
//! errors, and nothing here panics on input.
//!
//! One extension to the contract's format, optional and backwards compatible:
//! a custom signal may say `of: OTHER` (another custom signal, `errors` or
//! `clicks`), and then its `rate` is the probability that each event of
//! `OTHER` also counts for it (sensitivity = flagged / confirmed needs the
//! numerator to be a subset of the denominator).
//!
//! A second extension, for `kind: mean` metrics: `baseline.means` declares
//! per-request values (an ETA's absolute error, a score) by their
//! distribution, mean and standard deviation, one value per request or per
//! event of a counter (`of`), and `canary.means` changes their mean and
//! standard deviation. `traffic.rs` draws them into the snapshot the way a
//! push records values (`simulator/README.md`, Mean signals).

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::policy::Diagnostics;
use canaryd::yaml::decode::{self, Fields};
use canaryd::yaml::diag::{Path, Sink};
use canaryd::yaml::node::Node;
use canaryd::yaml::{envelope, load_yaml};

pub const API_VERSION: &str = "canaryd.dev/v1";
pub const KIND: &str = "Scenario";
/// The longest simulated run accepted (a typo guard, and a loop bound).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// Highest traffic accepted, requests per second.
pub const MAX_RPS: f64 = 10_000_000.0;
/// Most groups a scenario may split traffic into.
pub const MAX_GROUPS: usize = 64;

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Simulated wall time of one run.
    pub duration: Duration,
    pub requests_per_second: f64,
    /// 0..1: sinusoidal swing with a 24h period from the rollout's start.
    pub diurnal_amplitude: f64,
    /// Traffic shares per group, in file order; empty when no signal
    /// declares groups.
    pub groups: Vec<(String, f64)>,
    pub baseline: ArmModel,
    /// `None`: an A/A run.
    pub canary: Option<CanaryChange>,
    /// Production-shaped variation (`spec.noise`); all off by default.
    pub noise: Noise,
}

/// `spec.noise`: variation beyond independent requests, each kind off at
/// zero (the default). The traffic model (`traffic.rs`) says how each is
/// drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Noise {
    /// Log-sd of each arm's own mean-one lognormal factor on the rate of
    /// every ratio signal, per interval (`rateSd`).
    pub rate_sd: f64,
    /// Log-sd of one factor per signal and interval shared by both arms
    /// (`commonRateSd`).
    pub common_rate_sd: f64,
    /// Requests in sessions whose outcomes share a rate (`sessions`).
    pub sessions: Option<Sessions>,
    /// Log-sd of the mean-one lognormal factor on the canary's share of
    /// requests, per interval (`splitSd`).
    pub split_sd: f64,
}

impl Noise {
    pub fn is_off(&self) -> bool {
        *self == Noise::default()
    }
}

/// Requests come in sessions of `size`; a session's outcomes share a rate
/// drawn from a Beta with the arm's rate as mean and intra-class
/// correlation `correlation` (so `a + b = (1 − ρ)/ρ`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sessions {
    pub size: u64,
    pub correlation: f64,
}

/// Largest log-sd accepted for a noise factor (a typo guard: at 5 one
/// standard deviation already multiplies a rate by about 150).
pub const MAX_NOISE_SD: f64 = 5.0;
/// Largest session accepted, in requests.
pub const MAX_SESSION_SIZE: u64 = 1_000_000;

/// What one arm serves.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmModel {
    pub ctr: f64,
    pub error_rate: f64,
    pub latency: Option<LognormalMs>,
    /// Custom counters in file order.
    pub signals: Vec<SignalModel>,
    /// Value signals of `kind: mean` metrics, in file order.
    pub means: Vec<MeanSignalModel>,
}

/// A per-request value (`baseline.means.NAME`): its distribution, given by
/// mean and standard deviation, and what it is observed once for.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanSignalModel {
    pub name: String,
    pub distribution: ValueDistribution,
    pub mean: f64,
    pub sd: f64,
    /// One value per event of this counter (`errors`, `clicks` or a custom
    /// signal); `None`: one per request.
    pub of: Option<String>,
}

/// The law of a mean signal's values: both positive, both a scale family
/// (a factor on the values multiplies the mean and the standard deviation
/// alike), which is how the noise moves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDistribution {
    /// Shape `(mean/sd)²`, scale `sd²/mean`.
    Gamma,
    /// `ln X ~ N(μ, s²)` with `s² = ln(1 + (sd/mean)²)`, `μ = ln mean − s²/2`.
    Lognormal,
}

/// A canary's change of one mean signal (`canary.means.NAME`), at full size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanChange {
    pub mean: Option<ValueChange>,
    pub sd: Option<ValueChange>,
}

/// A change of a positive quantity: relative (`+5%`) or to a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueChange {
    Relative(f64),
    Absolute(f64),
}

impl ValueChange {
    pub fn apply(self, base: f64) -> f64 {
        match self {
            ValueChange::Relative(r) => base * (1.0 + r),
            ValueChange::Absolute(a) => a,
        }
    }
}

/// Smallest mean or standard deviation of a mean signal's values: values
/// are held like latencies in ms, to the microsecond, so to 0.001.
pub const MIN_VALUE_MOMENT: f64 = 0.01;
/// Largest mean or standard deviation accepted (a typo guard, far below
/// the histogram's ceiling of about 1.1e9).
pub const MAX_VALUE_MOMENT: f64 = 1_000_000.0;

/// A lognormal latency given by its median and 95th percentile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LognormalMs {
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl LognormalMs {
    /// `(mu, sigma)` of the underlying normal, in ln(ms).
    pub fn params(&self) -> (f64, f64) {
        let mu = self.p50_ms.ln();
        let sigma = (self.p95_ms / self.p50_ms).ln() / Z95;
        (mu, sigma)
    }
}

/// The 95th percentile of the standard normal.
pub const Z95: f64 = 1.644_853_626_951_472_2;

#[derive(Clone, Debug, PartialEq)]
pub struct SignalModel {
    pub name: String,
    /// Probability per request (or per event of `of`), per group when the
    /// scenario has groups (one entry per group, same order).
    pub rate: Rate,
    pub of: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rate {
    Uniform(f64),
    /// One rate per group, in the scenario's group order.
    PerGroup(Vec<f64>),
}

impl Rate {
    pub fn for_group(&self, g: usize) -> f64 {
        match self {
            Rate::Uniform(r) => *r,
            Rate::PerGroup(v) => v.get(g).copied().unwrap_or(0.0),
        }
    }
}

/// How the canary differs from the baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryChange {
    pub from: Duration,
    pub ramp_over: Duration,
    pub ctr: Option<Change>,
    pub error_rate: Option<Change>,
    pub latency_scale: f64,
    pub tail: Option<Tail>,
    /// Signal name to its canary rate.
    pub signals: BTreeMap<String, Rate>,
    /// Mean signal name to its change.
    pub means: BTreeMap<String, MeanChange>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    Relative(f64),
    Absolute(f64),
}

impl Change {
    /// The changed value at full size.
    pub fn apply(self, base: f64) -> f64 {
        match self {
            Change::Relative(r) => (base * (1.0 + r)).clamp(0.0, 1.0),
            Change::Absolute(a) => a,
        }
    }
}

/// A fraction of canary requests that take `add_ms` longer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tail {
    pub fraction: f64,
    pub add_ms: f64,
}

impl CanaryChange {
    /// 0 before `from`, growing linearly to 1 over `ramp_over`, then 1.
    pub fn size_at(&self, t: Duration) -> f64 {
        if t < self.from {
            0.0
        } else if self.ramp_over.is_zero() {
            1.0
        } else {
            ((t - self.from).as_secs_f64() / self.ramp_over.as_secs_f64()).min(1.0)
        }
    }
}

/// Compile one scenario file. `file` names it in diagnostics.
pub fn parse_scenario(file: &str, bytes: &[u8]) -> Result<Scenario, Diagnostics> {
    let mut sink = Sink::new(file);
    let Some(root) = load_yaml(&mut sink, bytes) else {
        return Err(finish(sink));
    };
    let scenario = compile(&mut sink, &root);
    match (scenario, sink.finish()) {
        (Some(s), None) => Ok(s),
        (_, Some(d)) => Err(d),
        (None, None) => Err(Diagnostics(vec![canaryd::policy::Diagnostic {
            file: file.to_owned(),
            pos: root.pos,
            path: String::new(),
            message: "scenario could not be read".into(),
        }])),
    }
}

fn finish(sink: Sink) -> Diagnostics {
    // load_yaml reports why it failed; the fallback is never expected.
    sink.finish().unwrap_or_else(|| Diagnostics(Vec::new()))
}

fn compile(sink: &mut Sink, root: &Node) -> Option<Scenario> {
    let (name, _description, mut scenario) =
        envelope(sink, root, API_VERSION, KIND, "scenario name", compile_spec)?;
    scenario.name = name;
    Some(scenario)
}

fn compile_spec(sink: &mut Sink, node: &Node, path: &Path) -> Option<Scenario> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &["duration", "traffic", "baseline", "canary", "noise"],
    )?;
    let duration = f.require(sink, "duration").and_then(|n| {
        let d = decode::positive_duration(sink, n, &f.child("duration"))?;
        if d > MAX_DURATION {
            sink.error(
                n.pos,
                &f.child("duration"),
                "must be at most 366d of simulated time",
            );
            return None;
        }
        Some(d)
    });
    let traffic = f
        .require(sink, "traffic")
        .and_then(|n| compile_traffic(sink, n, &f.child("traffic")));
    let baseline = f
        .require(sink, "baseline")
        .and_then(|n| compile_baseline(sink, n, &f.child("baseline")));
    let groups = baseline
        .as_ref()
        .map(|(_, g)| g.clone())
        .unwrap_or_default();
    let canary = match (f.get("canary"), &baseline) {
        (Some(n), Some((arm, _))) => {
            compile_canary(sink, n, &f.child("canary"), arm, &groups).map(Some)
        }
        (Some(_), None) => None,
        (None, _) => Some(None),
    };
    let noise = match f.get("noise") {
        Some(n) => compile_noise(sink, n, &f.child("noise")),
        None => Some(Noise::default()),
    };
    if let (Some(noise), Some((arm, _)), Some(n)) = (&noise, &baseline, f.get("noise")) {
        check_session_correlation(sink, n, &f.child("noise"), noise, arm, canary.as_ref());
    }
    let (rps, amplitude) = traffic?;
    let (baseline, groups) = baseline?;
    Some(Scenario {
        name: String::new(),
        duration: duration?,
        requests_per_second: rps,
        diurnal_amplitude: amplitude,
        groups,
        baseline,
        canary: canary?,
        noise: noise?,
    })
}

fn compile_noise(sink: &mut Sink, node: &Node, path: &Path) -> Option<Noise> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &["rateSd", "commonRateSd", "sessions", "splitSd"],
    )?;
    let sd = |sink: &mut Sink, key: &str| match f.get(key) {
        Some(n) => log_sd(sink, n, &f.child(key)),
        None => Some(0.0),
    };
    let rate_sd = sd(sink, "rateSd");
    let common_rate_sd = sd(sink, "commonRateSd");
    let split_sd = sd(sink, "splitSd");
    let sessions = match f.get("sessions") {
        Some(n) => compile_sessions(sink, n, &f.child("sessions")).map(Some),
        None => Some(None),
    };
    Some(Noise {
        rate_sd: rate_sd?,
        common_rate_sd: common_rate_sd?,
        sessions: sessions?,
        split_sd: split_sd?,
    })
}

/// The log-sd of a mean-one lognormal factor: a plain number from 0 to
/// [`MAX_NOISE_SD`].
fn log_sd(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = decode::number(sink, node, path)?;
    if !(0.0..=MAX_NOISE_SD).contains(&v) {
        sink.error(
            node.pos,
            path,
            format!("expected a log standard deviation from 0 to {MAX_NOISE_SD}, got {v}"),
        );
        return None;
    }
    Some(v)
}

fn compile_sessions(sink: &mut Sink, node: &Node, path: &Path) -> Option<Sessions> {
    let f = decode::mapping(sink, node, path, &["size", "correlation"])?;
    let size = f.require(sink, "size").and_then(|n| {
        decode::integer(sink, n, &f.child("size"), 1, i128::from(MAX_SESSION_SIZE))
            .and_then(|v| u64::try_from(v).ok())
    });
    let correlation = f.require(sink, "correlation").and_then(|n| {
        let p = f.child("correlation");
        let v = decode::number(sink, n, &p)?;
        if !(0.0..1.0).contains(&v) {
            sink.error(
                n.pos,
                &p,
                format!(
                    "expected an intra-session correlation from 0 up to (not including) 1, got {v}"
                ),
            );
            return None;
        }
        Some(v)
    });
    Some(Sessions {
        size: size?,
        correlation: correlation?,
    })
}

/// Sessions correlate a mean signal's values through a shared factor on
/// them (`traffic.rs`): the correlation `ρ` needs `ρ(1 + cv²) < 1` for each
/// arm's coefficient of variation `cv = sd/mean`.
fn check_session_correlation(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    noise: &Noise,
    baseline: &ArmModel,
    canary: Option<&Option<CanaryChange>>,
) {
    let Some(s) = noise.sessions else {
        return;
    };
    for m in &baseline.means {
        let mut cvs = vec![m.sd / m.mean];
        if let Some(Some(c)) = canary
            && let Some(change) = c.means.get(&m.name)
        {
            let (mean, sd) = change.at_full(m);
            cvs.push(sd / mean);
        }
        for cv in cvs {
            if s.correlation * (1.0 + cv * cv) >= 1.0 {
                let at = entry(node, "sessions")
                    .and_then(|n| entry(n, "correlation"))
                    .map_or(node.pos, |n| n.pos);
                sink.error(
                    at,
                    &path.key("sessions").key("correlation"),
                    format!(
                        "mean signal `{}` has values with a coefficient of variation of {cv:.3}: a shared session factor gives them a correlation below 1/(1 + cv²) = {:.4}, not {}",
                        m.name,
                        1.0 / (1.0 + cv * cv),
                        s.correlation
                    ),
                );
                return;
            }
        }
    }
}

fn compile_traffic(sink: &mut Sink, node: &Node, path: &Path) -> Option<(f64, f64)> {
    let f = decode::mapping(sink, node, path, &["requestsPerSecond", "diurnalAmplitude"])?;
    let rps = f.require(sink, "requestsPerSecond").and_then(|n| {
        let p = f.child("requestsPerSecond");
        let v = decode::number(sink, n, &p)?;
        if !(v > 0.0 && v <= MAX_RPS) {
            sink.error(
                n.pos,
                &p,
                format!("must be above 0 and at most {MAX_RPS}, got {v}"),
            );
            return None;
        }
        Some(v)
    });
    let amplitude = match f.get("diurnalAmplitude") {
        Some(n) => unit_number(sink, n, &f.child("diurnalAmplitude")),
        None => Some(0.0),
    };
    Some((rps?, amplitude?))
}

/// A number in [0, 1] (a plain fraction or a percentage).
fn unit_number(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = decode::percent(sink, node, path)?;
    if !(0.0..=1.0).contains(&v) {
        sink.error(
            node.pos,
            path,
            format!("must be from 0 to 1 (0% to 100%), got {v}"),
        );
        return None;
    }
    Some(v)
}

type Baseline = (ArmModel, Vec<(String, f64)>);

fn compile_baseline(sink: &mut Sink, node: &Node, path: &Path) -> Option<Baseline> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &["ctr", "errorRate", "latency", "signals", "means"],
    )?;
    let ctr = opt(sink, &f, "ctr", unit_number).unwrap_or(Some(0.0));
    let error_rate = opt(sink, &f, "errorRate", unit_number).unwrap_or(Some(0.0));
    let latency = match f.get("latency") {
        Some(n) => compile_latency(sink, n, &f.child("latency")).map(Some),
        None => Some(None),
    };
    let mut groups: Option<(Vec<(String, f64)>, Path)> = None;
    let mut signals = Vec::new();
    let mut ok = true;
    if let Some(n) = f.get("signals") {
        let sp = f.child("signals");
        for (name, pos, value) in decode::free_mapping(sink, n, &sp).unwrap_or_default() {
            let p = sp.key(name);
            if !decode::is_identifier(name) || is_builtin(name) {
                sink.error(
                    pos,
                    &p,
                    format!(
                        "expected a custom signal name (letters, digits, `_`, `-`, `.`, `:`; not requests, impressions, errors, clicks or latency_ms), found `{name}`"
                    ),
                );
                ok = false;
                continue;
            }
            match compile_signal(sink, value, &p, name, &mut groups) {
                Some(s) => signals.push(s),
                None => ok = false,
            }
        }
    }
    // `of` must name a counter that exists.
    let names: Vec<String> = signals.iter().map(|s| s.name.clone()).collect();
    if let Some(n) = f.get("signals") {
        for (signal, of_node) in decode_signal_of_positions(n) {
            let Some(at) = signals.iter().position(|s| s.name == signal) else {
                continue;
            };
            if let Some(of) = &signals[at].of
                && !(of == "errors" || of == "clicks" || names[..at].contains(of))
            {
                sink.error(
                    of_node.pos,
                    &f.child("signals").key(&signal).key("of"),
                    format!(
                        "`{of}` is not a counter declared before this one: expected `errors`, `clicks` or a signal listed earlier under baseline.signals"
                    ),
                );
                ok = false;
            }
        }
    }
    let groups = groups.map(|(g, _)| g).unwrap_or_default();
    let means = match f.get("means") {
        Some(n) => compile_means(sink, n, &f.child("means"), &names),
        None => Some(Vec::new()),
    };
    if !ok {
        return None;
    }
    Some((
        ArmModel {
            ctr: ctr?,
            error_rate: error_rate?,
            latency: latency?,
            signals,
            means: means?,
        },
        groups,
    ))
}

/// `baseline.means`: name to `{ distribution, mean, sd, of }`.
fn compile_means(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    counters: &[String],
) -> Option<Vec<MeanSignalModel>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, pos, value) in decode::free_mapping(sink, node, path)? {
        let p = path.key(name);
        if !decode::is_identifier(name) || is_builtin(name) || counters.iter().any(|c| c == name) {
            sink.error(
                pos,
                &p,
                format!(
                    "expected a mean signal's name (letters, digits, `_`, `-`, `.`, `:`; not a counter: requests, impressions, errors, clicks, latency_ms or a signal under baseline.signals), found `{name}`"
                ),
            );
            ok = false;
            continue;
        }
        match compile_mean_signal(sink, value, &p, name, counters) {
            Some(m) => out.push(m),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn compile_mean_signal(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    name: &str,
    counters: &[String],
) -> Option<MeanSignalModel> {
    let f = decode::mapping(sink, node, path, &["distribution", "mean", "sd", "of"])?;
    let distribution = f.require(sink, "distribution").and_then(|n| {
        let p = f.child("distribution");
        match decode::string(sink, n, &p)?.as_str() {
            "gamma" => Some(ValueDistribution::Gamma),
            "lognormal" => Some(ValueDistribution::Lognormal),
            other => {
                sink.error(
                    n.pos,
                    &p,
                    format!("expected `gamma` or `lognormal`, found `{other}`"),
                );
                None
            }
        }
    });
    let mean = f
        .require(sink, "mean")
        .and_then(|n| value_moment(sink, n, &f.child("mean")));
    let sd = f
        .require(sink, "sd")
        .and_then(|n| value_moment(sink, n, &f.child("sd")));
    let of = match f.get("of") {
        Some(n) => {
            let p = f.child("of");
            decode::identifier(sink, n, &p, "counter name").and_then(|of| {
                if of == "errors" || of == "clicks" || counters.contains(&of) {
                    Some(Some(of))
                } else {
                    sink.error(
                        n.pos,
                        &p,
                        format!(
                            "`{of}` is not a counter: expected `errors`, `clicks` or a signal under baseline.signals (leave `of` out for one value per request)"
                        ),
                    );
                    None
                }
            })
        }
        None => Some(None),
    };
    Some(MeanSignalModel {
        name: name.to_owned(),
        distribution: distribution?,
        mean: mean?,
        sd: sd?,
        of: of?,
    })
}

/// A mean or standard deviation of values: a plain number from
/// [`MIN_VALUE_MOMENT`] to [`MAX_VALUE_MOMENT`].
fn value_moment(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = decode::number(sink, node, path)?;
    if !(MIN_VALUE_MOMENT..=MAX_VALUE_MOMENT).contains(&v) {
        sink.error(
            node.pos,
            path,
            format!("expected a number from {MIN_VALUE_MOMENT} to {MAX_VALUE_MOMENT}, got {v}"),
        );
        return None;
    }
    Some(v)
}

/// The value of `key` in a mapping node (for locating an error in a node
/// already decoded).
fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    use canaryd::yaml::node::Value;
    let Value::Map(entries) = &node.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
        .map(|(_, v)| v)
}

/// `(signal name, its of: node)` pairs, for the cross-reference check.
fn decode_signal_of_positions(n: &Node) -> Vec<(String, &Node)> {
    use canaryd::yaml::node::Value;
    let Value::Map(entries) = &n.value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        if let (Value::Str(name), Value::Map(fields)) = (&k.value, &v.value) {
            for (fk, fv) in fields {
                if fk.value == Value::Str("of".into()) {
                    out.push((name.clone(), fv));
                }
            }
        }
    }
    out
}

fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "requests" | "impressions" | "errors" | "clicks" | "latency_ms"
    )
}

/// Reads an optional field with `read`; `None` when absent.
fn opt<T>(
    sink: &mut Sink,
    f: &Fields<'_>,
    key: &str,
    read: fn(&mut Sink, &Node, &Path) -> Option<T>,
) -> Option<Option<T>> {
    f.get(key).map(|n| read(sink, n, &f.child(key)))
}

fn compile_latency(sink: &mut Sink, node: &Node, path: &Path) -> Option<LognormalMs> {
    let f = decode::mapping(sink, node, path, &["distribution", "p50", "p95"])?;
    if let Some(n) = f.require(sink, "distribution")
        && let Some(s) = decode::string(sink, n, &f.child("distribution"))
        && s != "lognormal"
    {
        sink.error(
            n.pos,
            &f.child("distribution"),
            format!("expected `lognormal` (the only distribution so far), found `{s}`"),
        );
    }
    let p50 = f
        .require(sink, "p50")
        .and_then(|n| positive_latency(sink, n, &f.child("p50")));
    let p95n = f.require(sink, "p95");
    let p95 = p95n.and_then(|n| positive_latency(sink, n, &f.child("p95")));
    let (p50, p95) = (p50?, p95?);
    if p95 <= p50 {
        sink.error(
            p95n.map_or(f.pos, |n| n.pos),
            &f.child("p95"),
            format!("must be above p50 ({p50}ms), got {p95}ms"),
        );
        return None;
    }
    Some(LognormalMs {
        p50_ms: p50,
        p95_ms: p95,
    })
}

fn positive_latency(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = decode::latency_ms(sink, node, path)?;
    if v <= 0.0 || v > 86_400_000.0 {
        sink.error(
            node.pos,
            path,
            format!("must be above 0ms and at most 1 day, got {v}ms"),
        );
        return None;
    }
    Some(v)
}

fn compile_signal(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    name: &str,
    groups: &mut Option<(Vec<(String, f64)>, Path)>,
) -> Option<SignalModel> {
    let f = decode::mapping(sink, node, path, &["rate", "groups", "of"])?;
    let mut ok = true;
    if let Some(g) = f.get("groups") {
        let gp = f.child("groups");
        match compile_groups(sink, g, &gp) {
            Some(shares) => match groups {
                None => *groups = Some((shares, gp)),
                Some((first, first_path)) if *first != shares => {
                    sink.error(
                        g.pos,
                        &gp,
                        format!(
                            "every signal that declares groups must declare the same shares as {first_path} (a request belongs to one group)"
                        ),
                    );
                    ok = false;
                }
                Some(_) => {}
            },
            None => ok = false,
        }
    }
    let group_names: Vec<String> = groups
        .as_ref()
        .map(|(g, _)| g.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let rate = f
        .require(sink, "rate")
        .and_then(|n| compile_rate(sink, n, &f.child("rate"), &group_names));
    let of = match f.get("of") {
        Some(n) => decode::identifier(sink, n, &f.child("of"), "signal name").map(Some),
        None => Some(None),
    };
    if !ok {
        return None;
    }
    Some(SignalModel {
        name: name.to_owned(),
        rate: rate?,
        of: of?,
    })
}

fn compile_groups(sink: &mut Sink, node: &Node, path: &Path) -> Option<Vec<(String, f64)>> {
    let entries = decode::free_mapping(sink, node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (name, pos, value) in &entries {
        let p = path.key(name);
        if !decode::is_identifier(name) {
            sink.error(*pos, &p, format!("expected a group name, found `{name}`"));
            ok = false;
            continue;
        }
        match unit_number(sink, value, &p) {
            Some(v) if v > 0.0 => out.push(((*name).to_owned(), v)),
            Some(_) => {
                sink.error(value.pos, &p, "a group's share must be above 0");
                ok = false;
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    if out.is_empty() || out.len() > MAX_GROUPS {
        sink.error(
            node.pos,
            path,
            format!("expected 1 to {MAX_GROUPS} groups, found {}", out.len()),
        );
        return None;
    }
    let total: f64 = out.iter().map(|(_, s)| s).sum();
    if (total - 1.0).abs() > 1e-6 {
        sink.error(
            node.pos,
            path,
            format!(
                "group shares must add up to 1, got {}",
                (total * 1e6).round() / 1e6
            ),
        );
        return None;
    }
    Some(out)
}

/// A rate: one probability, or one per group (keys exactly the groups).
fn compile_rate(sink: &mut Sink, node: &Node, path: &Path, groups: &[String]) -> Option<Rate> {
    use canaryd::yaml::node::Value;
    if !matches!(node.value, Value::Map(_)) {
        return unit_number(sink, node, path).map(Rate::Uniform);
    }
    if groups.is_empty() {
        sink.error(
            node.pos,
            path,
            "per-group rates need groups: declare `groups` on the baseline signal",
        );
        return None;
    }
    let entries = decode::free_mapping(sink, node, path)?;
    let mut rates = vec![None; groups.len()];
    let mut ok = true;
    for (name, pos, value) in &entries {
        let p = path.key(name);
        match groups.iter().position(|g| g == name) {
            Some(i) => rates[i] = unit_number(sink, value, &p),
            None => {
                sink.error(
                    *pos,
                    &p,
                    format!(
                        "unknown group `{name}`, expected one of {}",
                        groups
                            .iter()
                            .map(|g| format!("`{g}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    let missing: Vec<&str> = groups
        .iter()
        .zip(&rates)
        .filter(|(_, r)| r.is_none())
        .map(|(g, _)| g.as_str())
        .collect();
    if ok && !missing.is_empty() {
        sink.error(
            node.pos,
            path,
            format!("missing a rate for group {}", missing.join(", ")),
        );
        return None;
    }
    if !ok {
        return None;
    }
    Some(Rate::PerGroup(
        rates.into_iter().map(|r| r.unwrap_or(0.0)).collect(),
    ))
}

fn compile_canary(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    baseline: &ArmModel,
    groups: &[(String, f64)],
) -> Option<CanaryChange> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &[
            "from",
            "rampOver",
            "ctr",
            "errorRate",
            "latency",
            "signals",
            "means",
        ],
    )?;
    let from = opt(sink, &f, "from", decode::duration).unwrap_or(Some(Duration::ZERO));
    let ramp_over = opt(sink, &f, "rampOver", decode::duration).unwrap_or(Some(Duration::ZERO));
    let ctr = match f.get("ctr") {
        Some(n) => compile_change(sink, n, &f.child("ctr"), baseline.ctr).map(Some),
        None => Some(None),
    };
    let error_rate = match f.get("errorRate") {
        Some(n) => compile_change(sink, n, &f.child("errorRate"), baseline.error_rate).map(Some),
        None => Some(None),
    };
    let latency = match f.get("latency") {
        Some(n) => compile_latency_change(sink, n, &f.child("latency"), baseline),
        None => Some((1.0, None)),
    };
    let group_names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
    let mut signals = BTreeMap::new();
    let mut ok = true;
    if let Some(n) = f.get("signals") {
        let sp = f.child("signals");
        for (name, pos, value) in decode::free_mapping(sink, n, &sp).unwrap_or_default() {
            let p = sp.key(name);
            if !baseline.signals.iter().any(|s| s.name == name) {
                sink.error(
                    pos,
                    &p,
                    format!(
                        "unknown signal `{name}`: the canary can only change a signal declared under spec.baseline.signals"
                    ),
                );
                ok = false;
                continue;
            }
            let Some(fields) = decode::mapping(sink, value, &p, &["rate"]) else {
                ok = false;
                continue;
            };
            match fields
                .require(sink, "rate")
                .and_then(|r| compile_rate(sink, r, &p.key("rate"), &group_names))
            {
                Some(rate) => {
                    signals.insert(name.to_owned(), rate);
                }
                None => ok = false,
            }
        }
    }
    let mut means = BTreeMap::new();
    if let Some(n) = f.get("means") {
        let mp = f.child("means");
        for (name, pos, value) in decode::free_mapping(sink, n, &mp).unwrap_or_default() {
            let p = mp.key(name);
            let Some(model) = baseline.means.iter().find(|m| m.name == name) else {
                sink.error(
                    pos,
                    &p,
                    format!(
                        "unknown mean signal `{name}`: the canary can only change a signal declared under spec.baseline.means"
                    ),
                );
                ok = false;
                continue;
            };
            match compile_mean_change(sink, value, &p, model) {
                Some(c) => {
                    means.insert(name.to_owned(), c);
                }
                None => ok = false,
            }
        }
    }
    let (latency_scale, tail) = latency?;
    if !ok {
        return None;
    }
    Some(CanaryChange {
        from: from?,
        ramp_over: ramp_over?,
        ctr: ctr?,
        error_rate: error_rate?,
        latency_scale,
        tail,
        signals,
        means,
    })
}

/// `canary.means.NAME`: `{ mean: CHANGE, sd: CHANGE }`, each optional,
/// `CHANGE` being `{ relative: 5% }` or `{ absolute: 98 }`; the changed
/// value must stay within the range a baseline's may take.
fn compile_mean_change(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    model: &MeanSignalModel,
) -> Option<MeanChange> {
    let f = decode::mapping(sink, node, path, &["mean", "sd"])?;
    let mut one = |key: &str, base: f64| -> Option<Option<ValueChange>> {
        let Some(n) = f.get(key) else {
            return Some(None);
        };
        let p = f.child(key);
        let c = decode::mapping(sink, n, &p, &["relative", "absolute"])?;
        let change = match (c.get("relative"), c.get("absolute")) {
            (Some(r), None) => {
                ValueChange::Relative(decode::percent(sink, r, &c.child("relative"))?)
            }
            (None, Some(a)) => {
                ValueChange::Absolute(decode::number(sink, a, &c.child("absolute"))?)
            }
            (Some(_), Some(a)) => {
                sink.error(
                    a.pos,
                    &c.child("absolute"),
                    "give either `relative` or `absolute`, not both",
                );
                return None;
            }
            (None, None) => {
                sink.error(n.pos, &p, "expected `relative` or `absolute`");
                return None;
            }
        };
        let v = change.apply(base);
        if !(MIN_VALUE_MOMENT..=MAX_VALUE_MOMENT).contains(&v) {
            sink.error(
                n.pos,
                &p,
                format!(
                    "the canary's {key} would be {v}, expected from {MIN_VALUE_MOMENT} to {MAX_VALUE_MOMENT}"
                ),
            );
            return None;
        }
        Some(Some(change))
    };
    let mean = one("mean", model.mean);
    let sd = one("sd", model.sd);
    Some(MeanChange {
        mean: mean?,
        sd: sd?,
    })
}

impl MeanChange {
    /// The canary's `(mean, sd)` at full size.
    pub fn at_full(&self, base: &MeanSignalModel) -> (f64, f64) {
        (
            self.mean.map_or(base.mean, |c| c.apply(base.mean)),
            self.sd.map_or(base.sd, |c| c.apply(base.sd)),
        )
    }
}

fn compile_change(sink: &mut Sink, node: &Node, path: &Path, base: f64) -> Option<Change> {
    let f = decode::mapping(sink, node, path, &["relative", "absolute"])?;
    match (f.get("relative"), f.get("absolute")) {
        (Some(n), None) => {
            let p = f.child("relative");
            let r = decode::percent(sink, n, &p)?;
            if r <= -1.0 || base * (1.0 + r) > 1.0 {
                sink.error(
                    n.pos,
                    &p,
                    format!(
                        "must keep the rate from 0 to 1: above -100% and at most {}, got {r}",
                        if base > 0.0 {
                            1.0 / base - 1.0
                        } else {
                            f64::INFINITY
                        }
                    ),
                );
                return None;
            }
            Some(Change::Relative(r))
        }
        (None, Some(n)) => unit_number(sink, n, &f.child("absolute")).map(Change::Absolute),
        (Some(_), Some(n)) => {
            sink.error(
                n.pos,
                &f.child("absolute"),
                "give either `relative` or `absolute`, not both",
            );
            None
        }
        (None, None) => {
            sink.error(node.pos, path, "expected `relative` or `absolute`");
            None
        }
    }
}

fn compile_latency_change(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    baseline: &ArmModel,
) -> Option<(f64, Option<Tail>)> {
    let f = decode::mapping(sink, node, path, &["scale", "tail"])?;
    if baseline.latency.is_none() {
        sink.error(
            node.pos,
            path,
            "the canary can only change latency when spec.baseline.latency is given",
        );
    }
    let scale = match f.get("scale") {
        Some(n) => {
            let p = f.child("scale");
            let v = decode::number(sink, n, &p);
            match v {
                Some(v) if v > 0.0 && v <= 1000.0 => Some(v),
                Some(v) => {
                    sink.error(
                        n.pos,
                        &p,
                        format!("must be above 0 and at most 1000, got {v}"),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some(1.0),
    };
    let tail = match f.get("tail") {
        Some(n) => {
            let p = f.child("tail");
            decode::mapping(sink, n, &p, &["fraction", "add"]).and_then(|t| {
                let fraction = t
                    .require(sink, "fraction")
                    .and_then(|x| unit_number(sink, x, &t.child("fraction")));
                let add = t.require(sink, "add").and_then(|x| {
                    let v = decode::latency_ms(sink, x, &t.child("add"))?;
                    if !(0.0..=86_400_000.0).contains(&v) {
                        sink.error(x.pos, &t.child("add"), "must be from 0ms to 1 day");
                        return None;
                    }
                    Some(v)
                });
                Some(Some(Tail {
                    fraction: fraction?,
                    add_ms: add?,
                }))
            })
        }
        None => Some(None),
    };
    Some((scale?, tail?))
}
