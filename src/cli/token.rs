//! `canaryd token create`: a new bearer token and the config line that
//! grants it. Only the SHA-256 goes into the config; the token is shown once.

use std::process::ExitCode;

use anyhow::bail;

use crate::daemon::auth::{Role, new_token, sha256_hex};

pub fn create(actor: &str, roles: &[String]) -> anyhow::Result<ExitCode> {
    if actor.trim().is_empty() {
        bail!("--actor must not be empty");
    }
    if roles.is_empty() {
        bail!("--roles needs at least one role");
    }
    let mut parsed = Vec::new();
    for r in roles {
        parsed.push(Role::parse(r.trim()).map_err(|e| anyhow::anyhow!("--roles: {e}"))?);
    }
    let token = new_token().map_err(|e| anyhow::anyhow!("cannot draw random bytes: {e}"))?;
    let roles_yaml: Vec<String> = parsed
        .iter()
        .map(|r| format!("{:?}", r.to_string()))
        .collect();
    println!("token: {token}");
    println!(
        "# add to the config's `tokens:` and restart the daemon (tokens are read at start); the token itself is not stored anywhere"
    );
    println!(
        "  - {{ actor: {:?}, sha256: \"{}\", roles: [{}] }}",
        actor,
        sha256_hex(&token),
        roles_yaml.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
