//! `canaryd completions bash|zsh|fish` and `canaryd man`: shell completion
//! scripts and a man page (roff), generated from the command line's own
//! clap definition (the binary hands it in), so both always match what the
//! binary accepts. They write to the given writer and touch nothing else.

use std::io::Write;

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script of `shell` for `command` (named by its `name`).
pub fn completions(
    shell: CompletionShell,
    command: &mut clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = command.get_name().to_string();
    match shell {
        CompletionShell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, command, name, out)
        }
        CompletionShell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, command, name, out)
        }
        CompletionShell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, command, name, out)
        }
    }
    Ok(())
}

/// The man page of `command`, with a section for each subcommand (and
/// theirs), so `man canaryd` documents every command the binary has.
pub fn man_page(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = command.clone();
    command.build();
    clap_mangen::Man::new(command.clone()).render(out)?;
    let root = command.get_name().to_string();
    render_subcommands(&command, &mut vec![root], out)
}

/// Each subcommand's usage, description and options under a `.SH` heading
/// named by its full path (`CANARYD ROLLOUT STATUS`). Bounded by the
/// command tree's depth.
fn render_subcommands(
    command: &clap::Command,
    path: &mut Vec<String>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        path.push(sub.get_name().to_string());
        let title = path.join(" ");
        let man = clap_mangen::Man::new(sub.clone().bin_name(title.clone()));
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)?;
        man.render_description_section(&mut section)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut section)?;
        }
        writeln!(out, ".SH \"{}\"", title.to_uppercase())?;
        // Its sections nest under that heading: their own `.SH` lines go.
        for line in String::from_utf8_lossy(&section).lines() {
            if !line.starts_with(".SH ") {
                writeln!(out, "{line}")?;
            }
        }
        render_subcommands(sub, path, out)?;
        path.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("canaryd")
            .about("canary rollouts")
            .subcommand(
                clap::Command::new("rollout")
                    .about("steer rollouts")
                    .subcommand(
                        clap::Command::new("status").about("one rollout").arg(
                            clap::Arg::new("watch")
                                .long("watch")
                                .action(clap::ArgAction::SetTrue),
                        ),
                    ),
            )
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut command(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("rollout") && text.contains("watch"),
                "{shell:?}: {text}"
            );
        }
    }

    #[test]
    fn the_man_page_has_a_section_per_subcommand() {
        let mut out = Vec::new();
        man_page(&command(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH canaryd"),
            "{text}"
        );
        assert!(text.contains(".SH \"CANARYD ROLLOUT STATUS\""), "{text}");
        assert!(text.contains("\\-\\-watch"), "{text}");
    }
}
