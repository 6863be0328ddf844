//! `nginx`: open-source nginx has no runtime API, so the adapter owns one
//! config file (included in nginx's `http {}` context) holding one weighted
//! `upstream`, and changes weights by rewriting it, testing it and
//! reloading:
//!
//! ```nginx
//! upstream search {
//!     server 127.0.0.1:9101 weight=75;
//!     server 127.0.0.1:9102 weight=25;
//! }
//! ```
//!
//! Why a weighted upstream and not `split_clients`: it is one block with
//! the service's own name (the site keeps `proxy_pass http://search;`),
//! nginx 1.22's smooth weighted round-robin splits exactly rather than by
//! hash, and the two edge cases have a direct form. nginx rejects
//! `weight=0`, so at 0 % the canary is `down` (and at 100 % the baseline),
//! which keeps both servers in the file and the file's shape fixed. (With
//! `split_clients` a 0 % line must be omitted and stickiness needs a key
//! in the site's config, which canaryd does not own.) Each worker keeps its
//! own round-robin position, and nginx's passive health checks
//! (`max_fails`) shift traffic off a failing server: both only blur the
//! split a little.
//!
//! A change: render, and if the file differs, write it atomically (temp
//! file, fsync, rename), then run nginx's config test, then the reload
//! command. When the test or the reload fails, the previous file is put
//! back (or removed, if there was none) and the error is `Refused` with the
//! tail of nginx's stderr. The test command is derived from `reload`: the
//! same program and arguments with `-s reload` replaced by `-t`, so `nginx
//! -p DIR -c DIR/nginx.conf -s reload` is tested as `nginx -p DIR -c
//! DIR/nginx.conf -t`; a reload command without `-s reload` (a wrapper
//! script, `systemctl reload nginx`) is tested with plain `nginx -t`.
//! Each command has the adapter's timeout (default 30 s).
//!
//! `read_weights` parses the owned file back (`Ok(None)` when it does not
//! exist yet); it reports what nginx was last told, which a successful
//! reload made what it applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{NginxConfig, Router, RouterError, Target, Weights, process};
use crate::policy::Weight;

pub struct NginxRouter {
    config: NginxConfig,
    timeout: Duration,
}

impl NginxRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(config: NginxConfig) -> Self {
        NginxRouter {
            config,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The reload command (`nginx -s reload` when the config gives none).
    pub fn reload_command(&self) -> Vec<String> {
        if self.config.reload.is_empty() {
            vec!["nginx".into(), "-s".into(), "reload".into()]
        } else {
            self.config.reload.clone()
        }
    }

    /// The config test command derived from the reload command.
    pub fn test_command(&self) -> Vec<String> {
        let reload = self.reload_command();
        let at = reload
            .windows(2)
            .position(|w| w[0] == "-s" && w[1] == "reload");
        match at {
            Some(i) => {
                let mut test = reload[..i].to_vec();
                test.push("-t".into());
                test.extend_from_slice(&reload[i + 2..]);
                test
            }
            None => vec!["nginx".into(), "-t".into()],
        }
    }

    fn io(&self, detail: String) -> RouterError {
        RouterError::Io {
            router: self.describe(),
            detail,
        }
    }

    /// Runs `argv` once; a non-zero exit is `Refused` with stderr's tail.
    async fn run(&self, argv: &[String], what: &str) -> Result<(), RouterError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| self.io(format!("the {what} command is empty")))?;
        let router = self.describe();
        let done = process::run(
            &router,
            Path::new(program),
            args,
            &[],
            self.timeout,
            &format!("running `{}`", argv.join(" ")),
        )
        .await?;
        if done.status.success() {
            Ok(())
        } else {
            Err(RouterError::Refused {
                router,
                detail: format!(
                    "`{}` failed ({}): {}",
                    argv.join(" "),
                    done.status,
                    done.output_tail(6)
                ),
            })
        }
    }

    async fn write(&self, bytes: Option<Vec<u8>>) -> Result<(), RouterError> {
        let path = self.config.config.clone();
        tokio::task::spawn_blocking(move || match bytes {
            Some(b) => super::file::write_atomically(&path, &b),
            None => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove it: {e}")),
            },
        })
        .await
        .map_err(|e| self.io(format!("writer task failed: {e}")))?
        .map_err(|e| self.io(format!("{}: {e}", self.config.config.display())))
    }

    async fn read_file(&self) -> Result<Option<Vec<u8>>, RouterError> {
        match tokio::fs::read(&self.config.config).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(format!("cannot read {}: {e}", self.config.config.display()))),
        }
    }

    /// The owned file's text for `weight`.
    pub fn render(&self, target: Option<&Target>, weight: Weight) -> Result<String, RouterError> {
        for (what, value) in [
            ("upstream", &self.config.upstream),
            ("baseline", &self.config.baseline),
            ("canary", &self.config.canary),
        ] {
            if !is_plain_token(value) {
                return Err(RouterError::Protocol {
                    router: self.describe(),
                    detail: format!(
                        "{what} {value:?} cannot go into an nginx config (spaces, quotes, `;`, `{{`, `}}`, `#`, `$`)"
                    ),
                });
            }
        }
        let server = |addr: &str, w: u8| {
            if w == 0 {
                format!("    server {addr} down;\n")
            } else {
                format!("    server {addr} weight={w};\n")
            }
        };
        let about = target.map_or(String::new(), |t| {
            format!(
                "# service {}: baseline {}, canary {}\n",
                one_line(&t.service),
                one_line(&t.baseline),
                one_line(&t.canary)
            )
        });
        let canary = weight.percent();
        Ok(format!(
            "# Written by canaryd (nginx router); rewritten on every weight change.\n{about}upstream {} {{\n{}{}}}\n",
            self.config.upstream,
            server(&self.config.baseline, 100 - canary),
            server(&self.config.canary, canary),
        ))
    }

    /// Reads the weights out of the owned file's text.
    pub fn parse(&self, text: &str) -> Result<Weights, RouterError> {
        let protocol = |detail: String| RouterError::Protocol {
            router: self.describe(),
            detail: format!("{}: {detail}", self.config.config.display()),
        };
        let (mut baseline, mut canary) = (None, None);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(rest) = line.strip_prefix("server ") else {
                continue;
            };
            let rest = rest.trim_end_matches(';');
            let mut words = rest.split_whitespace();
            let addr = words.next().unwrap_or("");
            let mut weight = 1u64; // nginx's default
            for word in words {
                if word == "down" {
                    weight = 0;
                } else if let Some(w) = word.strip_prefix("weight=") {
                    weight = w
                        .parse()
                        .map_err(|_| protocol(format!("bad weight in {line:?}")))?;
                }
            }
            if addr == self.config.baseline {
                baseline = Some(weight);
            } else if addr == self.config.canary {
                canary = Some(weight);
            }
        }
        let (Some(b), Some(c)) = (baseline, canary) else {
            return Err(protocol(format!(
                "expected servers {} and {} in upstream {}",
                self.config.baseline, self.config.canary, self.config.upstream
            )));
        };
        let total = b + c;
        if total == 0 {
            return Err(protocol("both servers are down".into()));
        }
        let percent = u8::try_from((c * 100 + total / 2) / total)
            .ok()
            .and_then(Weight::new)
            .unwrap_or(Weight::FULL);
        Ok(Weights { canary: percent })
    }

    /// The owned file's path.
    pub fn path(&self) -> &PathBuf {
        &self.config.config
    }
}

