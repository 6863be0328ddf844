//! The rollout policy language: a YAML file compiled (`compile`) into the
//! typed, checked [`Policy`] of `model`, whose triggers and gates are
//! resolved checks (`check`) built from the rules as written (`written`);
//! `no_harm` derives the gates `requireNoHarm` implies; `repr` is the form
//! checkpoints keep; `explain` renders a policy in words. Reading YAML with located errors is `crate::yaml`'s job.
pub mod check;
pub mod compile;
pub mod explain;
pub mod model;
pub mod no_harm;
pub mod repr;
pub mod written;

pub use crate::yaml::diag::{Diagnostic, Diagnostics};
pub use check::{GateCheck, Mean, Named, Quantile, REQUESTS, Ratio, TriggerCheck};
pub use compile::parse_policy;
pub use explain::{explain, warnings};
pub use model::*;
pub use written::*;
