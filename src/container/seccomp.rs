//! Seccomp for containers: the built-in `RuntimeDefault` profile and `Localhost` profiles.
//!
//! The built-in profile is an **allow-list** with the semantics of containerd's default profile: a
//! syscall not named here fails with `EPERM` (so a syscall a future kernel adds is refused until it is
//! listed). What it keeps from a container without the matching capability:
//! - new namespaces: `clone` only without the `CLONE_NEW*` flags, `clone3` answered `ENOSYS` (its flags
//!   are behind a pointer seccomp cannot read, and `ENOSYS` makes libc fall back to `clone`), no
//!   `unshare` or `setns` (all three allowed with `CAP_SYS_ADMIN`);
//! - kernel-global state: `io_uring_*`, keyrings (`keyctl`, `add_key`, `request_key`), `bpf`,
//!   `perf_event_open`, `userfaultfd`, modules, `kexec_*`, mounts, swap, clock, accounting, `syslog`,
//!   `reboot`, each let through only with the capability that guards it where containerd does so;
//! - `socket` for `AF_ALG` and `AF_VSOCK`; `personality` except the harmless personas and the query.
//!
//! `Localhost` profiles are JSON files (an OCI `LinuxSeccomp`) in `runtime.seccomp_profile_root`, or at an
//! absolute path as kubelet sends them.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::{Error, Result};

#[rustfmt::skip]
/// Syscalls every container may make, by topic. (Names libseccomp does not know are skipped by runc,
/// which answers syscalls newer than its libseccomp with `ENOSYS`.)
const ALLOWED: &[&[&str]] = &[
    // Processes and threads.
    &[
        "exit", "exit_group", "fork", "vfork", "execve", "execveat", "wait4", "waitid", "waitpid", "kill",
        "tkill", "tgkill", "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid",
        "setsid", "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prctl", "seccomp",
        "capget", "capset", "pidfd_open", "pidfd_send_signal", "process_mrelease", "membarrier",
        "restart_syscall", "set_thread_area", "get_thread_area", "map_shadow_stack", "uretprobe",
        // Tracing one's own children: allowed since Linux 4.8, where seccomp runs after ptrace.
        "ptrace", "process_vm_readv", "process_vm_writev",
    ],
    // Credentials.
    &[
        "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid", "getegid32",
        "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups", "getgroups32", "setuid",
        "setuid32", "setgid", "setgid32", "setreuid", "setreuid32", "setregid", "setregid32",
        "setresuid", "setresuid32", "setresgid", "setresgid32", "setfsuid", "setfsuid32", "setfsgid",
        "setfsgid32", "setgroups", "setgroups32",
    ],
    // Signals.
    &[
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
        "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack",
        "sigprocmask", "sigreturn", "signalfd", "signalfd4", "pause",
    ],
    // Scheduling, limits, system information.
    &[
        "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr", "sched_getparam",
        "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
        "sched_get_priority_min", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_yield",
        "getpriority", "setpriority", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit", "ugetrlimit",
        "prlimit64", "getrusage", "times", "sysinfo", "uname", "getcpu", "getrandom",
    ],
    // Time and timers (`adjtimex`/`clock_adjtime` read; setting needs CAP_SYS_TIME in the kernel).
    &[
        "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
        "clock_nanosleep", "clock_nanosleep_time64", "nanosleep", "adjtimex", "clock_adjtime",
        "clock_adjtime64", "alarm", "getitimer", "setitimer", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
        "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
    ],
    // Memory.
    &[
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "mlock", "mlock2",
        "mlockall", "munlock", "munlockall", "msync", "remap_file_pages", "memfd_create", "memfd_secret",
        "pkey_alloc", "pkey_free", "pkey_mprotect", "mseal", "cachestat",
    ],
    // Futexes.
    &[
        "futex", "futex_time64", "futex_wait", "futex_wake", "futex_requeue", "futex_waitv",
    ],
    // File descriptors and I/O.
    &[
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
        "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek", "_llseek",
        "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "fsync", "fdatasync", "sync", "syncfs",
        "sync_file_range", "readahead", "fadvise64", "fadvise64_64", "fallocate", "truncate",
        "truncate64", "ftruncate", "ftruncate64", "sendfile", "sendfile64", "splice", "tee", "vmsplice",
        "copy_file_range", "ioctl", "pipe", "pipe2",
    ],
    // Paths and file metadata.
    &[
        "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64", "newfstatat", "statx",
        "statfs", "statfs64", "fstatfs", "fstatfs64", "access", "faccessat", "faccessat2", "chdir",
        "fchdir", "getcwd", "getdents", "getdents64", "mkdir", "mkdirat", "mknod", "mknodat", "rmdir",
        "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat",
        "renameat2", "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown",
        "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32", "umask", "utime", "utimes",
        "utimensat", "utimensat_time64", "futimesat", "name_to_handle_at", "listmount", "statmount",
    ],
    // Extended attributes.
    &[
        "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
        "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
        "lremovexattr", "fremovexattr", "removexattrat",
    ],
    // Waiting for events.
    &[
        "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait", "epoll_wait_old",
        "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "inotify_init", "inotify_init1",
        "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
    ],
    // Asynchronous I/O (the old `io_*` API; `io_uring_*` is not here).
    &[
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64",
    ],
    // Sockets (`socket` itself is below, by address family).
    &[
        "socketpair", "socketcall", "bind", "connect", "listen", "accept", "accept4", "getsockname",
        "getpeername", "getsockopt", "setsockopt", "shutdown", "send", "sendto", "sendmsg", "sendmmsg",
        "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64",
    ],
    // System V and POSIX IPC (namespaced).
    &[
        "ipc", "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl", "semop", "semtimedop",
        "semtimedop_time64", "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink",
        "mq_getsetattr", "mq_notify", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
        "mq_timedreceive_time64",
    ],
    // Self-confinement and LSM attributes of one's own.
    &[
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "lsm_get_self_attr",
        "lsm_set_self_attr", "lsm_list_modules",
    ],
];

