//! `haproxy`: HAProxy's runtime API over its UNIX admin socket (`stats
//! socket PATH level admin`). One command per connection (HAProxy's
//! non-interactive mode: write a line, read until it closes), each bounded
//! by the timeout (default 5 s) for connecting, writing and reading.
//!
//! `set_weight(w)` sends `set server <backend>/<server> weight N` for both
//! servers: canary `w`, baseline `100 - w`. These are absolute weights on
//! HAProxy's 0-256 scale; using the percentages themselves (rather than
//! stretching them to 256) keeps the ratio exact and makes `show servers
//! state` readable as percentages. The server whose new weight is the larger
//! is set first, so the backend never passes through "both at 0" (a 503 for
//! everyone) on the way from 0 % to 100 % or back. An empty answer is
//! success; any text is HAProxy refusing (`No such server.`, `Backend is
//! using a static LB algorithm ...`), returned as `Refused`. The backend
//! must use a dynamic algorithm (`roundrobin`, `leastconn`, ...).
//!
//! `read_weights` parses `show servers state <backend>` (`srv_uweight`, the
//! current weight) and returns `round(100 * canary / (canary + baseline))`,
//! so weights another tool set on any scale read back as a percentage.
//!
//! Reloads: HAProxy forgets runtime weights on reload unless the config has
//! `server-state-file` and `load-server-state-from-file`, and the state was
//! dumped just before the reload. The adapter does not know the config's
//! paths (its config names only the socket), so it does not write the file
//! on every change; [`HaproxyRouter::save_state`] writes `show servers
//! state` to a given file atomically, for a reload wrapper to call, and the
//! daemon's reconcile after a restart (`read_weights`, then `set_weight`)
//! repairs weights a reload reset.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use futures_util::future::BoxFuture;

use super::{HaproxyConfig, Router, RouterError, Target, Weights};
use crate::policy::Weight;

/// Answers longer than this are not an answer to our commands.
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

pub struct HaproxyRouter {
    config: HaproxyConfig,
    timeout: Duration,
}

/// One server's row of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    /// `srv_uweight`: the weight in effect now.
    pub weight: u32,
    /// `srv_iweight`: the weight the config gave it.
    pub initial_weight: u32,
}

impl HaproxyRouter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(config: HaproxyConfig) -> Self {
        HaproxyRouter {
            config,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn refused(&self, detail: String) -> RouterError {
        RouterError::Refused {
            router: self.describe(),
            detail,
        }
    }

    fn protocol(&self, detail: String) -> RouterError {
        RouterError::Protocol {
            router: self.describe(),
            detail,
        }
    }

    /// Names go into a command line: refuse anything that could end it or
    /// split it.
    fn check_names(&self) -> Result<(), RouterError> {
        for (what, name) in [
            ("backend", &self.config.backend),
            ("baseline server", &self.config.baseline),
            ("canary server", &self.config.canary),
        ] {
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ';' || c == '/')
            {
                return Err(
                    self.protocol(format!("{what} name {name:?} is not a valid HAProxy name"))
                );
            }
        }
        Ok(())
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub async fn command(&self, command: &str) -> Result<String, RouterError> {
        let socket = &self.config.socket;
        let timed_out = |during: String| RouterError::Timeout {
            router: self.describe(),
            after: self.timeout,
            during,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut stream = match tokio::time::timeout_at(
            deadline,
            tokio::net::UnixStream::connect(socket),
        )
        .await
        {
            Err(_) => return Err(timed_out(format!("connecting to {}", socket.display()))),
            Ok(Err(e)) => {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        " (no such socket: is HAProxy running with `stats socket ... level admin` at this path?)"
                    }
                    std::io::ErrorKind::ConnectionRefused => {
                        " (nothing listens on it: HAProxy is not running or was restarted elsewhere)"
                    }
                    _ => "",
                };
                return Err(RouterError::Unreachable {
                    router: self.describe(),
                    detail: format!("cannot connect to {}: {e}{hint}", socket.display()),
                });
            }
            Ok(Ok(s)) => s,
        };
        let line = format!("{command}\n");
        let exchange = async {
            stream.write_all(line.as_bytes()).await?;
            let mut answer = Vec::new();
            (&mut stream)
                .take(MAX_ANSWER_BYTES)
                .read_to_end(&mut answer)
                .await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => Err(timed_out(format!("waiting for the answer to `{command}`"))),
            Ok(Err(e)) => Err(RouterError::Unreachable {
                router: self.describe(),
                detail: format!("`{command}` on {}: {e}", socket.display()),
            }),
            Ok(Ok(answer)) => String::from_utf8(answer)
                .map_err(|_| self.protocol(format!("the answer to `{command}` is not UTF-8"))),
        }
    }

