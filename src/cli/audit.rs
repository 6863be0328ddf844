//! `canaryd audit verify|log`. With `--data-dir` they read the state
//! directly through a read-only store (safe while the daemon runs); without
//! it they will ask the daemon's API, which does not exist yet.
//!
//! Exit codes: 0 when the chain holds (or the log was printed), 1 at the
//! first broken link (named on stderr) or on any error.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::store::{AuditEntry, Store};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's HMAC chain and its head: exit 0 when it holds,
    /// 1 at the first broken entry, which it names.
    Verify,
    /// Print the audit log, oldest first.
    Log {
        /// One JSON array of entries instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    cmd: AuditCommand,
    data_dir: Option<&Path>,
    client: &super::client::Client,
) -> anyhow::Result<ExitCode> {
    let Some(dir) = data_dir else {
        return online(cmd, client);
    };
    let store = Store::open_read_only(dir)
        .with_context(|| format!("cannot read the state in {}", dir.display()))?;
    match cmd {
        AuditCommand::Verify => {
            let v = store.verify()?;
            match &v.broken {
                None => {
                    let mut line = format!("audit log ok: {} entries, head {}", v.entries, v.last);
                    if v.ahead_of_head > 0 {
                        line.push_str(&format!(
                            " ({} entries of the last transaction are past audit.head; the daemon rewrites it on its next start or commit)",
                            v.ahead_of_head
                        ));
                    }
                    println!("{line}");
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
            let entries = store.audit_log()?;
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

/// The same commands through the daemon's API.
fn online(cmd: AuditCommand, client: &super::client::Client) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify => {
            let v = super::client::block_on(client.get("/v1/audit/verify"))?;
            if v.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
                println!(
                    "audit log ok: {} entries, head {}",
                    v["entries"],
                    v["head"]["hash"].as_str().unwrap_or("-")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "canaryd: audit log broken at entry {}: {}",
                    v["broken"]["seq"],
                    v["broken"]["detail"].as_str().unwrap_or("")
                );
                Ok(ExitCode::from(1))
            }
        }
        AuditCommand::Log { json } => {
            let v = super::client::block_on(client.get("/v1/audit"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let entries: Vec<AuditEntry> = serde_json::from_value(v)?;
                for e in &entries {
                    println!("{}", render(e));
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
        utc(e.at.as_millis()),
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

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_800_000_000_000), "2027-01-15T08:00:00.000Z");
    }
}
