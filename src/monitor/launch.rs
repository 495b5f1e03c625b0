//! The built-in pause launcher: the monitor starts a pod's pause itself, with one `clone`, instead of
//! through the OCI runtime (whose `run` costs three Go process start-ups on the pod's critical path).
//!
//! The child gets new mount, PID, IPC and UTS namespaces as asked and joins the pinned netns; it joins
//! the pause cgroup, takes the pod's oom_score_adj, hostname and sysctls, pivots into the read-only pause
//! root (no /proc, /dev or /sys: the pause needs none), empties its capability bounding set, becomes the
//! unprivileged pause user with no_new_privs (which leaves it no capabilities at all), and execs
//! `/pause`. Everything it needs is opened or encoded before the clone; after it, the child makes raw
//! system calls only. A failure is written to a close-on-exec pipe (errno and step), so the monitor
//! learns of it, or of the exec, from one read.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sysutil;

/// What the pause gets, as crustd asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseLaunch {
    /// The prepared pause root (holds `/pause`); mounted read-only as the pause's `/`.
    pub rootfs: PathBuf,
    /// The pinned network namespace to join; `None` keeps the host's.
    pub netns: Option<PathBuf>,
    /// A new PID namespace, the pause as its PID 1 (the pod shares its PID namespace).
    pub new_pid: bool,
    /// A new IPC namespace.
    pub new_ipc: bool,
    /// A new UTS namespace (with `hostname` set in it).
    pub new_uts: bool,
    pub hostname: Option<String>,
    /// Namespaced sysctls (`net.ipv4.ip_forward` style keys) applied inside the pod's namespaces.
    pub sysctls: Vec<(String, String)>,
    /// The `cgroup.procs` files of the pause cgroup, one per hierarchy, to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// The pod's pinned user namespace to enter before the new namespaces are made (so they belong to
    /// it); `None` keeps the host's.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    /// Written to the pause's `oom_score_adj` (crustd clamps it to its own).
    pub oom_score_adj: Option<i32>,
}

/// The pause's path inside its root.
const PAUSE: &std::ffi::CStr = c"/pause";

/// Everything the child uses, ready before the clone.
struct Prepared {
    devnull: RawFd,
    netns: Option<OwnedFd>,
    userns: Option<OwnedFd>,
    /// The namespaces to unshare in the pod's user namespace (with `userns` only).
    unshare: libc::c_int,
    cgroups: Vec<OwnedFd>,
    oom: Option<Vec<u8>>,
    hostname: Option<Vec<u8>>,
    sysctls: Vec<(CString, Vec<u8>)>,
    rootfs: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

fn cstring(what: &str, b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| format!("{what} contains a NUL byte"))
}

