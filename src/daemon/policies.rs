//! The loaded policy set: every `*.yaml`/`*.yml` file of the policies
//! directory, compiled, keyed by `metadata.name`, each with a version (the
//! SHA-256 of its bytes) that rollouts are pinned to. A reload that finds
//! any invalid file keeps the whole previous set (an invalid policy never
//! replaces a valid one) and reports every problem. [`Shared::reload_policies`]
//! swaps the set in (SIGHUP) and audits it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::Shared;
use crate::policy::{Policy, parse_policy};
use crate::store::NewAudit;

#[derive(Clone, Debug)]
pub struct LoadedPolicy {
    pub policy: Arc<Policy>,
    pub version: String,
    pub file: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub by_name: BTreeMap<String, LoadedPolicy>,
}

/// Load every policy in `dir`. Errors: every diagnostic of every file, and
/// duplicate names, as lines.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![format!(
            "{}: cannot read the policies directory: {e}",
            dir.display()
        )]
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut set = PolicySet::default();
    let mut errors = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                errors.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        match parse_policy(&name, &bytes) {
            Ok(policy) => {
                let version = hex(&Sha256::digest(&bytes));
                if let Some(other) = set.by_name.get(&policy.name) {
                    errors.push(format!(
                        "{name}: policy name `{}` is also used by {}; names must be unique",
                        policy.name,
                        other.file.display()
                    ));
                    continue;
                }
                set.by_name.insert(
                    policy.name.clone(),
                    LoadedPolicy {
                        policy: Arc::new(policy),
                        version,
                        file,
                    },
                );
            }
            Err(diags) => errors.extend(diags.0.iter().map(|d| d.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    /// Reload the policies directory; an invalid set keeps the old one.
    pub fn reload_policies(&self) -> Result<usize, Vec<String>> {
        let set = load_dir(&self.config.policies)?;
        let n = set.by_name.len();
        let names: Vec<String> = set.by_name.keys().cloned().collect();
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = set;
        let _ = self.audit(NewAudit {
            at: self.clock.now(),
            actor: crate::engine::ENGINE.into(),
            action: "policies.reload".into(),
            rollout_id: None,
            reason: format!("{n} policies loaded"),
            ticket: None,
            details: json!({ "policies": names }),
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_policies_load_and_a_bad_file_fails_the_set() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies");
        let set = load_dir(&dir).unwrap();
        assert!(set.by_name.len() >= 7);
        assert!(set.by_name.values().all(|p| p.version.len() == 64));

        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.join(
                set.by_name
                    .values()
                    .next()
                    .unwrap()
                    .file
                    .file_name()
                    .unwrap(),
            ),
            tmp.path().join("a.yaml"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("b.yaml"), "apiVersion: nope\n").unwrap();
        let errs = load_dir(tmp.path()).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("b.yaml:1:")), "{errs:?}");
    }
}
