//! crustd's general reaper. crustd is a child subreaper, so besides the children it spawns and waits
//! for itself it adopts orphans: processes a CNI plugin left running in the background, a `runtime exec`
//! process whose runtime died, processes of hostPID containers whose parents exited, exiting monitors.
//! Nobody else waits for those; unreaped they stay zombies until crustd exits.
//!
//! The reaper must never take an exit status crustd waits for itself. So crustd's own children are
//! *owned*: every spawn (tokio `Command`s through [`spawn`], forks through [`spawn_owned`]) registers
//! its pid under the registry lock while it forks, and the reaper scans under the same lock, so it can
//! never see an owned child before it is registered. An owned pid is forgotten once it is no longer
//! crustd's child with the start time it was registered with (tokio reaped it, maybe late, for a child
//! dropped unwaited: its orphan queue still waits for it by pid, so it stays owned until then).
//!
//! The reaper ([`run`]) wakes at SIGCHLD (tokio's process driver listens to the same signal and only
//! ever waits for its own children by pid, so nobody waits with -1) and every few seconds, asks the
//! kernel whether any child is a zombie at all (`waitid(P_ALL, WNOWAIT)`, which reaps nothing: with
//! hundreds of monitors as children, the common answer costs one syscall instead of a file per child),
//! and only then lists crustd's children (`/proc/self/task/*/children`, with a full `/proc` scan now and then as those
//! files may miss a child that moves between threads), and `waitpid(pid, WNOHANG)`s each zombie that
//! is not owned. An adopted process whose status crustd does want (a tty exec's process) is
//! [`claim`]ed under the same lock as soon as crustd knows its pid: from then on it is owned (so its
//! pid cannot be reaped and reused while crustd signals it), or, if the reaper came first, its
//! recorded status is given. [`take_status`] serves waits for exiting monitors the same way.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the reaper scans without a SIGCHLD.
const SCAN_EVERY: Duration = Duration::from_secs(5);
/// Every this many timer scans, a full `/proc` scan.
const FULL_SCAN_EVERY: u32 = 6;
/// How long the status of a reaped adopted process is kept for a late [`take_status`].
const KEEP_STATUS: Duration = Duration::from_secs(120);
/// Most statuses kept.
const MAX_STATUSES: usize = 4096;

struct Registry {
    /// Children crustd waits for itself: pid → start time (`/proc/<pid>/stat` field 22).
    owned: BTreeMap<i32, u64>,
    /// Adopted processes reaped here: pid → (when, wait status).
    reaped: BTreeMap<i32, (Instant, i32)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    owned: BTreeMap::new(),
    reaped: BTreeMap::new(),
});

fn lock() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `fork`, which makes one child and returns it with its pid, with the reaper held off, and
/// registers the pid as owned: crustd waits for it itself. `fork` must not touch the registry (a
/// forked child must make only async-signal-safe calls anyway).
pub fn spawn_owned<T>(fork: impl FnOnce() -> (T, Option<i32>)) -> T {
    let mut reg = lock();
    let (v, pid) = fork();
    if let Some(pid) = pid.filter(|p| *p > 0) {
        let start = proc_stat(pid).map_or(0, |s| s.start);
        reg.owned.insert(pid, start);
    }
    v
}

/// `cmd.spawn()` for a child crustd waits for (see [`spawn_owned`]).
pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    spawn_owned(|| {
        let r = cmd.spawn();
        let pid = r.as_ref().ok().and_then(|c| c.id()).map(|p| p as i32);
        (r, pid)
    })
}

/// `cmd.spawn()` for a `std::process::Command` crustd waits for itself (see [`spawn_owned`]).
pub fn spawn_std(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    spawn_owned(|| {
        let r = cmd.spawn();
        let pid = r.as_ref().ok().map(|c| c.id() as i32);
        (r, pid)
    })
}

/// `cmd.output()` for a short command crustd runs and waits for (stdin on /dev/null, stdout and
/// stderr captured): spawned owned, so the reaper cannot take its exit status first and leave the
/// wait with ECHILD.
pub fn output(cmd: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_std(cmd)?.wait_with_output()
}

