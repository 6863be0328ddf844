//! Lifecycle hooks (`onStart`, `onPromoted`, `onRolledBack`, `onAborted`,
//! PRODUCT.md section 6): one attempt at running a hook. The daemon runs a
//! hook after the state it reports is committed and retries it with
//! [`crate::retry::RetryPolicy`]; a failed hook never blocks or reverses
//! anything.
//!
//! A command hook gets `{{service}}`, `{{baseline}}`, `{{canary}}`,
//! `{{rollout}}`, `{{outcome}}`, `{{reason}}` and `{{event}}` substituted in
//! its arguments, and the same values as `CANARYD_*` environment variables;
//! exit 0 succeeds. A webhook hook POSTs the context as JSON (`event`,
//! `service`, `baseline`, `canary`, `rollout_id`, `outcome`, `reason`); 2xx
//! succeeds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HookConfig, RouterError, process, webhook};
use crate::engine::Phase;

/// How long one hook attempt may take.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The lifecycle event a hook runs on. Written, stored and sent as its
/// config key (`onStart`, ...): the `hooks:` keys, the `hook_runs.event`
/// column and the `event` a hook receives are the same strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookEvent {
    OnStart,
    OnPromoted,
    OnRolledBack,
    OnAborted,
}

impl HookEvent {
    pub const ALL: [HookEvent; 4] = [
        HookEvent::OnStart,
        HookEvent::OnPromoted,
        HookEvent::OnRolledBack,
        HookEvent::OnAborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::OnStart => "onStart",
            HookEvent::OnPromoted => "onPromoted",
            HookEvent::OnRolledBack => "onRolledBack",
            HookEvent::OnAborted => "onAborted",
        }
    }

    /// The hook a rollout's end runs: `onRolledBack` also for
    /// `inconclusive`, which sends traffic back to baseline too; an
    /// experiment's `concluded` end is not a failure and has none, and a
    /// phase that is no end has none either.
    pub fn ending(outcome: Phase) -> Option<HookEvent> {
        match outcome {
            Phase::Promoted => Some(HookEvent::OnPromoted),
            Phase::RolledBack | Phase::Inconclusive => Some(HookEvent::OnRolledBack),
            Phase::Aborted => Some(HookEvent::OnAborted),
            Phase::Pending
            | Phase::Progressing
            | Phase::Paused
            | Phase::AwaitingApproval
            | Phase::RollingBack
            | Phase::Concluded => None,
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookContext {
    pub event: HookEvent,
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub rollout_id: String,
    /// The rollout's outcome (`promoted`, `rolled_back`, `aborted`); `None`
    /// while it runs (`onStart`). Substituted as an empty string.
    pub outcome: Option<String>,
    /// Why it ended, when known.
    pub reason: Option<String>,
}

/// Runs `hook` once for `ctx`, bounded by [`HOOK_TIMEOUT`].
pub async fn run_hook(hook: &HookConfig, ctx: &HookContext) -> Result<(), RouterError> {
    run_hook_with_timeout(hook, ctx, HOOK_TIMEOUT).await
}

/// [`run_hook`] with another timeout.
pub async fn run_hook_with_timeout(
    hook: &HookConfig,
    ctx: &HookContext,
    timeout: Duration,
) -> Result<(), RouterError> {
    match hook {
        HookConfig::Webhook(w) => {
            webhook::post_json(
                &format!("{} hook webhook {}", ctx.event, w.url),
                &w.url,
                &w.tls,
                ctx,
                timeout,
            )
            .await
        }
        HookConfig::Command(c) => {
            let name = format!("{} hook command {}", ctx.event, c.program.display());
            let outcome = ctx.outcome.clone().unwrap_or_default();
            let reason = ctx.reason.clone().unwrap_or_default();
            let vars: [(&str, &str); 7] = [
                ("event", ctx.event.as_str()),
                ("service", &ctx.service),
                ("baseline", &ctx.baseline),
                ("canary", &ctx.canary),
                ("rollout", &ctx.rollout_id),
                ("outcome", &outcome),
                ("reason", &reason),
            ];
            let args: Vec<String> = c
                .args
                .iter()
                .map(|a| process::substitute(a, &vars))
                .collect();
            let envs: Vec<(&str, String)> = vec![
                ("CANARYD_EVENT", ctx.event.to_string()),
                ("CANARYD_SERVICE", ctx.service.clone()),
                ("CANARYD_BASELINE", ctx.baseline.clone()),
                ("CANARYD_CANARY", ctx.canary.clone()),
                ("CANARYD_ROLLOUT", ctx.rollout_id.clone()),
                ("CANARYD_OUTCOME", outcome.clone()),
                ("CANARYD_REASON", reason.clone()),
            ];
            let done =
                process::run(&name, &c.program, &args, &envs, timeout, "running the hook").await?;
            if done.status.success() {
                Ok(())
            } else {
                Err(RouterError::Refused {
                    router: name,
                    detail: format!("{}: {}", done.status, done.output_tail(5)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routers::CommandConfig;
    use std::path::PathBuf;

    fn ctx() -> HookContext {
        HookContext {
            event: HookEvent::OnPromoted,
            service: "recommender".into(),
            baseline: "1".into(),
            canary: "2".into(),
            rollout_id: "r-7".into(),
            outcome: Some("promoted".into()),
            reason: None,
        }
    }

    #[tokio::test]
    async fn a_command_hook_gets_its_placeholders_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = HookConfig::Command(CommandConfig {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$1 $CANARYD_EVENT $CANARYD_ROLLOUT [$CANARYD_REASON]\" > {}",
                    out.display()
                ),
                "sh".into(),
                "{{service}}/{{baseline}}->{{canary}}:{{rollout}}:{{outcome}}".into(),
            ],
        });
        run_hook(&hook, &ctx()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "recommender/1->2:r-7:promoted onPromoted r-7 []\n"
        );
    }

    #[tokio::test]
    async fn a_failing_command_hook_is_refused() {
        let hook = HookConfig::Command(CommandConfig {
            program: PathBuf::from("/bin/false"),
            args: vec![],
        });
        let e = run_hook(&hook, &ctx()).await.unwrap_err();
        assert!(matches!(e, RouterError::Refused { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("onPromoted hook command /bin/false")
        );
    }

    #[test]
    fn events_are_their_config_keys() {
        for event in HookEvent::ALL {
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                serde_json::json!(event.as_str())
            );
            assert_eq!(
                serde_json::from_value::<HookEvent>(serde_json::json!(event.as_str())).unwrap(),
                event
            );
        }
        assert_eq!(
            HookEvent::ALL.map(HookEvent::as_str),
            ["onStart", "onPromoted", "onRolledBack", "onAborted"]
        );
        assert_eq!(
            HookEvent::ending(Phase::Inconclusive),
            Some(HookEvent::OnRolledBack)
        );
        assert_eq!(HookEvent::ending(Phase::Concluded), None);
        assert_eq!(HookEvent::ending(Phase::Progressing), None);
    }

    #[test]
    fn the_webhook_body_is_the_context() {
        assert_eq!(
            serde_json::to_value(ctx()).unwrap(),
            serde_json::json!({"event":"onPromoted","service":"recommender","baseline":"1",
                "canary":"2","rollout_id":"r-7","outcome":"promoted","reason":null})
        );
    }
}
