//! The rollout policy language: a YAML file compiled (`compile`) into the
//! typed, checked [`Policy`] of `model`, and rendered back in words by
//! `explain`. Reading YAML with located errors is `crate::yaml`'s job.
pub mod compile;
pub mod explain;
pub mod model;

pub use crate::yaml::diag::{Diagnostic, Diagnostics};
pub use compile::parse_policy;
pub use explain::explain;
pub use model::*;
