//! Lifecycle hooks (`onStart`, `onPromoted`, `onRolledBack`, `onAborted`):
//! a command or a webhook, run after the state they report is committed.
//! One attempt per call; the daemon retries and records.

use std::time::Duration;

use serde::Serialize;

use super::{HookConfig, RouterError};

/// What a hook is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookContext {
    pub event: &'static str,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub rollout_id: String,
    pub outcome: String,
    pub reason: String,
}

const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

fn substitute(arg: &str, ctx: &HookContext) -> String {
    arg.replace("{{service}}", &ctx.service)
        .replace("{{baseline}}", &ctx.baseline)
        .replace("{{canary}}", &ctx.canary)
        .replace("{{rollout}}", &ctx.rollout_id)
        .replace("{{outcome}}", &ctx.outcome)
}

pub async fn run_hook(hook: &HookConfig, ctx: &HookContext) -> Result<(), RouterError> {
    match hook {
        HookConfig::Webhook(w) => {
            let name = format!("hook {} webhook {}", ctx.event, w.url);
            let resp = reqwest::Client::new()
                .post(&w.url)
                .timeout(HOOK_TIMEOUT)
                .json(ctx)
                .send()
                .await
                .map_err(|e| RouterError::Unreachable {
                    router: name.clone(),
                    detail: e.to_string(),
                })?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(RouterError::Refused {
                    router: name,
                    detail: format!("HTTP {}", resp.status()),
                })
            }
        }
        HookConfig::Command(c) => {
            let name = format!("hook {} command {}", ctx.event, c.program.display());
            let mut cmd = tokio::process::Command::new(&c.program);
            cmd.args(c.args.iter().map(|a| substitute(a, ctx)))
                .env("CANARYD_EVENT", ctx.event)
                .env("CANARYD_SERVICE", &ctx.service)
                .env("CANARYD_BASELINE", &ctx.baseline)
                .env("CANARYD_CANARY", &ctx.canary)
                .env("CANARYD_ROLLOUT", &ctx.rollout_id)
                .env("CANARYD_OUTCOME", &ctx.outcome)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(HOOK_TIMEOUT, cmd.output())
                .await
                .map_err(|_| RouterError::Timeout {
                    router: name.clone(),
                    after: HOOK_TIMEOUT,
                    during: "running the hook".into(),
                })?
                .map_err(|e| RouterError::Unreachable {
                    router: name.clone(),
                    detail: e.to_string(),
                })?;
            if out.status.success() {
                Ok(())
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr
                    .chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(RouterError::Refused {
                    router: name,
                    detail: format!("{}: {}", out.status, tail.trim()),
                })
            }
        }
    }
}