/// Architecture-specific syscalls allowed on this build's host.
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_ALLOWED: &[&str] = &[];

/// The seccomp architectures of this build's host (native first, then its compat ABIs).
#[cfg(target_arch = "aarch64")]
const ARCHES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
#[cfg(not(target_arch = "aarch64"))]
const ARCHES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Syscalls let through when the container's bounding set holds the capability.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf", "clone", "clone3", "unshare", "setns", "mount", "umount", "umount2", "mount_setattr",
            "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "fanotify_init",
            "lookup_dcookie", "perf_event_open", "quotactl", "quotactl_fd", "sethostname",
            "setdomainname", "syslog",
        ],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality(2)` arguments allowed: PER_LINUX, PER_LINUX32, UNAME26 with each, and the query.
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The `clone` flags that make namespaces.
pub const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn allow(names: &[&str]) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ALLOW"})
}

fn allow_if(name: &str, index: u32, op: &str, value: u64) -> Value {
    json!({
        "names": [name],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": index, "value": value, "op": op}],
    })
}

/// The built-in `RuntimeDefault` profile for a container whose bounding set is `caps`.
pub fn default_profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut base: Vec<&str> = ALLOWED.iter().flat_map(|g| g.iter().copied()).collect();
    base.extend_from_slice(ARCH_ALLOWED);
    let mut rules = vec![allow(&base)];
    // socket(2) for every address family but AF_ALG (38) and AF_VSOCK (40): three single-condition
    // rules, since runc turns repeated conditions on one argument into alternatives.
    rules.push(allow_if("socket", 0, "SCMP_CMP_LT", libc::AF_ALG as u64));
    rules.push(allow_if("socket", 0, "SCMP_CMP_EQ", libc::AF_ALG as u64 + 1));
    rules.push(allow_if("socket", 0, "SCMP_CMP_GT", libc::AF_VSOCK as u64));
    for p in PERSONALITIES {
        rules.push(allow_if("personality", 0, "SCMP_CMP_EQ", *p));
    }
    let mut by_cap: Vec<&str> = Vec::new();
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            for n in *names {
                if !by_cap.contains(n) {
                    by_cap.push(n);
                }
            }
        }
    }
    if !by_cap.is_empty() {
        rules.push(allow(&by_cap));
    }
    if !has("CAP_SYS_ADMIN") {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ARCHES,
        "syscalls": rules,
    })
}

/// Where a `Localhost` profile reference points: an absolute path as is (kubelet sends
/// `<kubelet root>/seccomp/...`, as containerd accepts), a relative one inside `root`, never above it.
pub fn localhost_path(root: &Path, reference: &str, field: &str) -> Result<PathBuf> {
    let r = reference.strip_prefix("localhost/").unwrap_or(reference);
    if r.is_empty() {
        return Err(Error::invalid(field, "must name a seccomp profile"));
    }
    let p = Path::new(r);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::invalid(
            field,
            format!("{r:?} leaves the seccomp profile root {}", root.display()),
        ));
    }
    Ok(root.join(p))
}

/// Reads and validates a `Localhost` profile: NotFound when the file is absent, InvalidArgument when
/// it is not an OCI `LinuxSeccomp` (both naming `field` and the path).
pub fn localhost_profile(root: &Path, reference: &str, field: &str) -> Result<Value> {
    let path = localhost_path(root, reference, field)?;
    let shown = path.display();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!(
                "{field}: seccomp profile {shown} does not exist"
            )));
        }
        Err(e) => return Err(Error::invalid(field, format!("read {shown}: {e}"))),
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::invalid(field, format!("{shown}: {e}")))?;
    let typed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid(field, format!("{shown} is not a seccomp profile: {e}")))?;
    for (i, s) in typed.syscalls().iter().flatten().enumerate() {
        if s.names().is_empty() || s.names().iter().any(|n| n.is_empty()) {
            return Err(Error::invalid(
                field,
                format!("{shown}: syscalls[{i}] names no syscall"),
            ));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The rules that name `name`, as (action, args, errnoRet).
    fn rules_for(p: &Value, name: &str) -> Vec<Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    #[test]
    fn default_is_an_allow_list() {
        let p = default_profile(&s(crate::container::security::DEFAULT_CAPS));
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        for denied in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "unshare",
            "setns",
            "mount",
            "fsopen",
            "syslog",
            "reboot",
            "acct",
            "settimeofday",
            "ptrace_peek_not_a_syscall",
        ] {
            assert!(rules_for(&p, denied).is_empty(), "{denied} is allowed");
        }
        for allowed in [
            "read",
            "getpid",
            "execve",
            "arch_prctl",
            "chroot",
            "fchmodat2",
            "rseq",
        ] {
            let r = rules_for(&p, allowed);
            assert_eq!(r.len(), 1, "{allowed}");
            assert!(r[0].get("args").is_none(), "{allowed}");
        }
        let typed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p.clone()).unwrap();
        assert_eq!(typed.default_errno_ret(), Some(1));
        assert_eq!(typed.architectures().as_ref().unwrap().len(), 3);
        // No name twice in the unconditional allow rule.
        let base = p["syscalls"][0]["names"].as_array().unwrap();
        let mut names: Vec<&str> = base.iter().map(|n| n.as_str().unwrap()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate names");
    }

    #[test]
    fn namespaces_need_cap_sys_admin() {
        let p = default_profile(&s(crate::container::security::DEFAULT_CAPS));
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x7e02_0000u64);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);

        let p = default_profile(&s(&["CAP_SYS_ADMIN"]));
        for name in ["clone", "clone3", "unshare", "setns", "mount", "bpf", "syslog"] {
            let r = rules_for(&p, name);
            assert_eq!(r.len(), 1, "{name}: {r:?}");
            assert!(
                r[0]["action"] == "SCMP_ACT_ALLOW" && r[0].get("args").is_none(),
                "{name}"
            );
        }
        assert!(rules_for(&p, "kexec_load").is_empty() && rules_for(&p, "io_uring_setup").is_empty());
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        for (cap, name) in [
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYS_MODULE", "init_module"),
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_TIME", "clock_settime"),
            ("CAP_SYS_NICE", "mbind"),
            ("CAP_SYS_PACCT", "acct"),
            ("CAP_SYS_RAWIO", "iopl"),
            ("CAP_SYSLOG", "syslog"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ] {
            assert!(
                rules_for(&default_profile(&[]), name).is_empty(),
                "{name} without {cap}"
            );
            assert_eq!(
                rules_for(&default_profile(&s(&[cap])), name).len(),
                1,
                "{name} with {cap}"
            );
        }
    }

    #[test]
    fn personality_and_socket_are_conditional() {
        let p = default_profile(&[]);
        let pers = rules_for(&p, "personality");
        let vals: Vec<u64> = pers
            .iter()
            .map(|r| r["args"][0]["value"].as_u64().unwrap())
            .collect();
        assert_eq!(vals, PERSONALITIES);
        let sock = rules_for(&p, "socket");
        assert_eq!(sock.len(), 3);
        assert!(sock.iter().all(|r| r["args"].as_array().unwrap().len() == 1));
    }

    #[test]
    fn localhost_paths() {
        let root = Path::new("/var/lib/crust/seccomp");
        let f = "config.linux.security_context.seccomp.localhost_ref";
        assert_eq!(
            localhost_path(root, "a/b.json", f).unwrap(),
            root.join("a/b.json")
        );
        assert_eq!(
            localhost_path(root, "localhost/b.json", f).unwrap(),
            root.join("b.json")
        );
        assert_eq!(
            localhost_path(root, "/abs/p.json", f).unwrap(),
            Path::new("/abs/p.json")
        );
        for bad in ["../x.json", "a/../../x.json", "localhost/../etc/passwd", ""] {
            let e = localhost_path(root, bad, f).unwrap_err();
            assert!(e.to_string().contains(f), "{bad}: {e}");
        }
    }

    #[test]
    fn localhost_profiles_are_validated() {
        let d = tempfile::tempdir().unwrap();
        let f = "config.linux.security_context.seccomp.localhost_ref";
        std::fs::write(
            d.path().join("ok.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("bad.json"), r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#).unwrap();
        std::fs::write(d.path().join("junk.json"), "not json").unwrap();
        let v = localhost_profile(d.path(), "ok.json", f).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        let e = localhost_profile(d.path(), "missing.json", f).unwrap_err();
        assert!(
            matches!(e, Error::NotFound(_)) && e.to_string().contains(f),
            "{e}"
        );
        for bad in ["bad.json", "junk.json"] {
            let e = localhost_profile(d.path(), bad, f).unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(f),
                "{e}"
            );
        }
    }
}
