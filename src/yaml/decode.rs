//! Typed reads from a located YAML tree that report every problem to a
//! [`Sink`] and keep going. This is what lets `policy check` list all the
//! mistakes in a file at once: a wrong field does not hide the ones after it.
//!
//! Each reader returns `None` after reporting; callers substitute nothing and
//! carry on, and the compiled policy is only built when the sink stays empty.

use std::time::Duration;

use super::diag::{Path, Sink};
use super::node::{Node, Pos, Value};
use super::units;

/// A mapping whose keys were checked against the allowed set.
pub struct Fields<'n> {
    pub pos: Pos,
    pub path: Path,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The keys present, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'n str> + '_ {
        self.entries.iter().map(|(k, _)| *k)
    }

    /// A required field: reports `missing required field` when absent.
    pub fn require(&self, sink: &mut Sink, key: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            sink.error(
                self.pos,
                &self.path,
                format!("missing required field `{key}`"),
            );
        }
        found
    }

    pub fn child(&self, key: &str) -> Path {
        self.path.key(key)
    }
}

/// Read a mapping, reporting unknown and non-string keys.
pub fn mapping<'n>(
    sink: &mut Sink,
    node: &'n Node,
    path: &Path,
    allowed: &[&str],
) -> Option<Fields<'n>> {
    let Value::Map(entries) = &node.value else {
        sink.error(
            node.pos,
            path,
            format!("expected a mapping, found {}", found(&node.value)),
        );
        return None;
    };
    let mut fields = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Value::Str(name) = &key.value else {
            sink.error(
                key.pos,
                path,
                format!("expected a field name, found {}", found(&key.value)),
            );
            continue;
        };
        if allowed.contains(&name.as_str()) {
            fields.push((name.as_str(), value));
        } else {
            sink.error(
                key.pos,
                &path.key(name),
                format!(
                    "unknown field `{name}`, expected one of {}",
                    one_of(allowed)
                ),
            );
        }
    }
    Some(Fields {
        pos: node.pos,
        path: path.clone(),
        entries: fields,
    })
}

/// Read a mapping with free-form keys (metric names, group shares): every key
/// must be a string; the values are returned for the caller to read.
pub fn free_mapping<'n>(
    sink: &mut Sink,
    node: &'n Node,
    path: &Path,
) -> Option<Vec<(&'n str, Pos, &'n Node)>> {
    let Value::Map(entries) = &node.value else {
        sink.error(
            node.pos,
            path,
            format!("expected a mapping, found {}", found(&node.value)),
        );
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match &key.value {
            Value::Str(name) => out.push((name.as_str(), key.pos, value)),
            other => sink.error(
                key.pos,
                path,
                format!("expected a name, found {}", found(other)),
            ),
        }
    }
    Some(out)
}

pub fn sequence<'n>(sink: &mut Sink, node: &'n Node, path: &Path) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        other => {
            sink.error(
                node.pos,
                path,
                format!("expected a list, found {}", found(other)),
            );
            None
        }
    }
}

pub fn string(sink: &mut Sink, node: &Node, path: &Path) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        other => {
            sink.error(
                node.pos,
                path,
                format!("expected a string, found {}", found(other)),
            );
            None
        }
    }
}

/// A non-empty name made of `[a-z0-9-]`, at most 63 characters (fits a DNS
/// label, so it can name Kubernetes objects and metric labels).
pub fn name(sink: &mut Sink, node: &Node, path: &Path, what: &str) -> Option<String> {
    let s = string(sink, node, path)?;
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Some(s)
    } else {
        sink.error(
            node.pos,
            path,
            format!(
                "expected a {what} of 1 to 63 characters from `a-z`, `0-9` and `-`, found {}",
                found(&node.value)
            ),
        );
        None
    }
}

/// A signal, metric or group name: letters, digits, `_`, `-`, `.`, `:`.
pub fn identifier(sink: &mut Sink, node: &Node, path: &Path, what: &str) -> Option<String> {
    let s = string(sink, node, path)?;
    if is_identifier(&s) {
        Some(s)
    } else {
        sink.error(
            node.pos,
            path,
            format!(
                "expected a {what} of 1 to 128 characters from letters, digits, `_`, `-`, `.` and `:`, found {}",
                found(&node.value)
            ),
        );
        None
    }
}

pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

pub fn boolean(sink: &mut Sink, node: &Node, path: &Path) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        other => {
            sink.error(
                node.pos,
                path,
                format!("expected `true` or `false`, found {}", found(other)),
            );
            None
        }
    }
}

