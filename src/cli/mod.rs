//! The command line's client half: the `policy` commands (the core, no
//! daemon needed) and the `rollout`, `incident` and `audit` commands, which
//! read and steer the daemon through its API ([`client`]) as `crate::wire`
//! types, print them for people (or as `--json`), and map outcomes to the
//! exit codes PRODUCT.md section 8 documents. It knows nothing of the
//! daemon's insides: the binary (`src/main.rs`) parses the arguments, runs
//! `serve`, `demo` and `token create` itself, and hands `incident` and
//! `audit` a [`StateReader`] over the data dir when `--data-dir` is given.

pub mod audit;
pub mod client;
pub mod completions;
pub mod config;
pub mod incident;
pub mod policy;
pub mod rollout;
pub mod status;
pub mod terminal;
pub mod watch;

pub use client::{Client, ClientError};

use crate::wire::{AuditEntry, AuditVerification, Incident};

/// Where `incident list|show` and `audit verify|log` read the daemon's
/// records: through the API, or (with `--data-dir`) from the state itself,
/// read-only, through the same views the API serves.
pub trait StateReader {
    /// Every incident, oldest first.
    fn incidents(&self) -> anyhow::Result<Vec<Incident>>;
    fn incident(&self, id: &str) -> anyhow::Result<Incident>;
    /// The audit log, oldest first.
    fn audit_log(&self) -> anyhow::Result<Vec<AuditEntry>>;
    /// The audit log's HMAC chain, checked.
    fn audit_verify(&self) -> anyhow::Result<AuditVerification>;
    /// Start a new audit chain on the state itself (`audit restart-chain`):
    /// only a data dir can, never the API.
    fn restart_audit_chain(
        &self,
        _actor: &str,
        _reason: &str,
    ) -> anyhow::Result<AuditVerification> {
        anyhow::bail!(
            "restart-chain works on the state itself: stop the daemon and pass --data-dir"
        )
    }
}

impl StateReader for Client {
    fn incidents(&self) -> anyhow::Result<Vec<Incident>> {
        client::block_on(async { Ok(self.get("/v1/incidents").await?) })
    }

    fn incident(&self, id: &str) -> anyhow::Result<Incident> {
        client::block_on(async { Ok(self.get(&format!("/v1/incidents/{id}")).await?) })
    }

    fn audit_log(&self) -> anyhow::Result<Vec<AuditEntry>> {
        client::block_on(async { Ok(self.get("/v1/audit").await?) })
    }

    fn audit_verify(&self) -> anyhow::Result<AuditVerification> {
        client::block_on(async { Ok(self.get("/v1/audit/verify").await?) })
    }
}
