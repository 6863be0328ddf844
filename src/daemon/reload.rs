//! SIGHUP for the config file: its `tokens:` are read again and put in
//! force, through the same checked load as the start
//! (`config/offline.rs`), so a config with any error changes nothing.
//! Other keys take effect at the next start; a reload names the ones that
//! changed. (The policies' reload is `policies.rs`.)

use super::config::Config;
use super::config::offline;
use super::{ServeOptions, Shared, auth};

impl Shared {
    /// SIGHUP: read the config file again (with the same flags) and put its
    /// tokens in force, audited. A config with any error (the same findings
    /// `config check` and the start report) changes nothing: the previous
    /// tokens stay and the findings are returned. Keys other than `tokens`
    /// take effect at the next start; the ones that changed are named in
    /// the log.
    pub fn reload_tokens(&self, opts: &ServeOptions) -> Result<usize, Vec<String>> {
        let checked = offline::check_file(opts.config.as_deref(), &opts.overrides());
        for w in checked.warnings() {
            tracing::warn!(warning = %w, "SIGHUP: config");
        }
        let Some(config) = checked.config.as_ref().filter(|_| !checked.has_errors()) else {
            return Err(checked.errors().map(ToString::to_string).collect());
        };
        let (tokens, admin) =
            auth::token_set(&config.tokens, &self.config.data_dir).map_err(|e| {
                vec![format!(
                    "the admin token file in {}: {e}",
                    self.config.data_dir.display()
                )]
            })?;
        let unapplied = restart_only_changes(&self.config, config);
        if !unapplied.is_empty() {
            tracing::warn!(
                keys = %unapplied.join(", "),
                "SIGHUP: changed in the config file, read only at start: restart to apply"
            );
        }
        if admin == auth::AdminTokenFile::Retired(true) {
            tracing::info!("SIGHUP: tokens are configured: the admin token file was removed");
        }
        let n = config.tokens.len();
        let actors: Vec<&str> = config.tokens.iter().map(|t| t.actor.as_str()).collect();
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        let _ = self.audit(crate::store::NewAudit {
            at: self.clock.now(),
            actor: crate::engine::ENGINE.into(),
            action: "tokens.reload".into(),
            rollout_id: None,
            reason: match admin {
                auth::AdminTokenFile::InForce(_) => {
                    "no tokens configured: the admin token file".into()
                }
                auth::AdminTokenFile::Retired(_) => format!("{n} configured tokens"),
            },
            ticket: None,
            details: serde_json::json!({
                "actors": actors,
                "admin_token_file": matches!(admin, auth::AdminTokenFile::InForce(_)),
            }),
        });
        Ok(n)
    }
}

/// The top-level keys other than `tokens` that differ: a reload does not
/// apply them.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |key, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    differs("listen", running.listen != new.listen);
    differs("dataDir", running.data_dir != new.data_dir);
    differs("policies", running.policies != new.policies);
    differs("services", running.services != new.services);
    differs("registries", running.registries != new.registries);
    differs("api", running.api != new.api);
    differs("retention", running.retention != new.retention);
    out
}
