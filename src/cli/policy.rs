//! `canaryd policy check|explain`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::policy::{self, compile::MAX_POLICY_BYTES};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: exit 0 when all are valid, 1 with every problem
    /// on stderr as FILE:LINE:COL: field.path: message.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Describe a policy in plain language.
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { files } => {
            let mut all_ok = true;
            let mut stderr = std::io::stderr().lock();
            for file in &files {
                match load(file)? {
                    Ok(_) => {}
                    Err(diags) => {
                        all_ok = false;
                        writeln!(stderr, "{diags}")?;
                    }
                }
            }
            if all_ok {
                let n = files.len();
                println!("{n} polic{} valid", if n == 1 { "y" } else { "ies" });
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        PolicyCommand::Explain { file } => match load(&file)? {
            Ok(p) => {
                print!("{}", policy::explain(&p));
                Ok(ExitCode::SUCCESS)
            }
            Err(diags) => {
                eprintln!("{diags}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Read a policy file (bounded: a file over the limit is read only far enough
/// to know it is too large) and compile it. The outer error is I/O; the inner
/// one the file's located problems.
pub fn load(file: &Path) -> anyhow::Result<Result<policy::Policy, policy::Diagnostics>> {
    let name = file.display().to_string();
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {name}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_POLICY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    Ok(policy::parse_policy(&name, &bytes))
}
