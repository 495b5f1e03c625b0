//! The monitor process (`crust-monitor`): detach, become a subreaper, set up the container's stdio and
//! the control socket, run `<runtime> run --detach` (or `create`; or launch a pause, see `launch`),
//! report to crustd on the sync fd, then hand over to the event loop (`event_loop`). Everything here
//! runs before the steady state, so it may allocate; no threads are ever started (the process forks).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::args::{self, SYNC_FD};
use super::event_loop::{self, Io, Oom};
use super::log::LogFile;
use super::sysutil::{self, cvt};
use super::{CONSOLE_SOCKET, CONTAINER_PID_FILE, CTL_SOCKET, MONITOR_PID_FILE, MonitorSpec, RUNTIME_LOG};

/// The monitor's main: never returns.
pub fn main() -> ! {
    // With NOTIFY_SOCKET set, `runc run --detach` waits for the container to send READY=1 and never
    // returns; crustd takes it out of its own environment, and a monitor started otherwise must too.
    // SAFETY: the monitor has one thread (it never starts a runtime), and nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if argv.first().is_some_and(|a| a == args::STANDBY) {
        argv = standby_args();
    }
    if argv.iter().any(|a| a == args::SYNC_STDOUT) {
        sync_from_stdout();
    }
    let spec = match args::parse(argv.into_iter()) {
        Ok(s) => s,
        Err(e) => {
            report(&format!("error 0 crust-monitor: {e}\n"));
            exit(2)
        }
    };
    // The runtime must not inherit the sync fd (crustd waits for its EOF).
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // Drop every fd crustd may have leaked to us except stdio and the sync fd.
    // SAFETY: close_range(2) on fds this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, SYNC_FD as u32 + 1, u32::MAX, 0u32) };
    // Detach: the first process exits at once (crustd reaps it); the second leads its own session, so
    // crustd's exit or a signal to crustd's process group never reaches it.
    // SAFETY: no threads exist yet; the child only continues single-threaded.
    match unsafe { libc::fork() } {
        -1 => {
            report(&format!(
                "error 0 crust-monitor: fork: {}\n",
                std::io::Error::last_os_error()
            ));
            exit(1)
        }
        0 => {}
        // SAFETY: _exit in the parent, without running atexit handlers twice.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: setsid has no memory effects.
    unsafe { libc::setsid() };
    let me = std::process::id();
    if spec.announce_pid {
        // Before anything can fail: the report that follows comes from this process too, so the
        // line is always first.
        let _ = sysutil::write_all(SYNC_FD, format!("pid {me}\n").as_bytes());
    }
    if spec.runtime_root.join(&spec.id).exists() {
        // Not ours: no clean-up, which would delete the existing container.
        report(&format!(
            "error {me} the runtime already has a container {}\n",
            spec.id
        ));
        exit(1)
    }
    match setup_and_create(&spec) {
        Ok(mut state) => {
            report(&format!("ok {me} {}\n", state.container_pid));
            event_loop::run(&mut state)
        }
        Err(msg) => {
            cleanup(&spec);
            report(&format!("error {me} {}\n", msg.replace('\n', " ")));
            exit(1)
        }
    }
}

