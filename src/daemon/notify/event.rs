//! Which engine steps are which lifecycle events, and the document each
//! event becomes: the generic webhook's body, and what the Slack and Teams
//! formats render. A document is built once, when its step is committed,
//! and stored with it; it says everything in words (evidence through
//! `monitor::words`) so a receiver needs nothing else.
//!
//! Events are read off one step: the phase before it, its input and its
//! effects. A transition (`Effect::Notify` whose phase differs from the
//! one before) into `progressing` from `pending` is *started*, out of
//! `paused` is *resumed*, into `paused`, `promoted`, `inconclusive`,
//! `aborted` or `concluded` is that; `Effect::AwaitApproval` (and an
//! approval that leaves roles still awaited) is *awaiting approval*;
//! `Effect::Rollback` is *rolled back*, with its trigger's evidence; a
//! `RouterAck` carrying an error is *router failure*. The source's edges
//! come from the driver, which alone sees a pull fail ([`source_event`]).

use serde::{Deserialize, Serialize};

use crate::engine::{Command, Effect, Input, Phase, Rollout};
use crate::monitor::words::trigger_evidence;
use crate::monitor::{Monitor, TriggerEvidence};
use crate::stats::IntervalSnapshot;
use crate::time::Timestamp;
use crate::wire::rfc3339;

/// A lifecycle event's kind, as routes name it and documents carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Started,
    AwaitingApproval,
    Paused,
    Resumed,
    Promoted,
    RolledBack,
    Inconclusive,
    Aborted,
    /// An experiment ended (its time ran out), traffic back to baseline.
    Concluded,
    RouterFailure,
    SourceFailing,
    SourceRecovered,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Started,
        EventKind::AwaitingApproval,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::Promoted,
        EventKind::RolledBack,
        EventKind::Inconclusive,
        EventKind::Aborted,
        EventKind::Concluded,
        EventKind::RouterFailure,
        EventKind::SourceFailing,
        EventKind::SourceRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::AwaitingApproval => "awaiting-approval",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled-back",
            EventKind::Inconclusive => "inconclusive",
            EventKind::Aborted => "aborted",
            EventKind::Concluded => "concluded",
            EventKind::RouterFailure => "router-failure",
            EventKind::SourceFailing => "source-failing",
            EventKind::SourceRecovered => "source-recovered",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event as receivers get it (the generic webhook's body as is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventDocument {
    /// `canaryd.event/v1`: the shape of this document.
    pub schema: String,
    pub kind: EventKind,
    /// When it happened (RFC 3339).
    pub at: String,
    pub rollout_id: String,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub policy: String,
    /// The rollout's phase after the event.
    pub phase: Phase,
    pub step: usize,
    /// The canary's share of traffic, in percent, at the event.
    pub weight: u8,
    pub dry_run: bool,
    /// Who caused it: an actor, or `canaryd` for the daemon itself.
    pub actor: String,
    pub ticket: Option<String>,
    /// One line: what happened to what.
    pub title: String,
    /// Why, in sentences.
    pub text: String,
    /// The evidence or the error behind it, one sentence each.
    pub details: Vec<String>,
    /// `awaiting-approval`: who is still awaited, and how to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalWanted>,
    /// `rolled-back`: the trigger that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `rolled-back`: the trigger's evidence as the engine holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
    /// `router-failure`, `source-failing`: the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The approvals an `awaiting-approval` event still waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalWanted {
    /// Roles not yet approved.
    pub roles: Vec<String>,
    /// Every role by a different actor (and not the one who started it).
    pub distinct: bool,
    /// Past it, the rollout ends (RFC 3339); `None`: it waits.
    pub deadline: Option<String>,
    /// The exact command that approves, one per role still awaited.
    pub commands: Vec<String>,
}

pub const SCHEMA: &str = "canaryd.event/v1";

