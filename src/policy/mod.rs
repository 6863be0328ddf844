//! The rollout policy language.
pub mod compile;
pub mod decode;
pub mod diag;
pub mod explain;
pub mod model;
pub mod node;
pub mod units;

pub use compile::parse_policy;
pub use diag::{Diagnostic, Diagnostics};
pub use explain::explain;
pub use model::*;
