//! The rollout policy language.
pub mod node;