/// A standby monitor (see `standby`) waits here, started ahead of need, for its arguments: crustd
/// writes them to its stdin and closes it. None (EOF at once: crustd dropped the standby, or stopped)
/// means it is not needed: it exits quietly. stdin is /dev/null afterwards, as for a monitor started
/// with its arguments.
fn standby_args() -> Vec<std::ffi::OsString> {
    let Some(argv) = args::read_handoff() else { exit(0) };
    if let Ok(null) = sysutil::open(c"/dev/null", libc::O_RDONLY) {
        // SAFETY: dup2 over our own stdin.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    argv
}

/// crustd handed the report's pipe as stdout (`--sync-stdout`): it moves to [`SYNC_FD`], and stdout
/// to /dev/null, where it is otherwise.
fn sync_from_stdout() {
    // SAFETY: dup2/open/close on fds of this single-threaded process.
    unsafe {
        if libc::dup2(1, SYNC_FD) < 0 {
            exit(2);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 1) < 0 {
            report(&format!(
                "error 0 crust-monitor: /dev/null as stdout: {}\n",
                std::io::Error::last_os_error()
            ));
            exit(2);
        }
        libc::close(null);
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing needs flushing (we never use stdio buffers).
    unsafe { libc::_exit(code) }
}

/// Writes the one-line report to crustd and closes the sync fd.
fn report(msg: &str) {
    let _ = sysutil::write_all(SYNC_FD, msg.as_bytes());
    // SAFETY: closing our copy of the sync fd; nothing else uses it.
    unsafe { libc::close(SYNC_FD) };
}

/// After a failed create: make the runtime forget the container, remove our files.
fn cleanup(spec: &MonitorSpec) {
    if spec.pause.is_none() {
        let _ = run_runtime(spec, &["delete", "--force", &spec.id]);
    }
    for f in [
        CTL_SOCKET,
        CONSOLE_SOCKET,
        CONTAINER_PID_FILE,
        RUNTIME_LOG,
        MONITOR_PID_FILE,
    ] {
        let _ = std::fs::remove_file(spec.state_dir.join(f));
    }
}

/// Runs `<runtime> --root R <args>` with stdio on /dev/null and waits for it.
fn run_runtime(spec: &MonitorSpec, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new(&spec.runtime_path)
        .args(crate::oci::Runc::global_args(
            &spec.runtime_root,
            spec.systemd_cgroup,
        ))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

fn cstr(p: &OsStr) -> Result<CString, String> {
    CString::new(p.as_bytes()).map_err(|_| format!("{} contains a NUL byte", p.to_string_lossy()))
}

fn e(what: impl std::fmt::Display, err: std::io::Error) -> String {
    format!("{what}: {err}")
}

/// A unix socket path short enough for `sockaddr_un`, for a file in our cwd (the state dir).
fn socket_path(state_dir: &Path, name: &str) -> PathBuf {
    let p = state_dir.join(name);
    if p.as_os_str().len() < 100 {
        p
    } else {
        PathBuf::from(format!("/proc/{}/cwd/{name}", std::process::id()))
    }
}

fn setup_and_create(spec: &MonitorSpec) -> Result<event_loop::State, String> {
    let mut spec = spec.clone();
    spec.state_dir = std::path::absolute(&spec.state_dir).map_err(|x| e("state dir", x))?;
    let sd = spec.state_dir.clone();
    crate::sys::set_child_subreaper().map_err(|x| e("set child subreaper", x))?;
    std::env::set_current_dir(&sd).map_err(|x| e(format!("chdir {}", sd.display()), x))?;
    write_pid_file().map_err(|x| e("write monitor.pid", x))?;

    // SIGCHLD arrives through a signalfd; SIGPIPE (a control client gone) and SIGHUP are ignored. The
    // runtime's child gets its mask and dispositions back before exec.
    // SAFETY: plain sigset manipulation on locals and process-wide signal settings, single-threaded.
    let sigfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))
            .map_err(|x| e("sigprocmask", x))?;
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let fd = cvt(libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))
            .map_err(|x| e("signalfd", x))?;
        OwnedFd::from_raw_fd(fd)
    };

    let _ = std::fs::remove_file(CTL_SOCKET);
    let ctl = UnixListener::bind(CTL_SOCKET)
        .map_err(|x| e(format!("bind {}", sd.join(CTL_SOCKET).display()), x))?;
    ctl.set_nonblocking(true).map_err(|x| e("ctl.sock", x))?;

    let log_cpath = match &spec.log_path {
        Some(p) => Some(cstr(p.as_os_str())?),
        None => None,
    };
    let log = match &log_cpath {
        Some(c) => LogFile::open(c).map_err(|x| e(format!("open log {}", c.to_string_lossy()), x))?,
        None => LogFile::none(),
    };

    let devnull = sysutil::open(c"/dev/null", libc::O_RDWR).map_err(|x| e("open /dev/null", x))?;
    if let Some(pause) = &spec.pause {
        let container_pid = super::launch::start(pause, devnull.as_raw_fd())?;
        if let Err(x) = std::fs::write(CONTAINER_PID_FILE, container_pid.to_string()) {
            // SAFETY: kill of our own child, then reaping it.
            unsafe { libc::kill(container_pid, libc::SIGKILL) };
            wait_for(container_pid);
            return Err(e(format!("write {CONTAINER_PID_FILE}"), x));
        }
        return Ok(event_loop::State {
            container_pid,
            created_at_ns: super::log::now_ns(),
            sigfd,
            ctl,
            log,
            log_cpath,
            io: Io::default(),
            oom: Oom::setup(container_pid, false, None, None),
            stdin_once: false,
            early: Default::default(),
        });
    }
    // Before the runtime makes the container's cgroup: the parent's OOM count, in case the container
    // is killed and its cgroup removed before the monitor looks (systemd scopes go when empty).
    let cgroups_path = std::fs::read(spec.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
    let oom_parent = Oom::parent_baseline(
        cgroups_path
            .as_deref()
            .and_then(super::event_loop::parent_memory_events),
    );
    let mut io = Io::default();
    // The fds the runtime gets as 0, 1, 2.
    let child_stdio: [RawFd; 3];
    let mut keep_for_child: Vec<OwnedFd> = Vec::new();
    let console = if spec.tty {
        let _ = std::fs::remove_file(CONSOLE_SOCKET);
        let l = UnixListener::bind(CONSOLE_SOCKET).map_err(|x| e("bind console socket", x))?;
        child_stdio = [devnull.as_raw_fd(); 3];
        Some(l)
    } else {
        let (out_r, out_w) = sysutil::pipe(true).map_err(|x| e("pipe", x))?;
        let (err_r, err_w) = sysutil::pipe(true).map_err(|x| e("pipe", x))?;
        let stdin_r = if spec.stdin {
            let (r, w) = sysutil::pipe(false).map_err(|x| e("pipe", x))?;
            sysutil::set_nonblock(w.as_raw_fd()).map_err(|x| e("pipe", x))?;
            io.stdin_w = Some(w);
            let raw = r.as_raw_fd();
            keep_for_child.push(r);
            raw
        } else {
            devnull.as_raw_fd()
        };
        child_stdio = [stdin_r, out_w.as_raw_fd(), err_w.as_raw_fd()];
        keep_for_child.push(out_w);
        keep_for_child.push(err_w);
        io.stdout = Some(out_r);
        io.stderr = Some(err_r);
        None
    };

    let mut argv: Vec<CString> = Vec::new();
    argv.push(cstr(spec.runtime_path.as_os_str())?);
    for a in crate::oci::Runc::global_args(&spec.runtime_root, spec.systemd_cgroup) {
        argv.push(cstr(&a)?);
    }
    let runtime_log = sd.join(RUNTIME_LOG);
    let pid_file = sd.join(CONTAINER_PID_FILE);
    let bundle = spec.bundle.as_os_str();
    let console_path = socket_path(&sd, CONSOLE_SOCKET);
    let mut rest: Vec<&OsStr> = vec![
        OsStr::new("--log"),
        runtime_log.as_os_str(),
        OsStr::new("--log-format"),
        OsStr::new("json"),
    ];
    // `run --detach` is `create` and `start` in one runtime process: one Go start-up and one state
    // round trip fewer than the two commands.
    let command: &[&str] = if spec.start {
        &["run", "--detach"]
    } else {
        &["create"]
    };
    let images = spec.restore.as_ref().map(|r| r.join("checkpoint"));
    match (&spec.restore, &images) {
        // The restored process keeps the stdio it was checkpointed with: runc hands CRIU its own
        // stdio for the pipes the images name, so the container's output comes to these pipes as
        // with `run`.
        (Some(work), Some(images)) => rest.extend([
            OsStr::new("restore"),
            OsStr::new("--detach"),
            OsStr::new("--image-path"),
            images.as_os_str(),
            OsStr::new("--work-path"),
            work.as_os_str(),
        ]),
        _ => rest.extend(command.iter().map(OsStr::new)),
    }
    rest.extend([OsStr::new("--bundle"), bundle]);
    if console.is_some() {
        rest.push(OsStr::new("--console-socket"));
        rest.push(console_path.as_os_str());
    }
    rest.extend([
        OsStr::new("--pid-file"),
        pid_file.as_os_str(),
        OsStr::new(&spec.id),
    ]);
    for a in rest {
        argv.push(cstr(a)?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    // SAFETY: single-threaded; the child only calls async-signal-safe functions on prepared data.
    let runtime_pid = unsafe { libc::fork() };
    if runtime_pid < 0 {
        return Err(e("fork", std::io::Error::last_os_error()));
    }
    if runtime_pid == 0 {
        // SAFETY: in the child, between fork and exec: dup2/sigprocmask/signal/execv/_exit only.
        unsafe { exec_child(&child_stdio, &argv_ptrs) }
    }
    drop(keep_for_child);

    let mut runtime_status: Option<libc::c_int> = None;
    if let Some(l) = &console {
        match receive_console(l, runtime_pid, &mut runtime_status) {
            Ok(Some(master)) => {
                let _ = sysutil::set_nonblock(master.as_raw_fd());
                io.tty = Some(master);
            }
            Ok(None) => {}
            Err(x) => {
                // SAFETY: kill of our own child.
                unsafe { libc::kill(runtime_pid, libc::SIGKILL) };
                wait_for(runtime_pid);
                return Err(e("receive the pty from the runtime", x));
            }
        }
    }
    drop(console);
    let _ = std::fs::remove_file(CONSOLE_SOCKET);
    let mut early: [Vec<u8>; 2] = Default::default();
    let status = match runtime_status {
        Some(s) => s,
        None => wait_draining(runtime_pid, [io.stdout.as_ref(), io.stderr.as_ref()], &mut early),
    };
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(create_error(&runtime_log, &early[1], status, &spec));
    }
    let _ = std::fs::remove_file(&runtime_log);
    let container_pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("the runtime wrote no pid to {}", pid_file.display()))?;
    if spec.tty && io.tty.is_none() {
        return Err("the runtime sent no pty over the console socket".into());
    }
    let oom = Oom::setup(container_pid, true, oom_parent, cgroups_path.as_deref());
    Ok(event_loop::State {
        container_pid,
        created_at_ns: super::log::now_ns(),
        sigfd,
        ctl,
        log,
        log_cpath,
        io,
        oom,
        stdin_once: spec.stdin_once,
        early,
    })
}