fn prepare(l: &PauseLaunch, devnull: RawFd) -> Result<Prepared, String> {
    let open = |p: &PathBuf, flags| {
        let c = cstring("path", p.as_os_str().as_bytes())?;
        sysutil::open(&c, flags).map_err(|e| format!("open {}: {e}", p.display()))
    };
    let netns = match &l.netns {
        Some(p) => Some(open(p, libc::O_RDONLY)?),
        None => None,
    };
    let userns = match &l.userns {
        Some(p) => Some(open(p, libc::O_RDONLY)?),
        None => None,
    };
    let cgroups = l
        .cgroup_procs
        .iter()
        .map(|p| open(p, libc::O_WRONLY))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sysctls = Vec::with_capacity(l.sysctls.len());
    for (k, v) in &l.sysctls {
        if k.contains("..") || k.starts_with('.') {
            return Err(format!("bad sysctl name {k:?}"));
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        sysctls.push((cstring("sysctl", path.as_bytes())?, v.as_bytes().to_vec()));
    }
    Ok(Prepared {
        devnull,
        netns,
        userns,
        unshare: new_namespaces(l),
        cgroups,
        oom: l.oom_score_adj.map(|v| v.to_string().into_bytes()),
        hostname: l.hostname.as_ref().map(|h| h.as_bytes().to_vec()),
        sysctls,
        rootfs: cstring("rootfs", l.rootfs.as_os_str().as_bytes())?,
        uid: l.uid,
        gid: l.gid,
    })
}

fn new_namespaces(l: &PauseLaunch) -> libc::c_int {
    let mut flags = libc::CLONE_NEWNS;
    for (on, f) in [
        (l.new_pid, libc::CLONE_NEWPID),
        (l.new_ipc, libc::CLONE_NEWIPC),
        (l.new_uts, libc::CLONE_NEWUTS),
    ] {
        if on {
            flags |= f;
        }
    }
    flags
}

/// A fork (with new namespaces when `flags` has them): the child's pid, or 0 in the child.
///
/// # Safety
/// Single-threaded callers only; the child may make async-signal-safe calls only.
unsafe fn clone(flags: libc::c_int) -> Result<i32, String> {
    // SAFETY: a clone without CLONE_VM and without a new stack is a fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::SIGCHLD | flags) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    Ok(pid as i32)
}

/// Starts the pause as the monitor's child; returns its pid once it has exec'd `/pause`, or what
/// failed (then nothing of it runs).
///
/// Without a user namespace, one clone makes the pause with its new namespaces. With one, the new
/// namespaces must be made inside it, so a plain fork enters the pod's namespaces, unshares the new
/// ones and forks the pause (PID 1 of the new PID namespace), reports its pid and exits; the pause is
/// then the monitor's child again, the monitor being a child subreaper.
pub fn start(l: &PauseLaunch, devnull: RawFd) -> Result<i32, String> {
    let p = prepare(l, devnull)?;
    let (r, w) = sysutil::pipe(false).map_err(|e| format!("pipe: {e}"))?;
    let (pid_r, pid_w) = sysutil::pipe(false).map_err(|e| format!("pipe: {e}"))?;
    let flags = if p.userns.is_some() { 0 } else { p.unshare };
    // SAFETY: the monitor is single-threaded, and the child only makes async-signal-safe calls on `p`.
    let pid = unsafe { clone(flags)? };
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            enter(&p, w.as_raw_fd());
            if p.userns.is_some() {
                intermediate(&p, w.as_raw_fd(), pid_w.as_raw_fd())
            }
            child(&p, w.as_raw_fd())
        }
    }
    drop(w);
    drop(pid_w);
    let mut buf = [0u8; 128];
    let n = sysutil::read(r.as_raw_fd(), &mut buf).unwrap_or(0);
    let pause = if p.userns.is_some() {
        // SAFETY: reaping the intermediate child, which has exited or is about to.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let mut b = [0u8; 4];
        match sysutil::read(pid_r.as_raw_fd(), &mut b) {
            Ok(4) => Some(i32::from_le_bytes(b)),
            _ => None,
        }
    } else {
        Some(pid)
    };
    if n == 0 {
        return pause.ok_or_else(|| "pause: the namespace helper exited without a pid".to_string());
    }
    if let Some(pause) = pause {
        // SAFETY: reaping our own failed child (the pause, reparented to us in the userns case).
        unsafe { libc::waitpid(pause, std::ptr::null_mut(), 0) };
    }
    let errno = i32::from_le_bytes([buf[0], buf[1], buf[2], buf.get(3).copied().unwrap_or(0)]);
    let step = String::from_utf8_lossy(buf.get(4..n).unwrap_or_default());
    Err(format!(
        "pause: {step}: {}",
        std::io::Error::from_raw_os_error(errno)
    ))
}

/// Reports `step` with the current errno on `err` and exits.
unsafe fn fail(err: RawFd, step: &[u8]) -> ! {
    // SAFETY: async-signal-safe writes of local data, then _exit.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 100];
        msg[..4].copy_from_slice(&errno.to_le_bytes());
        let n = step.len().min(msg.len() - 4);
        msg[4..4 + n].copy_from_slice(&step[..n]);
        libc::write(err, msg.as_ptr().cast(), 4 + n);
        libc::_exit(1)
    }
}

/// Writes all of `data` to the file at `path` (or to `fd` when given).
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a prepared path and buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

macro_rules! check {
    ($err:expr, $ok:expr, $step:expr) => {
        if !$ok {
            fail($err, $step)
        }
    };
}

/// The child's first steps, in the host's user namespace: stdio, signals, the pause cgroup,
/// oom_score_adj and the pod's netns.
unsafe fn enter(p: &Prepared, err: RawFd) {
    // SAFETY: raw system calls on data prepared before the clone; every failure ends in `fail`.
    unsafe {
        for fd in 0..3 {
            libc::dup2(p.devnull, fd);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
        for fd in &p.cgroups {
            check!(
                err,
                libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1,
                b"join the pause cgroup"
            );
        }
        if let Some(v) = &p.oom {
            check!(
                err,
                write_file(c"/proc/self/oom_score_adj", v),
                b"set oom_score_adj"
            );
        }
        if let Some(fd) = &p.netns {
            check!(
                err,
                libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0,
                b"join the pod network namespace"
            );
        }
    }
}

/// With a user namespace: enter it, make the new namespaces there, fork the pause, report its pid on
/// `pid_w` and exit. Never returns in the intermediate; returns in the pause.
unsafe fn intermediate(p: &Prepared, err: RawFd, pid_w: RawFd) {
    // SAFETY: as in `enter`.
    unsafe {
        if let Some(fd) = &p.userns {
            check!(
                err,
                libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER) == 0,
                b"join the pod user namespace"
            );
        }
        check!(
            err,
            libc::unshare(p.unshare) == 0,
            b"make the pod namespaces in its user namespace"
        );
        let pid = match clone(0) {
            Ok(pid) => pid,
            Err(_) => fail(err, b"fork the pause"),
        };
        if pid == 0 {
            return;
        }
        libc::write(pid_w, pid.to_le_bytes().as_ptr().cast(), 4);
        libc::_exit(0)
    }
}

