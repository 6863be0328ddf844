//! Running a child process for the `command` and `nginx` routers and command
//! hooks: one attempt, bounded by a timeout, with the output's tail kept for
//! the error message. On timeout the child is killed (SIGKILL) and reaped;
//! processes it started itself and detached from are not followed.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::RouterError;

/// How much of stdout and stderr is kept (the tail): enough for an error
/// message, bounded so a chatty program cannot exhaust memory.
const KEEP_BYTES: usize = 16 * 1024;

/// A finished child.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// The last `lines` lines of stderr (or stdout when stderr is empty), on
    /// one line, for an error message.
    pub fn output_tail(&self, lines: usize) -> String {
        let text = if self.stderr.iter().all(u8::is_ascii_whitespace) {
            String::from_utf8_lossy(&self.stdout)
        } else {
            String::from_utf8_lossy(&self.stderr)
        };
        let tail: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .rev()
            .take(lines)
            .collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// Runs `program args` with `envs`, stdin closed, for at most `timeout`.
/// `router` names the caller in errors; `during` says what the run is for.
pub(crate) async fn run<I, S>(
    router: &str,
    program: &Path,
    args: I,
    envs: &[(&str, String)],
    timeout: Duration,
    during: &str,
) -> Result<Finished, RouterError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| RouterError::Unreachable {
        router: router.to_string(),
        detail: format!("cannot start {}: {e}", program.display()),
    })?;
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_tail(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));
    let deadline = tokio::time::Instant::now() + timeout;
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            abort(stdout, stderr);
            return Err(RouterError::Io {
                router: router.to_string(),
                detail: format!("cannot wait for {}: {e}", program.display()),
            });
        }
        Err(_) => {
            // SIGKILL and reap, so no zombie is left behind.
            let _ = child.kill().await;
            abort(stdout, stderr);
            return Err(RouterError::Timeout {
                router: router.to_string(),
                after: timeout,
                during: format!("{during}; {} was killed", program.display()),
            });
        }
    };
    // The pipes close when the child exits, unless it left a process behind
    // that holds them: bound that wait by what is left of the timeout.
    let collect = |h: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
        match h {
            Some(h) => {
                let abort = h.abort_handle();
                match tokio::time::timeout_at(deadline, h).await {
                    Ok(Ok(v)) => v,
                    _ => {
                        abort.abort();
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        }
    };
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

fn abort(a: Option<tokio::task::JoinHandle<Vec<u8>>>, b: Option<tokio::task::JoinHandle<Vec<u8>>>) {
    for h in [a, b].into_iter().flatten() {
        h.abort();
    }
}

/// Reads a pipe to its end, keeping the last [`KEEP_BYTES`].
async fn read_tail<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * KEEP_BYTES {
                    kept.drain(..kept.len() - KEEP_BYTES);
                }
            }
        }
    }
}

/// Replaces each `{{name}}` in `template` by its value; unknown
/// placeholders are left as written.
pub(crate) fn substitute(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        let placeholder = format!("{{{{{name}}}}}");
        if out.contains(&placeholder) {
            out = out.replace(&placeholder, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_placeholders_only() {
        assert_eq!(
            substitute(
                "{{service}}:{{canary_weight}}%:{{nope}}",
                &[("service", "checkout"), ("canary_weight", "25")]
            ),
            "checkout:25%:{{nope}}"
        );
    }

    #[tokio::test]
    async fn keeps_the_tail_and_reports_the_status() {
        let f = run(
            "t",
            Path::new("/bin/sh"),
            ["-c", "echo out; echo one >&2; echo two >&2; exit 3"],
            &[],
            Duration::from_secs(10),
            "test",
        )
        .await
        .unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert_eq!(f.output_tail(5), "one | two");
        assert_eq!(f.output_tail(1), "two");
    }

    #[tokio::test]
    async fn a_missing_program_is_unreachable() {
        let e = run(
            "t",
            Path::new("/nonexistent/prog"),
            Vec::<String>::new(),
            &[],
            Duration::from_secs(1),
            "test",
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(e, RouterError::Unreachable { .. }), "{e}");
    }
}
