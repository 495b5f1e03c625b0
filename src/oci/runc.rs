//! `Runc`: the `OciRuntime` that shells out to a runc-compatible binary with `--root <runtime root>`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{ExecOutput, OciRuntime, RuntimeState};
use crate::{Error, Result};

/// A runc-compatible runtime binary and its state dir.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The binary, e.g. `/usr/bin/runc`.
    pub path: PathBuf,
    /// Its state dir, passed as `--root`.
    pub root: PathBuf,
    /// Its systemd cgroup mode (`--systemd-cgroup` before every command, runc's and crun's flag):
    /// `cgroupsPath` is `<slice>:<prefix>:<name>` and the runtime asks systemd for the scope.
    pub systemd_cgroup: bool,
    /// How long one call may take (`runtime.operation_timeout_seconds`); an exec's bound is on the
    /// start of its process, not on the process itself. Past it the call's process group (the
    /// runtime, a wrapper and whatever they started) is killed and the call fails with
    /// `DeadlineExceeded` naming the verb.
    pub timeout: Duration,
}

static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// The bound on one runtime call when none is configured (`runtime.operation_timeout_seconds`'
/// default): below kubelet's 2-minute runtime request timeout, so that kubelet hears why.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Runc {
    /// A runtime at `path` keeping its state under `root`.
    pub fn new(path: PathBuf, root: PathBuf) -> Self {
        Runc {
            path,
            root,
            systemd_cgroup: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same runtime with calls bounded by `timeout` (zero: the default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        self
    }

    /// The same runtime in its systemd cgroup mode (or not).
    pub fn with_systemd_cgroup(mut self, on: bool) -> Self {
        self.systemd_cgroup = on;
        self
    }

    /// The global flags before every command: `--root R` and, in systemd mode, `--systemd-cgroup`.
    pub fn global_args(root: &Path, systemd_cgroup: bool) -> Vec<std::ffi::OsString> {
        let mut a = vec!["--root".into(), root.as_os_str().to_os_string()];
        if systemd_cgroup {
            a.push("--systemd-cgroup".into());
        }
        a
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.args(Self::global_args(&self.root, self.systemd_cgroup));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.kill_on_drop(true);
        c
    }

    /// Runs `runc --root R <args>`, feeding `input` on stdin; returns stdout, or the error text mapped
    /// to a kind.
    async fn run(&self, what: &str, id: &str, args: &[&str], input: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let mut c = self.command();
        c.args(args);
        // A group of its own: a runtime abandoned mid-call (the request's future dropped, its caller
        // gone) is killed with whatever it started, a wrapper's children too, not only itself as
        // `kill_on_drop` would. What it starts for a container (runc's init) leads a session of its own.
        c.process_group(0);
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = crate::reaper::spawn(&mut c)
            .map_err(|e| Error::io(format!("run {} {what} {id}", self.path.display()), e))?;
        let mut group = crate::sys::KillGroupOnDrop(child.id());
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            // A failed write shows up as runc's own error below.
            let _ = stdin.write_all(&data).await;
            drop(stdin);
        }
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(out) => out,
            // The future is dropped here: `group` kills the runtime and all it started.
            Err(_) => return Err(self.timed_out(what, id)),
        }
        .map_err(|e| Error::io(format!("wait for {} {what} {id}", self.path.display()), e))?;
        group.0 = None;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(classify(what, id, &out.stderr, &out.stdout))
    }
}

impl Runc {
    /// The error of a call that took longer than [`Runc::timeout`].
    fn timed_out(&self, what: &str, id: &str) -> Error {
        Error::DeadlineExceeded(format!(
            "runtime {what} {id}: {} did not finish within {} s (runtime.operation_timeout_seconds); it \
             was killed with the processes it started",
            self.path.display(),
            self.timeout.as_secs()
        ))
    }
}

