//! The engine's vocabulary: phases, inputs, commands and effects. All plain
//! data, serde, so the daemon can journal every input and effect and the
//! simulator can count them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::policy::{ChangeType, Notify, Weight};
use crate::time::Timestamp;

/// A rollout's state (PRODUCT.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    AwaitingApproval,
    RollingBack,
    Promoted,
    RolledBack,
    Aborted,
    Inconclusive,
    Concluded,
}

impl Phase {
    /// Every phase, in the order they are declared (and listed).
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::AwaitingApproval,
        Phase::RollingBack,
        Phase::Promoted,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Inconclusive,
        Phase::Concluded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Promoted
                | Phase::RolledBack
                | Phase::Aborted
                | Phase::Inconclusive
                | Phase::Concluded
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::AwaitingApproval => "awaiting-approval",
            Phase::RollingBack => "rolling-back",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
            Phase::Inconclusive => "inconclusive",
            Phase::Concluded => "concluded",
        }
    }
}

/// What a rollout is asked to do, fixed at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub id: String,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    /// From `--change-type`, else the policy's `spec.changeType`.
    pub change_type: ChangeType,
    /// Decide everything, move no traffic.
    pub dry_run: bool,
    /// Who started it; with `distinct` approvals, this actor may not approve.
    pub started_by: String,
    pub reason: Option<String>,
    pub ticket: Option<String>,
}

/// Who asked, why, and under which ticket: recorded with every command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub reason: String,
    pub ticket: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    Pause {
        by: Actor,
    },
    Resume {
        by: Actor,
    },
    /// Skip the rest of the current bake (`full`: go straight to 100%).
    /// `override_gates` (admin only, checked by the shell) skips gates.
    Promote {
        by: Actor,
        full: bool,
        override_gates: bool,
    },
    Abort {
        by: Actor,
    },
    Approve {
        by: Actor,
        role: String,
    },
}

impl Command {
    pub fn actor(&self) -> &Actor {
        match self {
            Command::Pause { by }
            | Command::Resume { by }
            | Command::Promote { by, .. }
            | Command::Abort { by }
            | Command::Approve { by, .. } => by,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Promote { .. } => "promote",
            Command::Abort { .. } => "abort",
            Command::Approve { .. } => "approve",
        }
    }
}

/// Everything that can happen to a rollout. Time comes with each call to
/// `Rollout::handle`, never from a clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "S: Serialize + DeserializeOwned")]
#[serde(rename_all = "kebab-case", tag = "input")]
pub enum Input<S> {
    /// Time has passed (timers: bakes, approval timeouts, no-data, deadlines).
    Tick,
    /// One analysis interval of data for both arms.
    Data {
        snapshot: S,
    },
    Command {
        command: Command,
    },
    /// The router applied (or failed to apply) a weight the engine asked for.
    RouterAck {
        weight: Weight,
        error: Option<String>,
    },
}

/// A command the engine refused; it changed nothing. An `Invalid` one names
/// the field of the command or rollout at fault (`ticket`, `role`, ...),
/// which the API returns as the error's `field`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{}", self.describe())]
pub struct Rejected {
    pub kind: RejectKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub message: String,
}

impl Rejected {
    /// The command does not apply in the current state.
    pub fn conflict(message: impl Into<String>) -> Rejected {
        Rejected {
            kind: RejectKind::Conflict,
            field: String::new(),
            message: message.into(),
        }
    }

    /// The contract refuses the command: `field` is wrong or missing.
    pub fn invalid(field: &str, message: impl Into<String>) -> Rejected {
        Rejected {
            kind: RejectKind::Invalid,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// `field: message`, or the message alone.
    fn describe(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectKind {
    /// The command does not apply in the rollout's current state (HTTP 409).
    Conflict,
    /// The command is refused by the contract (HTTP 422).
    Invalid,
}

/// Decisions as data. The daemon persists each before carrying it out; the
/// simulator applies it to its model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
#[serde(rename_all = "kebab-case", tag = "effect")]
pub enum Effect<E> {
    /// Move the router to this canary weight, then report a `RouterAck`.
    /// With `dry_run`, record it and acknowledge without moving anything.
    SetWeight { weight: Weight, dry_run: bool },
    /// Ask for approvals; the rollout waits in `awaiting-approval`.
    AwaitApproval {
        step: usize,
        roles: Vec<String>,
        distinct: bool,
        deadline: Option<Timestamp>,
    },
    /// The rollout is promoted: the canary takes all traffic.
    Promote { dry_run: bool },
    /// A trigger fired: send all traffic to baseline, then report a
    /// `RouterAck` for weight 0.
    Rollback {
        trigger: String,
        evidence: Option<E>,
        dry_run: bool,
    },
    /// Record an incident with the evidence and notify.
    OpenIncident {
        trigger: String,
        severity: String,
        notify: Vec<Notify>,
        evidence: Option<E>,
        at: Timestamp,
    },
    /// An emergency change opened a post-incident review.
    OpenReview {
        reason: String,
        ticket: String,
        at: Timestamp,
    },
    /// Something worth telling people and the audit log.
    Notify(Event),
    /// A consistent point to save the engine's state.
    Checkpoint,
}

/// One entry of the rollout's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Timestamp,
    pub phase: Phase,
    pub step: usize,
    pub weight: Weight,
    /// Who caused it: an actor's name, or `canaryd` for the engine itself.
    pub actor: String,
    pub ticket: Option<String>,
    pub message: String,
}
