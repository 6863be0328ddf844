//! `canaryd config check FILE`: every problem in a daemon config at once,
//! located, without starting anything. The checking itself is the daemon's
//! (the binary hands it in as a [`ConfigChecker`], so the command reports
//! exactly what `serve` would refuse or warn about); this module owns the
//! command line, the two renderings and the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a daemon config file offline: exit 0 when `serve` would start
    /// with it (warnings are printed), 1 with every problem on stderr as
    /// FILE:LINE:COL: field.path: message. Paths and permissions are
    /// checked as the user running the command; run it as the daemon's.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// One JSON object on stdout: `valid`, and each problem's
        /// `severity`, `file`, `line`, `col`, `flag`, `path` and `message`.
        #[arg(long)]
        json: bool,
    },
}

/// One problem, as both renderings need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `error` or `warning`.
    pub severity: &'static str,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub col: Option<u64>,
    /// The command-line flag the value came from, if it did.
    pub flag: Option<String>,
    pub path: String,
    pub message: String,
    /// The whole line as the daemon logs it.
    #[serde(skip)]
    pub text: String,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// For a config that parsed: what it configures, in a few words.
    pub summary: Option<String>,
}

/// Checks a config file as the daemon would (`src/main.rs` implements it
/// over `daemon::config::offline`).
pub trait ConfigChecker {
    fn check(&self, file: &Path) -> Report;
}

pub fn run(cmd: ConfigCommand, checker: &dyn ConfigChecker) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file, json } = cmd;
    let report = checker.check(&file);
    let valid = !report.problems.iter().any(Problem::is_error);
    if json {
        #[derive(Serialize)]
        struct Answer<'a> {
            file: String,
            valid: bool,
            problems: &'a [Problem],
        }
        super::client::print_json(&Answer {
            file: file.display().to_string(),
            valid,
            problems: &report.problems,
        })?;
    } else {
        let mut stderr = std::io::stderr().lock();
        for p in &report.problems {
            writeln!(stderr, "{}", p.text)?;
        }
        if valid {
            let summary = report.summary.as_deref().unwrap_or("valid");
            println!("{}: {summary}", file.display());
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