/// The lifecycle events of one committed step: `before` is the rollout's
/// phase before it handled `input`, `rollout` its state after.
pub fn step_events(
    before: Phase,
    input: &Input<IntervalSnapshot>,
    effects: &[Effect<TriggerEvidence>],
    rollout: &Rollout<Monitor>,
    at: Timestamp,
) -> Vec<EventDocument> {
    let mut out = Vec::new();
    let mut phase = before;
    let mut approval_asked = false;
    for effect in effects {
        match effect {
            Effect::Notify(event) if event.phase != phase => {
                let from = phase;
                phase = event.phase;
                let kind = match (from, event.phase) {
                    (Phase::Pending, Phase::Progressing) => Some(EventKind::Started),
                    (Phase::Paused, Phase::Progressing | Phase::AwaitingApproval) => {
                        Some(EventKind::Resumed)
                    }
                    (_, Phase::Paused) => Some(EventKind::Paused),
                    (_, Phase::Promoted) => Some(EventKind::Promoted),
                    (_, Phase::Inconclusive) => Some(EventKind::Inconclusive),
                    (_, Phase::Aborted) => Some(EventKind::Aborted),
                    (_, Phase::Concluded) => Some(EventKind::Concluded),
                    // `Effect::AwaitApproval` and `Effect::Rollback` say
                    // more; rolled-back (traffic back) follows the latter.
                    _ => None,
                };
                if let Some(kind) = kind {
                    let mut doc = document(kind, rollout, at, &event.actor, event.ticket.clone());
                    doc.phase = event.phase;
                    doc.step = event.step;
                    doc.weight = event.weight.percent();
                    // The engine writes `from -> to: why`; people read the why.
                    let why = event
                        .message
                        .split_once(": ")
                        .map_or(event.message.as_str(), |(_, why)| why);
                    doc.text = sentence(why);
                    out.push(doc);
                }
            }
            Effect::AwaitApproval {
                step,
                roles,
                distinct,
                deadline,
            } => {
                approval_asked = true;
                let mut doc = document(EventKind::AwaitingApproval, rollout, at, "canaryd", None);
                doc.step = *step;
                doc.approval = Some(wanted(rollout, roles, *distinct, *deadline));
                doc.text = awaiting_text(&doc);
                out.push(doc);
            }
            Effect::Rollback {
                trigger,
                evidence,
                dry_run,
            } => {
                let mut doc = document(EventKind::RolledBack, rollout, at, "canaryd", None);
                doc.trigger = Some(trigger.clone());
                doc.evidence = evidence.as_ref().and_then(|e| serde_json::to_value(e).ok());
                let fired = rollout
                    .policy()
                    .triggers
                    .iter()
                    .find(|t| &t.name == trigger);
                match fired {
                    Some(t) => {
                        let words = trigger_evidence(t, evidence.as_ref());
                        doc.text = words.headline;
                        doc.details = words.details;
                    }
                    None => doc.text = sentence(rollout.reason()),
                }
                if *dry_run {
                    doc.details.push(
                        "Dry run: no traffic was moved; this is what would have happened.".into(),
                    );
                } else {
                    doc.details
                        .push("All traffic is being sent back to the baseline.".into());
                }
                out.push(doc);
            }
            _ => {}
        }
    }
    // An approval that leaves roles still awaited.
    if let Input::Command {
        command: Command::Approve { by, role },
    } = input
        && !approval_asked
        && rollout.phase() == Phase::AwaitingApproval
        && let Some(wait) = rollout.approval()
        && let Some(crate::policy::Step::Approval(step)) = rollout.policy().steps.get(wait.step)
    {
        let mut doc = document(
            EventKind::AwaitingApproval,
            rollout,
            at,
            &by.name,
            by.ticket.clone(),
        );
        doc.step = wait.step;
        doc.approval = Some(wanted(rollout, &step.roles, step.distinct, wait.deadline));
        doc.text = format!("{} approved as `{role}`. {}", by.name, awaiting_text(&doc));
        out.push(doc);
    }
    if let Input::RouterAck {
        weight,
        error: Some(error),
    } = input
    {
        let mut doc = document(EventKind::RouterFailure, rollout, at, "canaryd", None);
        doc.title = format!(
            "{}: the router could not set the canary to {}%",
            doc.service,
            weight.percent()
        );
        doc.text = format!(
            "The router failed to set the canary's weight to {}%; canaryd keeps retrying.",
            weight.percent()
        );
        doc.error = Some(error.clone());
        doc.details = vec![format!("Router error: {error}")];
        out.push(doc);
    }
    out
}

/// The metric source's edge for `rollout`: failing (with the error) or
/// recovered.
pub fn source_event(
    kind: EventKind,
    rollout: &Rollout<Monitor>,
    error: Option<&str>,
    at: Timestamp,
) -> EventDocument {
    let mut doc = document(kind, rollout, at, "canaryd", None);
    match error {
        Some(e) => {
            doc.text = "The metric source failed: no data for this interval; the policy's `noData` rule decides what a long gap means.".into();
            doc.error = Some(e.to_string());
            doc.details = vec![format!("Source error: {e}")];
        }
        None => doc.text = "The metric source answers again; analysis continues.".into(),
    }
    doc
}

