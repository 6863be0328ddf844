//! The config's `retention:` block: how long what an ended rollout leaves
//! behind is kept (`store/retention.rs` prunes it), and how often the
//! daemon looks. Ages are durations (`90d`, `12h`) or `forever`; the tiers
//! must nest (`journal` ≤ `rollouts` ≤ `audit`), because a rollout goes
//! whole only after its journal went, and its audit entries only after it.

use std::time::Duration;

use crate::store::Ages;
use crate::yaml::decode;
use crate::yaml::diag::{Path, Sink};
use crate::yaml::node::{Node, Value};

/// `retention:` as decoded. `docs/retention.md` documents each key and why
/// its default is what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionConfig {
    pub ages: Ages,
    /// How often a pruning pass starts.
    pub every: Duration,
}

impl RetentionConfig {
    /// An ended rollout's journal: 90 days. Everything else: forever.
    pub const DEFAULT_JOURNAL: Duration = Duration::from_secs(90 * 86_400);
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);
    /// Shorter ages and periods are refused: a typo such as `30s` for
    /// `30d` would otherwise prune at once.
    pub const MIN: Duration = Duration::from_secs(1);
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            ages: Ages {
                journal: Some(Self::DEFAULT_JOURNAL),
                rollouts: None,
                audit: None,
            },
            every: Self::DEFAULT_EVERY,
        }
    }
}

/// `forever`, or a duration of at least [`RetentionConfig::MIN`].
fn age(sink: &mut Sink, node: &Node, path: &Path) -> Option<Option<Duration>> {
    if matches!(&node.value, Value::Str(s) if s == "forever") {
        return Some(None);
    }
    let d = decode::duration(sink, node, path)?;
    if d < RetentionConfig::MIN {
        sink.error(
            node.pos,
            path,
            "expected `forever` or a duration of at least 1s, such as `90d`",
        );
        return None;
    }
    Some(Some(d))
}

fn show(age: Option<Duration>) -> String {
    age.map_or("forever".into(), crate::time::format_duration)
}

/// Decode `retention:`.
pub(super) fn retention(sink: &mut Sink, node: &Node, path: &Path) -> Option<RetentionConfig> {
    let f = decode::mapping(sink, node, path, &["journal", "rollouts", "audit", "every"])?;
    let mut out = RetentionConfig::default();
    let mut ok = true;
    for (key, slot) in [
        ("journal", &mut out.ages.journal),
        ("rollouts", &mut out.ages.rollouts),
        ("audit", &mut out.ages.audit),
    ] {
        if let Some(n) = f.get(key) {
            match age(sink, n, &f.child(key)) {
                Some(a) => *slot = a,
                None => ok = false,
            }
        }
    }
    if let Some(n) = f.get("every") {
        match decode::positive_duration(sink, n, &f.child("every")) {
            Some(d) if d >= RetentionConfig::MIN => out.every = d,
            Some(_) => {
                sink.error(n.pos, &f.child("every"), "expected at least 1s");
                ok = false;
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    // Forever is longer than any age.
    let longer = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => a > b,
        (None, Some(_)) => true,
        _ => false,
    };
    let Ages {
        journal,
        rollouts,
        audit,
    } = out.ages;
    for (key, shorter, than, other, why) in [
        (
            "rollouts",
            rollouts,
            "journal",
            journal,
            "a rollout goes whole only after its journal went",
        ),
        (
            "audit",
            audit,
            "rollouts",
            rollouts,
            "a rollout's audit entries go only after the rollout did",
        ),
    ] {
        if longer(other, shorter) {
            let at = f.get(key).map_or(node.pos, |n| n.pos);
            sink.error(
                at,
                &f.child(key),
                format!(
                    "{} is shorter than `{than}: {}`; {why}, so it must be at least as long",
                    show(shorter),
                    show(other)
                ),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}