/// Maps runc's error text to an error kind.
pub(crate) fn classify(what: &str, id: &str, stderr: &[u8], stdout: &[u8]) -> Error {
    let mut text = runtime_error_text(stderr);
    if text.is_empty() {
        text = runtime_error_text(stdout);
    }
    let msg = format!("runtime {what} {id}: {text}");
    let lower = text.to_ascii_lowercase();
    if lower.contains("does not exist") {
        Error::NotFound(msg)
    } else if lower.contains("not running")
        || lower.contains("already finished")
        || lower.contains("cannot ")
        || lower.contains("not paused")
        || lower.contains("is stopped")
        || lower.contains("already paused")
    {
        Error::FailedPrecondition(msg)
    } else {
        Error::Internal(msg)
    }
}

/// runc's error output, trimmed; json log lines (`{"level":"error","msg":..}`) are reduced to their
/// messages.
pub(crate) fn runtime_error_text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut msgs = Vec::new();
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{')
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
        {
            let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
            if matches!(level, "error" | "fatal")
                && let Some(m) = v.get("msg").and_then(|m| m.as_str())
            {
                msgs.push(m.trim().to_string());
            }
            continue;
        }
        msgs.push(line.to_string());
    }
    msgs.dedup();
    msgs.join("; ")
}

impl OciRuntime for Runc {
    fn path(&self) -> &Path {
        &self.path
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn systemd_cgroup(&self) -> bool {
        self.systemd_cgroup
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move { self.run("start", id, &["start", id], None).await.map(drop) }.boxed()
    }

    fn kill<'a>(&'a self, id: &'a str, signal: i32, all: bool) -> BoxFuture<'a, Result<()>> {
        async move {
            let sig = signal.to_string();
            let mut args = vec!["kill"];
            if all {
                args.push("--all");
            }
            args.push(id);
            args.push(&sig);
            self.run("kill", id, &args, None).await.map(drop)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<()>> {
        async move {
            let args: &[&str] = if force {
                &["delete", "--force", id]
            } else {
                &["delete", id]
            };
            match self.run("delete", id, args, None).await {
                Err(Error::NotFound(_)) => Ok(()),
                r => r.map(drop),
            }
        }
        .boxed()
    }

    fn state<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RuntimeState>> {
        async move {
            let out = self.run("state", id, &["state", id], None).await?;
            let v: serde_json::Value = serde_json::from_slice(&out)
                .map_err(|e| Error::Internal(format!("runtime state {id}: bad JSON from runtime: {e}")))?;
            Ok(RuntimeState {
                status: v
                    .get("status")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown")
                    .to_string(),
                pid: v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as u32,
            })
        }
        .boxed()
    }

    fn update<'a>(&'a self, id: &'a str, resources: &'a LinuxResources) -> BoxFuture<'a, Result<()>> {
        async move {
            let data = serde_json::to_vec(resources)
                .map_err(|e| Error::Internal(format!("runtime update {id}: encode resources: {e}")))?;
            // A file, not `-` (stdin): runc reads either, crun's `--resources` takes a file.
            let seq = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
            let file = self
                .root
                .join(format!(".update-{}-{seq}.json", std::process::id()));
            let _ = std::fs::create_dir_all(&self.root);
            std::fs::write(&file, &data)
                .map_err(|e| Error::io(format!("runtime update {id}: write {}", file.display()), e))?;
            let path = file.to_string_lossy().into_owned();
            let r = self
                .run("update", id, &["update", "--resources", &path, id], None)
                .await
                .map(drop);
            let _ = std::fs::remove_file(&file);
            r
        }
        .boxed()
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move { self.run("pause", id, &["pause", id], None).await.map(drop) }.boxed()
    }

    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move { self.run("resume", id, &["resume", id], None).await.map(drop) }.boxed()
    }