    async fn set_server_weight(&self, server: &str, weight: u8) -> Result<(), RouterError> {
        let command = format!(
            "set server {}/{server} weight {weight}",
            self.config.backend
        );
        let answer = self.command(&command).await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(self.refused(format!("`{command}`: {}", one_line(&answer))))
        }
    }

    /// The backend's servers as `show servers state <backend>` lists them.
    pub async fn servers(&self) -> Result<Vec<ServerState>, RouterError> {
        self.check_names()?;
        let command = format!("show servers state {}", self.config.backend);
        let answer = self.command(&command).await?;
        parse_servers_state(&answer, &self.config.backend)
            .map_err(|why| self.refused(format!("`{command}`: {why}")))
    }

    /// Writes `show servers state` (every backend) to `path` atomically: the
    /// file `server-state-file` names, for a wrapper to call just before it
    /// reloads HAProxy so `load-server-state-from-file` keeps the weights.
    pub async fn save_state(&self, path: &Path) -> Result<(), RouterError> {
        let answer = self.command("show servers state").await?;
        if !answer.starts_with('1') {
            return Err(self.refused(format!("`show servers state`: {}", one_line(&answer))));
        }
        let path = path.to_path_buf();
        let bytes = answer.into_bytes();
        tokio::task::spawn_blocking(move || super::file::write_atomically(&path, &bytes))
            .await
            .map_err(|e| RouterError::Io {
                router: self.describe(),
                detail: format!("writer task failed: {e}"),
            })?
            .map_err(|e| RouterError::Io {
                router: self.describe(),
                detail: e,
            })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `show servers state <backend>`: a version line (`1`), a `#`
/// header naming the columns, then one space-separated row per server.
/// `Err` carries what HAProxy said instead (`Can't find backend.`).
pub fn parse_servers_state(answer: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some("1") => {}
        Some(other) => return Err(one_line(other)),
        None => return Err("empty answer".into()),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| "no `#` header line after the version".to_string())?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no `{name}` column in the header"))
    };
    let (be_name, srv_name, uweight, iweight) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_uweight")?,
        col("srv_iweight")?,
    );
    let mut servers = Vec::new();
    for row in lines {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| format!("short row {row:?}"))
        };
        if field(be_name)? != backend {
            continue;
        }
        let number = |i: usize| -> Result<u32, String> {
            let f = field(i)?;
            f.parse()
                .map_err(|_| format!("weight {f:?} is not a number in row {row:?}"))
        };
        servers.push(ServerState {
            name: field(srv_name)?.to_string(),
            weight: number(uweight)?,
            initial_weight: number(iweight)?,
        });
    }
    Ok(servers)
}

impl Router for HaproxyRouter {
    fn describe(&self) -> String {
        format!(
            "haproxy {}/{{{},{}}}",
            self.config.backend, self.config.baseline, self.config.canary
        )
    }

    fn set_weight<'a>(
        &'a self,
        _target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            self.check_names()?;
            let canary = weight.percent();
            let baseline = 100 - canary;
            let mut order = [
                (self.config.canary.as_str(), canary),
                (self.config.baseline.as_str(), baseline),
            ];
            if baseline > canary {
                order.reverse();
            }
            for (server, w) in order {
                self.set_server_weight(server, w).await?;
            }
            Ok(())
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async move {
            let servers = self.servers().await?;
            let weight_of = |name: &str| {
                servers
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.weight)
                    .ok_or_else(|| {
                        self.refused(format!(
                            "no server {name} in backend {}",
                            self.config.backend
                        ))
                    })
            };
            let canary = u64::from(weight_of(&self.config.canary)?);
            let baseline = u64::from(weight_of(&self.config.baseline)?);
            let total = canary + baseline;
            if total == 0 {
                return Err(self.protocol(format!(
                    "both {} and {} have weight 0: the backend sends traffic to neither",
                    self.config.baseline, self.config.canary
                )));
            }
            let percent = (canary * 100 + total / 2) / total;
            let percent = u8::try_from(percent).ok().and_then(Weight::new);
            // Invariant: canary <= total, so the share is at most 100.
            let canary = percent.unwrap_or(Weight::FULL);
            Ok(Some(Weights { canary }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 be_app 1 stable 127.0.0.1 2 0 75 100 12 1 0 0 0 0 0 0 - 9001 - 0 0 - - 0\n3 be_app 2 canary 127.0.0.1 2 0 25 0 12 1 0 0 0 0 0 0 - 9002 - 0 0 - - 0\n4 be_other 1 x 127.0.0.1 2 0 1 1 12 1 0 0 0 0 0 0 - 9003 - 0 0 - - 0\n\n";

    /// A fake admin socket: records each command line, answers `answer`.
    async fn fake_socket(
        dir: &Path,
        answer: &'static str,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        let socket = dir.join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while c.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(line).unwrap());
                let _ = c.write_all(answer.as_bytes()).await;
            }
        });
        seen
    }

    #[tokio::test]
    async fn the_server_gaining_weight_is_set_first_and_any_answer_is_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let seen = fake_socket(dir.path(), "").await;
        let r = HaproxyRouter::new(HaproxyConfig {
            socket: dir.path().join("admin.sock"),
            backend: "be_app".into(),
            baseline: "stable".into(),
            canary: "canary".into(),
        });
        let t = Target {
            epoch: None,
            service: "s".into(),
            baseline: "a".into(),
            canary: "b".into(),
        };
        for w in [100u8, 0, 50] {
            r.set_weight(&t, Weight::new(w).unwrap()).await.unwrap();
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "set server be_app/canary weight 100",
                "set server be_app/stable weight 0",
                "set server be_app/stable weight 100",
                "set server be_app/canary weight 0",
                "set server be_app/canary weight 50",
                "set server be_app/stable weight 50",
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        let _seen = fake_socket(dir.path(), "No such server.\n").await;
        let r = HaproxyRouter::new(HaproxyConfig {
            socket: dir.path().join("admin.sock"),
            backend: "be_app".into(),
            baseline: "stable".into(),
            canary: "canary".into(),
        });
        let e = r
            .set_weight(&t, Weight::new(10).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, RouterError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("No such server."), "{e}");
    }

    #[test]
    fn parses_show_servers_state() {
        assert_eq!(
            parse_servers_state(STATE, "be_app").unwrap(),
            vec![
                ServerState {
                    name: "stable".into(),
                    weight: 75,
                    initial_weight: 100
                },
                ServerState {
                    name: "canary".into(),
                    weight: 25,
                    initial_weight: 0
                },
            ]
        );
        assert_eq!(
            parse_servers_state("Can't find backend.\n", "be_app").unwrap_err(),
            "Can't find backend."
        );
        assert!(parse_servers_state("1\n3 be_app 1\n", "be_app").is_err());
    }
}
