//! Exec with streams: `<runtime> exec` in the container with the client's streams wired.
//!
//! Without a tty the runtime runs in the foreground with pipes as its stdio (the process inherits
//! them); its exit status is the process's. With a tty the runtime runs detached (`-d`) with a console
//! socket: it sends us the pty master and exits, and the process, re-parented to crustd (a child
//! subreaper), is waited for through a pidfd. A client that goes away gets its process killed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cri_api::v1;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::ExecPrep;
use super::channel::{Sink, Streams, parse_sizes};
use crate::daemon::Daemon;
use crate::{Error, Result};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// How long output may keep flowing after the process exited (a background child holding the pipe).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long a tty exec's process, once exited or killed, may take to be reaped.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(30);

/// Runs the exec and reports its end on the error stream.
pub async fn run(d: Arc<Daemon>, req: v1::ExecRequest, streams: Streams) {
    let res = run_inner(&d, &req, streams).await;
    if let Err((e, streams)) = res {
        tracing::warn!(container = %req.container_id, error = %e, "exec failed");
        streams.finish(Err(e.to_string())).await;
    }
}

/// Files of one exec in the container's state dir, removed on drop.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
    console: PathBuf,
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for p in [&self.process, &self.pid, &self.console] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Kills the exec'd process and what it started (see `sys::kill_process_tree`).
fn kill(pid: Option<i32>) {
    if let Some(pid) = pid {
        crate::sys::kill_process_tree(pid);
    }
}

type Failed = (Error, Streams);

async fn run_inner(d: &Daemon, req: &v1::ExecRequest, mut s: Streams) -> std::result::Result<(), Failed> {
    let prep = match d.exec_prepare(&req.container_id, &req.cmd, req.tty) {
        Ok(p) => p,
        Err(e) => return Err((e, s)),
    };
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tag = format!("exec-{}-{seq}", std::process::id());
    let files = ExecFiles {
        process: prep.state_dir.join(format!("{tag}.json")),
        pid: prep.state_dir.join(format!("{tag}.pid")),
        console: prep.state_dir.join(format!("{tag}.sock")),
    };
    if let Err(e) = crate::state::atomic_write(&files.process, &prep.process_json) {
        return Err((Error::io(format!("write {}", files.process.display()), e), s));
    }
    let mut cmd = tokio::process::Command::new(&prep.runtime_path);
    cmd.arg("--root")
        .arg(&prep.runtime_root)
        .arg("exec")
        .arg("--process")
        .arg(&files.process);
    cmd.arg("--pid-file").arg(&files.pid).kill_on_drop(true);
    // A group of its own, as `Runc` runs its calls: a runtime that hangs before the process runs (a
    // wrapper around it) is killed with whatever it started.
    cmd.process_group(0);
    if req.tty {
        return run_tty(cmd, &prep, files, s).await;
    }
    cmd.arg(&prep.id);
    cmd.stdin(if s.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(if s.stdout.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stderr(if s.stderr.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = match crate::reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return Err((Error::io(format!("run {}", prep.runtime_path.display()), e), s)),
    };
    let mut group = crate::sys::KillGroupOnDrop(child.id());
    let stdin_task = match (child.stdin.take(), s.stdin.take()) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
        })),
        _ => None,
    };
    let out_task = pump(child.stdout.take(), s.stdout.clone());
    let err_task = pump(child.stderr.take(), s.stderr.clone());
    let deadline = tokio::time::Instant::now() + prep.start_timeout;
    let waited = tokio::select! {
        w = wait_exec(&mut child, &files.pid, deadline) => w,
        _ = s.gone.wait() => Waited::Gone,
    };
    let status = match waited {
        Waited::Exited(st) => st,
        Waited::NotStarted => {
            // As ExecSync (`Runc::exec_sync`): the runtime and all it started are killed, and the
            // client hears why.
            drop(group);
            let _ = child.wait().await;
            abort_all([stdin_task, out_task, err_task]);
            return Err((not_started(&prep), s));
        }
        Waited::Gone => {
            tracing::info!(container = %prep.id, "exec client went away; killing its process");
            if let Some(pid) = read_pid(&files.pid) {
                kill(Some(pid));
                // The runtime reaps the killed process and exits; killing the runtime first would
                // leave the process to crustd (a subreaper) to reap.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
            // A runtime that has not started the process (hung), or does not exit, goes with its group.
            drop(group);
            let _ = child.wait().await;
            abort_all([stdin_task, out_task, err_task]);
            s.finish(Err("client went away".into())).await;
            return Ok(());
        }
    };
    group.0 = None;
    let status = match status {
        Ok(st) => st,
        Err(e) => {
            abort_all([stdin_task, out_task, err_task]);
            return Err((Error::io("wait for the runtime", e), s));
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    drain([out_task, err_task]).await;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9));
    s.finish(Ok(code)).await;
    Ok(())
}

/// Copies `r` to `sink` until EOF.
fn pump<R: AsyncRead + Unpin + Send + 'static>(
    r: Option<R>,
    sink: Option<Sink>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (mut r, sink) = (r?, sink?);
    Some(tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !sink.send(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
    }))
}

