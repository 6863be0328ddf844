//! Aggregation of runs into the `--json` report (PRODUCT.md section 9) and
//! the human-readable table. Percentiles are nearest-rank on the sorted
//! values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{Outcome, RunResult};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub policy: String,
    pub runs: u32,
    pub seed: u64,
    pub results: Vec<StyleResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StyleResult {
    pub name: String,
    pub rollback_rate: f64,
    pub promotion_rate: f64,
    pub inconclusive_rate: f64,
    pub unfinished_rate: f64,
    pub concluded_rate: f64,
    pub time_to_rollback_s: Option<Spread>,
    pub time_to_promotion_s: Option<Spread>,
    pub canary_requests_before_decision: Option<MeanP90>,
    pub bad_requests_served: MeanP90,
    pub by_trigger: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeanP90 {
    pub mean: f64,
    pub p90: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn spread(mut v: Vec<f64>) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Spread {
        mean: round(v.iter().sum::<f64>() / v.len() as f64),
        p50: round(percentile(&v, 0.5)),
        p90: round(percentile(&v, 0.9)),
    })
}

fn mean_p90(v: Vec<f64>) -> Option<MeanP90> {
    spread(v).map(|s| MeanP90 {
        mean: s.mean,
        p90: s.p90,
    })
}

/// Three decimals: the report is compared byte for byte across thread counts,
/// and sums in a fixed order already make it exact; rounding keeps it short.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl StyleResult {
    pub fn aggregate(name: &str, runs: &[RunResult]) -> StyleResult {
        let n = runs.len().max(1) as f64;
        let rate = |o: Outcome| round(runs.iter().filter(|r| r.outcome == o).count() as f64 / n);
        let times = |o: Outcome| {
            runs.iter()
                .filter(|r| r.outcome == o)
                .filter_map(|r| r.decided_at_s)
                .collect::<Vec<_>>()
        };
        let mut by_trigger = BTreeMap::new();
        for r in runs {
            if r.outcome == Outcome::Rollback
                && let Some(t) = &r.trigger
            {
                *by_trigger.entry(t.clone()).or_insert(0) += 1;
            }
        }
        StyleResult {
            name: name.to_owned(),
            rollback_rate: rate(Outcome::Rollback),
            promotion_rate: rate(Outcome::Promotion),
            inconclusive_rate: rate(Outcome::Inconclusive),
            unfinished_rate: rate(Outcome::Unfinished),
            concluded_rate: rate(Outcome::Concluded),
            time_to_rollback_s: spread(times(Outcome::Rollback)),
            time_to_promotion_s: spread(times(Outcome::Promotion)),
            canary_requests_before_decision: mean_p90(
                runs.iter()
                    .filter(|r| r.outcome == Outcome::Rollback)
                    .map(|r| r.canary_requests_before_decision as f64)
                    .collect(),
            ),
            bad_requests_served: mean_p90(runs.iter().map(|r| r.bad_requests).collect()).unwrap_or(
                MeanP90 {
                    mean: 0.0,
                    p90: 0.0,
                },
            ),
            by_trigger,
        }
    }
}

fn hours(s: Option<Spread>) -> String {
    match s {
        None => "-".into(),
        Some(s) => format!("{} / {}", human(s.p50), human(s.p90)),
    }
}

fn human(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.1}h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.1}m", secs / 60.0)
    } else {
        format!("{secs:.0}s")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl Report {
    /// The readable table shown without `--json`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // The style column fits the longest name (`sprt-oracle-two-sample`).
        let width = self
            .results
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(13);
        let _ = writeln!(
            out,
            "policy {} on scenario {}: {} runs per style, seed {}",
            self.policy, self.scenario, self.runs, self.seed
        );
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<17} {:<17} {:>12} {:>12}",
            "style",
            "rollback",
            "promote",
            "inconcl.",
            "unfinish.",
            "concluded",
            "rollback p50/p90",
            "promote p50/p90",
            "canary req*",
            "bad req",
            width = width,
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>9}  {:<17} {:<17} {:>12} {:>12}",
                r.name,
                pct(r.rollback_rate),
                pct(r.promotion_rate),
                pct(r.inconclusive_rate),
                pct(r.unfinished_rate),
                pct(r.concluded_rate),
                hours(r.time_to_rollback_s),
                hours(r.time_to_promotion_s),
                r.canary_requests_before_decision
                    .map_or("-".into(), |m| format!("{:.0}", m.mean)),
                format!("{:.0}", r.bad_requests_served.mean),
                width = width,
            );
        }
        let _ = writeln!(
            out,
            "canary req*: mean canary requests served before a rollback; bad req: mean canary errors + clicks lost vs baseline CTR per run"
        );
        for r in &self.results {
            if !r.by_trigger.is_empty() {
                let list: Vec<String> = r
                    .by_trigger
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect();
                let _ = writeln!(out, "{} rollbacks by trigger: {}", r.name, list.join(", "));
            }
        }
        out
    }
}
