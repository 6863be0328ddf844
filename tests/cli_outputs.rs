//! The command line's outputs for machines and shells, from the real
//! binary: `policy check --json` and `--format github` (GitHub Actions
//! annotations at the error's line and column), shell completions that the
//! shells themselves accept, and the man page.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn canaryd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .output()
        .expect("run canaryd")
}

const GOOD: &str = r#"apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: good
spec:
  steps:
    - setWeight: 10
    - bake: 5m
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: errors
      metric: error_rate
      threshold: { above: 2% }
"#;

/// `setWeight: 140` on line 7, column 18.
const BAD: &str = r#"apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: bad
spec:
  steps:
    - setWeight: 140
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: errors
      metric: error_rate
      threshold: { above: 2% }
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn policy_check_reports_as_json_and_as_github_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", GOOD);
    let bad = write(dir.path(), "bad.yaml", BAD);

    let out = canaryd(&["policy", "check", "--json", &good, &bad]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["files"][0]["valid"], true);
    assert_eq!(report["files"][0]["policy"], "good");
    let err = &report["files"][1]["errors"][0];
    assert_eq!(
        (err["line"].as_u64(), err["col"].as_u64()),
        (Some(7), Some(18)),
        "{err}"
    );
    assert_eq!(err["path"], "spec.steps[0].setWeight");
    assert!(err["message"].as_str().unwrap().contains("140"), "{err}");

    let out = canaryd(&["policy", "check", "--format", "github", &good, &bad]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("::error "))
        .expect(&text);
    assert!(
        line.starts_with(&format!(
            "::error file={bad},line=7,col=18,title=policy check::spec.steps[0].setWeight: "
        )),
        "{line}"
    );

    // All valid: exit 0, and the JSON says so.
    let out = canaryd(&["policy", "check", "--json", &good]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    let out = canaryd(&["policy", "check", "--format", "github", &good]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("::error"));
}

/// Each shell reads its script without a syntax error (where the shell is
/// installed; bash always is), and each names the commands.
#[test]
fn completions_generate_for_each_shell_and_parse() {
    for (shell, check) in [
        ("bash", Some(("bash", "-n"))),
        ("zsh", Some(("zsh", "-n"))),
        ("fish", Some(("fish", "--no-execute"))),
    ] {
        let out = canaryd(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["rollout", "status", "--watch", "completions"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &format!("canaryd.{shell}"), &script);
        if let Some((program, flag)) = check
            && let Ok(status) = Command::new(program).arg(flag).arg(&path).status()
        {
            assert!(status.success(), "{program} {flag} {path}");
        }
    }
    let bad = canaryd(&["completions", "powershell"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn the_man_page_generates_with_every_command() {
    let out = canaryd(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH canaryd"), "{page}");
    for section in [
        "CANARYD ROLLOUT STATUS",
        "CANARYD ROLLOUT LIST",
        "CANARYD POLICY CHECK",
        "CANARYD COMPLETIONS",
    ] {
        assert!(page.contains(&format!(".SH \"{section}\"")), "{section}");
    }
    // The roff renders, where man is installed.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "canaryd.1", &page);
    if let Ok(o) = Command::new("man")
        .args(["-l", "-P", "cat", &path])
        .output()
        && o.status.success()
    {
        assert!(String::from_utf8_lossy(&o.stdout).contains("rollout"));
    }
}