/// What [`take_status`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// It has exited with this wait status (reaped now, or earlier by the reaper).
    Exited(i32),
    /// Still running (or not yet our child).
    Running,
    /// Not our child, and no status recorded for it.
    Unknown,
}

/// The wait status of `pid`, an adopted (not owned) child crustd wants the exit status of.
pub fn take_status(pid: i32) -> Waited {
    let mut reg = lock();
    if reg.owned.contains_key(&pid) {
        return Waited::Unknown;
    }
    let mut status = 0;
    // SAFETY: waitpid on one specific pid, writing into a local; under the registry lock, so the
    // reaper cannot reap it at the same time.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        reg.reaped.insert(pid, (Instant::now(), status));
        return Waited::Exited(status);
    }
    if r == 0 {
        return Waited::Running;
    }
    match reg.reaped.get(&pid) {
        Some((_, s)) => Waited::Exited(*s),
        None => Waited::Unknown,
    }
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// It is crustd's child (alive or a zombie) and now owned: wait for it through the [`Claim`].
    Mine(Claim),
    /// The reaper reaped it (after `since`): its wait status.
    Exited(i32),
    /// Neither.
    Unknown,
}

/// An adopted child taken out of the reaper's hands: only [`Claim::wait`] reaps it. Dropped before
/// that, it goes back to the reaper.
#[derive(Debug)]
pub struct Claim {
    pid: i32,
    done: bool,
}

/// Takes `pid`, a process crustd just adopted and wants the exit status of (a tty exec's process once
/// its runtime exited), out of the reaper's hands, so that its pid cannot be reaped and reused while
/// crustd signals or waits for it; or, when the reaper was first (after `since`, a time before the
/// process was made), gives the status it recorded.
pub fn claim(pid: i32, since: Instant) -> Claimed {
    let me = std::process::id() as i32;
    let mut reg = lock();
    if !reg.owned.contains_key(&pid)
        && let Some(st) = proc_stat(pid).filter(|st| st.ppid as i32 == me)
    {
        reg.owned.insert(pid, st.start);
        return Claimed::Mine(Claim { pid, done: false });
    }
    match reg.reaped.get(&pid) {
        Some((t, status)) if *t >= since => Claimed::Exited(*status),
        _ => Claimed::Unknown,
    }
}

impl Claim {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reaps the process once it has exited (polling, up to `timeout`): its wait status.
    pub async fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child, owned (the reaper leaves it alone), into a local.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.done = true;
                lock().owned.remove(&self.pid);
                return Some(status);
            }
            if r < 0 || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            lock().owned.remove(&self.pid);
        }
    }
}

/// Reaps adopted zombies at every SIGCHLD and every [`SCAN_EVERY`]; runs until the runtime ends.
pub async fn run() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "reaper: no SIGCHLD stream; scanning on a timer only");
            None
        }
    };
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        let full = tokio::select! {
            Some(()) = async { match sigchld.as_mut() { Some(s) => s.recv().await, None => None } } => false,
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                ticks.is_multiple_of(FULL_SCAN_EVERY)
            }
        };
        scan(full);
    }
}

/// One pass: reaps every zombie child that is not owned; returns how many.
pub fn scan(full: bool) -> usize {
    if !zombie_child() {
        forget_owned_gone(&mut lock());
        return 0;
    }
    let me = std::process::id() as i32;
    let children = if full { None } else { children_from_tasks() };
    reap_among(&children.unwrap_or_else(|| children_from_proc(me)))
}