fn document(
    kind: EventKind,
    rollout: &Rollout<Monitor>,
    at: Timestamp,
    actor: &str,
    ticket: Option<String>,
) -> EventDocument {
    let spec = rollout.spec();
    let weight = rollout.weight().percent();
    let what = match kind {
        EventKind::Started => format!(
            "rollout of {} started (baseline {})",
            spec.canary, spec.baseline
        ),
        EventKind::AwaitingApproval => format!("{} awaits approval at {weight}%", spec.canary),
        EventKind::Paused => format!("{} paused at {weight}%", spec.canary),
        EventKind::Resumed => format!("{} resumed at {weight}%", spec.canary),
        EventKind::Promoted => format!("{} promoted", spec.canary),
        EventKind::RolledBack => format!("{} rolled back to {}", spec.canary, spec.baseline),
        EventKind::Inconclusive => {
            format!("{} inconclusive, back to {}", spec.canary, spec.baseline)
        }
        EventKind::Aborted => format!("{} aborted, back to {}", spec.canary, spec.baseline),
        EventKind::Concluded => format!("experiment with {} concluded", spec.canary),
        EventKind::RouterFailure => "router failure".to_string(),
        EventKind::SourceFailing => "metric source failing".to_string(),
        EventKind::SourceRecovered => "metric source recovered".to_string(),
    };
    EventDocument {
        schema: SCHEMA.into(),
        kind,
        at: rfc3339(at),
        rollout_id: spec.id.clone(),
        service: spec.service.clone(),
        baseline: spec.baseline.clone(),
        canary: spec.canary.clone(),
        policy: rollout.policy().name.clone(),
        phase: rollout.phase(),
        step: rollout.step(),
        weight,
        dry_run: spec.dry_run,
        actor: actor.to_string(),
        ticket: ticket.or_else(|| spec.ticket.clone()),
        title: format!("{}: {what}", spec.service),
        text: String::new(),
        details: Vec::new(),
        approval: None,
        trigger: None,
        evidence: None,
        error: None,
    }
}

/// Roles of the approval step not yet approved, with the commands.
fn wanted(
    rollout: &Rollout<Monitor>,
    roles: &[String],
    distinct: bool,
    deadline: Option<Timestamp>,
) -> ApprovalWanted {
    let given = rollout.approval().map(|w| &w.given);
    let awaited: Vec<String> = roles
        .iter()
        .filter(|r| given.is_none_or(|g| !g.contains_key(*r)))
        .cloned()
        .collect();
    let id = &rollout.spec().id;
    ApprovalWanted {
        commands: awaited
            .iter()
            .map(|role| format!("canaryd rollout approve {id} --role {role} --reason \"<why>\""))
            .collect(),
        roles: awaited,
        distinct,
        deadline: deadline.map(rfc3339),
    }
}

fn awaiting_text(doc: &EventDocument) -> String {
    let Some(a) = &doc.approval else {
        return String::new();
    };
    let roles: Vec<String> = a.roles.iter().map(|r| format!("`{r}`")).collect();
    let mut text = format!(
        "The rollout waits at {}% for approval by {}",
        doc.weight,
        roles.join(" and ")
    );
    if a.distinct {
        text.push_str(", each by a different person");
    }
    match &a.deadline {
        Some(d) => text.push_str(&format!("; it ends if not approved by {d}.")),
        None => text.push('.'),
    }
    text
}