async fn drain<const N: usize>(tasks: [Option<tokio::task::JoinHandle<()>>; N]) {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    for t in tasks.into_iter().flatten() {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            abort.abort();
        }
    }
}

fn abort_all<const N: usize>(tasks: [Option<tokio::task::JoinHandle<()>>; N]) {
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
}

/// How the wait for a foreground `runtime exec` ended.
enum Waited {
    /// The runtime exited (after its process, or without starting one).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// No process within the bound (`runtime.operation_timeout_seconds`).
    NotStarted,
    /// The client went away first.
    Gone,
}

/// Waits for a foreground `runtime exec` to end, its start of the process bounded by `start_by`.
async fn wait_exec(
    child: &mut tokio::process::Child,
    pid_file: &Path,
    start_by: tokio::time::Instant,
) -> Waited {
    match crate::oci::wait_exec_started(child, pid_file, start_by).await {
        Some(st) => Waited::Exited(st),
        None if !pid_file.exists() => Waited::NotStarted,
        None => Waited::Exited(child.wait().await),
    }
}

/// The error of an exec whose runtime did not start the process within the bound.
fn not_started(prep: &ExecPrep) -> Error {
    Error::DeadlineExceeded(format!(
        "runtime exec in {}: {} did not start the process within {} s \
         (runtime.operation_timeout_seconds); it was killed with the processes it started",
        prep.id,
        prep.runtime_path.display(),
        prep.start_timeout.as_secs()
    ))
}

/// A path for a unix socket that fits `sockaddr_un`: through `/proc/<pid>/fd/<dir fd>` when long.
fn short_socket_path(p: &Path) -> Result<(PathBuf, PathBuf, Option<OwnedFd>)> {
    if p.as_os_str().len() < 100 {
        return Ok((p.to_path_buf(), p.to_path_buf(), None));
    }
    let (dir, name) = match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return Err(Error::Internal(format!("bad socket path {}", p.display()))),
    };
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {}", dir.display()), e.into()))?;
    let raw = fd.as_raw_fd();
    let mine = PathBuf::from(format!("/proc/self/fd/{raw}")).join(name);
    let theirs = PathBuf::from(format!("/proc/{}/fd/{raw}", std::process::id())).join(name);
    Ok((mine, theirs, Some(fd)))
}

/// Receives one fd over a unix stream (SCM_RIGHTS).
fn recv_fd(sock: &std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut data = [0u8; 512];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just gave us this descriptor; we own it from here.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(std::io::Error::other(
        "no file descriptor in the console socket message",
    ))
}

