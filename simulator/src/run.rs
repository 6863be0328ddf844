//! One simulated rollout: the real engine (`canaryd::engine::Rollout`) driven
//! by a virtual clock. Nothing sleeps; time jumps from one stop to the next.
//!
//! Stops are the analysis interval's boundaries (from the rollout's start),
//! the engine's `next_deadline()` when sooner, approvals falling due, and the
//! scenario's end. At each stop the traffic since the previous stop is
//! delivered as one `Data` snapshot (so a snapshot is always collected at a
//! single canary weight), then due approvals, then a `Tick`. The router
//! acknowledges every weight change at once; approvals are granted
//! `approval_delay` after they are asked for, each role by its own actor,
//! never the starter.

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::engine::{Actor, Analysis, Command, Effect, Input, Phase, Rollout, RolloutSpec};
use canaryd::monitor::TriggerEvidence;
use canaryd::monitor::words::evidence_line;
use canaryd::policy::{Policy, Trigger, Weight};
use canaryd::stats::{IntervalSnapshot, LatencyReads};
use canaryd::time::{Timestamp, format_duration};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::latency::{LATENCY_SIGNAL, LatencyRng};
use crate::source::Source;

/// How a run ended (PRODUCT.md section 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Rollback,
    Promotion,
    Inconclusive,
    Concluded,
    Unfinished,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rollback => "rollback",
            Outcome::Promotion => "promotion",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Concluded => "concluded",
            Outcome::Unfinished => "unfinished",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub approval_delay: Duration,
    /// Record the timeline (for traces); off in Monte Carlo.
    pub record_timeline: bool,
    /// Draw every latency bucket whatever the analysis reads, so that every
    /// style of a `--compare` run sees the very same latencies.
    pub full_latency: bool,
}

/// What one run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub outcome: Outcome,
    /// Seconds from start to the decision that ended the run.
    pub decided_at_s: Option<f64>,
    /// The trigger that ended the run (rollbacks only).
    pub trigger: Option<String>,
    /// Canary requests served before the decision (or over the run).
    pub canary_requests_before_decision: u64,
    /// Canary errors plus clicks lost versus the baseline's CTR.
    pub bad_requests: f64,
    /// One line per transition, weight change and fired trigger.
    pub timeline: Vec<String>,
}

pub const STARTER: &str = "sim-starter";

fn spec(policy: &Policy) -> RolloutSpec {
    RolloutSpec {
        id: "sim".into(),
        service: "sim".into(),
        baseline: "baseline".into(),
        canary: "canary".into(),
        change_type: policy.change_type,
        dry_run: false,
        started_by: STARTER.into(),
        reason: Some("simulated rollout".into()),
        ticket: Some("SIM-1".into()),
    }
}

/// Runs one rollout of `policy` with `analysis` over `source`.
pub fn run_one<A, R>(
    policy: &Policy,
    analysis: A,
    source: &Source,
    rng: &mut R,
    opts: &RunOptions,
) -> Result<RunResult, String>
where
    A: Analysis<Snapshot = IntervalSnapshot, Evidence = TriggerEvidence>,
    R: Rng + ?Sized,
{
    let start = Timestamp::EPOCH;
    let mut rollout =
        Rollout::new(spec(policy), policy.clone(), analysis, start).map_err(|e| e.to_string())?;
    let interval_ms = (policy.analysis.interval.as_millis() as u64).max(1);
    let end_ms = source.duration().as_millis() as u64;
    let mut d = Driver {
        now: start,
        approvals: BTreeMap::new(),
        result: RunResult {
            outcome: Outcome::Unfinished,
            decided_at_s: None,
            trigger: None,
            canary_requests_before_decision: 0,
            bad_requests: 0.0,
            timeline: Vec::new(),
        },
        canary_requests: 0,
        record: opts.record_timeline,
        approval_delay: opts.approval_delay,
    };
    // Latencies come from a stream of their own, seeded from the run's: an
    // analysis that reads less of them than another leaves the counts'
    // stream, and so every style's requests, errors and clicks, the same.
    let mut latency_rng = LatencyRng::seed_from_u64(rng.next_u64());
    d.handle(&mut rollout, Input::Tick)?;
    let mut piece_start = 0u64;
    let mut next_boundary = interval_ms;
    // Bounded: every pass moves time forward by at least 1ms, and there are
    // at most a few stops per interval.
    let max_passes = 4 * (end_ms / interval_ms + 1) + 100_000;
    for _ in 0..max_passes {
        if rollout.phase().is_terminal() || piece_start >= end_ms {
            break;
        }
        let mut next = next_boundary.min(end_ms);
        if let Some(dl) = rollout.next_deadline()
            && dl.as_millis() > piece_start
        {
            next = next.min(dl.as_millis());
        }
        if let Some((&due, _)) = d.approvals.iter().next() {
            next = next.min(due.max(piece_start + 1));
        }
        let weight = rollout.weight();
        let (from, to) = (
            Timestamp::from_millis(piece_start),
            Timestamp::from_millis(next),
        );
        // The windows' oldest snapshot, once they are full: its keys and
        // buffers are this interval's, since a model writes the same signals
        // and groups every interval. (A replay's intervals may name other
        // groups, which a reused snapshot would keep at zero: not reused.)
        let spare = rollout
            .take_spare_snapshot()
            .filter(|_| source.model().is_some());
        let mut snap = match spare {
            Some(mut s) => {
                s.reset(from, to);
                s
            }
            None => IntervalSnapshot::new(from, to),
        };
        let reads = if opts.full_latency {
            std::borrow::Cow::Borrowed(&LatencyReads::EVERYTHING)
        } else {
            rollout.analysis().latency_reads(LATENCY_SIGNAL)
        };
        source.generate(
            rng,
            &mut latency_rng,
            Duration::from_millis(piece_start),
            Duration::from_millis(next),
            weight.fraction(),
            &reads,
            &mut snap,
        );
        d.count(&snap, source);
        d.now = Timestamp::from_millis(next);
        piece_start = next;
        if next >= next_boundary {
            next_boundary = (next / interval_ms + 1) * interval_ms;
        }
        d.handle(&mut rollout, Input::Data { snapshot: snap })?;
        let due: Vec<u64> = d.approvals.range(..=next).map(|(k, _)| *k).collect();
        for k in due {
            for role in d.approvals.remove(&k).unwrap_or_default() {
                if rollout.phase().is_terminal() {
                    break;
                }
                let command = Command::Approve {
                    by: Actor {
                        name: format!("sim-approver-{role}"),
                        reason: "approved in simulation".into(),
                        ticket: None,
                    },
                    role,
                };
                // A refused approval (the wait already ended) changes nothing.
                let _ = d.handle(&mut rollout, Input::Command { command });
            }
        }
        if !rollout.phase().is_terminal() {
            d.handle(&mut rollout, Input::Tick)?;
        }
    }
    let mut result = d.result;
    let now_s = d.now.as_millis() as f64 / 1000.0;
    result.outcome = match rollout.phase() {
        Phase::RolledBack | Phase::RollingBack if result.trigger.is_some() => Outcome::Rollback,
        Phase::Promoted => Outcome::Promotion,
        Phase::Inconclusive => Outcome::Inconclusive,
        Phase::Concluded => Outcome::Concluded,
        _ => Outcome::Unfinished,
    };
    if result.outcome == Outcome::Unfinished {
        result.decided_at_s = None;
        result.canary_requests_before_decision = d.canary_requests;
    } else if result.decided_at_s.is_none() {
        result.decided_at_s = Some(now_s);
        result.canary_requests_before_decision = d.canary_requests;
    }
    result.bad_requests = result.bad_requests.max(0.0);
    Ok(result)
}

