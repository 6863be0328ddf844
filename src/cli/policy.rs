//! `canaryd policy check|explain`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::policy::{self, compile::MAX_POLICY_BYTES};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: exit 0 when all are valid, 1 with every problem
    /// on stderr as FILE:LINE:COL: field.path: message.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// How to report: `text` (stderr), `json` (stdout: every file with
        /// its errors and warnings) or `github` (stdout: GitHub Actions
        /// annotations, `::error file=F,line=L,col=C::message`). Exit codes
        /// are the same in each.
        #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
        format: CheckFormat,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Describe a policy in plain language; with --rps, also each
    /// statistical trigger's expected time to detect a change of twice its
    /// tolerance at the policy's weights, and each gate's expected time to
    /// be shown by a healthy canary against the schedule.
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Total requests per second (baseline + canary) to estimate for.
        #[arg(long, value_name = "N", value_parser = parse_rps)]
        rps: Option<f64>,
        /// The baseline's rate of a ratio metric, for vsBaseline estimates
        /// (repeatable): `--base-rate ctr=0.05` or `--base-rate error_rate=0.1%`.
        #[arg(long = "base-rate", value_name = "METRIC=RATE", value_parser = parse_base_rate)]
        base_rates: Vec<(String, f64)>,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check {
            files,
            format,
            json,
        } => {
            let format = if json { CheckFormat::Json } else { format };
            let mut checked = Vec::new();
            for file in &files {
                checked.push(check_file(file)?);
            }
            let all_ok = checked.iter().all(|c| c.valid);
            match format {
                CheckFormat::Text => {
                    let mut stderr = std::io::stderr().lock();
                    for c in &checked {
                        for w in &c.warnings {
                            writeln!(stderr, "{}: warning: {}: {}", c.file, w.path, w.message)?;
                        }
                        if !c.errors.is_empty() {
                            let lines: Vec<String> =
                                c.errors.iter().map(ToString::to_string).collect();
                            writeln!(stderr, "{}", lines.join("\n"))?;
                        }
                    }
                    if all_ok {
                        let n = files.len();
                        println!("{n} polic{} valid", if n == 1 { "y" } else { "ies" });
                    }
                }
                CheckFormat::Json => {
                    super::client::print_json(&CheckReport {
                        valid: all_ok,
                        files: checked,
                    })?;
                }
                CheckFormat::Github => print!("{}", github_annotations(&checked)),
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PolicyCommand::Explain {
            file,
            rps,
            base_rates,
        } => match load(&file)? {
            Ok(p) => {
                for (metric, _) in &base_rates {
                    if p.metric(metric).is_none() {
                        anyhow::bail!("--base-rate: policy {} has no metric `{metric}`", p.name);
                    }
                }
                print!("{}", policy::explain(&p));
                if let Some(rps) = rps {
                    print!("{}", time_to_detect(&p, rps, &base_rates));
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(diags) => {
                eprintln!("{diags}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// How `policy check` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    Github,
}

/// `policy check --json`: every file checked, and whether all are valid.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub valid: bool,
    pub files: Vec<CheckedFile>,
}

/// One file's findings.
#[derive(Debug, serde::Serialize)]
pub struct CheckedFile {
    pub file: String,
    pub valid: bool,
    /// The policy's `metadata.name` when it compiled.
    pub policy: Option<String>,
    pub errors: Vec<CheckError>,
    pub warnings: Vec<CheckWarning>,
}

/// A located error: `FILE:LINE:COL: path: message`.
#[derive(Debug, serde::Serialize)]
pub struct CheckError {
    pub line: u64,
    pub col: u64,
    /// The field path (`spec.triggers[2].threshold.above`); empty for the
    /// file as a whole.
    pub path: String,
    pub message: String,
    #[serde(skip)]
    file: String,
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A warning about a valid policy (it has a field path, no position).
#[derive(Debug, serde::Serialize)]
pub struct CheckWarning {
    pub path: String,
    pub message: String,
}

/// Check one file; I/O errors are the command's error, not a finding.
pub fn check_file(file: &Path) -> anyhow::Result<CheckedFile> {
    let name = file.display().to_string();
    Ok(match load(file)? {
        Ok(p) => CheckedFile {
            file: name,
            valid: true,
            policy: Some(p.name.clone()),
            errors: Vec::new(),
            warnings: policy::warnings(&p)
                .into_iter()
                .map(|(path, message)| CheckWarning { path, message })
                .collect(),
        },
        Err(diags) => CheckedFile {
            file: name,
            valid: false,
            policy: None,
            errors: diags
                .0
                .into_iter()
                .map(|d| CheckError {
                    line: d.pos.line,
                    col: d.pos.col,
                    path: d.path,
                    message: d.message,
                    file: d.file,
                })
                .collect(),
            warnings: Vec::new(),
        },
    })
}

/// GitHub Actions workflow commands, one per finding: errors at their line
/// and column, warnings on the file. Data and properties escaped as the
/// runner reads them (`%`, CR, LF; and `:`, `,` in properties).
pub fn github_annotations(checked: &[CheckedFile]) -> String {
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let property = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for c in checked {
        for e in &c.errors {
            let message = if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            };
            out.push_str(&format!(
                "::error file={},line={},col={},title=policy check::{}\n",
                property(&c.file),
                e.line,
                e.col,
                data(&message)
            ));
        }
        for w in &c.warnings {
            out.push_str(&format!(
                "::warning file={},title=policy check::{}\n",
                property(&c.file),
                data(&format!("{}: {}", w.path, w.message))
            ));
        }
    }
    out
}

/// Read a policy file (bounded: a file over the limit is read only far enough
/// to know it is too large) and compile it. The outer error is I/O; the inner
/// one the file's located problems.
pub fn load(file: &Path) -> anyhow::Result<Result<policy::Policy, policy::Diagnostics>> {
    let name = file.display().to_string();
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {name}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    Ok(policy::parse_policy(&name, &bytes))
}

fn parse_rps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "expected a positive number of requests per second, found `{s}`"
        )),
    }
}

fn parse_base_rate(s: &str) -> Result<(String, f64), String> {
    let (metric, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("expected METRIC=RATE such as `ctr=0.05`, found `{s}`"))?;
    let rate = crate::yaml::units::parse_percent_text(rate).map_err(|e| e.to_string())?;
    if !(rate > 0.0 && rate < 1.0) {
        return Err(format!(
            "the rate of `{metric}` must be between 0 and 1 (exclusive), found `{s}`"
        ));
    }
    Ok((metric.to_owned(), rate))
}

/// The `--rps` section of `policy explain`.
fn time_to_detect(p: &policy::Policy, rps: f64, base_rates: &[(String, f64)]) -> String {
    use std::fmt::Write;

    use crate::policy::{Step, TriggerCheck, Weight};
    use crate::time::format_duration;

    let mut weights: Vec<Weight> = Vec::new();
    for s in &p.steps {
        if let Step::SetWeight(w) = s
            && w.percent() > 0
            && w.percent() < 100
            && !weights.contains(w)
        {
            weights.push(*w);
        }
    }
    // Estimates are rough: two units are plenty (`17d15h`, `34m1s` → `34m1s`).
    let secs = |s: f64| {
        let full = format_duration(std::time::Duration::from_secs_f64(
            s.clamp(1.0, 3.15e9).round(),
        ));
        let mut units = 0;
        let mut out = String::new();
        for c in full.chars() {
            out.push(c);
            if c.is_ascii_alphabetic() {
                units += 1;
                if units == 2 {
                    break;
                }
            }
        }
        out
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ntime to detect at {rps} requests/s, for a change of twice each tolerance (oracle: a Wald SPRT that knows both rates, the lower bound):"
    );
    for t in p.statistical_triggers() {
        let base = t
            .check
            .metric_name()
            .and_then(|m| base_rates.iter().find(|(name, _)| name == m))
            .map(|(_, r)| *r);
        let estimates: Vec<String> = weights
            .iter()
            .filter_map(|w| {
                crate::monitor::forecast(p, t, rps, *w, base).map(|f| {
                    format!(
                        "at {}%: {} ({:.0} canary requests; oracle {}, {:.1}x)",
                        w.percent(),
                        secs(f.seconds),
                        f.canary_requests,
                        secs(f.oracle_seconds),
                        f.seconds / f.oracle_seconds.max(1e-9)
                    )
                })
            })
            .collect();
        if !estimates.is_empty() {
            let _ = writeln!(out, "  - {}: {}", t.name, estimates.join("; "));
            continue;
        }
        let why = match &t.check {
            TriggerCheck::RatioVsBaseline { metric, .. } if base.is_none() => {
                format!(
                    "give the baseline's rate, e.g. --base-rate {}=0.05",
                    metric.name
                )
            }
            _ => "depends on distributions the policy does not state; simulate it with canaryd-sim"
                .to_owned(),
        };
        let _ = writeln!(out, "  - {}: not estimated ({why})", t.name);
    }
    out.push_str(&time_to_show(p, rps, base_rates, &secs));
    out
}

/// The gates part of `--rps`: how long a healthy canary takes to show each
/// gate that bounds harm (the `requireNoHarm` ones first of all), against
/// the step that needs it and `maxDuration`.
fn time_to_show(
    p: &policy::Policy,
    rps: f64,
    base_rates: &[(String, f64)],
    secs: &dyn Fn(f64) -> String,
) -> String {
    use std::fmt::Write;

    use crate::policy::{GateRequirement, Weight};

    let mut out = String::new();
    let bounding: Vec<&policy::Gate> = p
        .gates
        .iter()
        .filter(|g| !matches!(g.check.requirement(), GateRequirement::MinGain(_)))
        .collect();
    if bounding.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\ntime for a healthy canary (no true change) to show each gate that bounds harm, at {rps} requests/s:"
    );
    let mut weights: Vec<Weight> = Vec::new();
    for s in &p.steps {
        if let policy::Step::SetWeight(w) = s
            && w.percent() > 0
            && w.percent() < 100
            && !weights.contains(w)
        {
            weights.push(*w);
        }
    }
    for g in bounding {
        let metric = g.check.metric_name();
        let base = base_rates
            .iter()
            .find(|(name, _)| name == metric)
            .map(|(_, r)| *r);
        let at: Vec<String> = weights
            .iter()
            .filter_map(|w| {
                crate::monitor::gate_forecast(p, g, rps, *w, base).map(|f| {
                    format!(
                        "at {}% alone: {} ({:.0} canary requests)",
                        w.percent(),
                        secs(f.seconds),
                        f.canary_requests
                    )
                })
            })
            .collect();
        let Some(plan) = crate::monitor::gate_schedule(p, g, rps, base) else {
            let why = match &g.check {
                policy::GateCheck::Ratio { metric, .. } if base.is_none() => format!(
                    "give the baseline's rate, e.g. --base-rate {}=0.05",
                    metric.name
                ),
                _ => "depends on distributions the policy does not state; simulate it with canaryd-sim"
                    .to_owned(),
            };
            let _ = writeln!(out, "  - {}: not estimated ({why})", g.name);
            continue;
        };
        let needed = secs(plan.needed_at.as_secs_f64());
        let verdict = match plan.shown_at {
            Some(t) if t <= plan.needed_at => format!(
                "expected shown {} after start, before the step that needs it ({} on the fastest path)",
                secs(t.as_secs_f64()),
                needed
            ),
            Some(t) if plan.in_time() => format!(
                "expected shown {} after start: the step that needs it ({}) waits for it, within maxDuration {}",
                secs(t.as_secs_f64()),
                needed,
                secs(plan.max_duration.as_secs_f64())
            ),
            Some(t) => format!(
                "UNDERPOWERED: expected shown only {} after start, past maxDuration {}: at this traffic the rollout will likely end inconclusive",
                secs(t.as_secs_f64()),
                secs(plan.max_duration.as_secs_f64())
            ),
            None => "the canary has no weight between 0% and 100% before the step that needs it, so it cannot be shown".to_owned(),
        };
        let _ = writeln!(out, "  - {}: {verdict}; {}", g.name, at.join("; "));
        if let Some(t) = plan.shown_at.filter(|t| *t > plan.needed_at) {
            let mut fixes = Vec::new();
            if !plan.in_time() {
                fixes.push(format!(
                    "a maxDuration of at least {}",
                    secs(t.as_secs_f64() * 1.5)
                ));
            }
            if g.is_implied() {
                match crate::monitor::margin_in_time(p, g, rps, base) {
                    Some(m) => fixes.push(format!("requireNoHarm.margin {m:.1}x")),
                    None => fixes.push("no margin up to 100x is enough".to_owned()),
                }
            }
            if plan.needed_at.as_secs_f64() > 0.0 {
                fixes.push(format!(
                    "about {:.0} requests/s",
                    rps * t.as_secs_f64() / plan.needed_at.as_secs_f64()
                ));
            }
            let _ = writeln!(
                out,
                "    to show it by the step that needs it: {}",
                fixes.join(", or ")
            );
        }
    }
    out
}
