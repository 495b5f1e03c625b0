//! crustd's side of the monitor: start one ([`spawn`]), and talk to it through the files and the
//! control socket in the container's state dir.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::args;
use super::{
    CONSOLE_SOCKET, CONTAINER_PID_FILE, CTL_SOCKET, EXIT_FILE, ExitStatus, MONITOR_PID_FILE, Monitor,
    MonitorSpec, RUNTIME_LOG,
};
use crate::config::Config;
use crate::error::ResultExt;
use crate::sys::proc_stat;
use crate::{Error, Result};

/// How long a monitor's start (its `runtime run` or `create`, or its launch of a pause) may take before
/// `spawn` gives up, kills the monitor with all it started, and fails with `DeadlineExceeded`:
/// `runtime.operation_timeout_seconds` ([`set_create_timeout`]), 60 s unless configured.
pub fn create_timeout() -> Duration {
    Duration::from_secs(CREATE_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

static CREATE_TIMEOUT_SECS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(crate::oci::DEFAULT_TIMEOUT.as_secs());

/// Sets [`create_timeout`] (from the configuration; zero keeps the default).
pub fn set_create_timeout(d: Duration) {
    if !d.is_zero() {
        CREATE_TIMEOUT_SECS.store(d.as_secs().max(1), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts a monitor for `spec` and waits until it has started the container (with `spec.start`; else
/// created it, state CREATED). On failure the error carries the runtime's own message, and nothing is
/// left behind: no monitor process, no runtime state, no monitor files (the bundle and the state dir
/// itself stay: they are the caller's).
pub async fn spawn(spec: &MonitorSpec) -> Result<Monitor> {
    spawn_counted(spec, None).await
}

/// [`spawn`], telling `pid` the monitor's pid as soon as it has detached, while the runtime still
/// works (`MonitorSpec::announce_pid`): the caller can place the monitor meanwhile. `pid` is dropped
/// unsent when the monitor fails before it detached.
pub async fn spawn_announcing(spec: &MonitorSpec, pid: tokio::sync::oneshot::Sender<u32>) -> Result<Monitor> {
    let spec = MonitorSpec {
        announce_pid: true,
        ..spec.clone()
    };
    spawn_counted(&spec, Some(pid)).await
}

type PidTx = Option<tokio::sync::oneshot::Sender<u32>>;

/// [`spawn_monitor`], its failures counted in the metrics.
async fn spawn_counted(spec: &MonitorSpec, pid: PidTx) -> Result<Monitor> {
    let r = spawn_monitor(spec, pid).await;
    if let Err(e) = &r {
        crate::metrics::global().monitor_failure(e);
    }
    r
}

async fn spawn_monitor(spec: &MonitorSpec, pid: PidTx) -> Result<Monitor> {
    let what = format!("start monitor for {}", spec.id);
    if spec.id.is_empty() {
        return Err(Error::invalid("container_id", "empty container ID"));
    }
    // Never disturb a container that exists already: the clean-up after a failed create would
    // delete it.
    if is_alive(&spec.state_dir) {
        return Err(Error::AlreadyExists(format!(
            "{what}: a monitor already runs in {}",
            spec.state_dir.display()
        )));
    }
    if spec.runtime_root.join(&spec.id).exists() {
        return Err(Error::AlreadyExists(format!(
            "{what}: the runtime already has a container {} (under {})",
            spec.id,
            spec.runtime_root.display()
        )));
    }
    std::fs::create_dir_all(&spec.state_dir).ctx(format!("{what}: create {}", spec.state_dir.display()))?;
    remove_monitor_files(&spec.state_dir, true);
    let bin = if spec.monitor_path.as_os_str().is_empty() {
        Config::helper_binary(Path::new(""), "crust-monitor")
    } else {
        spec.monitor_path.clone()
    };
    let mut argv = args::to_args(spec);
    argv.push(args::SYNC_STDOUT.into());
    let (child, r) = super::standby::launch(&bin, &argv)
        .map_err(|e| Error::io(format!("{what}: run {}", bin.display()), e))?;
    // A caller that goes away (StartContainer's client gave up: tonic drops the request's future) must
    // not leave a monitor and a runtime that hangs behind: the guard cleans up as a failure does.
    let mut pending = CleanUpIfDropped(Some(spec.clone()));
    let r = await_report(child, r, pid, spec, &what).await;
    pending.0 = None;
    r
}

/// Cleans up after a spawn whose future was dropped before it ended (see `cleanup_after_failure`).
struct CleanUpIfDropped(Option<MonitorSpec>);

impl Drop for CleanUpIfDropped {
    fn drop(&mut self) {
        if let Some(spec) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            tracing::info!(id = %spec.id, "the start was abandoned; killing its monitor and runtime");
            rt.spawn(async move { cleanup_after_failure(&spec).await });
        }
    }
}

async fn await_report(
    mut child: tokio::process::Child,
    r: OwnedFd,
    pid: PidTx,
    spec: &MonitorSpec,
    what: &str,
) -> Result<Monitor> {
    let bound = create_timeout();
    let deadline = tokio::time::Instant::now() + bound;
    // The first monitor process forks the real one and exits at once; one that does not (a wrapper
    // around the monitor that hangs) is killed with its group, which it leads (`process_group(0)`)
    // and, unreaped, keeps: past the bound, or when the spawn is abandoned (its caller gone, this
    // future dropped) before it exited, for the clean-up then finds no monitor to kill.
    let mut first = crate::sys::KillGroupOnDrop(child.id());
    let report = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(_) => {
            first.0 = None;
            tokio::time::timeout_at(deadline, read_report(r, pid)).await.ok()
        }
        Err(_) => {
            drop(first);
            let _ = child.wait().await;
            None
        }
    };
    let report = match report {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            cleanup_after_failure(spec).await;
            return Err(e.context(what));
        }
        None => {
            cleanup_after_failure(spec).await;
            let verb = match (&spec.pause, spec.start) {
                (Some(_), _) => "the monitor's launch of the pause",
                (None, true) => "runtime run",
                (None, false) => "runtime create",
            };
            return Err(Error::DeadlineExceeded(format!(
                "{what}: {verb} did not finish within {} s (runtime.operation_timeout_seconds); it \
                 was killed with the processes it started",
                bound.as_secs()
            )));
        }
    };
    parse_report(&report, spec, what).await
}

/// Reads the monitor's report to the end; a first line `pid <pid>` (with `--announce-pid`) goes to
/// `pid` as soon as it arrives and is not part of the report.
async fn read_report(r: OwnedFd, mut pid: PidTx) -> Result<String> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r).ctx("monitor sync pipe")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = rx.read(&mut chunk).await.ctx("read monitor report")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if pid.is_some()
            && let Some(nl) = buf.iter().position(|&b| b == b'\n')
        {
            let announced = std::str::from_utf8(&buf[..nl])
                .ok()
                .and_then(|l| l.strip_prefix("pid "))
                .and_then(|p| p.parse::<u32>().ok());
            if let (Some(p), Some(tx)) = (announced, pid.take()) {
                let _ = tx.send(p);
                buf.drain(..=nl);
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn parse_report(report: &str, spec: &MonitorSpec, what: &str) -> Result<Monitor> {
    let report = report.trim_end();
    if let Some(rest) = report.strip_prefix("ok ") {
        let mut it = rest.split(' ').map(|s| s.parse::<u32>());
        if let (Some(Ok(pid)), Some(Ok(container_pid))) = (it.next(), it.next()) {
            reap_on_exit(pid);
            return Ok(Monitor { pid, container_pid });
        }
    }
    if let Some(rest) = report.strip_prefix("error ") {
        let (pid, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Ok(pid) = pid.parse::<i32>() {
            reap_blocking(pid).await;
        }
        cleanup_after_failure(spec).await;
        return Err(Error::Internal(format!("{what}: {text}")));
    }
    cleanup_after_failure(spec).await;
    let shown = if report.is_empty() { "nothing" } else { report };
    Err(Error::Internal(format!(
        "{what}: the monitor exited without a report (said {shown:?})"
    )))
}

/// After a failed, timed-out or abandoned spawn: kill a monitor that is still there with the runtime
/// it runs and whatever that started (a hung runtime, a wrapper's children: the monitor leads its own
/// session and process group, which they share; the container's own processes are in sessions of
/// their own), make the runtime forget the container, and remove the monitor's files.
async fn cleanup_after_failure(spec: &MonitorSpec) {
    if let Some(pid) = live_monitor_pid(&spec.state_dir) {
        // SAFETY: kill(2) of the process group of the monitor whose pid and start time we just checked
        // (it called setsid, so the group's id is its pid), and of the monitor itself should it not
        // lead one.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
        reap_blocking(pid as i32).await;
    }
    let mut del = tokio::process::Command::new(&spec.runtime_path);
    del.arg("--root")
        .arg(&spec.runtime_root)
        .args(["delete", "--force", &spec.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    del.process_group(0).kill_on_drop(true);
    if let Ok(mut child) = crate::reaper::spawn(&mut del)
        && tokio::time::timeout(create_timeout(), child.wait())
            .await
            .is_err()
    {
        tracing::warn!(id = %spec.id, "runtime delete after a failed start did not finish; killed");
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) of the group our unreaped child leads.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let _ = child.wait().await;
    }
    remove_monitor_files(&spec.state_dir, true);
}

/// Removes what a monitor leaves in `dir` (the exit file too when `exit_too`).
fn remove_monitor_files(dir: &Path, exit_too: bool) {
    for f in [
        CTL_SOCKET,
        MONITOR_PID_FILE,
        CONTAINER_PID_FILE,
        RUNTIME_LOG,
        CONSOLE_SOCKET,
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if exit_too {
        let _ = std::fs::remove_file(dir.join(EXIT_FILE));
    }
}

/// Reaps `pid` if it is our (zombie) child — a monitor is re-parented to crustd when crustd is a child
/// subreaper. Waits up to a second for an exiting monitor; other pids give ECHILD at once.
async fn reap_blocking(pid: i32) {
    for _ in 0..100 {
        if try_reap(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When crustd is a child subreaper the detached monitor ends up as crustd's child: reap it as soon as
/// it exits (a pidfd becomes readable then), so no zombie monitors pile up. Other callers (not a
/// subreaper) get ECHILD, harmlessly.
fn reap_on_exit(pid: u32) {
    let Some(afd) = pidfd(pid) else { return };
    tokio::spawn(async move {
        let _ = afd.readable().await;
        try_reap(pid as i32);
    });
}

/// `waitpid(pid, WNOHANG)` through the reaper (which may have reaped it first): true when reaped or
/// not our child.
fn try_reap(pid: i32) -> bool {
    crate::reaper::take_status(pid) != crate::reaper::Waited::Running
}

/// The monitor's pid from `monitor.pid`, whether or not it still runs.
pub fn monitor_pid(state_dir: &Path) -> Option<u32> {
    read_pid_file(state_dir).map(|(p, _)| p)
}

/// How many log lines the container's monitor dropped because the log's filesystem was full (0 when
/// none was).
pub fn log_lines_dropped(state_dir: &Path) -> u64 {
    std::fs::read_to_string(state_dir.join(super::log::DROPPED_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn read_pid_file(state_dir: &Path) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(state_dir.join(MONITOR_PID_FILE)).ok()?;
    let mut it = s.split_ascii_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The monitor's pid when that process still runs and is the same process (start time matches).
fn live_monitor_pid(state_dir: &Path) -> Option<u32> {
    let (pid, start) = read_pid_file(state_dir)?;
    match proc_stat(pid) {
        Some(st) if st.start == start => {
            if st.state == 'Z' || st.state == 'X' {
                try_reap(pid as i32);
                None
            } else {
                Some(pid)
            }
        }
        _ => None,
    }
}

/// Whether the container's monitor still runs (pid file plus start-time check, so it survives crustd
/// restarts and pid reuse). A monitor that exited and was left a zombie child of crustd is reaped here.
pub fn is_alive(state_dir: &Path) -> bool {
    live_monitor_pid(state_dir).is_some()
}

/// The exit file, once the container has exited and the monitor wrote it.
pub fn read_exit(state_dir: &Path) -> Option<ExitStatus> {
    let data = std::fs::read(state_dir.join(EXIT_FILE)).ok()?;
    let st = serde_json::from_slice(&data).ok()?;
    // The monitor exits right after writing the file; reap it if it is our child.
    let _ = live_monitor_pid(state_dir);
    Some(st)
}

/// Waits until the exit file appears (returns it), the monitor is gone without one (`None`), or
/// `timeout` passes (`None`; tell the cases apart with [`is_alive`]). Sleeps on a pidfd of the monitor
/// (which writes the exit file, then exits), so it wakes as soon as the container is gone; falls back
/// to short polls where pidfds are not available.
pub async fn wait_exit(state_dir: &Path, timeout: Duration) -> Option<ExitStatus> {
    if let Some(exited) = monitor_exit(state_dir) {
        let _ = tokio::time::timeout(timeout, exited).await;
        return read_exit(state_dir);
    }
    // The exit file is there, the monitor is gone, or there are no pidfds: the loop sorts it out.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(st) = read_exit(state_dir) {
            return Some(st);
        }
        if !is_alive(state_dir) {
            return read_exit(state_dir);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A future that resolves when the live monitor in `state_dir` exits (after writing its exit file);
/// `None` when the exit file is there already, the monitor is gone, or pidfds are not available.
pub(super) fn monitor_exit(state_dir: &Path) -> Option<impl Future<Output = ()> + Send + 'static> {
    if read_exit(state_dir).is_some() {
        return None;
    }
    let pid = live_monitor_pid(state_dir)?;
    let afd = pidfd(pid)?;
    // Opened after the start-time check: make sure the pid still names the same monitor.
    if live_monitor_pid(state_dir) != Some(pid) {
        return None;
    }
    Some(async move {
        let _ = afd.readable().await;
    })
}

/// Sends `sig` to the container's init, through a pidfd opened while it is still the live monitor's
/// child, so that a recycled pid is never signalled. `Ok(false)`: nothing of it runs any more.
pub fn signal_container(state_dir: &Path, sig: i32) -> Result<bool> {
    let Some(monitor) = live_monitor_pid(state_dir) else {
        return Ok(false);
    };
    let Some(pid) = std::fs::read_to_string(state_dir.join(CONTAINER_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return Ok(false);
    };
    let Ok(fd) = crate::sys::pidfd_open(pid) else {
        return Ok(false);
    };
    if proc_stat(pid).map(|s| s.ppid) != Some(monitor) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal(2) on our pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(false);
    }
    Err(Error::io(format!("signal {sig} to pid {pid}"), err))
}

/// A pidfd for `pid` registered with tokio (readable once the process has exited).
fn pidfd(pid: u32) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    tokio::runtime::Handle::try_current().ok()?;
    let fd = crate::sys::pidfd_open(pid).ok()?;
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open, unchanged, for its whole life.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

/// Asks the monitor to reopen the container's log file (ReopenContainerLog).
pub async fn reopen_log(state_dir: &Path) -> Result<()> {
    request(state_dir, "REOPEN\n").await
}

/// Sets the container's pty size.
pub async fn resize(state_dir: &Path, width: u16, height: u16) -> Result<()> {
    request(state_dir, &format!("RESIZE {width} {height}\n")).await
}

/// Attaches to the container's stdio: returns the control connection after the monitor's `OK`, now
/// carrying frames (see `ctl`): write `ctl::frame(ctl::STDIN, data)` to it (a zero-length STDIN frame
/// closes stdin with `stdin_once`), read output with [`read_frame`]; EOF means the container exited
/// (or the client was too slow and was dropped). Resize with [`resize`] on the side.
pub async fn attach(state_dir: &Path) -> Result<tokio::net::UnixStream> {
    let what = "monitor request ATTACH";
    let (path, _guard) = ctl_path(state_dir)?;
    let mut s = connect(&path, state_dir, what).await?;
    let talk = async {
        s.write_all(b"ATTACH\n").await.ctx(what)?;
        // Byte by byte up to the newline, so that no frame byte is consumed here.
        let mut line = Vec::new();
        loop {
            let b = s.read_u8().await.ctx(what)?;
            if b == b'\n' || line.len() > 256 {
                break;
            }
            line.push(b);
        }
        answer_to_result(&String::from_utf8_lossy(&line), what)
    };
    tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .unwrap_or_else(|_| Err(Error::DeadlineExceeded(format!("{what}: no answer in 10s"))))?;
    Ok(s)
}

/// Reads one attach frame: `(stream, data)`, or `None` at EOF.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut hdr = [0u8; super::ctl::FRAME_HEADER];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some((hdr[0], data)))
}

async fn connect(path: &Path, state_dir: &Path, what: &str) -> Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(path).await.map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ) {
            Error::FailedPrecondition(format!(
                "{what}: the container's monitor is not running ({})",
                state_dir.display()
            ))
        } else {
            Error::io(format!("{what}: connect {}", path.display()), e)
        }
    })
}

fn answer_to_result(answer: &str, what: &str) -> Result<()> {
    let answer = answer.trim_end();
    if answer == "OK" {
        Ok(())
    } else if let Some(e) = answer.strip_prefix("ERR ") {
        Err(Error::FailedPrecondition(format!("{what}: {e}")))
    } else {
        Err(Error::Internal(format!("{what}: unexpected answer {answer:?}")))
    }
}

/// The control socket's path, short enough for `sockaddr_un` (via `/proc/self/fd/N` when the state dir
/// is deep); the returned fd must live while the path is used.
fn ctl_path(state_dir: &Path) -> Result<(PathBuf, Option<OwnedFd>)> {
    let p = state_dir.join(CTL_SOCKET);
    if p.as_os_str().len() < 100 {
        return Ok((p, None));
    }
    let dir = nix::fcntl::open(
        state_dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {}", state_dir.display()), e.into()))?;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{CTL_SOCKET}", dir.as_raw_fd()));
    Ok((p, Some(dir)))
}

async fn request(state_dir: &Path, line: &str) -> Result<()> {
    let what = format!("monitor request {}", line.trim_end());
    let (path, _guard) = ctl_path(state_dir)?;
    let talk = async {
        let mut s = connect(&path, state_dir, &what).await?;
        s.write_all(line.as_bytes()).await.ctx(&what)?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ctx(&what)?;
        answer_to_result(&String::from_utf8_lossy(&answer), &what)
    };
    tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .unwrap_or_else(|_| Err(Error::DeadlineExceeded(format!("{what}: no answer in 10s"))))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