    fn checkpoint<'a>(
        &'a self,
        id: &'a str,
        image_path: &'a Path,
        work_path: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let (image, work) = (image_path.to_string_lossy(), work_path.to_string_lossy());
            // As CRI-O for CRI's checkpoint (kept for forensics): the container goes on running.
            let args = [
                "checkpoint",
                "--image-path",
                &image,
                "--work-path",
                &work,
                "--leave-running",
                id,
            ];
            self.run("checkpoint", id, &args, None).await.map(drop)
        }
        .boxed()
    }

    fn exec_sync<'a>(
        &'a self,
        id: &'a str,
        process: &'a Process,
        timeout: Duration,
        max_output: usize,
    ) -> BoxFuture<'a, Result<ExecOutput>> {
        // The exec runs in its own task: a cancelled request must not drop (and so SIGKILL) `runtime
        // exec` while its process lives, which would hand that process to crustd, a child subreaper,
        // to end as an unreaped zombie. The timeout still applies inside the task.
        let (rt, id, process) = (self.clone(), id.to_string(), process.clone());
        async move {
            let task =
                tokio::spawn(async move { rt.exec_sync_inner(&id, &process, timeout, max_output).await });
            task.await
                .map_err(|e| Error::Internal(format!("exec task: {e}")))?
        }
        .boxed()
    }
}

/// Reads `r` to its end, keeping at most `max` bytes.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = max.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl Runc {
    async fn exec_sync_inner(
        &self,
        id: &str,
        process: &Process,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput> {
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::Internal(format!("exec in {id}: encode process: {e}")))?;
        let seq = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid_file = self.root.join(format!(".exec-{}-{seq}.pid", std::process::id()));
        let _ = std::fs::create_dir_all(&self.root);
        // The process spec is read from stdin (`--process /dev/stdin`); after it the process sees EOF.
        let mut c = self.command();
        c.arg("exec")
            .arg("--process")
            .arg("/dev/stdin")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::piped());
        // A group of its own, as in `run`: a runtime that never starts the process is killed with all
        // it started. The process itself leads a session of its own (runc's init).
        c.process_group(0);
        let mut child = crate::reaper::spawn(&mut c)
            .map_err(|e| Error::io(format!("exec in {id}: run {}", self.path.display()), e))?;
        let mut group = crate::sys::KillGroupOnDrop(child.id());
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&json).await;
        }
        let out_r = child
            .stdout
            .take()
            .map(|s| tokio::spawn(read_capped(s, max_output)));
        let err_r = child
            .stderr
            .take()
            .map(|s| tokio::spawn(read_capped(s, max_output)));

        let end = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        let status = match self.wait_exec_start(&mut child, &pid_file, end).await {
            Some(status) => Some(status),
            None if end.is_some_and(|e| tokio::time::Instant::now() >= e) => None,
            None if !pid_file.exists() => {
                // The runtime hangs before the process runs: it and all it started are killed.
                drop(group);
                let _ = child.wait().await;
                let _ = std::fs::remove_file(&pid_file);
                for r in [out_r, err_r].into_iter().flatten() {
                    r.abort();
                }
                return Err(self.timed_out("exec", id));
            }
            None => None,
        };
        let mut timed_out = false;
        let status = match (status, end) {
            (Some(s), _) => s,
            (None, None) => child.wait().await,
            (None, Some(end)) => match tokio::time::timeout_at(end, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    timed_out = true;
                    let s = kill_exec(&mut child, &pid_file).await;
                    // What a wrapper around the runtime started goes too.
                    drop(std::mem::replace(&mut group, crate::sys::KillGroupOnDrop(None)));
                    s
                }
            },
        };
        group.0 = None;
        let started = pid_file.exists();
        let _ = std::fs::remove_file(&pid_file);
        let status = status.map_err(|e| Error::io(format!("exec in {id}: wait for runtime"), e))?;
        // Output readers end when every writer is gone; a background child that kept the pipe open
        // must not hold the answer back for long.
        let grace = Duration::from_millis(if timed_out { 50 } else { 500 });
        let stdout = join_reader(out_r, grace).await;
        let stderr = join_reader(err_r, grace).await;
        if !started && !timed_out && !status.success() {
            return Err(classify("exec", id, &stderr, &stdout));
        }
        let exit_code = if timed_out {
            128 + libc::SIGKILL
        } else {
            status.code().unwrap_or(128 + libc::SIGKILL)
        };
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code,
            timed_out,
        })
    }
}

