//! The `canaryd` binary: parse the command line, run it, print errors once.
use std::process::ExitCode;

fn main() -> ExitCode {
    canaryd::cli::main()
}
