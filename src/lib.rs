//! canaryd: canary rollouts with anytime-valid statistics and automatic rollback.
//!
//! The crate has two halves. The **pure core** ([`policy`], [`stats`], [`engine`],
//! [`monitor`], the policy-driven analysis between them, [`time`], and
//! [`yaml`], the located-YAML toolkit) takes time as an argument and performs no I/O; it builds without
//! the default `daemon` feature, and the simulator links it that way. The
//! **shell** (behind `daemon`) reads clocks, files and sockets and carries out
//! the core's decisions. See ARCHITECTURE.md for the map.

#![forbid(unsafe_code)]

pub mod engine;
pub mod monitor;
pub mod policy;
pub mod stats;
pub mod time;
pub mod yaml;

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
pub mod wire;