/// The runtime's child: stdio in place, signals back to defaults, exec.
unsafe fn exec_child(stdio: &[RawFd; 3], argv: &[*const libc::c_char]) -> ! {
    // SAFETY: async-signal-safe calls on fds and pointers prepared before fork.
    unsafe {
        for (target, &fd) in stdio.iter().enumerate() {
            if fd == target as RawFd {
                libc::fcntl(fd, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, target as RawFd);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
        libc::execv(argv[0], argv.as_ptr());
        libc::_exit(127)
    }
}

/// The most bytes kept of each stream while the runtime starts the container. Past it the pipe is left
/// to fill: only the container writes that much, and it may wait for the event loop.
const EARLY_MAX: usize = 1 << 20;

/// Waits for the runtime (our child) to exit while reading the container's stdout and stderr pipes,
/// which are also the runtime's own: a runtime whose error message (quoting a long argument) is larger
/// than a pipe's buffer would otherwise block on the write, and never exit. Returns its wait status;
/// what was read is in `early`.
fn wait_draining(pid: i32, fds: [Option<&OwnedFd>; 2], early: &mut [Vec<u8>; 2]) -> libc::c_int {
    // Readable when the runtime exits: the wait needs no timer.
    let Ok(pidfd) = crate::sys::pidfd_open(pid as u32) else {
        return wait_for(pid);
    };
    let mut buf = [0u8; 16 * 1024];
    let mut hung_up = [false; 2];
    loop {
        let mut pfds = [libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }; 3];
        for (i, fd) in fds.iter().enumerate() {
            pfds[i + 1].fd = match fd {
                Some(fd) if early[i].len() < EARLY_MAX && !hung_up[i] => fd.as_raw_fd(),
                _ => -1,
            };
        }
        // SAFETY: poll over a live array of pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), 3, -1) };
        for i in 0..2 {
            let rev = pfds[i + 1].revents;
            if rev & libc::POLLIN == 0 && rev & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Every writer is gone: nothing more to read while waiting.
                hung_up[i] = true;
            }
            if pfds[i + 1].fd >= 0 && rev & libc::POLLIN != 0 {
                // Non-blocking read ends: take what is there.
                while early[i].len() < EARLY_MAX {
                    match sysutil::read(pfds[i + 1].fd, &mut buf) {
                        Ok(n) if n > 0 => early[i].extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
            }
        }
        if pfds[0].revents != 0 {
            return wait_for(pid);
        }
    }
}

/// Blocks until `pid` (our child) exits; returns its wait status.
fn wait_for(pid: i32) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our child into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 127 << 8;
        }
    }
}

