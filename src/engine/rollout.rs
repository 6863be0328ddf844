//! One rollout's state machine: `handle(now, input)` in, `poll_effect()` out.
//!
//! Time only moves when a caller says so. Each `handle` first accounts for
//! the time since the previous call (bake progress, active time), then applies
//! the input, then re-evaluates everything that depends on time and data:
//! triggers (armed in every non-terminal phase), deadlines, and step
//! progression. The same inputs at the same instants give the same effects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, Assessment, TriggerVerdict};
use super::types::*;
use crate::policy::{Action, ChangeType, OnTimeout, Policy, Step, Weight};
use crate::time::{Timestamp, format_duration};

/// The actor name the engine uses for its own decisions.
pub const ENGINE: &str = "canaryd";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "A: Analysis")]
pub struct Rollout<A: Analysis> {
    spec: RolloutSpec,
    /// Pinned at start: reloading policies never changes a running rollout.
    policy: Policy,
    analysis: A,
    phase: Phase,
    /// Where `resume` returns to.
    resume_to: Option<Phase>,
    /// When the current pause began.
    #[serde(default)]
    paused_at: Option<Timestamp>,
    reason: String,
    started_at: Timestamp,
    /// The last instant `handle` was called with.
    now: Timestamp,
    /// Index of the step being worked on; `steps.len()` once all are done.
    step: usize,
    /// The weight the router confirmed.
    weight: Weight,
    /// A weight asked of the router and not yet confirmed.
    pending_weight: Option<Weight>,
    /// Time spent in the current bake step (only while progressing).
    bake_elapsed: Duration,
    /// Time counted against `maxDuration` (approval waits and pauses excluded).
    active: Duration,
    approval: Option<ApprovalWait>,
    /// Gates announced as shown and not announced lost since: the "gate
    /// shown" notification goes out when a gate's reading turns shown, "no
    /// longer shown" when a step that needs it is held because its current
    /// reading does not show it (a gate near its boundary may flip between
    /// intervals; only a flip that holds a step is worth a notification).
    /// Steps never read this set: a gate counts only while the latest
    /// assessment shows it (not latched).
    gates_shown: BTreeSet<String>,
    /// `promote --override-gates`: gates count as shown from then on.
    gates_overridden: bool,
    /// `promote` skips the rest of the current bake.
    skip_bake: bool,
    /// `promote --full`: remaining bakes skipped, weights straight to 100%.
    full_promote: bool,
    /// After a gap in time, no step advances (no bake ends, nothing is
    /// promoted) before a full interval of data from after it.
    fresh_data_after: Option<Timestamp>,
    /// Data seen so far from after the gap.
    #[serde(default)]
    fresh_data_seen: Duration,
    last_data_end: Option<Timestamp>,
    /// Pause triggers that already paused the rollout since they last fired.
    pause_triggers_acted: BTreeSet<String>,
    /// Whether the sample-ratio guard already paused this weight step.
    srm_acted: bool,
    latest: Assessment<A::Evidence>,
    /// The `now` of `latest` while the analysis has not been fed since:
    /// asking again at that instant would give the same readings (see
    /// [`Analysis::assess`]), so the engine does not. Not state: skipped by
    /// serde (a restored rollout assesses afresh).
    #[serde(skip)]
    assessed_at: Option<Timestamp>,
    /// The trigger (and its evidence) that ended the rollout, if one did.
    fired: Option<(String, Option<A::Evidence>)>,
    effects: VecDeque<Effect<A::Evidence>>,
}

/// An approval step being waited on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalWait {
    pub step: usize,
    pub since: Timestamp,
    pub deadline: Option<Timestamp>,
    /// Role to the approval given for it.
    pub given: BTreeMap<String, Approved>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approved {
    pub actor: String,
    pub at: Timestamp,
    pub reason: String,
    pub ticket: Option<String>,
}

/// A versioned, serializable copy of a rollout's whole state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "A: Analysis")]
pub struct Checkpoint<A: Analysis> {
    pub version: u32,
    pub rollout: Rollout<A>,
}

/// Version 2: a monitor's windows keep what its objective rules read of
/// each interval, not the snapshots (`stats::window`). Version 1
/// checkpoints (whole snapshots) are still read.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The oldest checkpoint version this build restores.
pub const OLDEST_CHECKPOINT_VERSION: u32 = 1;

