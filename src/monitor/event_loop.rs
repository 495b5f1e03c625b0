//! The monitor's steady state: one `poll` over fixed slots (SIGCHLD signalfd, the container's stdout and
//! stderr or its pty, the control socket and its clients, the OOM eventfd, the container's stdin while
//! an attached client's input waits for room), fixed buffers, no allocation. Nothing in it blocks: a
//! stalled attach client never holds up the log, `REOPEN` or `RESIZE`. Ends when the container's init has exited: drains the output, writes the exit file
//! atomically and exits.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use super::ctl;
use super::ctl_server::{Clients, MAX_CLIENTS, stdin_fd};
use super::log::{LineBuf, LogFile, Stream, now_ns};
use super::sysutil::{self, field};
use super::{CTL_SOCKET, EXIT_FILE};

/// The container's stdio as the monitor holds it.
#[derive(Default)]
pub struct Io {
    /// Read end of the container's stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// Read end of the container's stderr pipe.
    pub stderr: Option<OwnedFd>,
    /// The pty master (tty mode: stdout and stderr both arrive here, logged as stdout).
    pub tty: Option<OwnedFd>,
    /// Write end of the container's stdin pipe, kept open for attach.
    pub stdin_w: Option<OwnedFd>,
}

/// Everything the loop works on.
pub struct State {
    pub container_pid: i32,
    pub created_at_ns: i64,
    pub sigfd: OwnedFd,
    pub ctl: UnixListener,
    pub log: LogFile,
    pub log_cpath: Option<CString>,
    pub io: Io,
    pub oom: Oom,
    /// Close the container's stdin when the first attached client closes its stdin or leaves.
    pub stdin_once: bool,
    /// What the container wrote to stdout and stderr while the runtime was still starting it (read
    /// then so the runtime could never block on a full pipe); logged first.
    pub early: [Vec<u8>; 2],
}

/// OOM-kill detection for the container's memory cgroup.
pub struct Oom {
    /// `memory.oom_control` (v1) or `memory.events` (v2): both have an `oom_kill <n>` line.
    counter_path: Option<CString>,
    /// v1: eventfd registered through `cgroup.event_control`; v2: inotify on `memory.events`.
    notify: Option<OwnedFd>,
    start: Option<u64>,
    seen: bool,
    /// v2: the parent cgroup's `memory.events` (hierarchical: it counts the container's kills too)
    /// and its count from before the runtime ran, for when the container's own cgroup is gone by the
    /// time it is read (systemd removes a scope as soon as it empties).
    parent: Option<(CString, u64)>,
}

/// Where a container's OOM kills are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OomSource {
    /// The v1 memory cgroup's directory (`memory.oom_control`, `cgroup.event_control`).
    V1(String),
    /// The v2 cgroup's `memory.events` (`oom_kill`).
    V2(String),
}

/// From a process's `/proc/<pid>/cgroup` (read in the host's cgroup namespace, so paths are from the
/// root): the v1 memory hierarchy when the host has one, else the v2 cgroup's `memory.events`, in the
/// unified hierarchy of a hybrid host or at the root of a pure v2 one (whichever `exists`).
fn oom_source(text: &str, exists: impl Fn(&str) -> bool) -> Option<OomSource> {
    let mut v2 = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.split(',').any(|c| c == "memory") {
            return Some(OomSource::V1(format!("/sys/fs/cgroup/memory{path}")));
        } else if ctrls.is_empty() {
            v2 = Some(path);
        }
    }
    v2_memory_events(v2?, exists).map(OomSource::V2)
}

/// The `memory.events` of v2 cgroup `rel` (from the root), in the unified hierarchy of a hybrid host or
/// at the root of a pure v2 one, whichever `exists`.
fn v2_memory_events(rel: &str, exists: impl Fn(&str) -> bool) -> Option<String> {
    let rel = rel.trim_start_matches('/');
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|base| format!("{base}/{rel}/memory.events"))
        .find(|f| exists(f))
}

