//! `canaryd audit verify|log|restart-chain`, through a [`StateReader`]:
//! the daemon's API, or with `--data-dir` the state itself through a
//! read-only store (safe while the daemon runs). `restart-chain` writes,
//! and only with `--data-dir` and the daemon stopped.
//!
//! Exit codes: 0 when the chain holds and the state agrees with it (or the
//! log was printed, or the chain restarted), 1 at the first broken link or
//! on state rows that disagree (named on stderr), or on any error.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use super::StateReader;
use crate::wire::{AuditEntry, rfc3339};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's HMAC chain and its head: exit 0 when it holds,
    /// 1 at the first broken entry, which it names.
    Verify {
        /// The verification as the API's JSON (`GET /v1/audit/verify`);
        /// the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Start a new audit chain deliberately on a data dir whose log was
    /// emptied or lost audit.head, keeping its rollouts: the new genesis
    /// entry records who, why, what verify found and the state as it is.
    /// Needs --data-dir and the daemon stopped.
    RestartChain {
        /// Who restarts it (recorded in the genesis entry).
        #[arg(long)]
        actor: String,
        /// Why (recorded in the genesis entry).
        #[arg(long)]
        reason: String,
    },
    /// Print the audit log, oldest first.
    Log {
        /// One JSON array of entries instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AuditCommand, state: &dyn StateReader) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::RestartChain { actor, reason } => {
            let v = state.restart_audit_chain(&actor, &reason)?;
            println!(
                "audit chain restarted: genesis at entry {}, head {}",
                v.head.seq, v.head.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { json } => {
            let v = state.audit_verify()?;
            if json {
                super::client::print_json(&v)?;
                let holds = v.broken.is_none() && v.disagreements.is_empty();
                return Ok(if holds {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            if v.broken.is_none() && !v.disagreements.is_empty() {
                eprintln!(
                    "canaryd: {} state rows disagree with the audit log:",
                    v.disagreements.len()
                );
                for d in &v.disagreements {
                    eprintln!("  {d}");
                }
                return Ok(ExitCode::from(1));
            }
            match &v.broken {
                None => {
                    let mut line =
                        format!("audit log ok: {} entries, head {}", v.entries, v.head.hash);
                    if v.ahead_of_head > 0 {
                        line.push_str(&format!(
                            " ({} entries of the last transaction are past audit.head; the daemon rewrites it on its next start or commit)",
                            v.ahead_of_head
                        ));
                    }
                    println!("{line}");
                    for note in &v.notes {
                        println!("note: {note}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(link) => {
                    eprintln!(
                        "canaryd: audit log broken at entry {}: {}",
                        link.seq, link.detail
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Log { json } => {
            let entries = state.audit_log()?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                for e in &entries {
                    writeln!(out, "{}", render(e))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `seq  time  actor  action  rollout  reason [ticket]`.
fn render(e: &AuditEntry) -> String {
    let mut line = format!(
        "{:>6}  {}  {:<10} {:<18} {:<24} {}",
        e.seq,
        rfc3339(e.at),
        e.actor,
        e.action,
        e.rollout_id.as_deref().unwrap_or("-"),
        e.reason
    );
    if let Some(ticket) = &e.ticket {
        line.push_str(&format!(" [{ticket}]"));
    }
    line
}
