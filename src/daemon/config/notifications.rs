//! The config's `notifications:` block, decoded into
//! [`crate::daemon::notify::NotificationsConfig`] with located errors:
//! receivers (`slack: {url}`, `teams: {url}`, `webhook: {url, secretFile}`),
//! routes (services, event kinds, receivers; each name checked against what
//! is configured), and the delivery schedule (`retryFor`, `retryInitial`,
//! `retryMaxInterval`). A webhook's `secretFile` is read here, so an
//! unreadable or empty one stops the config, not the first delivery; so
//! are the TLS keys every receiver takes beside its `url` (`caFile`,
//! `clientCert`, `clientKey`, `config/tls.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;

use super::tls::{client_tls, with_tls_keys};
use crate::daemon::notify::{
    DeliverySchedule, EventKind, Format, NotificationsConfig, Receiver, Route, Secret,
};
use crate::yaml::decode;
use crate::yaml::diag::{Path, Sink};
use crate::yaml::node::Node;

/// Decode `notifications:`; `services`: the configured service names.
pub(super) fn notifications(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    services: &BTreeSet<&str>,
) -> Option<NotificationsConfig> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &[
            "receivers",
            "routes",
            "retryFor",
            "retryInitial",
            "retryMaxInterval",
        ],
    )?;
    let mut out = NotificationsConfig::default();
    let mut ok = true;
    for (key, slot) in [
        ("retryFor", &mut out.schedule.retry_for),
        ("retryInitial", &mut out.schedule.initial),
        ("retryMaxInterval", &mut out.schedule.max_interval),
    ] {
        if let Some(n) = f.get(key) {
            match decode::positive_duration(sink, n, &f.child(key)) {
                Some(d) => *slot = d,
                None => ok = false,
            }
        }
    }
    let DeliverySchedule {
        initial,
        max_interval,
        ..
    } = out.schedule;
    if initial > max_interval {
        let key = if f.has("retryInitial") {
            "retryInitial"
        } else {
            "retryMaxInterval"
        };
        sink.error(
            f.get(key).map_or(f.pos, |n| n.pos),
            &f.child(key),
            format!(
                "retryInitial ({}) must not exceed retryMaxInterval ({})",
                crate::time::format_duration(initial),
                crate::time::format_duration(max_interval)
            ),
        );
        ok = false;
    }
    if let Some(n) = f.get("receivers") {
        let p = f.child("receivers");
        match decode::free_mapping(sink, n, &p) {
            Some(entries) => {
                for (name, pos, node) in entries {
                    let rp = p.key(name);
                    if !valid_name(name) {
                        sink.error(
                            pos,
                            &rp,
                            format!("receiver name `{name}`: expected 1 to 63 characters from `a-z`, `0-9` and `-`"),
                        );
                        ok = false;
                        continue;
                    }
                    match receiver(sink, node, &rp) {
                        Some(r) => {
                            out.receivers.insert(name.to_string(), r);
                        }
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.get("routes") {
        let p = f.child("routes");
        match decode::sequence(sink, n, &p) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match route(sink, item, &p.index(i), &out.receivers, services) {
                        Some(r) => out.routes.push(r),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `{ slack: {url} }`, `{ teams: {url} }` or `{ webhook: {url, secretFile} }`.
fn receiver(sink: &mut Sink, node: &Node, path: &Path) -> Option<Receiver> {
    let kinds = ["slack", "teams", "webhook"];
    let outer = decode::mapping(sink, node, path, &kinds)?;
    let keys: Vec<&str> = outer.keys().collect();
    let [kind] = keys.as_slice() else {
        sink.error(
            node.pos,
            path,
            format!(
                "expected exactly one of {}, found {}",
                decode::one_of(&kinds),
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        );
        return None;
    };
    let (n, p) = (outer.get(kind)?, outer.child(kind));
    let format = match *kind {
        "slack" => Format::Slack,
        "teams" => Format::Teams,
        _ => Format::Webhook,
    };
    let allowed = match format {
        Format::Webhook => with_tls_keys(&["url", "secretFile"]),
        Format::Slack | Format::Teams => with_tls_keys(&["url"]),
    };
    let f = decode::mapping(sink, n, &p, &allowed)?;
    let url = f.require(sink, "url").and_then(|n| {
        let s = decode::string(sink, n, &f.child("url"))?;
        if decode::is_http_url(&s) {
            Some(s)
        } else {
            sink.error(
                n.pos,
                &f.child("url"),
                format!("expected an http:// or https:// URL, found `{s}`"),
            );
            None
        }
    });
    let tls = client_tls(sink, &f, &[url.as_deref()]);
    let secret = match format {
        Format::Webhook => {
            let n = f.require(sink, "secretFile")?;
            Some(secret_file(sink, n, &f.child("secretFile"))?)
        }
        Format::Slack | Format::Teams => None,
    };
    Some(Receiver {
        format,
        url: url?,
        secret,
        tls: tls?,
    })
}

/// The secret in `secretFile`: its bytes less surrounding white space
/// (a trailing newline is how editors save it), at least 16 bytes.
fn secret_file(sink: &mut Sink, node: &Node, path: &Path) -> Option<Secret> {
    let file = decode::string(sink, node, path)?;
    match std::fs::read(FsPath::new(&file)) {
        Ok(bytes) => {
            let trimmed = bytes.trim_ascii();
            if trimmed.len() < 16 {
                sink.error(
                    node.pos,
                    path,
                    format!(
                        "the secret in `{file}` has {} bytes; use at least 16 (e.g. `openssl rand -hex 32 > {file}`)",
                        trimmed.len()
                    ),
                );
                return None;
            }
            Some(Secret(trimmed.to_vec()))
        }
        Err(e) => {
            sink.error(node.pos, path, format!("cannot read `{file}`: {e}"));
            None
        }
    }
}

fn route(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    receivers: &BTreeMap<String, Receiver>,
    services: &BTreeSet<&str>,
) -> Option<Route> {
    let f = decode::mapping(sink, node, path, &["services", "events", "receivers"])?;
    let mut ok = true;
    let mut names = |key: &str, sink: &mut Sink, check: &dyn Fn(&str) -> Option<String>| {
        let n = f.get(key)?;
        let p = f.child(key);
        let Some(items) = decode::sequence(sink, n, &p) else {
            ok = false;
            return None;
        };
        if items.is_empty() {
            sink.error(n.pos, &p, "expected at least one name");
            ok = false;
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(s) = decode::string(sink, item, &p.index(i)) else {
                ok = false;
                continue;
            };
            match check(&s) {
                Some(problem) => {
                    sink.error(item.pos, &p.index(i), problem);
                    ok = false;
                }
                None => out.push(s),
            }
        }
        Some(out)
    };
    let known_receivers = receivers.keys().map(String::as_str).collect::<Vec<_>>();
    let to = names("receivers", sink, &|s| {
        (!receivers.contains_key(s)).then(|| {
            format!(
                "unknown receiver `{s}`; configured: {}",
                if known_receivers.is_empty() {
                    "none".to_string()
                } else {
                    decode::one_of(&known_receivers)
                }
            )
        })
    });
    let service_list = services.iter().copied().collect::<Vec<_>>();
    let only = names("services", sink, &|s| {
        (!services.contains(s)).then(|| {
            format!(
                "unknown service `{s}`; configured: {}",
                if service_list.is_empty() {
                    "none".to_string()
                } else {
                    decode::one_of(&service_list)
                }
            )
        })
    });
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    let events = names("events", sink, &|s| {
        EventKind::parse(s).is_none().then(|| {
            format!(
                "unknown event `{s}`, expected one of {}",
                decode::one_of(&kinds)
            )
        })
    });
    if !f.has("receivers") {
        f.require(sink, "receivers");
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Route {
        services: only,
        events: events.map(|e| e.iter().filter_map(|s| EventKind::parse(s)).collect()),
        receivers: to?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use expect_test::expect;

    use super::super::parse_config;
    use super::*;

    fn secret_file(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("hook.secret");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn receivers_routes_and_the_schedule_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "0123456789abcdef0123\n");
        let yaml = format!(
            r#"
services:
  checkout: {{}}
  search: {{}}
notifications:
  retryFor: 2h
  retryMaxInterval: 30s
  receivers:
    ops-slack: {{ slack: {{ url: "https://hooks.slack.com/services/T/B/X" }} }}
    ops-teams: {{ teams: {{ url: "https://example.webhook.office.com/x" }} }}
    audit: {{ webhook: {{ url: "http://127.0.0.1:9000/hook", secretFile: "{secret}" }} }}
  routes:
    - {{ receivers: [ops-slack] }}
    - {{ services: [checkout], events: [rolled-back, awaiting-approval], receivers: [ops-teams, audit] }}
"#
        );
        let c = parse_config("c.yaml", yaml.as_bytes())
            .unwrap()
            .notifications;
        assert_eq!(c.schedule.retry_for, Duration::from_secs(7200));
        assert_eq!(c.schedule.max_interval, Duration::from_secs(30));
        assert_eq!(c.schedule.initial, DeliverySchedule::default().initial);
        assert_eq!(c.receivers["ops-slack"].format, Format::Slack);
        assert_eq!(c.receivers["ops-teams"].format, Format::Teams);
        assert_eq!(
            c.receivers["audit"].secret,
            Some(Secret(b"0123456789abcdef0123".to_vec())),
            "the trailing newline is not part of the secret"
        );
        assert_eq!(
            c.receivers_for("checkout", EventKind::RolledBack),
            ["ops-teams", "audit"]
        );
        assert_eq!(
            c.receivers_for("checkout", EventKind::Started),
            ["ops-slack"]
        );
        assert_eq!(
            c.receivers_for("search", EventKind::RolledBack),
            ["ops-slack"]
        );
    }

    #[test]
    fn every_problem_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let short = secret_file(&dir, "short\n");
        let missing = dir.path().join("absent.secret").display().to_string();
        let yaml = format!(
            r##"services:
  checkout: {{}}
notifications:
  retryInitial: 5m
  retryMaxInterval: 1m
  receivers:
    Bad: {{ slack: {{ url: "https://x" }} }}
    two: {{ slack: {{ url: "https://x" }}, teams: {{ url: "https://y" }} }}
    ftp: {{ teams: {{ url: "ftp://x" }} }}
    nosecret: {{ webhook: {{ url: "http://x" }} }}
    short: {{ webhook: {{ url: "http://x", secretFile: "{short}" }} }}
    gone: {{ webhook: {{ url: "http://x", secretFile: "{missing}" }} }}
    extra: {{ slack: {{ url: "https://x", channel: "#ops" }} }}
  routes:
    - {{ receivers: [nobody] }}
    - {{ services: [billing], events: [rolledBack], receivers: [extra] }}
    - {{ events: [] , receivers: [extra] }}
    - {{ services: [checkout] }}
"##
        );
        let d = parse_config("c.yaml", yaml.as_bytes())
            .unwrap_err()
            .to_string();
        let d = d.replace(&dir.path().display().to_string(), "TMP");
        expect![[r#"
            c.yaml:4:17: notifications.retryInitial: retryInitial (5m) must not exceed retryMaxInterval (1m)
            c.yaml:7:5: notifications.receivers.Bad: receiver name `Bad`: expected 1 to 63 characters from `a-z`, `0-9` and `-`
            c.yaml:8:10: notifications.receivers.two: expected exactly one of `slack`, `teams`, `webhook`, found slack, teams
            c.yaml:9:26: notifications.receivers.ftp.teams.url: expected an http:// or https:// URL, found `ftp://x`
            c.yaml:10:26: notifications.receivers.nosecret.webhook: missing required field `secretFile`
            c.yaml:11:54: notifications.receivers.short.webhook.secretFile: the secret in `TMP/hook.secret` has 5 bytes; use at least 16 (e.g. `openssl rand -hex 32 > TMP/hook.secret`)
            c.yaml:12:53: notifications.receivers.gone.webhook.secretFile: cannot read `TMP/absent.secret`: No such file or directory (os error 2)
            c.yaml:13:41: notifications.receivers.extra.slack.channel: unknown field `channel`, expected one of `url`, `caFile`, `clientCert`, `clientKey`
            c.yaml:15:21: notifications.routes[0].receivers[0]: unknown receiver `nobody`; configured: `extra`
            c.yaml:16:20: notifications.routes[1].services[0]: unknown service `billing`; configured: `checkout`
            c.yaml:16:39: notifications.routes[1].events[0]: unknown event `rolledBack`, expected one of `started`, `awaiting-approval`, `paused`, `resumed`, `promoted`, `rolled-back`, `inconclusive`, `aborted`, `concluded`, `router-failure`, `source-failing`, `source-recovered`
            c.yaml:17:17: notifications.routes[2].events: expected at least one name
            c.yaml:18:7: notifications.routes[3]: missing required field `receivers`"#]]
        .assert_eq(&d);
    }
}