/// The v2 `memory.events` of the parent of a container's cgroup, from its spec's `cgroupsPath`
/// (cgroupfs: `/a/b/<id>`; systemd: `<slice>:<prefix>:<name>`), when the host has v2 memory accounting
/// there.
pub fn parent_memory_events(cgroups_path: &str) -> Option<CString> {
    let parent = parent_cgroup(cgroups_path)?;
    v2_memory_events(&parent, |f| std::path::Path::new(f).exists()).and_then(|f| CString::new(f).ok())
}

/// The parent of a container's cgroup, relative to the hierarchy's root, from its `cgroupsPath`.
fn parent_cgroup(cgroups_path: &str) -> Option<String> {
    let parent = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [slice, _, _] => crate::cgroups::slice::expand_slice(slice).ok()?,
        [path] => path.rsplit_once('/')?.0.to_string(),
        _ => return None,
    };
    Some(parent.trim_matches('/').to_string()).filter(|p| !p.is_empty())
}

/// A container's own cgroup, relative to the hierarchy's root, from its `cgroupsPath` (cgroupfs: the
/// path; systemd: the runtime's `<prefix>-<name>.scope` in the expanded slice).
fn container_cgroup(cgroups_path: &str) -> Option<String> {
    let rel = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] if !name.is_empty() => {
            let slice = crate::cgroups::slice::expand_slice(slice).ok()?;
            let unit = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            format!("{slice}/{unit}")
        }
        [path] => path.to_string(),
        _ => return None,
    };
    Some(rel.trim_matches('/').to_string()).filter(|p| !p.is_empty())
}

/// Where the OOM kills of the cgroup `rel` (from the root) are counted: the v1 memory hierarchy's
/// directory when the host has one, else the v2 `memory.events`.
fn oom_source_of(rel: &str, exists: impl Fn(&str) -> bool) -> Option<OomSource> {
    if exists("/sys/fs/cgroup/memory") {
        let dir = format!("/sys/fs/cgroup/memory/{rel}");
        return exists(&dir).then_some(OomSource::V1(dir));
    }
    v2_memory_events(rel, exists).map(OomSource::V2)
}

/// The source to watch: the one `/proc/<pid>/cgroup` names, unless the container's init has already
/// died (a zombie is shown in the root cgroup: the OOM killer can be that quick, before the runtime
/// even returns), then the container's cgroup from its spec.
fn choose_oom_source(
    from_proc: Option<OomSource>,
    cgroups_path: Option<&str>,
    exists: impl Fn(&str) -> bool,
) -> Option<OomSource> {
    let at_root = |s: &OomSource| match s {
        OomSource::V1(dir) => dir.trim_end_matches('/') == "/sys/fs/cgroup/memory",
        OomSource::V2(_) => false,
    };
    match from_proc {
        Some(s) if !at_root(&s) => Some(s),
        _ => cgroups_path
            .and_then(container_cgroup)
            .and_then(|rel| oom_source_of(&rel, &exists)),
    }
}

/// The `oom_kill` count in a `memory.events` (or `memory.oom_control`) file.
fn read_count(path: &CString) -> Option<u64> {
    let mut buf = [0u8; 512];
    let text = sysutil::read_small(path, &mut buf).ok()?;
    field(text, b"oom_kill")
}

impl Oom {
    /// The parent cgroup's count now, before the runtime makes the container's cgroup below it.
    pub fn parent_baseline(parent_events: Option<CString>) -> Option<(CString, u64)> {
        let p = parent_events?;
        let n = read_count(&p)?;
        Some((p, n))
    }