impl Runc {
    /// Waits until the runtime has started the exec's process (its pid file is there), has exited
    /// (`Some`), the exec's own timeout `end` has passed, or [`Runc::timeout`] has passed with no
    /// process started (`None` for those three).
    async fn wait_exec_start(
        &self,
        child: &mut tokio::process::Child,
        pid_file: &Path,
        end: Option<tokio::time::Instant>,
    ) -> Option<std::io::Result<std::process::ExitStatus>> {
        let start_by = tokio::time::Instant::now() + self.timeout;
        wait_exec_started(child, pid_file, end.map_or(start_by, |e| e.min(start_by))).await
    }
}

/// Waits until `runtime exec` (`child`) has started its process (`pid_file` is there) or `limit` has
/// passed (`None` for both), or has exited first (`Some`, its status).
pub(crate) async fn wait_exec_started(
    child: &mut tokio::process::Child,
    pid_file: &Path,
    limit: tokio::time::Instant,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let mut step = Duration::from_millis(2);
    while !pid_file.exists() {
        let now = tokio::time::Instant::now();
        if now >= limit {
            return None;
        }
        if let Ok(s) = tokio::time::timeout_at((now + step).min(limit), child.wait()).await {
            return Some(s);
        }
        step = (step * 2).min(Duration::from_millis(50));
    }
    None
}

/// How long `runtime exec` gets to reap its killed process and exit before it is killed too: once the
/// process tree is killed, runc exits within milliseconds; this bounds how late a timed-out ExecSync
/// can answer (its timeout plus this, plus the output readers' 50 ms) when something still holds it.
const EXEC_REAP_GRACE: Duration = Duration::from_secs(1);

/// Ends a timed-out exec: SIGKILLs the exec'd process (pid from the runtime's pid file) and lets
/// `runtime exec`, its parent, reap it and exit. Only if the runtime has not exited within
/// [`EXEC_REAP_GRACE`] is it killed; then the process, if still there, has been re-parented to us (a
/// child subreaper) and the general reaper reaps it, so that it cannot keep its pid namespace alive.
async fn kill_exec(
    child: &mut tokio::process::Child,
    pid_file: &Path,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + EXEC_REAP_GRACE;
    // The pid file appears once the process runs; until then the runtime may still finish by itself.
    loop {
        if let Some(pid) = read_pid(pid_file) {
            // The process and all it started: a background child holding runc's output pipe would
            // keep `runtime exec` (which copies the output until every writer is gone) from exiting.
            // The pid is runc's unreaped child while runc runs (only a process reaped by runc in this
            // very instant and its pid reused at once is missed).
            crate::sys::kill_process_tree(pid);
            break;
        }
        let step = tokio::time::Instant::now() + Duration::from_millis(50);
        match tokio::time::timeout_at(step.min(deadline), child.wait()).await {
            Ok(status) => return status,
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => {}
        }
    }
    if let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await {
        return status;
    }
    let _ = child.start_kill();
    // The process, if still there, is re-parented to crustd now; the reaper (`crate::reaper`) reaps
    // it once it ends.
    child.wait().await
}

async fn join_reader(h: Option<tokio::task::JoinHandle<Vec<u8>>>, grace: Duration) -> Vec<u8> {
    let Some(h) = h else { return Vec::new() };
    let abort = h.abort_handle();
    match tokio::time::timeout(grace, h).await {
        Ok(Ok(v)) => v,
        _ => {
            abort.abort();
            Vec::new()
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_from_json_log_and_plain() {
        let raw = br#"{"level":"error","msg":"container \"x\" does not exist","time":"t"}
{"level":"warning","msg":"noise","time":"t"}
"#;
        assert_eq!(runtime_error_text(raw), "container \"x\" does not exist");
        assert_eq!(runtime_error_text(b"  plain failure\n\n"), "plain failure");
    }

    #[test]
    fn classify_kinds() {
        assert!(matches!(
            classify("state", "x", b"container does not exist", b""),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify("kill", "x", b"container not running", b""),
            Error::FailedPrecondition(_)
        ));
        let e = classify(
            "start",
            "x",
            b"exec: \"nope\": executable file not found in $PATH",
            b"",
        );
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        assert!(e.to_string().contains("nope"));
    }
}
