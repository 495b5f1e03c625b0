//! The operator's guide (docs/*.md) checked against crust itself: its crust.toml examples load
//! (`crustd --config FILE config`), the dotted keys it names exist in the configuration types, its
//! `crustctl` and `crustd` command lines parse (each run with `--help` after it), the messages
//! troubleshooting.md quotes are crust's own text, and every page is linked from the guide's index,
//! which the README links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Each page: its file name and text.
fn pages() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 8, "{out:?}");
    out
}

/// The fenced code blocks of a page: (language, body).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => open = Some((lang.trim().to_string(), String::new())),
            }
        } else if let Some((_, body)) = open.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn the_guide_s_crust_toml_examples_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crust.toml");
    let mut n = 0;
    for (page, text) in pages() {
        for (lang, body) in blocks(&text) {
            // Other programs' files (containerd's hosts.toml) are not crust's configuration.
            if lang != "toml" || body.lines().next().is_some_and(|l| l.contains("hosts.toml")) {
                continue;
            }
            std::fs::write(&file, &body).unwrap();
            let out = Command::new(harness::binary("crustd"))
                .arg("--config")
                .arg(&file)
                .arg("config")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{page}: this example does not load:\n{body}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} examples");
}

#[test]
fn the_keys_the_guide_names_exist() {
    let keys = crust::config::reference::key_paths();
    let sections = ["api", "runtime", "image", "registry", "cni", "stream", "metrics"];
    let mut seen = 0;
    for (page, text) in pages() {
        for token in text.split('`').skip(1).step_by(2) {
            let parts: Vec<&str> = token.split('.').collect();
            if parts.len() < 2
                || !sections.contains(&parts[0])
                || !parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            {
                continue;
            }
            // A map table's entry names are the operator's: `runtime.handlers.crun.path`.
            let mut normal: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            for (i, p) in parts.iter().enumerate() {
                if i + 1 < parts.len() {
                    let placeholder = match *p {
                        "handlers" => "<handler>",
                        "mirrors" | "configs" => "<host>",
                        _ => continue,
                    };
                    normal[i + 1] = placeholder.into();
                }
            }
            let key = normal.join(".");
            assert!(
                keys.iter()
                    .any(|k| *k == key || k.starts_with(&format!("{key}."))),
                "{page}: `{token}` is not a configuration key or table"
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} keys named");
}

#[test]
fn the_guide_s_commands_parse() {
    let mut n = 0;
    for (page, text) in pages() {
        for (lang, body) in blocks(&text) {
            if lang != "sh" {
                continue;
            }
            for line in body.lines() {
                let line = line.trim().trim_start_matches("sudo ");
                let bin = match line.split_whitespace().next() {
                    Some(b @ ("crustctl" | "crustd")) => b,
                    _ => continue,
                };
                let cut = line.find(['#', '|', '>', '&']).unwrap_or(line.len());
                let args: Vec<&str> = line[..cut].split_whitespace().skip(1).collect();
                let out = Command::new(harness::binary(bin))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{page}: `{line}` does not parse: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
            }
        }
    }
    assert!(n >= 8, "only {n} command lines");
}

/// Text of every file crust's messages come from, Rust string continuations (`\` newline indent)
/// joined so that a message reads as it prints.
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                || p.parent().is_some_and(|d| d.ends_with("debian"))
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let mut joined = String::new();
                let mut rest = text.as_str();
                while let Some(i) = rest.find("\\\n") {
                    joined.push_str(&rest[..i]);
                    rest = rest[i + 2..].trim_start();
                }
                joined.push_str(rest);
                out.push_str(&joined);
            }
        }
    }
    let mut out = String::new();
    for d in ["src", "cni/src", "deploy"] {
        walk(&repo().join(d), &mut out);
    }
    out
}

#[test]
fn troubleshooting_quotes_crust_s_own_messages() {
    let text = std::fs::read_to_string(repo().join("docs/troubleshooting.md")).unwrap();
    let src = sources();
    let mut n = 0;
    for heading in text.lines().filter_map(|l| l.strip_prefix("### `")) {
        let message = heading.trim_end_matches('`');
        for fragment in message.split('…').map(str::trim).filter(|f| !f.is_empty()) {
            assert!(
                src.contains(fragment),
                "troubleshooting.md: {fragment:?} (of {message:?}) is not in crust's source"
            );
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} messages");
}

#[test]
fn every_page_is_linked_from_the_index_and_the_readme_links_the_index() {
    let index = std::fs::read_to_string(repo().join("docs/README.md")).unwrap();
    for (page, _) in pages() {
        if page != "README.md" {
            assert!(
                index.contains(&format!("]({page})")),
                "docs/README.md does not link {page}"
            );
        }
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/README.md)"),
        "README.md does not link the guide"
    );
    // The README's first block is still its two commands.
    let (_, first) = blocks(&readme).into_iter().next().unwrap();
    assert!(
        first.starts_with("make run") && first.lines().nth(1).unwrap().starts_with("make test"),
        "{first}"
    );
}