struct Driver {
    now: Timestamp,
    /// Due time (ms) to the roles to approve then.
    approvals: BTreeMap<u64, Vec<String>>,
    result: RunResult,
    canary_requests: u64,
    record: bool,
    approval_delay: Duration,
}

impl Driver {
    fn count(&mut self, snap: &IntervalSnapshot, source: &Source) {
        let c = &snap.canary;
        self.canary_requests += c.counter("requests");
        let ctr = source.baseline_ctr(snap);
        self.result.bad_requests += c.counter("errors") as f64
            + ctr * c.counter("impressions") as f64
            - c.counter("clicks") as f64;
    }

    fn line(&mut self, text: String) {
        if self.record {
            self.result.timeline.push(format!(
                "{:>8}  {text}",
                format_duration(self.now.saturating_since(Timestamp::EPOCH))
            ));
        }
    }

    /// Applies an input, then carries out every effect it produced.
    fn handle<A>(
        &mut self,
        rollout: &mut Rollout<A>,
        input: Input<IntervalSnapshot>,
    ) -> Result<(), String>
    where
        A: Analysis<Snapshot = IntervalSnapshot, Evidence = TriggerEvidence>,
    {
        rollout.handle(self.now, input).map_err(|e| e.to_string())?;
        // Bounded: each acknowledgement produces a handful of effects.
        for _ in 0..10_000 {
            let Some(effect) = rollout.poll_effect() else {
                return Ok(());
            };
            match effect {
                Effect::SetWeight { weight, .. } => {
                    rollout
                        .handle(
                            self.now,
                            Input::RouterAck {
                                weight,
                                error: None,
                            },
                        )
                        .map_err(|e| e.to_string())?;
                }
                Effect::Rollback {
                    trigger, evidence, ..
                } => {
                    self.result.decided_at_s = Some(self.now.as_millis() as f64 / 1000.0);
                    self.result.canary_requests_before_decision = self.canary_requests;
                    let fired = rollout.policy().triggers.iter().find(|t| t.name == trigger);
                    self.line(format!(
                        "trigger `{trigger}` fired: {}",
                        summarize(fired, evidence.as_ref())
                    ));
                    self.result.trigger = Some(trigger);
                    rollout
                        .handle(
                            self.now,
                            Input::RouterAck {
                                weight: Weight::ZERO,
                                error: None,
                            },
                        )
                        .map_err(|e| e.to_string())?;
                }
                Effect::AwaitApproval { roles, .. } => {
                    let due = (self.now + self.approval_delay).as_millis();
                    self.approvals.entry(due).or_default().extend(roles);
                }
                Effect::Promote { .. } => {
                    self.result.decided_at_s = Some(self.now.as_millis() as f64 / 1000.0);
                    self.result.canary_requests_before_decision = self.canary_requests;
                }
                Effect::Notify(event) => {
                    let m = &event.message;
                    if m.contains(" -> ")
                        || m.starts_with("canary weight is now")
                        || m.starts_with("gate ")
                    {
                        self.line(m.clone());
                    }
                }
                Effect::OpenIncident { .. } | Effect::OpenReview { .. } | Effect::Checkpoint => {}
            }
        }
        Err("the engine kept producing effects (more than 10000 for one input)".into())
    }
}

/// A one-line summary of a trigger's evidence: the renderer the daemon's
/// incidents and status use (`canaryd::monitor::words`), so a trace reads
/// as an incident does.
pub fn summarize(trigger: Option<&Trigger>, evidence: Option<&TriggerEvidence>) -> String {
    evidence_line(trigger, evidence)
}
