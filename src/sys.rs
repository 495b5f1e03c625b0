//! Small process-level helpers shared by crustd and the monitor: subreaper, pidfds, killing an exec's
//! process tree, oom_score_adj clamping, a child in a new user namespace, and what crust reads of
//! `/proc/<pid>/stat`.

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

/// What crust reads of `/proc/<pid>/stat`.
#[derive(Debug, Clone)]
pub struct ProcStat {
    /// The command name (for logs).
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Start time in clock ticks since boot (with the pid, it names one process).
    pub start: u64,
}

/// A process's [`ProcStat`].
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm is in parentheses and may hold any byte, ')' too: it ends at the last one.
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let comm = s.get(open + 1..close)?.to_string();
    let mut f = s.get(close + 1..)?.split_ascii_whitespace();
    // Fields after the comm start at field 3 (state), then ppid; starttime is field 22.
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let start = f.nth(17)?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        ppid,
        start,
    })
}

/// Whether the process a pidfd names is still alive (signal 0 through the pidfd).
pub fn pidfd_alive(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
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

/// Runs `f` with the pid of a child that sits in a new user namespace (made together with the
/// namespaces in `extra`, which then belong to it) whose `uid_map` and `gid_map` hold the given lines;
/// the child exits once `f` returns.
///
/// unshare(CLONE_NEWUSER) is refused to a threaded process such as crustd, hence the forked child; it
/// makes only async-signal-safe calls (unshare, write, read, _exit).
pub fn in_new_userns<T>(
    extra: libc::c_int,
    uid_map: &str,
    gid_map: &str,
    f: impl FnOnce(i32) -> io::Result<T>,
) -> io::Result<T> {
    use std::os::fd::AsRawFd;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) = nix::unistd::pipe2(cloexec)?;
    let (go_r, go_w) = nix::unistd::pipe2(cloexec)?;
    // Forked with crustd's reaper held off and registered as owned: the waitpid below is ours.
    let pid = crate::reaper::spawn_owned(|| {
        // SAFETY: see above: the child only makes async-signal-safe calls on fds it inherited.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                // Its copies of the parent's ends: the read below ends when the parent closes its own.
                libc::close(ready_r.as_raw_fd());
                libc::close(go_w.as_raw_fd());
                let ok = libc::unshare(libc::CLONE_NEWUSER | extra) == 0;
                libc::write(ready_w.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
                let mut b = [0u8; 1];
                libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        (pid, Some(pid))
    });
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut b = [0u8; 1];
        if nix::unistd::read(&ready_r, &mut b)? != 1 || b[0] != 1 {
            return Err(io::Error::other("unshare(CLONE_NEWUSER) failed in the child"));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        f(pid)
    })();
    drop(go_w);
    // SAFETY: reaping our own child into a null status.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// Sets the calling thread's filesystem uid and gid, then raises its effective capabilities back to
/// its permitted set (a change of fsuid from 0 clears the filesystem ones). For a thread of its own
/// that ends after its work: credentials are per thread.
pub fn set_fs_ids_keeping_caps(uid: u32, gid: u32) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: setfsgid/setfsuid take integers; capget/capset read and write the local structs of the
    // kernel's v3 layout (a header and two data elements).
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        if libc::setfsuid(u32::MAX) as u32 != uid || libc::setfsgid(u32::MAX) as u32 != gid {
            return Err(io::Error::other("setfsuid/setfsgid did not take"));
        }
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for x in &mut d {
            x.effective = x.permitted;
        }
        if libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGKILLs, when dropped, the process group that a child of ours leads (it was spawned with
/// `process_group(0)`: a runtime call, a wrapper around it and whatever they started), unless disarmed
/// by setting the field to `None` once the call ended by itself. The child must still be unreaped when
/// this drops: while it or a member of its group lives, its id names no other group.
pub struct KillGroupOnDrop(pub Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) of the group our unreaped child leads (see above).
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

/// SIGKILLs the process tree an exec started at `pid` (its pid as the host sees it): the process
/// group it leads and every descendant of it still alive.
///
/// The runtime makes each exec'd process the leader of a session and process group of its own (runc's
/// nsexec calls setsid(2) in the process it execs), and what a non-interactive shell starts in the
/// background stays in that group even once the shell has died and the orphans were handed to the
/// container's init: killing the group takes them all at once. Descendants that made groups of their
/// own are found through `/proc` (before anything is killed, while they are still descendants) and
/// signalled through pidfds, so that a pid reused meanwhile is never hit. Only a process that both
/// left the group and was orphaned before this call escapes; it is the container's to reap.
pub fn kill_process_tree(pid: i32) {
    if pid <= 0 {
        return;
    }
    let descendants: Vec<OwnedFd> = descendants(pid as u32)
        .into_iter()
        .filter_map(|(p, ppid)| {
            let fd = pidfd_open(p).ok()?;
            // Opened after the scan: still the same process if it still has the same parent.
            proc_stat(p).is_some_and(|s| s.ppid == ppid).then_some(fd)
        })
        .collect();
    // SAFETY: kill(2) of a process group and of one process; no memory involved. The group is named
    // by the exec'd process's pid, which cannot be handed to another process while the group lives.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    for fd in descendants {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal with no siginfo touches no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// Every live descendant of `root`, with its parent, from one pass over `/proc`.
fn descendants(root: u32) -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_stat(p)?.ppid)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && p != root && !found.iter().any(|&(q, _)| q == p) {
                found.push((p, pp));
                frontier.push(p);
            }
        }
    }
    found
}