async fn run_tty(
    mut cmd: tokio::process::Command,
    prep: &ExecPrep,
    files: ExecFiles,
    mut s: Streams,
) -> std::result::Result<(), Failed> {
    let id = prep.id.as_str();
    let (bind_path, runtime_path, _dirfd) = match short_socket_path(&files.console) {
        Ok(p) => p,
        Err(e) => return Err((e, s)),
    };
    let _ = std::fs::remove_file(&files.console);
    let listener = match tokio::net::UnixListener::bind(&bind_path) {
        Ok(l) => l,
        Err(e) => return Err((Error::io(format!("bind {}", files.console.display()), e), s)),
    };
    cmd.arg("-d").arg("--console-socket").arg(&runtime_path).arg(id);
    // Before the process exists: a status the reaper records from now on can be its.
    let since = std::time::Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match crate::reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return Err((Error::io("run the runtime", e), s)),
    };
    let mut group = crate::sys::KillGroupOnDrop(child.id());
    let mut errtext = Vec::new();
    let mut stderr = child.stderr.take();
    // The runtime sends the pty master, starts the process and exits, all within the bound; a client
    // that goes away meanwhile ends it too.
    let deadline = tokio::time::Instant::now() + prep.start_timeout;
    let mut gone = false;
    let begun = tokio::select! {
        r = tokio::time::timeout_at(deadline, receive_master(&listener, &mut child, &mut stderr, &mut errtext)) => r.ok(),
        _ = s.gone.wait() => { gone = true; None }
    };
    let Some((master, status)) = begun else {
        drop(group);
        let _ = child.wait().await;
        if gone {
            tracing::info!(container = %id, "exec client went away before its process ran");
            s.finish(Err("client went away".into())).await;
            return Ok(());
        }
        return Err((not_started(prep), s));
    };
    group.0 = None;
    drop(listener);
    let (Some(master), Ok(st)) = (master, status) else {
        let text = crate::oci::runtime_error_text(&errtext);
        return Err((Error::Internal(format!("runtime exec in {id}: {text}")), s));
    };
    if !st.success() {
        let text = crate::oci::runtime_error_text(&errtext);
        return Err((Error::Internal(format!("runtime exec in {id}: {text}")), s));
    }
    let Some(pid) = read_pid(&files.pid) else {
        return Err((Error::Internal(format!("runtime exec in {id}: no pid file")), s));
    };
    // The process the runtime just started: our child now, claimed from the reaper so that its pid
    // is not reused under us (or already reaped by it, status kept).
    let (claim, reaped) = match crate::reaper::claim(pid, since) {
        crate::reaper::Claimed::Mine(c) => (Some(c), None),
        crate::reaper::Claimed::Exited(st) => (None, Some(st)),
        crate::reaper::Claimed::Unknown => {
            return Err((
                Error::Internal(format!("runtime exec in {id}: process {pid} is gone")),
                s,
            ));
        }
    };
    let pidfd = match &claim {
        None => None,
        Some(_) => match crate::sys::pidfd_open(pid as u32) {
            Ok(fd) => Some(fd),
            Err(e) => {
                kill(Some(pid));
                return Err((Error::io("pidfd_open", e), s));
            }
        },
    };
    let pty = match Pty::new(master) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            kill(Some(pid));
            return Err((Error::io("pty master", e), s));
        }
    };
    let out_task = s.stdout.clone().map(|sink| {
        let pty = Arc::clone(&pty);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = pty.read(&mut buf).await {
                if n == 0 || !sink.send(&buf[..n]).await {
                    break;
                }
            }
        })
    });
    let in_task = s
        .stdin
        .take()
        .map(|rx| tokio::spawn(stdin_to_pty(rx, Arc::clone(&pty))));
    let resize_task = s
        .resize
        .take()
        .map(|rx| tokio::spawn(resize_pty(rx, Arc::clone(&pty))));
    let exited = match pidfd {
        // Reaped already: it has exited.
        None => true,
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same for its whole life.
        Some(pidfd) => match unsafe { AsyncFd::register(pidfd) } {
            Ok(afd) => tokio::select! {
                r = afd.readable() => { drop(r); true }
                _ = s.gone.wait() => false,
            },
            Err(_) => false,
        },
    };
    tracing::debug!(container = %id, pid, exited, "tty exec ended");
    if !exited {
        tracing::info!(container = %id, "exec client went away; killing its process");
        kill(Some(pid));
    }
    let status = match claim {
        Some(c) => c.wait(EXEC_EXIT_WAIT).await,
        None => reaped,
    };
    let code = match status {
        Some(st) if libc::WIFEXITED(st) => libc::WEXITSTATUS(st),
        Some(st) => 128 + libc::WTERMSIG(st),
        None => -1,
    };
    abort_all([in_task, resize_task]);
    if !exited {
        abort_all([out_task]);
        s.finish(Err("client went away".into())).await;
        return Ok(());
    }
    drain([out_task]).await;
    let res = if code < 0 {
        Err("the exec'd process was reaped elsewhere; exit code unknown".to_string())
    } else {
        Ok(code)
    };
    s.finish(res).await;
    Ok(())
}

/// A detached `runtime exec --console-socket`'s pty master (once it connects) and exit status, with
/// its error output in `errtext`.
async fn receive_master(
    listener: &tokio::net::UnixListener,
    child: &mut tokio::process::Child,
    stderr: &mut Option<tokio::process::ChildStderr>,
    errtext: &mut Vec<u8>,
) -> (Option<OwnedFd>, std::io::Result<std::process::ExitStatus>) {
    let master = tokio::select! {
        acc = listener.accept() => {
            match acc.and_then(|(c, _)| c.into_std()).and_then(|c| { c.set_nonblocking(false)?; Ok(c) }) {
                Ok(c) => tokio::task::spawn_blocking(move || recv_fd(&c)).await.unwrap_or_else(|e| Err(std::io::Error::other(e))).ok(),
                Err(_) => None,
            }
        }
        _ = child.wait() => None,
    };
    let status = child.wait().await;
    if let Some(e) = stderr.as_mut() {
        let _ = e.read_to_end(errtext).await;
    }
    (master, status)
}

async fn stdin_to_pty(mut rx: mpsc::Receiver<Bytes>, pty: Arc<Pty>) {
    while let Some(b) = rx.recv().await {
        if pty.write_all(&b).await.is_err() {
            break;
        }
    }
}

async fn resize_pty(mut rx: mpsc::Receiver<Bytes>, pty: Arc<Pty>) {
    let mut buf = Vec::new();
    while let Some(b) = rx.recv().await {
        buf.extend_from_slice(&b);
        if buf.len() > 4096 {
            buf.clear();
        }
        for sz in parse_sizes(&mut buf) {
            pty.resize(sz.width, sz.height);
        }
    }
}

/// A pty master, non-blocking, for async reads and writes.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Wraps `fd` (set non-blocking).
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same for its whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        Ok(Pty { fd })
    }

    /// Reads some bytes; `Ok(0)` once the other side is closed (EIO).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut g = self.fd.readable().await?;
            // SAFETY: read(2) into `buf`, within its length.
            match g.try_io(|fd| {
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut g = self.fd.writable().await?;
            // SAFETY: write(2) from `data`, within its length.
            match g.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal size.
    pub fn resize(&self, width: u16, height: u16) {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a pointer to a local winsize.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}
