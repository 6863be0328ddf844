//! `docs/cli.md` holds the `--help` of every `canaryd` command, generated
//! from the binary itself (clap): this test renders it again and fails when
//! the page differs, so a new command or flag cannot go undocumented.
//! `UPDATE_DOCS=1 cargo test --test docs_cli` rewrites the generated part.

use std::path::Path;
use std::process::Command;

const BEGIN: &str = "<!-- BEGIN GENERATED: the --help of every command; UPDATE_DOCS=1 cargo test --test docs_cli -->";
const END: &str = "<!-- END GENERATED -->";

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .arg("--help")
        // The environment shows up in the help (`[env: CANARYD_SERVER=...]`).
        .env_remove("CANARYD_SERVER")
        .env_remove("CANARYD_TOKEN")
        .output()
        .expect("run canaryd --help");
    assert!(out.status.success(), "canaryd {args:?} --help failed");
    let text = String::from_utf8(out.stdout).expect("UTF-8 help");
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The subcommands a help text lists under `Commands:` (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
        } else if inside && line.starts_with("  ") {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name != "help" && !line.starts_with("   ") {
                out.push(name.to_string());
            }
        } else if inside {
            break;
        }
    }
    out
}

/// Every command, depth first, as a section with its help.
fn render(path: &mut Vec<String>, out: &mut String) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let text = help(&args);
    let title = std::iter::once("canaryd")
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let depth = "#".repeat((path.len() + 3).min(5));
    out.push_str(&format!("{depth} `{title}`\n\n```text\n{text}\n```\n\n"));
    for sub in subcommands(&text) {
        path.push(sub);
        render(path, out);
        path.pop();
    }
}

#[test]
fn the_cli_page_holds_the_help_of_every_command() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let page = std::fs::read_to_string(&file).expect("docs/cli.md");
    let (Some(start), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        panic!("docs/cli.md lacks the markers {BEGIN:?} and {END:?}");
    };
    let mut generated = String::new();
    render(&mut Vec::new(), &mut generated);
    let current = &page[start + BEGIN.len()..end];
    let wanted = format!("\n\n{generated}");
    if current == wanted {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{BEGIN}{wanted}{}", &page[..start], &page[end..]);
        std::fs::write(&file, updated).expect("write docs/cli.md");
        return;
    }
    let first = current
        .lines()
        .zip(wanted.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(current.lines().count().min(wanted.lines().count()));
    panic!(
        "docs/cli.md is not the binary's --help (first difference at generated line {}: {:?} vs {:?}); \
         run `UPDATE_DOCS=1 cargo test --test docs_cli` and review the diff",
        first + 1,
        current.lines().nth(first),
        wanted.lines().nth(first)
    );
}
