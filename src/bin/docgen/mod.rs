//! Test-only, shared by crustd's and crustctl's tests: their man pages and shell completions generated
//! from their clap definitions (clap_mangen, clap_complete) and compared with the committed ones in
//! docs/man and deploy/completions, which the package ships; with `CRUST_UPDATE_DOCS=1` (`make docs`)
//! they are written instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

/// A generated file: its path under the repository, and its bytes.
pub type Generated = (PathBuf, Vec<u8>);

/// `<name>.8`, and `<name>-<sub>[-<sub>...].8` for each subcommand, as git and cargo ship theirs. The
/// version shown is the release alone, so that a page does not change with every commit.
pub fn man_pages(cmd: clap::Command) -> Vec<Generated> {
    let mut cmd = without_help_subcommands(cmd)
        .version(crust::version::VERSION)
        .long_version(crust::version::VERSION);
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    pages(&cmd, &name, &mut out);
    out
}

/// The command without clap's `help` subcommands (which mirror every other one): the pages document
/// `--help` instead.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}

fn pages(cmd: &clap::Command, name: &str, out: &mut Vec<Generated>) {
    let mut buf = Vec::new();
    // clap takes a static name (without its `string` feature); a test leaks a few bytes per page.
    let static_name: &'static str = Box::leak(name.to_string().into_boxed_str());
    clap_mangen::Man::new(cmd.clone().name(static_name))
        .section("8")
        .manual("crust")
        .source(format!("crust {}", crust::version::VERSION))
        .render(&mut buf)
        .unwrap();
    out.push((PathBuf::from(format!("docs/man/{name}.8")), buf));
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() {
            pages(sub, &format!("{name}-{}", sub.get_name()), out);
        }
    }
}

/// bash, zsh and fish completions, named as each shell's completion directory wants them.
pub fn completions(cmd: clap::Command) -> Vec<Generated> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        (PathBuf::from("deploy/completions").join(file), buf)
    })
    .collect()
}

/// Fails, naming them, when committed files differ from `files` or when a committed man page of
/// `owner` (`<owner>.8`, `<owner>-*.8`) is no longer generated; writes them under CRUST_UPDATE_DOCS.
pub fn check(owner: &str, files: &[Generated]) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("CRUST_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (rel, bytes) in files {
        let path = repo.join(rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(rel.display().to_string());
        }
    }
    for e in std::fs::read_dir(repo.join("docs/man"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = e.file_name().to_string_lossy().into_owned();
        let ours =
            file == format!("{owner}.8") || (file.starts_with(&format!("{owner}-")) && file.ends_with(".8"));
        let rel = PathBuf::from("docs/man").join(&file);
        if ours && !files.iter().any(|(p, _)| *p == rel) {
            if update {
                std::fs::remove_file(e.path()).unwrap();
            } else {
                stale.push(format!("{} (no longer generated)", rel.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files out of date: {stale:?}; regenerate them with `make docs` and commit them"
    );
}