/// Reaps those of `children` that are zombie children of ours and not owned.
fn reap_among(children: &[i32]) -> usize {
    let me = std::process::id() as i32;
    let mut reg = lock();
    forget_owned_gone(&mut reg);
    let now = Instant::now();
    reg.reaped
        .retain(|_, (t, _)| now.duration_since(*t) < KEEP_STATUS);
    let mut n = 0;
    for &pid in children {
        if reg.owned.contains_key(&pid) {
            continue;
        }
        let Some(st) = proc_stat(pid) else { continue };
        if st.state != 'Z' || st.ppid as i32 != me {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific zombie child that nothing in crustd waits for (not owned;
        // `take_status` waits under the same lock), writing into a local.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            tracing::debug!(pid, comm = %st.comm, status, "reaped an adopted process");
            if reg.reaped.len() >= MAX_STATUSES
                && let Some(oldest) = reg.reaped.iter().min_by_key(|(_, (t, _))| *t).map(|(p, _)| *p)
            {
                reg.reaped.remove(&oldest);
            }
            reg.reaped.insert(pid, (now, status));
            n += 1;
        }
    }
    n
}

/// Forgets owned pids that are no longer crustd's children with their start time (tokio reaped them).
fn forget_owned_gone(reg: &mut Registry) {
    let me = std::process::id() as i32;
    reg.owned
        .retain(|pid, start| proc_stat(*pid).is_some_and(|s| s.ppid as i32 == me && s.start == *start));
}

/// Whether any child of crustd is a zombie now (owned or not); nothing is reaped. True when the kernel
/// cannot tell (then the scan looks).
fn zombie_child() -> bool {
    // SAFETY: an all-zero siginfo_t is valid; waitid writes into it and, with WNOWAIT, leaves the
    // child waitable.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: P_ALL with a zero id and a local out-parameter; WNOHANG so it never blocks.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        // ECHILD: no children at all.
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD);
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 when no child was waitable).
    unsafe { info.si_pid() != 0 }
}

/// [`crate::sys::proc_stat`] by a `pid_t`.
fn proc_stat(pid: i32) -> Option<crate::sys::ProcStat> {
    crate::sys::proc_stat(u32::try_from(pid).ok()?)
}

/// crustd's children from `/proc/self/task/*/children` (None when the kernel lacks those files).
fn children_from_tasks() -> Option<Vec<i32>> {
    let mut out = Vec::new();
    let mut any = false;
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            any = true;
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    any.then_some(out)
}

/// crustd's children from a scan of every `/proc/<pid>/stat`.
fn children_from_proc(me: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.ppid as i32 == me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_self() {
        let st = proc_stat(std::process::id() as i32).unwrap();
        assert!(matches!(st.state, 'R' | 'S'), "{}", st.state);
        // SAFETY: getppid has no preconditions.
        assert_eq!(st.ppid as i32, unsafe { libc::getppid() });
        assert!(st.start > 0);
        assert!(!st.comm.is_empty());
    }

    #[test]
    fn a_zombie_child_is_seen_and_left_waitable() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        std::mem::forget(child);
        let zombie = || proc_stat(pid).is_some_and(|s| s.state == 'Z');
        for _ in 0..250 {
            if zombie() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(zombie());
        assert!(zombie_child());
        assert!(zombie(), "waitid with WNOWAIT reaped the child");
        let mut status = 0;
        // SAFETY: waitpid on this test's own zombie child, into a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    }

    #[tokio::test]
    async fn owned_children_keep_their_status() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let mut child = spawn(&mut cmd).unwrap();
        let pid = child.id().unwrap() as i32;
        // Let it become a zombie, then scan: an owned child is left to its waiter.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // (Only among its own pid: other tests of this binary wait for theirs.)
        assert_eq!(reap_among(&[pid]), 0);
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
        assert_eq!(take_status(pid), Waited::Unknown);
    }

    #[test]
    fn std_commands_run_through_the_registry_keep_their_status() {
        // The reaper's pass between the exit and the wait (as `criu check` met it under CI) leaves
        // an owned std child alone.
        let child = spawn_std(
            std::process::Command::new("sh")
                .args(["-c", "echo out; exit 3"])
                .stdout(std::process::Stdio::piped()),
        )
        .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(reap_among(&[pid]), 0);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        let out = output(std::process::Command::new("sh").args(["-c", "echo err >&2"])).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn unowned_children_are_reaped_with_their_status_kept() {
        // A child not spawned through the registry, as an adopted one would be.
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::mem::forget(child);
        let _ = crate::sys::pidfd_open(pid as u32).map(|fd| {
            let mut p = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one live pollfd.
            unsafe { libc::poll(&mut p, 1, 5000) };
        });
        let mut reaped = 0;
        for _ in 0..50 {
            reaped += reap_among(&[pid]);
            if reaped > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reaped >= 1);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        match take_status(pid) {
            Waited::Exited(s) => assert_eq!(libc::WEXITSTATUS(s), 5),
            other => panic!("{other:?}"),
        }
    }
}