/// A checkpoint of a version this build cannot restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "checkpoint version {version} is not supported (expected {OLDEST_CHECKPOINT_VERSION} to {CHECKPOINT_VERSION})"
)]
pub struct UnsupportedCheckpoint {
    pub version: u32,
}

impl<A: Analysis> Rollout<A> {
    /// A new rollout in `pending`. Emergency changes need a reason and a
    /// ticket; experiments need the policy's `spec.experiment`.
    pub fn new(
        spec: RolloutSpec,
        policy: Policy,
        analysis: A,
        now: Timestamp,
    ) -> Result<Self, Rejected> {
        if spec.change_type == ChangeType::Emergency {
            if spec.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(Rejected::invalid(
                    "reason",
                    "an emergency change needs a reason",
                ));
            }
            if spec.ticket.as_deref().is_none_or(|t| t.trim().is_empty()) {
                return Err(Rejected::invalid(
                    "ticket",
                    "an emergency change needs a ticket",
                ));
            }
        }
        if spec.change_type == ChangeType::Experiment && policy.experiment.is_none() {
            return Err(Rejected::invalid(
                "change_type",
                format!(
                    "policy `{}` has no spec.experiment, so it cannot run as an experiment",
                    policy.name
                ),
            ));
        }
        let latest = Assessment::empty(policy.triggers.len(), policy.gates.len());
        Ok(Rollout {
            spec,
            policy,
            analysis,
            phase: Phase::Pending,
            resume_to: None,
            paused_at: None,
            reason: "created".into(),
            started_at: now,
            now,
            step: 0,
            weight: Weight::ZERO,
            pending_weight: None,
            bake_elapsed: Duration::ZERO,
            active: Duration::ZERO,
            approval: None,
            gates_shown: BTreeSet::new(),
            gates_overridden: false,
            skip_bake: false,
            full_promote: false,
            fresh_data_after: None,
            fresh_data_seen: Duration::ZERO,
            last_data_end: None,
            pause_triggers_acted: BTreeSet::new(),
            srm_acted: false,
            latest,
            assessed_at: None,
            fired: None,
            effects: VecDeque::new(),
        })
    }

    pub fn checkpoint(&self) -> Checkpoint<A> {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            rollout: self.clone(),
        }
    }

    pub fn restore(checkpoint: Checkpoint<A>) -> Result<Self, UnsupportedCheckpoint> {
        if !(OLDEST_CHECKPOINT_VERSION..=CHECKPOINT_VERSION).contains(&checkpoint.version) {
            return Err(UnsupportedCheckpoint {
                version: checkpoint.version,
            });
        }
        Ok(checkpoint.rollout)
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn step(&self) -> usize {
        self.step
    }

    pub fn weight(&self) -> Weight {
        self.weight
    }

    /// A weight asked of the router and not yet confirmed: after a restart,
    /// or after the router failed, the shell asks for it again.
    pub fn pending_weight(&self) -> Option<Weight> {
        self.pending_weight
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub fn latest(&self) -> &Assessment<A::Evidence> {
        &self.latest
    }

    pub fn gates_shown(&self) -> &BTreeSet<String> {
        &self.gates_shown
    }

    pub fn approval(&self) -> Option<&ApprovalWait> {
        self.approval.as_ref()
    }

    /// The trigger that ended the rollout, with its evidence.
    pub fn fired(&self) -> Option<&(String, Option<A::Evidence>)> {
        self.fired.as_ref()
    }

    pub fn analysis(&self) -> &A {
        &self.analysis
    }

    /// A snapshot the analysis let go of, to reuse (see
    /// [`Analysis::take_spare`]).
    pub fn take_spare_snapshot(&mut self) -> Option<A::Snapshot> {
        self.analysis.take_spare()
    }

    pub fn poll_effect(&mut self) -> Option<Effect<A::Evidence>> {
        self.effects.pop_front()
    }

    /// The next instant at which time alone changes something; the caller
    /// should `handle(Tick)` then (or earlier, at its analysis interval).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.phase.is_terminal() {
            return None;
        }
        let mut candidates = Vec::new();
        if let Some(until) = self.bypass_until()
            && until > self.now
        {
            candidates.push(until);
        }
        if let Some(end) = self.experiment_end() {
            candidates.push(end);
        }
        if self.phase == Phase::AwaitingApproval
            && let Some(deadline) = self.approval.as_ref().and_then(|a| a.deadline)
        {
            candidates.push(deadline);
        }
        if self.phase == Phase::Progressing {
            if let Some(Step::Bake(d)) = self.policy.steps.get(self.step) {
                candidates.push(self.now + d.saturating_sub(self.bake_elapsed));
            }
            let left = self
                .policy
                .analysis
                .max_duration
                .saturating_sub(self.active);
            candidates.push(self.now + left);
        }
        // Only instants still ahead: a caller that sleeps until the deadline
        // must never be handed one in the past.
        candidates.into_iter().filter(|t| *t > self.now).min()
    }

    /// Apply one input at `now`. A refused command changes nothing.
    pub fn handle(&mut self, now: Timestamp, input: Input<A::Snapshot>) -> Result<(), Rejected> {
        let now = now.max(self.now);
        if let Input::Command { command } = &input {
            self.validate(command)?;
        }
        self.account_time(now);
        if self.phase == Phase::Pending {
            self.start(now);
        }
        match input {
            Input::Tick => {}
            Input::Data { snapshot } => self.observe(now, snapshot),
            Input::Command { command } => self.apply(now, command),
            Input::RouterAck { weight, error } => self.router_ack(now, weight, error),
        }
        if !self.phase.is_terminal() {
            if self.assessed_at != Some(now) {
                self.analysis.assess_into(now, &mut self.latest);
                self.assessed_at = Some(now);
            }
            self.act_on_readings(now);
        }
        self.evaluate(now);
        Ok(())
    }

    fn bypass_until(&self) -> Option<Timestamp> {
        (self.spec.change_type == ChangeType::Emergency)
            .then(|| self.started_at + self.policy.emergency.bypass_for)
    }

    fn bypass_active(&self, now: Timestamp) -> bool {
        self.bypass_until().is_some_and(|until| now < until)
    }

    fn experiment_end(&self) -> Option<Timestamp> {
        if self.spec.change_type != ChangeType::Experiment {
            return None;
        }
        self.policy
            .experiment
            .as_ref()
            .map(|e| self.started_at + e.duration)
    }

    /// Bakes and `maxDuration` run on wall-clock time while progressing.
    fn account_time(&mut self, now: Timestamp) {
        let delta = now.saturating_since(self.now);
        // A gap longer than two intervals means nobody was watching (the
        // daemon was down): the step waits for data from after the gap.
        if delta > self.policy.analysis.interval * 2 && self.phase != Phase::Pending {
            self.fresh_data_after = Some(now);
            self.fresh_data_seen = Duration::ZERO;
        }
        if self.phase == Phase::Progressing {
            // Waiting for the router counts against maxDuration (a router
            // that keeps failing must not hold a rollout forever), not
            // against a bake (the bake starts once the weight is applied).
            self.active += delta;
            if self.pending_weight.is_none()
                && matches!(self.policy.steps.get(self.step), Some(Step::Bake(_)))
            {
                self.bake_elapsed += delta;
            }
        }
        self.now = now;
    }

    fn start(&mut self, now: Timestamp) {
        self.started_at = now;
        self.transition(
            now,
            Phase::Progressing,
            ENGINE,
            None,
            "rollout started".into(),
        );
        if self.spec.change_type == ChangeType::Emergency {
            let reason = self.spec.reason.clone().unwrap_or_default();
            let ticket = self.spec.ticket.clone().unwrap_or_default();
            self.effects.push_back(Effect::OpenReview {
                reason,
                ticket,
                at: now,
            });
            self.notify(
                now,
                ENGINE,
                None,
                format!(
                    "emergency change: bakes, approvals and gates are bypassed for the first {}; each weight still serves minSamples canary requests, and triggers stay armed",
                    format_duration(self.policy.emergency.bypass_for)
                ),
            );
        }
    }

    fn observe(&mut self, now: Timestamp, snapshot: A::Snapshot) {
        if self.phase.is_terminal() {
            return;
        }
        let (start, end) = A::span(&snapshot);
        self.analysis.observe_owned(snapshot, self.weight);
        self.assessed_at = None;
        self.last_data_end = Some(self.last_data_end.map_or(end, |e| e.max(end)));
        if let Some(after) = self.fresh_data_after
            && start >= after
        {
            self.fresh_data_seen += end.saturating_since(start);
            if self.fresh_data_seen >= self.policy.analysis.interval {
                self.fresh_data_after = None;
                self.fresh_data_seen = Duration::ZERO;
            }
        }
        let _ = now;
    }

    fn router_ack(&mut self, now: Timestamp, weight: Weight, error: Option<String>) {
        if let Some(err) = error {
            self.notify(
                now,
                ENGINE,
                None,
                format!("router failed to set weight {}%: {err}", weight.percent()),
            );
            return;
        }
        if self.pending_weight == Some(weight) {
            self.pending_weight = None;
        }
        let changed = self.weight != weight;
        self.weight = weight;
        if changed {
            self.analysis.step_started(now, weight);
            self.assessed_at = None;
            self.srm_acted = false;
            self.notify(
                now,
                ENGINE,
                None,
                format!("canary weight is now {}%", weight.percent()),
            );
        }
        if self.phase == Phase::RollingBack && weight == Weight::ZERO {
            let reason = self.reason.clone();
            self.transition(now, Phase::RolledBack, ENGINE, None, reason);
        }
    }

    /// Refuse commands that do not apply, before anything changes.
    fn validate(&self, command: &Command) -> Result<(), Rejected> {
        let by = command.actor();
        if by.reason.trim().is_empty() {
            return Err(Rejected::invalid("reason", "every command needs a reason"));
        }
        if self.phase.is_terminal() {
            return Err(Rejected::conflict(format!(
                "rollout {} is already {}; `{}` no longer applies",
                self.spec.id,
                self.phase.as_str(),
                command.name()
            )));
        }
        match command {
            Command::Pause { .. } if self.phase == Phase::Paused => {
                Err(Rejected::conflict("rollout is already paused"))
            }
            Command::Pause { .. } if self.phase == Phase::RollingBack => Err(Rejected::conflict(
                "rollout is rolling back; it cannot be paused",
            )),
            Command::Resume { .. } if self.phase != Phase::Paused => {
                Err(Rejected::conflict(format!(
                    "rollout is {}, not paused; nothing to resume",
                    self.phase.as_str()
                )))
            }
            Command::Promote { .. } if self.phase == Phase::RollingBack => Err(Rejected::conflict(
                "rollout is rolling back; it cannot be promoted",
            )),
            Command::Promote { .. } if self.phase == Phase::Paused => Err(Rejected::conflict(
                "rollout is paused; resume it before promoting",
            )),
            Command::Promote {
                override_gates: true,
                by,
                ..
            } if by.ticket.is_none() => Err(Rejected::invalid(
                "ticket",
                "--override-gates needs a ticket",
            )),
            Command::Abort { .. } if self.phase == Phase::RollingBack => {
                Err(Rejected::conflict("rollout is already rolling back"))
            }
            Command::Approve { role, by } => self.validate_approval(role, &by.name),
            _ => Ok(()),
        }
    }

    fn validate_approval(&self, role: &str, actor: &str) -> Result<(), Rejected> {
        let Some(wait) = &self.approval else {
            return Err(Rejected::conflict(format!(
                "rollout is {} and is not waiting for an approval",
                self.phase.as_str()
            )));
        };
        let Some(Step::Approval(step)) = self.policy.steps.get(wait.step) else {
            return Err(Rejected::conflict("rollout is not waiting for an approval"));
        };
        if !step.roles.iter().any(|r| r == role) {
            return Err(Rejected::invalid(
                "role",
                format!(
                    "this approval needs {}; `{role}` is not one of them",
                    step.roles.join(", ")
                ),
            ));
        }
        if let Some(given) = wait.given.get(role) {
            return Err(Rejected::conflict(format!(
                "role `{role}` was already approved by {}",
                given.actor
            )));
        }
        if step.distinct {
            if actor == self.spec.started_by {
                return Err(Rejected::invalid(
                    "actor",
                    format!(
                        "{actor} started this rollout and may not approve it (distinct approvals)"
                    ),
                ));
            }
            if let Some((other_role, _)) = wait.given.iter().find(|(_, a)| a.actor == actor) {
                return Err(Rejected::invalid(
                    "actor",
                    format!(
                        "{actor} already approved as `{other_role}`; each role needs a different person (distinct approvals)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, now: Timestamp, command: Command) {
        let by = command.actor().clone();
        let ticket = by.ticket.clone();
        match command {
            Command::Pause { .. } => {
                self.pause(
                    now,
                    &by.name,
                    ticket,
                    format!("paused by {}: {}", by.name, by.reason),
                );
            }
            Command::Resume { .. } => {
                let to = self.resume_to.take().unwrap_or(Phase::Progressing);
                // A pause holds everything, the approval clock included: the
                // deadline moves by the time spent paused.
                if let Some(at) = self.paused_at.take()
                    && let Some(wait) = self.approval.as_mut()
                    && let Some(deadline) = wait.deadline.as_mut()
                {
                    *deadline = *deadline + now.saturating_since(at);
                }
                self.transition(
                    now,
                    to,
                    &by.name,
                    ticket,
                    format!("resumed by {}: {}", by.name, by.reason),
                );
            }
            Command::Promote {
                full,
                override_gates,
                ..
            } => {
                self.skip_bake = true;
                self.full_promote |= full;
                self.gates_overridden |= override_gates;
                let what = match (full, override_gates) {
                    (true, true) => "promote to 100% with gates overridden",
                    (true, false) => "promote to 100%",
                    (false, true) => "promote to the next step with gates overridden",
                    (false, false) => "promote to the next step",
                };
                self.notify(
                    now,
                    &by.name,
                    ticket,
                    format!("{what} by {}: {}", by.name, by.reason),
                );
            }
            Command::Abort { .. } => {
                self.end_with_traffic_to_baseline(
                    now,
                    Phase::Aborted,
                    &by.name,
                    ticket,
                    format!("aborted by {}: {}", by.name, by.reason),
                );
            }
            Command::Approve { role, .. } => {
                let Some(wait) = self.approval.as_mut() else {
                    return;
                };
                wait.given.insert(
                    role.clone(),
                    Approved {
                        actor: by.name.clone(),
                        at: now,
                        reason: by.reason.clone(),
                        ticket: ticket.clone(),
                    },
                );
                self.notify(
                    now,
                    &by.name,
                    ticket,
                    format!("approved as `{role}` by {}: {}", by.name, by.reason),
                );
            }
        }
    }

    /// Triggers are armed in every non-terminal phase.
    fn act_on_readings(&mut self, now: Timestamp) {
        let newly_shown: Vec<String> = self
            .policy
            .gates
            .iter()
            .enumerate()
            .filter(|(i, gate)| self.gate_shown_now(*i) && !self.gates_shown.contains(&gate.name))
            .map(|(_, gate)| gate.name.clone())
            .collect();
        for name in newly_shown {
            self.notify(now, ENGINE, None, format!("gate `{name}` shown"));
            self.gates_shown.insert(name);
        }
        // A pause trigger (or the split guard) counts as handled only once it
        // has paused the rollout: one that fires while an operator already
        // holds it pauses it again after `resume`.
        let can_pause = matches!(self.phase, Phase::Progressing | Phase::AwaitingApproval);
        let mut pause_reason = None;
        let mut pausing = Vec::new();
        for i in 0..self.policy.triggers.len() {
            let trigger = &self.policy.triggers[i];
            // Read the reading in place: only a rollback takes its evidence.
            let reading = self.latest.triggers.get(i);
            if reading.is_none_or(|r| r.verdict != TriggerVerdict::Fired) {
                self.pause_triggers_acted.remove(&trigger.name);
                continue;
            }
            match trigger.action {
                Action::Rollback => {
                    if self.phase != Phase::RollingBack {
                        let name = trigger.name.clone();
                        let evidence = reading.and_then(|r| r.evidence.clone());
                        self.rollback(now, name, evidence);
                    }
                    return;
                }
                Action::Pause => {
                    if can_pause && !self.pause_triggers_acted.contains(&trigger.name) {
                        pausing.push(trigger.name.clone());
                        pause_reason.get_or_insert(format!("trigger `{}` fired", trigger.name));
                    }
                }
            }
        }
        if pause_reason.is_none()
            && can_pause
            && self.policy.analysis.sample_ratio_check
            && !self.srm_acted
            && let Some(_evidence) = &self.latest.sample_ratio_mismatch
        {
            self.srm_acted = true;
            pause_reason = Some(format!(
                "sample ratio mismatch: the observed split differs from the set weight {}% (triggers stay armed)",
                self.weight.percent()
            ));
        }
        self.pause_triggers_acted.extend(pausing);
        if let Some(reason) = pause_reason {
            self.pause(now, ENGINE, None, reason);
        }
    }

    fn rollback(&mut self, now: Timestamp, trigger: String, evidence: Option<A::Evidence>) {
        self.fired = Some((trigger.clone(), evidence.clone()));
        self.approval = None;
        self.pending_weight = Some(Weight::ZERO);
        let reason = format!("trigger `{trigger}` fired");
        self.transition(now, Phase::RollingBack, ENGINE, None, reason);
        self.effects.push_back(Effect::Rollback {
            trigger: trigger.clone(),
            evidence: evidence.clone(),
            dry_run: self.spec.dry_run,
        });
        self.effects.push_back(Effect::OpenIncident {
            trigger,
            severity: self.policy.incident.severity.clone(),
            notify: self.policy.incident.notify.clone(),
            evidence,
            at: now,
        });
        self.effects.push_back(Effect::Checkpoint);
    }

    fn pause(&mut self, now: Timestamp, actor: &str, ticket: Option<String>, reason: String) {
        if !matches!(self.phase, Phase::Progressing | Phase::AwaitingApproval) {
            return;
        }
        self.paused_at = Some(now);
        self.resume_to = Some(self.phase);
        self.transition(now, Phase::Paused, actor, ticket, reason);
    }

    /// Abort, conclude or give up: canary weight to 0 at once, terminal.
    fn end_with_traffic_to_baseline(
        &mut self,
        now: Timestamp,
        to: Phase,
        actor: &str,
        ticket: Option<String>,
        reason: String,
    ) {
        self.approval = None;
        // A weight asked for but not confirmed may be applied any moment:
        // send the router back to 0 for it too.
        let in_flight = self.pending_weight.take().is_some_and(|w| w > Weight::ZERO);
        self.transition(now, to, actor, ticket, reason);
        if self.weight != Weight::ZERO || in_flight {
            // Pending until the router confirms: the shell retries it (also
            // after a restart) although the rollout has already ended.
            self.pending_weight = Some(Weight::ZERO);
            self.effects.push_back(Effect::SetWeight {
                weight: Weight::ZERO,
                dry_run: self.spec.dry_run,
            });
        }
    }

    /// Time-driven endings and step progression.
    fn evaluate(&mut self, now: Timestamp) {
        // A rollback under way outranks every deadline: the evidence of harm
        // decides the outcome, even when it arrives with the data that also
        // crosses the experiment's end.
        if self.phase.is_terminal() || self.phase == Phase::RollingBack {
            return;
        }
        if let Some(end) = self.experiment_end()
            && now >= end
        {
            let reason = format!(
                "experiment ended after {}",
                format_duration(now.saturating_since(self.started_at))
            );
            self.end_with_traffic_to_baseline(now, Phase::Concluded, ENGINE, None, reason);
            return;
        }
        if let Some(wait) = &self.approval
            && let Some(deadline) = wait.deadline
            && now >= deadline
            && self.phase == Phase::AwaitingApproval
        {
            let missing = self.missing_roles().join(", ");
            let on_timeout = match self.policy.steps.get(wait.step) {
                Some(Step::Approval(a)) => a.on_timeout,
                _ => OnTimeout::Rollback,
            };
            match on_timeout {
                OnTimeout::Rollback => {
                    let reason = format!("approval timed out waiting for {missing}");
                    self.end_with_traffic_to_baseline(
                        now,
                        Phase::Inconclusive,
                        ENGINE,
                        None,
                        reason,
                    );
                    return;
                }
                OnTimeout::Pause => {
                    if let Some(w) = self.approval.as_mut() {
                        w.deadline = None;
                    }
                    self.pause(
                        now,
                        ENGINE,
                        None,
                        format!("approval timed out waiting for {missing}"),
                    );
                    return;
                }
            }
        }
        if self.spec.change_type != ChangeType::Experiment
            && self.active >= self.policy.analysis.max_duration
        {
            let reason = format!(
                "not finished within maxDuration {}: {}",
                format_duration(self.policy.analysis.max_duration),
                self.waiting_for(now)
            );
            self.end_with_traffic_to_baseline(now, Phase::Inconclusive, ENGINE, None, reason);
            return;
        }
        if self.phase == Phase::AwaitingApproval && self.missing_roles().is_empty() {
            self.approval = None;
            // `promote` skips the current bake; given during an approval
            // there was none, and the bake after the approval still applies.
            self.skip_bake = false;
            self.step += 1;
            self.transition(
                now,
                Phase::Progressing,
                ENGINE,
                None,
                "every approval given".into(),
            );
        }
        if self.phase == Phase::Progressing {
            self.progress(now);
        }
    }

    fn missing_roles(&self) -> Vec<String> {
        let Some(wait) = &self.approval else {
            return Vec::new();
        };
        match self.policy.steps.get(wait.step) {
            Some(Step::Approval(a)) => a
                .roles
                .iter()
                .filter(|r| !wait.given.contains_key(*r))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Walk the steps as far as time, data and gates allow.
    fn progress(&mut self, now: Timestamp) {
        // Bounded: each pass either advances `step` or returns.
        for _ in 0..=self.policy.steps.len() {
            if self.pending_weight.is_some() || self.fresh_data_after.is_some() {
                return;
            }
            let bypass = self.bypass_active(now);
            let Some(step) = self.policy.steps.get(self.step).cloned() else {
                self.try_promote(now, bypass);
                return;
            };
            match step {
                Step::SetWeight(w) => {
                    let target = if self.full_promote && !self.is_experiment() {
                        Weight::FULL
                    } else {
                        self.cap(w)
                    };
                    if target > self.weight && self.weight > Weight::ZERO && !self.step_has_data() {
                        return;
                    }
                    if !bypass && !self.gates_allow(target) {
                        self.announce_lost_gates(now, target);
                        return;
                    }
                    self.step += 1;
                    self.bake_elapsed = Duration::ZERO;
                    self.skip_bake = false;
                    if target != self.weight {
                        self.request_weight(now, target);
                        return;
                    }
                }
                Step::Bake(d) => {
                    if bypass || self.skip_bake || self.full_promote || self.bake_elapsed >= d {
                        self.step += 1;
                        self.bake_elapsed = Duration::ZERO;
                        self.skip_bake = false;
                    } else {
                        return;
                    }
                }
                Step::Approval(a) => {
                    if bypass {
                        self.step += 1;
                        continue;
                    }
                    let deadline = a.timeout.map(|t| now + t);
                    self.approval = Some(ApprovalWait {
                        step: self.step,
                        since: now,
                        deadline,
                        given: BTreeMap::new(),
                    });
                    let reason = format!("waiting for approval by {}", a.roles.join(", "));
                    self.transition(now, Phase::AwaitingApproval, ENGINE, None, reason);
                    self.effects.push_back(Effect::AwaitApproval {
                        step: self.step,
                        roles: a.roles.clone(),
                        distinct: a.distinct,
                        deadline,
                    });
                    return;
                }
            }
        }
    }

    fn is_experiment(&self) -> bool {
        self.spec.change_type == ChangeType::Experiment
    }

    /// Experiments never go above their experiment weight.
    fn cap(&self, w: Weight) -> Weight {
        match (&self.policy.experiment, self.is_experiment()) {
            (Some(e), true) => w.min(e.weight),
            _ => w,
        }
    }

    /// The current weight step has `minSamples` canary requests, and fresh data
    /// since any gap.
    fn step_has_data(&self) -> bool {
        self.fresh_data_after.is_none()
            && self.latest.canary_requests_in_step >= self.policy.analysis.min_samples
    }

    /// Whether gate `i` (policy order) reads shown in the latest
    /// assessment.
    fn gate_shown_now(&self, i: usize) -> bool {
        self.latest.gates.get(i).is_some_and(|r| r.shown)
    }

    /// A step to `target` is held by its gates: each gate it needs that was
    /// announced shown and does not read shown now is announced lost.
    fn announce_lost_gates(&mut self, now: Timestamp, target: Weight) {
        let lost: Vec<String> = self
            .policy
            .gates
            .iter()
            .enumerate()
            .filter(|(i, g)| {
                g.before <= target && !self.gate_shown_now(*i) && self.gates_shown.contains(&g.name)
            })
            .map(|(_, g)| g.name.clone())
            .collect();
        for name in lost {
            self.notify(
                now,
                ENGINE,
                None,
                format!(
                    "gate `{name}` no longer shown: the step to {}% waits until it is shown again",
                    target.percent()
                ),
            );
            self.gates_shown.remove(&name);
        }
    }

    /// Every gate that `target` needs reads shown *now*: gates are checked
    /// again each time they are used, never latched, so a canary that
    /// degrades after showing one does not advance on it.
    fn gates_allow(&self, target: Weight) -> bool {
        self.gates_overridden
            || self
                .policy
                .gates
                .iter()
                .enumerate()
                .filter(|(_, g)| g.before <= target)
                .all(|(i, _)| self.gate_shown_now(i))
    }

    fn try_promote(&mut self, now: Timestamp, bypass: bool) {
        if self.is_experiment() {
            return; // an experiment ends at its deadline, never promotes
        }
        // An emergency bypass skips bakes, approvals and gates, not data:
        // each weight still serves `minSamples` canary requests first, so the
        // armed triggers see the canary before it takes everything.
        if self.weight < Weight::FULL && !self.step_has_data() {
            return;
        }
        if !bypass && !self.gates_allow(Weight::FULL) {
            self.announce_lost_gates(now, Weight::FULL);
            return;
        }
        let reason = if self.gates_overridden {
            "every step done (gates overridden by an operator)".to_owned()
        } else {
            "every step done".to_owned()
        };
        self.transition(now, Phase::Promoted, ENGINE, None, reason);
        self.effects.push_back(Effect::Promote {
            dry_run: self.spec.dry_run,
        });
    }

    fn request_weight(&mut self, now: Timestamp, weight: Weight) {
        self.pending_weight = Some(weight);
        self.notify(
            now,
            ENGINE,
            None,
            format!("setting canary weight to {}%", weight.percent()),
        );
        self.effects.push_back(Effect::SetWeight {
            weight,
            dry_run: self.spec.dry_run,
        });
    }

    /// What the rollout is waiting for, in words (for inconclusive endings
    /// and status).
    pub fn waiting_for(&self, now: Timestamp) -> String {
        if self.pending_weight.is_some() {
            return "waiting for the router".into();
        }
        match self.policy.steps.get(self.step) {
            Some(Step::Bake(d)) => format!(
                "baking, {} of {}",
                format_duration(self.bake_elapsed),
                format_duration(*d)
            ),
            Some(Step::Approval(_)) => format!(
                "waiting for approval by {}",
                self.missing_roles().join(", ")
            ),
            Some(Step::SetWeight(w)) => self.held_because(self.cap(*w), now),
            None => self.held_because(Weight::FULL, now),
        }
    }

    fn held_because(&self, target: Weight, _now: Timestamp) -> String {
        let missing: Vec<&str> = self
            .policy
            .gates
            .iter()
            .enumerate()
            .filter(|(i, g)| g.before <= target && !self.gate_shown_now(*i))
            .map(|(_, g)| g.name.as_str())
            .collect();
        if !missing.is_empty() && !self.gates_overridden {
            return format!("gate {} not shown", missing.join(", "));
        }
        if self.fresh_data_after.is_some() {
            return "waiting for fresh data after a gap".into();
        }
        format!(
            "{} of {} canary requests in this step",
            self.latest.canary_requests_in_step, self.policy.analysis.min_samples
        )
    }

    fn transition(
        &mut self,
        now: Timestamp,
        to: Phase,
        actor: &str,
        ticket: Option<String>,
        reason: String,
    ) {
        let from = self.phase;
        self.phase = to;
        self.reason = reason.clone();
        let message = format!("{} -> {}: {reason}", from.as_str(), to.as_str());
        self.notify(now, actor, ticket, message);
        self.effects.push_back(Effect::Checkpoint);
    }

    fn notify(&mut self, now: Timestamp, actor: &str, ticket: Option<String>, message: String) {
        self.effects.push_back(Effect::Notify(Event {
            at: now,
            phase: self.phase,
            step: self.step,
            weight: self.weight,
            actor: actor.to_owned(),
            ticket,
            message,
        }));
    }
}
