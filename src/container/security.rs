//! Security settings of the OCI spec: capabilities (containerd's default set, add/drop, ALL), which
//! seccomp profile a container gets (the profiles themselves are in `seccomp`), masked and read-only
//! paths, and stop-signal names. AppArmor is in `apparmor`.

use cri_api::v1;
use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// containerd's default capability set (also Docker's).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, by number (`capabilities(7)`).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's default masked paths.
pub const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capabilities crustd itself holds in its bounding set ("all" for a privileged container: a
/// capability the runtime does not hold cannot be granted; this host's root lacks CAP_SYS_RESOURCE).
pub fn current_caps() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// `NET_ADMIN` / `cap_net_admin` / `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; unknown names are refused.
pub fn normalize_cap(field: &str, name: &str) -> Result<String> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid(field, format!("unknown capability {name:?}")))
    }
}

/// The effective capability set: the default (or every current one when privileged), then `add`
/// (`ALL` adds every current capability), then `drop` (`ALL` empties the set first, as containerd does).
pub fn capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
    all: &[String],
) -> Result<Vec<String>> {
    let field = "config.linux.security_context.capabilities";
    if privileged {
        return Ok(all.to_vec());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if drop.iter().any(is_all) {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if add.iter().any(is_all) {
        caps = all.to_vec();
    }
    for c in add.iter().filter(|c| !is_all(c)) {
        let c = normalize_cap(&format!("{field}.add_capabilities"), c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in drop.iter().filter(|c| !is_all(c)) {
        let c = normalize_cap(&format!("{field}.drop_capabilities"), c)?;
        caps.retain(|x| *x != c);
    }
    Ok(caps)
}

/// Parses a signal name as images write it (`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`) or as the CRI
/// enum names it (`SIGRTMINPLUS3`, `SIGRTMAXMINUS2`).
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let n = if rest.is_empty() {
            0
        } else {
            rest.parse::<i32>().ok()?
        };
        let v = base + sign * n;
        (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&v).then_some(v)
    };
    for (prefix, base, sign) in [
        ("RTMIN+", libc::SIGRTMIN(), 1),
        ("RTMINPLUS", libc::SIGRTMIN(), 1),
        ("RTMAX-", libc::SIGRTMAX(), -1),
        ("RTMAXMINUS", libc::SIGRTMAX(), -1),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rt(base, rest, sign);
        }
    }
    match name {
        "RTMIN" => return Some(libc::SIGRTMIN()),
        "RTMAX" => return Some(libc::SIGRTMAX()),
        "CLD" => return Some(libc::SIGCHLD),
        "POLL" => return Some(libc::SIGIO),
        _ => {}
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The seccomp profile of a container with bounding set `caps` (not privileged): none for
/// `Unconfined`, the built-in one for `RuntimeDefault`, a file for `Localhost` (relative references
/// inside `profile_root`). The deprecated `seccomp_profile_path` is read when `seccomp` is unset.
pub fn seccomp_profile(
    sc: &v1::LinuxContainerSecurityContext,
    caps: &[String],
    profile_root: &Path,
) -> Result<Option<Value>> {
    use v1::security_profile::ProfileType;
    #[allow(deprecated)]
    let legacy = sc.seccomp_profile_path.as_str();
    let (kind, localhost, field) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).ok(),
            p.localhost_ref.clone(),
            "config.linux.security_context.seccomp.localhost_ref",
        ),
        None => match legacy {
            "" | "unconfined" => (Some(ProfileType::Unconfined), String::new(), ""),
            "runtime/default" | "docker/default" => (Some(ProfileType::RuntimeDefault), String::new(), ""),
            l => (
                Some(ProfileType::Localhost),
                l.to_string(),
                "config.linux.security_context.seccomp_profile_path",
            ),
        },
    };
    match kind {
        Some(ProfileType::Unconfined) => Ok(None),
        Some(ProfileType::RuntimeDefault) => Ok(Some(super::seccomp::default_profile(caps))),
        Some(ProfileType::Localhost) => {
            super::seccomp::localhost_profile(profile_root, &localhost, field).map(Some)
        }
        None => Err(Error::invalid(
            "config.linux.security_context.seccomp.profile_type",
            "unknown profile type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn caps_add_drop_all() {
        let all = s(ALL_CAPS);
        let c = capabilities(false, &[], &[], &all).unwrap();
        assert_eq!(c, s(DEFAULT_CAPS));
        let c = capabilities(false, &s(&["NET_ADMIN"]), &s(&["cap_chown", "KILL"]), &all).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()) && !c.contains(&"CAP_KILL".to_string()));
        let c = capabilities(false, &s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), &all).unwrap();
        assert_eq!(c, s(&["CAP_NET_BIND_SERVICE"]));
        let c = capabilities(false, &s(&["ALL"]), &s(&["SYS_ADMIN"]), &all).unwrap();
        assert_eq!(c.len(), all.len() - 1);
        assert_eq!(capabilities(true, &[], &s(&["ALL"]), &all).unwrap(), all);
        let e = capabilities(false, &s(&["BOGUS"]), &[], &all).unwrap_err();
        assert!(e.to_string().contains("add_capabilities"), "{e}");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGRTMAXMINUS2"), Some(libc::SIGRTMAX() - 2));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
