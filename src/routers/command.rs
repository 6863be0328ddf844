//! `command`: runs `program args` for every weight change, with
//! `{{service}}`, `{{baseline}}`, `{{canary}}` and `{{canary_weight}}`
//! substituted in the arguments and the same values in the environment
//! (`CANARYD_SERVICE`, `CANARYD_BASELINE`, `CANARYD_CANARY`,
//! `CANARYD_CANARY_WEIGHT`, and `CANARYD_EPOCH` with several daemons on
//! one database: the lease epoch of the daemon asking). Exit 0 succeeds; another exit is `Refused` with
//! the tail of stderr; a run longer than the timeout (default 30 s) is killed
//! and is a `Timeout`. The program is not run through a shell.
//!
//! It cannot read weights back: a program that only applies them has no
//! defined way to report them, so `read_weights` is `Ok(None)` and the
//! daemon reconciles by applying its own weight again.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{CommandConfig, Router, RouterError, Target, Weights, process};
use crate::policy::Weight;

pub struct CommandRouter {
    config: CommandConfig,
    timeout: Duration,
}

impl CommandRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(config: CommandConfig) -> Self {
        CommandRouter {
            config,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The placeholders and environment of a weight change.
fn variables(target: &Target, weight: Weight) -> [(&'static str, String); 4] {
    [
        ("service", target.service.clone()),
        ("baseline", target.baseline.clone()),
        ("canary", target.canary.clone()),
        ("canary_weight", weight.percent().to_string()),
    ]
}

impl Router for CommandRouter {
    fn describe(&self) -> String {
        format!("command {}", self.config.program.display())
    }

    fn set_weight<'a>(
        &'a self,
        target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            let vars = variables(target, weight);
            let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args: Vec<String> = self
                .config
                .args
                .iter()
                .map(|a| process::substitute(a, &borrowed))
                .collect();
            let mut envs: Vec<(&str, String)> = vec![
                ("CANARYD_SERVICE", vars[0].1.clone()),
                ("CANARYD_BASELINE", vars[1].1.clone()),
                ("CANARYD_CANARY", vars[2].1.clone()),
                ("CANARYD_CANARY_WEIGHT", vars[3].1.clone()),
            ];
            if let Some(epoch) = target.epoch {
                envs.push(("CANARYD_EPOCH", epoch.to_string()));
            }
            let router = self.describe();
            let done = process::run(
                &router,
                &self.config.program,
                &args,
                &envs,
                self.timeout,
                &format!("setting canary weight {}", weight.percent()),
            )
            .await?;
            if done.status.success() {
                Ok(())
            } else {
                Err(RouterError::Refused {
                    router,
                    detail: format!("{}: {}", done.status, done.output_tail(5)),
                })
            }
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn target() -> Target {
        Target {
            epoch: None,
            service: "checkout".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
        }
    }

    #[tokio::test]
    async fn substitutes_arguments_and_sets_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let r = CommandRouter::new(CommandConfig {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$1 $2 $3 $4 $CANARYD_SERVICE $CANARYD_BASELINE $CANARYD_CANARY $CANARYD_CANARY_WEIGHT\" > {}",
                    out.display()
                ),
                "sh".into(),
                "{{service}}".into(),
                "{{baseline}}".into(),
                "{{canary}}".into(),
                "{{canary_weight}}".into(),
            ],
        });
        r.set_weight(&target(), Weight::new(25).unwrap())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "checkout v1 v2 25 checkout v1 v2 25\n"
        );
        assert_eq!(r.read_weights().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_non_zero_exit_is_refused_with_the_stderr_tail() {
        let r = CommandRouter::new(CommandConfig {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                "echo noise; echo 'no such lb' >&2; exit 4".into(),
            ],
        });
        let e = r.set_weight(&target(), Weight::ZERO).await.unwrap_err();
        assert!(matches!(e, RouterError::Refused { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("exit status: 4") && msg.contains("no such lb"),
            "{msg}"
        );
    }
}
