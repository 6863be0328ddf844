//! The documentation cannot rot: every policy and daemon config example in
//! `docs/*.md` goes through the real parsers, and the README and the docs
//! link only to files inside the repository.
//!
//! In a fenced ```` ```yaml ```` block:
//! - one with a line `kind: RolloutPolicy` is a policy; it must compile;
//! - one whose first line is `# canaryd.yaml` is a daemon config; it must
//!   parse;
//! - either, with a first line `# rejected: MESSAGE` (after `# canaryd.yaml`
//!   for a config), must be refused with MESSAGE among its diagnostics.
//!
//! In a ```` ```json ```` block, an API body is read as the daemon and its
//! clients read it: an observation batch (`{"events"` or `{"counts"`) with
//! the daemon's own decoder, an error body, an observations answer and a
//! rollout with `crate::wire`'s types.

use std::path::{Path, PathBuf};

use canaryd::daemon::config::parse_config;
use canaryd::policy::parse_policy;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    out.sort();
    out
}

/// Fenced blocks of `lang`: (line of the opening fence, text).
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start() == format!("```{lang}") => {
                open = Some((i + 1, String::new()))
            }
            None => {}
            Some(_) if line.trim_start() == "```" => out.extend(open.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a ```{lang} block is never closed");
    out
}

enum Kind {
    Policy,
    Config,
}

fn check_example(
    kind: Kind,
    place: &str,
    body: &str,
    rejected: Option<&str>,
    problems: &mut Vec<String>,
) {
    let result = match kind {
        Kind::Policy => parse_policy(place, body.as_bytes()).map(|_| ()),
        Kind::Config => parse_config(place, body.as_bytes()).map(|_| ()),
    };
    match (result, rejected) {
        (Ok(()), None) => {}
        (Err(d), None) => problems.push(format!("{place}: refused:\n{d}")),
        (Ok(()), Some(msg)) => problems.push(format!("{place}: accepted, but says `{msg}`")),
        (Err(d), Some(msg)) if d.to_string().contains(msg) => {}
        (Err(d), Some(msg)) => problems.push(format!("{place}: refused without `{msg}`:\n{d}")),
    }
}

#[test]
fn every_policy_and_config_example_in_the_docs_is_what_the_parsers_say() {
    let mut problems = Vec::new();
    let (mut policies, mut configs) = (0, 0);
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, body) in blocks(&text, "yaml") {
            let place = format!("{name}:{line}");
            let mut lines = body.lines().peekable();
            let config = lines.next_if(|l| l.trim() == "# canaryd.yaml").is_some();
            let rejected = lines
                .peek()
                .and_then(|l| l.strip_prefix("# rejected: "))
                .map(str::to_string);
            if config {
                configs += 1;
                check_example(
                    Kind::Config,
                    &place,
                    &body,
                    rejected.as_deref(),
                    &mut problems,
                );
            } else if body.lines().any(|l| l.starts_with("kind: RolloutPolicy")) {
                policies += 1;
                check_example(
                    Kind::Policy,
                    &place,
                    &body,
                    rejected.as_deref(),
                    &mut problems,
                );
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // The docs hold these; a test that found none would check nothing.
    assert!(
        policies >= 6,
        "only {policies} policy examples found in docs/"
    );
    assert!(
        configs >= 3,
        "only {configs} config examples found in docs/"
    );
}

#[test]
fn every_api_body_example_in_the_docs_is_read_as_the_api_reads_it() {
    use canaryd::wire::{ErrorBody, ObservationsAccepted, Refusal, Rollout, decode_batch};
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, body) in blocks(&text, "json") {
            let place = format!("{name}:{line}");
            let compact: String = body.split_whitespace().collect();
            let result = if compact.starts_with("{\"events\"") || compact.starts_with("{\"counts\"")
            {
                decode_batch(body.as_bytes())
                    .map(|_| ())
                    .map_err(|r| r.to_string())
            } else if compact.starts_with("{\"error\"") {
                serde_json::from_str::<ErrorBody>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|b| Refusal::try_from(b).map(|_| ()))
            } else if compact.starts_with("{\"accepted_counts\"") {
                serde_json::from_str::<ObservationsAccepted>(&body)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if compact.starts_with("{\"approvals\"") {
                serde_json::from_str::<Rollout>(&body)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                continue;
            };
            checked += 1;
            if let Err(e) = result {
                problems.push(format!("{place}: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        checked >= 4,
        "only {checked} API body examples found in docs/"
    );
}

/// Markdown links `[text](target)`: the targets.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn the_readme_and_the_docs_link_only_inside_the_repository() {
    let mut pages = docs();
    pages.push(root().join("README.md"));
    let mut problems = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        if text.contains("PRODUCT.md") {
            problems.push(format!(
                "{name}: refers to PRODUCT.md, which is not in the repository"
            ));
        }
        for target in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() {
                continue;
            }
            let resolved = page.parent().unwrap().join(file);
            let Ok(inside) = resolved
                .canonicalize()
                .or_else(|_| lexical(&resolved).ok_or(()))
            else {
                problems.push(format!("{name}: link `{target}` leaves the repository"));
                continue;
            };
            let canonical_root = root().canonicalize().unwrap();
            if inside
                .strip_prefix(&canonical_root)
                .or_else(|_| inside.strip_prefix(root()))
                .is_err()
            {
                problems.push(format!("{name}: link `{target}` leaves the repository"));
                continue;
            };
            if !inside.exists() {
                problems.push(format!("{name}: link `{target}`: no such file"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `a/b/../c` as `a/c`, for a path that does not exist (yet).
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The `policy check` and `policy explain` sessions of `docs/policy.md`
/// are what the binary prints today: each ```` ```console ```` block whose
/// first line is `$ canaryd policy ...` is run (in a temp dir holding the
/// page's `# rejected:` example as `broken.yaml` and the repository's
/// `rollout-policies/`) and its output compared with the rest of the block.
/// `UPDATE_DOCS=1` rewrites the blocks.
#[test]
fn the_policy_sessions_in_the_docs_are_what_the_binary_prints() {
    let file = root().join("docs/policy.md");
    let page = std::fs::read_to_string(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rejected = blocks(&page, "yaml")
        .into_iter()
        .find(|(_, b)| b.starts_with("# rejected: "))
        .expect("docs/policy.md has a `# rejected:` example");
    std::fs::write(dir.path().join("broken.yaml"), &rejected.1).unwrap();
    std::os::unix::fs::symlink(
        root().join("rollout-policies"),
        dir.path().join("rollout-policies"),
    )
    .unwrap();
    let mut updated = page.clone();
    let mut sessions = 0;
    let mut problems = Vec::new();
    for (line, body) in blocks(&page, "console") {
        let Some(command) = body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("$ canaryd "))
        else {
            continue;
        };
        if !command.starts_with("policy ") {
            continue;
        }
        sessions += 1;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
            .args(command.split_whitespace())
            .current_dir(dir.path())
            .output()
            .expect("run canaryd");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = body.split_once('\n').map_or("", |(_, rest)| rest);
        if printed != shown {
            problems.push(format!(
                "docs/policy.md:{line}: `canaryd {command}` prints\n{printed}\nbut the page shows\n{shown}"
            ));
            updated = updated.replacen(&body, &format!("$ canaryd {command}\n{printed}"), 1);
        }
    }
    assert!(sessions >= 2, "only {sessions} policy sessions found");
    if !problems.is_empty() && std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&file, updated).unwrap();
        return;
    }
    assert!(
        problems.is_empty(),
        "{}\n(UPDATE_DOCS=1 cargo test --test docs_examples rewrites them)",
        problems.join("\n")
    );
}