/// The pause's side: never returns.
unsafe fn child(p: &Prepared, err: RawFd) -> ! {
    // SAFETY: raw system calls on data prepared before the clone; every failure ends in `fail`.
    unsafe {
        if let Some(h) = &p.hostname {
            check!(
                err,
                libc::sethostname(h.as_ptr().cast(), h.len()) == 0,
                b"set the hostname"
            );
        }
        for (path, v) in &p.sysctls {
            check!(err, write_file(path, v), path.to_bytes());
        }
        let null = std::ptr::null::<libc::c_char>();
        check!(
            err,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ) == 0,
            b"make the mount namespace private"
        );
        check!(
            err,
            libc::mount(
                p.rootfs.as_ptr(),
                p.rootfs.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null()
            ) == 0,
            b"bind the pause root"
        );
        check!(err, libc::chdir(p.rootfs.as_ptr()) == 0, b"enter the pause root");
        check!(
            err,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0,
            b"pivot_root"
        );
        check!(
            err,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0,
            b"detach the host root"
        );
        check!(err, libc::chdir(c"/".as_ptr()) == 0, b"chdir /");
        let mut ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // In a user namespace the flags the bind inherited from the host's mount are locked: the
        // remount must keep them (systemd mounts /run strictatime; a remount that asks for the
        // default relatime is EPERM).
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c"/".as_ptr(), &mut st) == 0 {
            ro |= locked_flags(st.f_flag);
        }
        check!(
            err,
            libc::mount(null, c"/".as_ptr(), null, ro, std::ptr::null()) == 0,
            b"make the pause root read-only"
        );
        // The bounding set (needs CAP_SETPCAP, so before the uid change), then the ambient set.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && *libc::__errno_location() != libc::EINVAL
            {
                fail(err, b"drop the capability bounding set")
            }
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        check!(
            err,
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0,
            b"setgroups"
        );
        check!(
            err,
            libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) == 0,
            b"setresgid"
        );
        // From root to a non-zero uid without keep-caps: the permitted and effective sets empty.
        check!(
            err,
            libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) == 0,
            b"setresuid"
        );
        check!(
            err,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0,
            b"set no_new_privs"
        );
        let argv = [PAUSE.as_ptr(), std::ptr::null()];
        let envp = [c"PATH=/".as_ptr(), std::ptr::null()];
        libc::execve(PAUSE.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(err, b"exec /pause")
    }
}

/// The mount flags (`MS_*`) a remount must repeat, from `statvfs`'s `f_flag` (`ST_*`): the atime mode
/// (none of `ST_NOATIME`/`ST_RELATIME` is strictatime). Not noexec: the pause must exec, and crustd
/// gives its root a mount of its own without it (`oci::pause::prepare_rootfs`).
fn locked_flags(st: libc::c_ulong) -> libc::c_ulong {
    let has = |f: libc::c_ulong| st & f != 0;
    let mut ms = 0;
    if has(libc::ST_NODIRATIME) {
        ms |= libc::MS_NODIRATIME;
    }
    ms | if has(libc::ST_NOATIME) {
        libc::MS_NOATIME
    } else if has(libc::ST_RELATIME) {
        libc::MS_RELATIME
    } else {
        libc::MS_STRICTATIME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remount_keeps_the_atime_mode() {
        let relatime = libc::ST_NOSUID | libc::ST_NODEV | libc::ST_RELATIME;
        assert_eq!(locked_flags(relatime), libc::MS_RELATIME);
        assert_eq!(
            locked_flags(libc::ST_NOSUID | libc::ST_NODEV),
            libc::MS_STRICTATIME
        );
        assert_eq!(locked_flags(libc::ST_NOEXEC | libc::ST_NOATIME), libc::MS_NOATIME);
    }

    #[test]
    fn prepare_refuses_bad_sysctls_and_encodes_paths() {
        let l = PauseLaunch {
            rootfs: "/r".into(),
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "0".into())],
            oom_score_adj: Some(-998),
            ..Default::default()
        };
        let p = prepare(&l, 0).unwrap();
        assert_eq!(
            p.sysctls[0].0.to_bytes(),
            b"/proc/sys/net/ipv4/ip_unprivileged_port_start"
        );
        assert_eq!(p.oom.as_deref(), Some(&b"-998"[..]));
        let bad = PauseLaunch {
            sysctls: vec![("net..x".into(), "1".into())],
            ..l
        };
        assert!(prepare(&bad, 0).is_err());
    }
}