    /// Finds the container's memory cgroup from `/proc/<pid>/cgroup` (or, when the process already
    /// died, from the spec's `cgroups_path`) and arms the notification.
    /// `fresh`: the cgroup was made for this container (its kills all count, even one that happened
    /// before this call); else (the pause, which may join an existing cgroup) only later ones do.
    pub fn setup(pid: i32, fresh: bool, parent: Option<(CString, u64)>, cgroups_path: Option<&str>) -> Oom {
        let mut oom = Oom {
            counter_path: None,
            notify: None,
            start: None,
            seen: false,
            parent,
        };
        let exists = |p: &str| std::path::Path::new(p).exists();
        let from_proc = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| oom_source(&text, exists));
        match choose_oom_source(from_proc, cgroups_path, exists) {
            Some(OomSource::V1(dir)) => {
                oom.counter_path = CString::new(format!("{dir}/memory.oom_control")).ok();
                oom.notify = arm_v1(&dir);
            }
            Some(OomSource::V2(file)) => {
                oom.notify = arm_inotify(&file);
                oom.counter_path = CString::new(file).ok();
            }
            None => {}
        }
        oom.start = if fresh && oom.counter_path.is_some() {
            Some(0)
        } else {
            oom.count()
        };
        oom
    }

    fn count(&self) -> Option<u64> {
        read_count(self.counter_path.as_ref()?)
    }

    fn fd(&self) -> RawFd {
        self.notify.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// The notification fired: consume it and check the counter.
    fn on_event(&mut self) {
        let mut buf = [0u8; 512];
        if let Some(fd) = &self.notify {
            let _ = sysutil::read(fd.as_raw_fd(), &mut buf);
        }
        match (self.start, self.count()) {
            (Some(s), Some(n)) if n > s => self.seen = true,
            // No counter on this kernel (or the cgroup is gone): trust a v1 event while it lives.
            (None, _) => self.seen = true,
            (_, None) => self.notify = None,
            _ => {}
        }
    }

    /// Whether a process of the cgroup was OOM-killed during the container's life. `sigkilled`: the
    /// container's init died of SIGKILL (as the OOM killer kills), which the parent's count, shared
    /// with the pod's other containers, is only trusted with when the container's own is gone.
    fn killed(&mut self, sigkilled: bool) -> bool {
        match (self.start, self.count()) {
            (Some(s), Some(n)) if n > s => self.seen = true,
            (_, Some(_)) => {}
            (_, None) => {
                if sigkilled
                    && let Some((p, base)) = &self.parent
                    && read_count(p).is_some_and(|n| n > *base)
                {
                    self.seen = true;
                }
            }
        }
        self.seen
    }
}

fn arm_v1(dir: &str) -> Option<OwnedFd> {
    let ctl = CString::new(format!("{dir}/memory.oom_control")).ok()?;
    let ofd = sysutil::open(&ctl, libc::O_RDONLY).ok()?;
    // SAFETY: eventfd(2); the fd is owned below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return None;
    }
    // SAFETY: fresh fd.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let line = format!("{} {}", efd.as_raw_fd(), ofd.as_raw_fd());
    std::fs::write(format!("{dir}/cgroup.event_control"), line).ok()?;
    Some(efd)
}

fn arm_inotify(path: &str) -> Option<OwnedFd> {
    let c = CString::new(path).ok()?;
    // SAFETY: inotify_init1; the fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: NUL-terminated path.
    let w = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
    (w >= 0).then_some(fd)
}

const SLOT_SIG: usize = 0;
const SLOT_OUT: usize = 1;
const SLOT_ERR: usize = 2;
const SLOT_CTL: usize = 3;
const SLOT_OOM: usize = 4;
/// The container's stdin (pipe or pty master), polled for room while an attached client's stdin waits.
const SLOT_STDIN: usize = 5;
const SLOT_CLIENT: usize = 6;

fn raw(fd: &Option<OwnedFd>) -> RawFd {
    fd.as_ref().map_or(-1, |f| f.as_raw_fd())
}

fn raw_of(fd: Option<&OwnedFd>) -> Option<RawFd> {
    fd.map(|f| f.as_raw_fd())
}

