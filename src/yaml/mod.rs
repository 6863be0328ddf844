//! canaryd's YAML toolkit, shared by policies, the daemon's config and the
//! simulator's scenarios: bytes into a tree whose every node keeps its line
//! and column (`node`), readers over that tree that report each problem to a
//! sink and carry on (`decode`), so a file's problems are all reported at
//! once as `FILE:LINE:COL: path: message` (`diag`), units as people write
//! them (`units`: `30s`, `0.5%`, `200ms`), and the Kubernetes-style
//! envelope every canaryd document shares. It knows no policy: what a
//! document means is its reader's business.

pub mod decode;
pub mod diag;
pub mod node;
pub mod units;

use diag::{Path, Sink};
use node::{Node, Pos, Value};

/// Largest YAML file accepted.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting accepted; real documents use about six levels.
const MAX_DEPTH: usize = 32;

/// Bytes to a located tree, with the file-level checks (size, encoding,
/// emptiness) and YAML's own (syntax, duplicate keys, budgets).
pub fn load_yaml(sink: &mut Sink, bytes: &[u8]) -> Option<Node> {
    let root = Path::root();
    let start = Pos { line: 1, col: 1 };
    if bytes.len() > MAX_FILE_BYTES {
        sink.error(
            start,
            &root,
            format!(
                "file is {} bytes; at most {MAX_FILE_BYTES} bytes (1 MiB) are accepted",
                bytes.len()
            ),
        );
        return None;
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        sink.error(
            pos_of_offset(bytes, offset),
            &root,
            "file is binary (contains a NUL byte); expected UTF-8 YAML text",
        );
        return None;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            sink.error(
                pos_of_offset(bytes, e.valid_up_to()),
                &root,
                "file is not valid UTF-8; expected UTF-8 YAML text",
            );
            return None;
        }
    };
    if text.trim().is_empty() {
        sink.error(start, &root, "file is empty; expected a YAML document");
        return None;
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = 100_000;
    budget.max_events = 400_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 100_000;
    // Two, so that a second document gets the parser's own clear message.
    budget.max_documents = 2;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: Some(budget),
    };
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(node) if node.value == Value::Null => {
            sink.error(
                node.pos,
                &root,
                "file has no content; expected a YAML document",
            );
            None
        }
        Ok(node) => Some(node),
        Err(e) => {
            let pos = e
                .location()
                .map(Pos::from)
                .filter(|p| p.line > 0)
                .unwrap_or(start);
            sink.error(pos, &root, yaml_message(&e.to_string()));
            None
        }
    }
}

/// serde-saphyr appends " at line L, column C"; we print the place up front.
fn yaml_message(raw: &str) -> String {
    let first_line = raw.lines().next().unwrap_or(raw);
    let msg = match first_line.rfind(" at line ") {
        Some(i) => &first_line[..i],
        None => first_line,
    };
    if let Some(what) = first_line.strip_prefix("budget breached: ") {
        // The breach reads like `Depth { depth: 33 }`: keep the limit's name.
        let limit = what.split([' ', '{']).next().unwrap_or(what);
        return format!(
            "file exceeds a safety limit on YAML size or structure ({limit}); policies are small documents with few anchors"
        );
    }
    let msg = msg.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    let msg = msg.replace(
        "; use from_str_multiple or from_str_multiple_with_options",
        "; a file holds exactly one document",
    );
    format!("invalid YAML: {msg}")
}

fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    Pos {
        line,
        col: (offset - line_start) as u64 + 1,
    }
}

/// The Kubernetes-style envelope every canaryd document shares (`apiVersion`,
/// `kind`, `metadata: {name, description}`, `spec`), with the spec read by
/// `spec`. `None` when anything in the file was wrong (all reported).
pub fn envelope<T>(
    sink: &mut Sink,
    root: &Node,
    api_version: &str,
    kind: &str,
    name_what: &str,
    spec: impl FnOnce(&mut Sink, &Node, &Path) -> Option<T>,
) -> Option<(String, Option<String>, T)> {
    let top = decode::mapping(
        sink,
        root,
        &Path::root(),
        &["apiVersion", "kind", "metadata", "spec"],
    )?;
    if let Some(node) = top.require(sink, "apiVersion") {
        expect_literal(sink, node, &top.child("apiVersion"), api_version);
    }
    if let Some(node) = top.require(sink, "kind") {
        expect_literal(sink, node, &top.child("kind"), kind);
    }
    let (name, description) = match top.require(sink, "metadata") {
        Some(node) => metadata(sink, node, &top.child("metadata"), name_what),
        None => (None, None),
    };
    let spec = top
        .require(sink, "spec")
        .and_then(|node| spec(sink, node, &top.child("spec")));
    if !sink.is_empty() {
        return None;
    }
    Some((name?, description, spec?))
}

fn expect_literal(sink: &mut Sink, node: &Node, path: &Path, want: &str) {
    if let Some(s) = decode::string(sink, node, path)
        && s != want
    {
        sink.error(node.pos, path, format!("expected `{want}`, found `{s}`"));
    }
}

fn metadata(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
    name_what: &str,
) -> (Option<String>, Option<String>) {
    let Some(f) = decode::mapping(sink, node, path, &["name", "description"]) else {
        return (None, None);
    };
    let name = f
        .require(sink, "name")
        .and_then(|n| decode::name(sink, n, &f.child("name"), name_what));
    let description = f
        .get("description")
        .and_then(|n| decode::string(sink, n, &f.child("description")));
    (name, description)
}
