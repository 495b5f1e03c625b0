//! Small process-level helpers shared by crustd and the monitor: subreaper, pidfds, oom_score_adj
//! clamping.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Makes the calling process a child subreaper: orphans of what it spawns are re-parented to it, so it
/// can reap them (PID 1 here reaps only every ~2 s).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `pidfd_open(2)`: a descriptor that keeps naming process `pid` (signals through it never reach a
/// recycled pid; it turns readable when the process exits).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1 and touches no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// crustd's own `oom_score_adj`.
pub fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Clamps a requested `oom_score_adj` so it is never below crustd's own (lowering it needs
/// CAP_SYS_RESOURCE, which this host does not grant), as containerd's `restrict_oom_score_adj` does.
pub fn clamp_oom_score_adj(requested: i64) -> i32 {
    let own = own_oom_score_adj() as i64;
    requested.clamp(own, 1000) as i32
}
