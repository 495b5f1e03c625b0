//! Build script: the git commit crust is built from, for `--version` and the CRI `Version` RPC.
//! `CRUST_COMMIT` in the environment wins (a build from a source tarball, a packager's pin); else
//! `git rev-parse --short HEAD` in the source tree; else `unknown` (no git, or not a checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CRUST_COMMIT");
    let commit = match std::env::var("CRUST_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Build again when HEAD moves: HEAD itself (a checkout), the branch it names (a commit),
            // and packed-refs (a gc); --git-path resolves them in a worktree as in a plain checkout.
            // Only files that exist: cargo takes a missing one as changed at every build (a checkout
            // without packed-refs rebuilt crust each time).
            let watch = |path: String| {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            };
            for p in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", p]) {
                    watch(path);
                }
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &r])
            {
                watch(path);
            }
            git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=CRUST_COMMIT={commit}");
}