/// Reads what is there (a bounded number of reads) into the log and to attached clients; returns true
/// at EOF (or a pty's EIO).
fn pump(fd: RawFd, lb: &mut LineBuf, st: &mut State, clients: &mut Clients, max_reads: usize) -> bool {
    let stream = match lb.stream() {
        Stream::Stdout => ctl::STDOUT,
        Stream::Stderr => ctl::STDERR,
    };
    for _ in 0..max_reads {
        match sysutil::read(fd, lb.space()) {
            Ok(0) => return true,
            Ok(n) => {
                clients.forward(stream, &lb.space()[..n], st);
                lb.filled(n, &mut st.log);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// Runs until the container has exited, then writes the exit file and exits the process.
pub fn run(st: &mut State) -> ! {
    let mut out = Box::new(LineBuf::new(Stream::Stdout));
    let mut err = Box::new(LineBuf::new(Stream::Stderr));
    let [early_out, early_err] = std::mem::take(&mut st.early);
    out.feed(&early_out, &mut st.log);
    err.feed(&early_err, &mut st.log);
    let mut clients = Clients::new();
    let mut exited: Option<(libc::c_int, i64)> = None;
    while exited.is_none() {
        let mut pfds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; SLOT_CLIENT + MAX_CLIENTS];
        pfds[SLOT_SIG].fd = st.sigfd.as_raw_fd();
        pfds[SLOT_OUT].fd = if st.io.tty.is_some() {
            raw(&st.io.tty)
        } else {
            raw(&st.io.stdout)
        };
        pfds[SLOT_ERR].fd = raw(&st.io.stderr);
        pfds[SLOT_CTL].fd = st.ctl.as_raw_fd();
        pfds[SLOT_OOM].fd = st.oom.fd();
        if clients.stdin_waiting() {
            // No stdin left to wait for: the waiting clients are told at once.
            pfds[SLOT_STDIN].fd = stdin_fd(st).unwrap_or(-1);
            pfds[SLOT_STDIN].events = libc::POLLOUT;
            if pfds[SLOT_STDIN].fd < 0 {
                clients.resume_stdin(st);
            }
        }
        for i in 0..MAX_CLIENTS {
            let (fd, events) = clients.poll_fd(i);
            pfds[SLOT_CLIENT + i].fd = fd;
            pfds[SLOT_CLIENT + i].events = events;
        }
        // SAFETY: poll over a live array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        let ready = |i: usize| pfds[i].revents != 0;
        if ready(SLOT_OUT) {
            let fd = pfds[SLOT_OUT].fd;
            if pump(fd, &mut out, st, &mut clients, 8) {
                out.flush(&mut st.log);
                if st.io.tty.is_some() {
                    st.io.tty = None;
                } else {
                    st.io.stdout = None;
                }
            }
        }
        if ready(SLOT_ERR) && pump(pfds[SLOT_ERR].fd, &mut err, st, &mut clients, 8) {
            err.flush(&mut st.log);
            st.io.stderr = None;
        }
        if ready(SLOT_OOM) {
            st.oom.on_event();
        }
        if ready(SLOT_STDIN) {
            clients.resume_stdin(st);
        }
        if ready(SLOT_CTL) {
            clients.accept(st.ctl.as_raw_fd());
        }
        for i in 0..MAX_CLIENTS {
            if ready(SLOT_CLIENT + i) {
                clients.serve(i, st);
            }
        }
        if ready(SLOT_SIG) {
            let mut buf = [0u8; 128 * 8];
            while matches!(sysutil::read(st.sigfd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
            loop {
                let mut status = 0;
                // SAFETY: reaping any exited child into a local.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == st.container_pid {
                    exited = Some((status, now_ns()));
                }
            }
        }
    }
    // The init is gone: take what is left in the pipes (writers still alive in a shared PID namespace
    // are not waited for), then record the exit.
    if let Some(fd) = raw_of(st.io.tty.as_ref().or(st.io.stdout.as_ref())) {
        pump(fd, &mut out, st, &mut clients, 1024);
    }
    if let Some(fd) = raw_of(st.io.stderr.as_ref()) {
        pump(fd, &mut err, st, &mut clients, 1024);
    }
    out.flush(&mut st.log);
    err.flush(&mut st.log);
    let (status, finished) = exited.unwrap_or((0, now_ns()));
    let (code, signal) = if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status), libc::WTERMSIG(status))
    } else {
        (libc::WEXITSTATUS(status), 0)
    };
    let oom = st.oom.killed(signal == libc::SIGKILL);
    write_exit_file(code, signal, oom, st.created_at_ns, finished);
    let _ = std::fs::remove_file(CTL_SOCKET);
    // SAFETY: ending the process; nothing is buffered.
    unsafe { libc::_exit(0) }
}

/// The exit file (JSON of `ExitStatus`), written to a temporary file and renamed (in the cwd, the state
/// dir). Not synced: the state dir is runtime state (tmpfs, gone with the host, whose reboot also ends
/// the container), so a sync would protect nothing, and it sits on StopContainer's path; the rename
/// keeps readers from seeing half a file.
fn write_exit_file(code: i32, signal: i32, oom: bool, created: i64, finished: i64) {
    let mut buf = [0u8; 256];
    let len = {
        let mut cur = &mut buf[..];
        let _ = writeln!(
            cur,
            "{{\"exit_code\":{code},\"signal\":{signal},\"oom_killed\":{oom},\"created_at_ns\":{created},\
             \"started_at_ns\":null,\"finished_at_ns\":{finished}}}"
        );
        256 - cur.len()
    };
    let tmp = c".exit.tmp";
    let Ok(fd) = sysutil::open(tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) else {
        return;
    };
    let _ = sysutil::write_all(fd.as_raw_fd(), &buf[..len]);
    drop(fd);
    let _ = EXIT_FILE;
    // SAFETY: rename between two NUL-terminated relative paths.
    unsafe { libc::rename(tmp.as_ptr(), c"exit".as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_cgroup_of_both_drivers_cgroups_paths() {
        assert_eq!(parent_cgroup("/crust/p1/c1").as_deref(), Some("crust/p1"));
        assert_eq!(
            parent_cgroup("kubepods-burstable-pod1_2.slice:crust:c1").as_deref(),
            Some("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice")
        );
        assert_eq!(parent_cgroup("/c1"), None);
        assert_eq!(parent_cgroup("../x.slice:crust:c1"), None);
        assert_eq!(parent_cgroup("a:b"), None);
    }

    #[test]
    fn oom_counters_on_v1_hybrid_and_v2_hosts() {
        let hybrid = "12:memory:/crust/p1/c1\n4:cpu,cpuacct:/crust/p1/c1\n0::/crust/p1/c1\n";
        assert_eq!(
            oom_source(hybrid, |_| true),
            Some(OomSource::V1("/sys/fs/cgroup/memory/crust/p1/c1".into()))
        );
        // A pure v2 host with the systemd driver: the container's scope.
        let v2 = "0::/kubepods.slice/kubepods-pod1.slice/crust-c1.scope\n";
        assert_eq!(
            oom_source(v2, |p| !p.starts_with("/sys/fs/cgroup/unified")),
            Some(OomSource::V2(
                "/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/crust-c1.scope/memory.events".into()
            ))
        );
        assert_eq!(
            oom_source("0::/a\n", |p| p.starts_with("/sys/fs/cgroup/unified")),
            Some(OomSource::V2("/sys/fs/cgroup/unified/a/memory.events".into()))
        );
        assert_eq!(oom_source("0::/a\n", |_| false), None);
        assert_eq!(oom_source("garbage", |_| true), None);
    }

    #[test]
    fn a_container_dead_before_the_monitor_looks_is_found_by_its_spec() {
        // What /proc shows of a zombie on this hybrid host: the root of every hierarchy.
        let zombie = "4:memory:/\n1:cpu:/\n0::/\n";
        let dead = oom_source(zombie, |_| true);
        let v1 = |p: &str| p.starts_with("/sys/fs/cgroup/memory");
        assert_eq!(
            choose_oom_source(dead.clone(), Some("/crust/p1/c1"), v1),
            Some(OomSource::V1("/sys/fs/cgroup/memory/crust/p1/c1".into()))
        );
        // No spec path: nothing rather than the root's counter.
        assert_eq!(choose_oom_source(dead, None, v1), None);
        // A live process's own cgroup wins over the spec.
        let live = oom_source("4:memory:/x/c1\n", |_| true);
        assert_eq!(
            choose_oom_source(live, Some("/crust/p1/c1"), v1),
            Some(OomSource::V1("/sys/fs/cgroup/memory/x/c1".into()))
        );
        // A pure v2 host with the systemd driver: the runtime's scope in the expanded slice.
        let v2 =
            |p: &str| !p.starts_with("/sys/fs/cgroup/memory") && !p.starts_with("/sys/fs/cgroup/unified");
        assert_eq!(
            choose_oom_source(None, Some("kubepods-pod1.slice:crust:c1"), v2),
            Some(OomSource::V2(
                "/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/crust-c1.scope/memory.events".into()
            ))
        );
        assert_eq!(container_cgroup("a:b"), None);
        assert_eq!(container_cgroup("/"), None);
    }
}