/// Whether `path` can be reached (searched to, and `stat`ed) by root of the user namespace `userns`,
/// seen from the host as its mapped, unprivileged uid: what a container's init, which the OCI runtime
/// runs in the pod's user namespace, must do to reach its rootfs. `Err` holds the errno it met.
///
/// A forked child joins the namespace and becomes its uid and gid 0 (setns needs a single-threaded
/// process), then only makes async-signal-safe calls.
pub fn reachable_as_mapped_root(userns: &OwnedFd, path: &std::path::Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fd = userns.as_raw_fd();
    let pid = crate::reaper::spawn_owned(|| {
        // SAFETY: the child makes only async-signal-safe calls on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                if libc::setns(fd, libc::CLONE_NEWUSER) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(0, 0, 0) != 0
                    || libc::setresuid(0, 0, 0) != 0
                {
                    libc::_exit(200)
                }
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(c.as_ptr(), &mut st) == 0 {
                    libc::_exit(0)
                }
                let e = *libc::__errno_location();
                libc::_exit(e.clamp(1, 199))
            }
        }
        (pid, Some(pid))
    });
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: reaping our own child into a local status.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(io::Error::last_os_error());
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(200) => Err(io::Error::other("could not become root of the user namespace")),
        Some(e) => Err(io::Error::from_raw_os_error(e)),
        None => Err(io::Error::other(format!(
            "the reachability check died (wait status {status})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_self() {
        let st = proc_stat(std::process::id()).unwrap();
        assert!(matches!(st.state, 'R' | 'S'), "{st:?}");
        assert!(st.start > 0);
        assert_eq!(st.ppid, std::os::unix::process::parent_id());
        assert!(!st.comm.is_empty());
    }

    #[test]
    fn a_process_tree_goes_whole() {
        use std::os::unix::process::CommandExt;
        // Like an exec'd process: the leader of its own group, with a background job in that group
        // and a child that left it (setsid).
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 1001 & setsid sleep 1002 & sleep 1003; true"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = sh.id();
        let mut tree = Vec::new();
        for _ in 0..100 {
            tree = descendants(pid);
            if tree.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(tree.len(), 3, "{tree:?}");
        kill_process_tree(pid as i32);
        assert!(!sh.wait().unwrap().success());
        for (p, _) in tree {
            let gone = (0..100).any(|_| {
                let dead = proc_stat(p).is_none_or(|s| s.state == 'Z');
                if !dead {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                dead
            });
            assert!(gone, "process {p} of the tree still runs");
        }
    }
}
