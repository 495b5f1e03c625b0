//! Whether CRIU can checkpoint and restore on this host: `criu check` run once (the first time it is
//! asked), its answer kept for the life of the process. runc drives CRIU for `checkpoint` and
//! `restore`; a host where CRIU cannot work (not installed, or a kernel it does not understand: Debian
//! 12's CRIU 3.17 fails its vDSO check on kernel 6.18) gets its reason in Status and in the
//! FailedPrecondition of CheckpointContainer and of a restore.

use std::path::PathBuf;

use tokio::sync::OnceCell;

/// What the probe found: CRIU's version, or why it cannot work here.
pub type Probe = std::result::Result<String, String>;

static PROBE: OnceCell<Probe> = OnceCell::const_new();

/// The probe's answer (run on the first call).
pub async fn probe() -> &'static Probe {
    PROBE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(run_probe)
                .await
                .unwrap_or_else(|e| Err(format!("the CRIU probe failed: {e}")))
        })
        .await
}

/// Ok, or a `FailedPrecondition` saying why checkpoint/restore cannot work on this host.
pub async fn require(what: &str) -> crate::Result<()> {
    match probe().await {
        Ok(_) => Ok(()),
        Err(why) => Err(crate::Error::FailedPrecondition(format!(
            "{what}: checkpoint/restore is not available on this host: {why}"
        ))),
    }
}

/// What each runtime binary said when asked for its `checkpoint` command, kept for the life of the
/// process.
static RUNTIMES: std::sync::Mutex<Vec<(PathBuf, Probe)>> = std::sync::Mutex::new(Vec::new());

/// Ok, or a `FailedPrecondition` saying that the runtime of `handler` (`runtime`) cannot checkpoint
/// or restore: a runtime built without CRIU support (Debian's crun: "unknown command checkpoint")
/// would otherwise fail the request with an error that reads as crust's own.
pub async fn require_runtime(what: &str, handler: &str, runtime: &std::path::Path) -> crate::Result<()> {
    let cached = RUNTIMES
        .lock()
        .ok()
        .and_then(|r| r.iter().find(|(p, _)| p == runtime).map(|(_, a)| a.clone()));
    let answer = match cached {
        Some(a) => a,
        None => {
            let path = runtime.to_path_buf();
            let a = tokio::task::spawn_blocking(move || runtime_probe(&path))
                .await
                .unwrap_or_else(|e| Err(format!("the runtime probe failed: {e}")));
            if let Ok(mut r) = RUNTIMES.lock() {
                r.push((runtime.to_path_buf(), a.clone()));
            }
            a
        }
    };
    answer.map(drop).map_err(|why| {
        crate::Error::FailedPrecondition(format!(
            "{what}: the runtime of handler {handler:?} ({}) cannot checkpoint or restore: {why}; \
             use a handler whose runtime has CRIU support (runc)",
            runtime.display()
        ))
    })
}

/// `<runtime> checkpoint --help`: whether the runtime has the command.
fn runtime_probe(runtime: &std::path::Path) -> Probe {
    let out = crate::reaper::output(std::process::Command::new(runtime).args(["checkpoint", "--help"]))
        .map_err(|e| format!("run {} checkpoint --help: {e}", runtime.display()))?;
    if out.status.success() {
        return Ok(String::new());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err
        .lines()
        .next()
        .unwrap_or("checkpoint --help failed")
        .trim()
        .chars()
        .take(200)
        .collect())
}

/// The `criu` binary: on `PATH` (as runc looks for it), else in the sbin directories a service's
/// `PATH` may lack.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("criu"))
        .find(|p| p.is_file())
}

fn run_probe() -> Probe {
    let Some(criu) = binary() else {
        return Err("criu is not installed (runc needs it for checkpoint and restore)".into());
    };
    let out = crate::reaper::output(std::process::Command::new(&criu).arg("check"))
        .map_err(|e| format!("run {} check: {e}", criu.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} check failed (kernel {}): {}",
            criu.display(),
            kernel_release(),
            check_errors(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    let version = crate::reaper::output(std::process::Command::new(&criu).arg("--version"))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    Ok(version
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default())
}

/// The error lines of `criu check`, without their source locations ("Error (criu/vdso.c:613): vdso:
/// Failed to fill self vdso symtable" → "vdso: Failed to fill self vdso symtable"), joined.
fn check_errors(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(|l| l.split_once("): ").map_or(l, |(_, m)| m).trim())
        .collect();
    if lines.is_empty() {
        let t = stderr.trim();
        return if t.is_empty() {
            "no output".into()
        } else {
            t.chars().take(400).collect()
        };
    }
    lines.join("; ")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_errors_keep_the_messages() {
        let s = "Warn (criu/kerndat.c:1): x\nError (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n\
                 Error (criu/crtools.c:260): Could not initialize kernel features detection.\n";
        assert_eq!(
            check_errors(s),
            "vdso: Failed to fill self vdso symtable; Could not initialize kernel features detection."
        );
        assert_eq!(check_errors(""), "no output");
    }
}