/// A message as a sentence: capitalized, ending with a period.
fn sentence(message: &str) -> String {
    let mut chars = message.trim().chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Actor;
    use crate::policy::{Weight, parse_policy};

    const POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: events
spec:
  analysis: { interval: 1s, alpha: 0.05, minSamples: 20, sampleRatioCheck: false }
  steps:
    - setWeight: 10
    - approval: { roles: [risk, sre], distinct: false }
    - setWeight: 50
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
"#;

    /// A rollout of this policy driven step by step, each step's events
    /// read as the driver reads them.
    struct Run {
        rollout: Rollout<Monitor>,
        now: Timestamp,
    }

    impl Run {
        fn new() -> Run {
            let policy = parse_policy("events.yaml", POLICY.as_bytes()).unwrap();
            let monitor = Monitor::new(&policy).unwrap();
            let spec = crate::daemon::tests::web_spec();
            let now = Timestamp::from_millis(1_000_000);
            let rollout = Rollout::new(spec, policy, monitor, now).unwrap();
            Run { rollout, now }
        }

        /// Handle `input` (and the router's acknowledgements it asks for):
        /// every step's events, as `kind: text`.
        fn step(&mut self, input: Input<IntervalSnapshot>) -> Vec<EventDocument> {
            let mut out = Vec::new();
            let mut queue = vec![input];
            while let Some(input) = queue.pop() {
                self.now = self.now + std::time::Duration::from_secs(1);
                let before = self.rollout.phase();
                self.rollout.handle(self.now, input.clone()).unwrap();
                let mut effects = Vec::new();
                while let Some(e) = self.rollout.poll_effect() {
                    if let Effect::SetWeight { weight, .. } = &e {
                        queue.push(Input::RouterAck {
                            weight: *weight,
                            error: None,
                        });
                    }
                    if let Effect::Rollback { .. } = &e {
                        queue.push(Input::RouterAck {
                            weight: Weight::ZERO,
                            error: None,
                        });
                    }
                    effects.push(e);
                }
                out.extend(step_events(
                    before,
                    &input,
                    &effects,
                    &self.rollout,
                    self.now,
                ));
            }
            out
        }

        fn command(&mut self, command: Command) -> Vec<EventDocument> {
            self.step(Input::Command { command })
        }
    }

    fn by(name: &str) -> Actor {
        Actor {
            name: name.into(),
            reason: "because".into(),
            ticket: None,
        }
    }

    fn kinds(docs: &[EventDocument]) -> Vec<&str> {
        docs.iter().map(|d| d.kind.as_str()).collect()
    }

    #[test]
    fn a_rollouts_steps_read_as_its_lifecycle_events() {
        let mut run = Run::new();
        let docs = run.step(Input::Tick);
        assert_eq!(kinds(&docs), ["started", "awaiting-approval"]);
        let wanted = docs[1].approval.as_ref().unwrap();
        assert_eq!(wanted.roles, ["risk", "sre"]);
        assert_eq!(
            wanted.commands[0],
            r#"canaryd rollout approve r-1 --role risk --reason "<why>""#
        );
        assert_eq!(
            docs[1].text,
            "The rollout waits at 10% for approval by `risk` and `sre`."
        );
        assert_eq!(
            docs[0].ticket.as_deref(),
            Some("CHG-1"),
            "the rollout's ticket"
        );

        // One of two approvals: still awaiting the other.
        let docs = run.command(Command::Approve {
            by: by("rita"),
            role: "risk".into(),
        });
        assert_eq!(kinds(&docs), ["awaiting-approval"]);
        assert_eq!(docs[0].approval.as_ref().unwrap().roles, ["sre"]);
        assert_eq!(
            docs[0].text,
            "rita approved as `risk`. The rollout waits at 10% for approval by `sre`."
        );
        assert!(
            kinds(&run.command(Command::Approve {
                by: by("sam"),
                role: "sre".into()
            }))
            .is_empty()
        );

        let docs = run.command(Command::Pause { by: by("ops") });
        assert_eq!(kinds(&docs), ["paused"]);
        assert_eq!((docs[0].actor.as_str(), docs[0].weight), ("ops", 10));
        assert_eq!(
            kinds(&run.command(Command::Resume { by: by("ops") })),
            ["resumed"]
        );

        // The router fails a weight: one router-failure event with its error.
        let docs = run.step(Input::RouterAck {
            weight: Weight::new(50).unwrap(),
            error: Some("connection refused".into()),
        });
        assert_eq!(kinds(&docs), ["router-failure"]);
        assert_eq!(docs[0].error.as_deref(), Some("connection refused"));
        assert_eq!(
            docs[0].title,
            "web: the router could not set the canary to 50%"
        );

        // Bad data: rolled back, with the evidence in words.
        let mut snapshot =
            IntervalSnapshot::new(run.now, run.now + std::time::Duration::from_secs(1));
        snapshot.canary.add("requests", 500);
        snapshot.canary.add("errors", 150);
        snapshot.baseline.add("requests", 500);
        let docs = run.step(Input::Data { snapshot });
        assert_eq!(kinds(&docs), ["rolled-back"]);
        let d = &docs[0];
        assert_eq!(d.trigger.as_deref(), Some("error-rate"));
        assert!(
            d.text.starts_with(
                "Trigger `error-rate` fired: the canary rate of errors/requests is 30% ("
            ),
            "{}",
            d.text
        );
        assert!(d.text.ends_with("tolerance: at most 2%."), "{}", d.text);
        assert!(
            d.details
                .iter()
                .any(|x| x == "Counts: canary 150 of 500 (30%)."),
            "{:?}",
            d.details
        );
        assert_eq!(d.evidence.as_ref().unwrap()["kind"], "statistical");
    }

    #[test]
    fn an_abort_is_one_aborted_event() {
        let mut run = Run::new();
        run.step(Input::Tick);
        let docs = run.command(Command::Abort { by: by("ops") });
        assert_eq!(kinds(&docs), ["aborted"]);
        assert_eq!(docs[0].title, "web: v2 aborted, back to v1");
    }

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(EventKind::parse("rolledBack"), None);
    }

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(sentence("resumed by ops"), "Resumed by ops.");
        assert_eq!(sentence("done."), "Done.");
        assert_eq!(sentence("  "), "");
    }
}
