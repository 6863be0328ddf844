//! One rollout's state machine: time, data and commands in, effects out.
//! Pure: it never sleeps, reads a clock, or does I/O. The daemon persists each
//! effect before acting on it; the simulator applies effects to its model.
//!
//! - `types.rs`: phases, inputs, commands, effects, events.
//! - `analysis.rs`: what the state machine asks of the statistics.
//! - `rollout.rs`: the state machine itself.
//!
//! It knows no statistics and no policy metric: `crate::monitor` is the
//! `Analysis` a policy drives.

pub mod analysis;
pub mod rollout;
pub mod types;

pub use analysis::{Analysis, Assessment, GateReading, TriggerReading, TriggerVerdict};
pub use rollout::{
    ApprovalWait, Approved, CHECKPOINT_VERSION, Checkpoint, ENGINE, OLDEST_CHECKPOINT_VERSION,
    Rollout, UnsupportedCheckpoint,
};
pub use types::*;