/// Waits for the runtime to connect to the console socket and send the pty master (SCM_RIGHTS). Returns
/// `None` when the runtime exited first (its status goes to `status`).
fn receive_console(
    l: &UnixListener,
    runtime_pid: i32,
    status: &mut Option<libc::c_int>,
) -> std::io::Result<Option<OwnedFd>> {
    loop {
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd for 50 ms.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n > 0 {
            break;
        }
        let mut st = 0;
        // SAFETY: waitpid on our child into a local.
        if unsafe { libc::waitpid(runtime_pid, &mut st, libc::WNOHANG) } == runtime_pid {
            *status = Some(st);
            return Ok(None);
        }
    }
    let (conn, _) = l.accept()?;
    let mut data = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: recvmsg into the buffers described by `msg`.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut got: Option<OwnedFd> = None;
    // SAFETY: walking the control messages the kernel filled in, within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = (libc::CMSG_DATA(c) as *const RawFd).read_unaligned();
                got = Some(OwnedFd::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    got.map(Some)
        .ok_or_else(|| std::io::Error::other("no file descriptor in the console socket message"))
}

/// The runtime's own words for a failed create: its JSON log, else what it printed on stderr.
fn create_error(runtime_log: &Path, stderr: &[u8], status: libc::c_int, spec: &MonitorSpec) -> String {
    let mut text = std::fs::read(runtime_log)
        .map(|d| crate::oci::runtime_error_text(&d))
        .unwrap_or_default();
    if text.is_empty() {
        text = crate::oci::runtime_error_text(&stderr[..stderr.len().min(4096)]);
    }
    if text.is_empty() {
        text = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("killed by signal {}", libc::WTERMSIG(status))
        };
    }
    let what = match (&spec.restore, spec.start) {
        (Some(_), _) => "restore",
        (None, true) => "run",
        (None, false) => "create",
    };
    format!("runtime {what} failed: {text}")
}

/// `monitor.pid`: `<pid> <start time>`, written atomically in the cwd (the state dir).
fn write_pid_file() -> std::io::Result<()> {
    let me = std::process::id();
    let start = crate::sys::proc_stat(me).map(|s| s.start).unwrap_or(0);
    let tmp = format!(".{MONITOR_PID_FILE}.tmp");
    std::fs::write(&tmp, format!("{me} {start}\n"))?;
    std::fs::rename(&tmp, MONITOR_PID_FILE)
}
