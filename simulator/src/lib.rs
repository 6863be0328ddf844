//! canaryd-sim: runs rollout policies offline against simulated traffic with
//! the daemon's own engine and a virtual clock.
//!
//! It links `canaryd` with `default-features = false`: only the pure core
//! (policy, stats, engine) is available here, which is how the build proves
//! that the core needs no I/O stack.

pub use canaryd::policy;