/// A word nginx reads as one token with no special meaning.
fn is_plain_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(c, ';' | '{' | '}' | '#' | '"' | '\'' | '$' | '\\')
        })
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

impl Router for NginxRouter {
    fn describe(&self) -> String {
        format!(
            "nginx {} upstream {}",
            self.config.config.display(),
            self.config.upstream
        )
    }

    fn set_weight<'a>(
        &'a self,
        target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            let text = self.render(Some(target), weight)?;
            let previous = self.read_file().await?;
            let changed = previous.as_deref() != Some(text.as_bytes());
            if changed {
                self.write(Some(text.into_bytes())).await?;
            }
            // Test and reload even when the file is unchanged: an earlier
            // attempt may have written it and failed to reload.
            let outcome = async {
                self.run(&self.test_command(), "config test").await?;
                self.run(&self.reload_command(), "reload").await
            }
            .await;
            if let Err(e) = outcome {
                if changed && let Err(restore) = self.write(previous).await {
                    return Err(self.io(format!(
                        "{e}; and the previous file could not be restored: {restore}"
                    )));
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async move {
            match self.read_file().await? {
                None => Ok(None),
                Some(bytes) => {
                    let text = String::from_utf8(bytes).map_err(|_| RouterError::Protocol {
                        router: self.describe(),
                        detail: "the owned file is not UTF-8".into(),
                    })?;
                    self.parse(&text).map(Some)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(reload: &[&str]) -> NginxRouter {
        NginxRouter::new(NginxConfig {
            config: PathBuf::from("/tmp/split.conf"),
            upstream: "search".into(),
            baseline: "127.0.0.1:9101".into(),
            canary: "127.0.0.1:9102".into(),
            reload: reload.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn renders_weights_and_down_at_the_edges() {
        let r = router(&[]);
        let t = Target {
            epoch: None,
            service: "search".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
        };
        expect_test::expect![[r#"
            # Written by canaryd (nginx router); rewritten on every weight change.
            # service search: baseline v1, canary v2
            upstream search {
                server 127.0.0.1:9101 weight=75;
                server 127.0.0.1:9102 weight=25;
            }
        "#]]
        .assert_eq(&r.render(Some(&t), Weight::new(25).unwrap()).unwrap());
        for w in [0u8, 1, 25, 50, 99, 100] {
            let text = r.render(None, Weight::new(w).unwrap()).unwrap();
            assert_eq!(r.parse(&text).unwrap().canary.percent(), w, "{text}");
        }
        assert!(
            r.render(None, Weight::ZERO)
                .unwrap()
                .contains("server 127.0.0.1:9102 down;")
        );
        assert!(
            r.render(None, Weight::FULL)
                .unwrap()
                .contains("server 127.0.0.1:9101 down;")
        );
    }

    #[test]
    fn the_test_command_follows_the_reload_command() {
        assert_eq!(router(&[]).test_command(), ["nginx", "-t"]);
        assert_eq!(
            router(&[
                "/usr/sbin/nginx",
                "-p",
                "/t",
                "-c",
                "/t/n.conf",
                "-s",
                "reload"
            ])
            .test_command(),
            ["/usr/sbin/nginx", "-p", "/t", "-c", "/t/n.conf", "-t"]
        );
        assert_eq!(
            router(&["systemctl", "reload", "nginx"]).test_command(),
            ["nginx", "-t"]
        );
    }

    #[test]
    fn refuses_names_that_would_inject_config() {
        let mut r = router(&[]);
        r.config.canary = "1.2.3.4:80; include /etc/passwd".into();
        assert!(r.render(None, Weight::ZERO).is_err());
    }
}