/// A whole number in `min..=max`.
pub fn integer(sink: &mut Sink, node: &Node, path: &Path, min: i128, max: i128) -> Option<i128> {
    match &node.value {
        Value::Int(i) if (min..=max).contains(i) => Some(*i),
        Value::Int(i) => {
            sink.error(
                node.pos,
                path,
                format!("must be {}, got {i}", range_text(min, max)),
            );
            None
        }
        other => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected a whole number {}, found {}",
                    range_text(min, max),
                    found(other)
                ),
            );
            None
        }
    }
}

fn range_text(min: i128, max: i128) -> String {
    if max >= i128::from(u64::MAX) {
        format!("at least {min}")
    } else {
        format!("from {min} to {max}")
    }
}

/// A plain finite number (integer or decimal), unchecked range.
pub fn number(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) if x.is_finite() => Some(*x),
        other => {
            sink.error(
                node.pos,
                path,
                format!("expected a number, found {}", found(other)),
            );
            None
        }
    }
}

pub fn duration(sink: &mut Sink, node: &Node, path: &Path) -> Option<Duration> {
    match &node.value {
        Value::Str(s) => match units::parse_duration(s) {
            Ok(d) => Some(d),
            Err(msg) => {
                sink.error(node.pos, path, msg.to_string());
                None
            }
        },
        Value::Int(i) => {
            sink.error(
                node.pos,
                path,
                format!("missing unit in `{i}`: expected a duration such as `{i}s` or `{i}m`"),
            );
            None
        }
        other => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected a duration with a unit such as `30s` or `10m`, found {}",
                    found(other)
                ),
            );
            None
        }
    }
}

/// A duration that must be strictly positive.
pub fn positive_duration(sink: &mut Sink, node: &Node, path: &Path) -> Option<Duration> {
    let d = duration(sink, node, path)?;
    if d.is_zero() {
        sink.error(node.pos, path, "must be greater than 0s, got 0s");
        return None;
    }
    Some(d)
}

/// A percentage (`0.5%`) or plain fraction (`0.005`) as a fraction.
pub fn percent(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    match &node.value {
        Value::Str(s) => match units::parse_percent_text(s) {
            Ok(v) => Some(v),
            Err(msg) => {
                sink.error(node.pos, path, msg.to_string());
                None
            }
        },
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) if x.is_finite() => Some(*x),
        other => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected a percentage such as `0.5%` or a fraction such as `0.005`, found {}",
                    found(other)
                ),
            );
            None
        }
    }
}

/// A percentage strictly between 0% and 100% (`relativeDrop`, `slo`,
/// `maxDrop`, ...).
pub fn open_percent(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    let v = percent(sink, node, path)?;
    if v > 0.0 && v < 1.0 {
        Some(v)
    } else {
        sink.error(
            node.pos,
            path,
            format!("must be in (0%, 100%), got {}", units::format_percent(v)),
        );
        None
    }
}

/// A latency with its unit, in milliseconds.
pub fn latency_ms(sink: &mut Sink, node: &Node, path: &Path) -> Option<f64> {
    match &node.value {
        Value::Str(s) => match units::parse_latency_ms(s) {
            Ok(v) => Some(v),
            Err(msg) => {
                sink.error(node.pos, path, msg.to_string());
                None
            }
        },
        Value::Int(_) | Value::Float(_) => {
            sink.error(
                node.pos,
                path,
                format!(
                    "missing unit in `{}`: expected a latency such as `200ms` or `1.5s`",
                    node.value
                ),
            );
            None
        }
        other => {
            sink.error(
                node.pos,
                path,
                format!(
                    "expected a latency with a unit such as `200ms`, found {}",
                    found(other)
                ),
            );
            None
        }
    }
}

/// One of a fixed set of words (`rollback` or `pause`, ...), mapped to its
/// value.
pub fn keyword<T: Copy>(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    choices: &[(&str, T)],
) -> Option<T> {
    let s = string(sink, node, path)?;
    let found_choice = choices.iter().find(|(word, _)| *word == s).map(|(_, v)| *v);
    if found_choice.is_none() {
        let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        let expected = match words.as_slice() {
            [a, b] => format!("`{a}` or `{b}`"),
            _ => format!("one of {}", one_of(&words)),
        };
        sink.error(node.pos, path, format!("expected {expected}, found `{s}`"));
    }
    found_choice
}

/// "found ..." text for a value.
pub fn found(value: &Value) -> String {
    match value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            format!("{} {value}", value.kind())
        }
        other => other.kind().to_owned(),
    }
}

pub fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An `http://` or `https://` URL with a host and no white space.
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}
