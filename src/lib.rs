//! canaryd: canary rollouts with anytime-valid statistics and automatic rollback.
//!
//! Three parts, declared below in that order:
//!
//! - the **pure core**, which takes time as an argument and performs no I/O;
//!   it builds without the default `daemon` feature, and the simulator links
//!   it that way: [`policy`] (the policy language, compiled to one check per
//!   trigger and gate), [`stats`] (windows and sequential tests), [`engine`]
//!   (one rollout's state machine), [`monitor`] (the policy-driven analysis
//!   between them), [`yaml`] (the located-YAML toolkit) and [`time`];
//! - the **shell**, behind `daemon`, which reads clocks, files and sockets
//!   and carries out the core's decisions: `daemon`, `store`, `routers`,
//!   `sources`, `proxy`, `retry`, `tls`, `causes`, `cli`, `demo`;
//! - the **wire** contract between the daemon and its clients: `wire`.
//!
//! See ARCHITECTURE.md for the map.

#![forbid(unsafe_code)]

pub mod engine;
pub mod monitor;
pub mod policy;
pub mod stats;
pub mod time;
pub mod yaml;

#[cfg(feature = "daemon")]
pub mod causes;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod demo;
#[cfg(feature = "daemon")]
pub mod proxy;
#[cfg(feature = "daemon")]
pub mod retry;
#[cfg(feature = "daemon")]
pub mod routers;
#[cfg(feature = "daemon")]
pub mod sources;
#[cfg(feature = "daemon")]
pub mod store;
#[cfg(feature = "daemon")]
pub mod tls;
#[cfg(feature = "daemon")]
pub mod wire;
