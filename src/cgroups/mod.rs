//! cgroups, v1 hybrid hosts and pure v2: the cgroupfs primitives here (create, remove, kill, the
//! hierarchies) and the usage numbers stats need (`stats`); the driver setting (`driver`); where pods
//! and containers go under each driver and the systemd units crust starts (`manager`); systemd's unit
//! names and slice paths (`slice`); systemd's manager API (`systemd`, and `dbus` over D-Bus). Paths
//! are relative to each hierarchy's root, without a leading '/'.

mod dbus;
pub mod driver;
mod manager;
pub mod parse;
pub mod slice;
mod stats;
pub mod systemd;

use std::path::{Path, PathBuf};

use crate::error::ResultExt;
use crate::{Error, Result};

pub use driver::Driver;
pub use manager::{Cgroups, PodCgroup, check_config_parent};
pub use parse::{Psi, PsiLine};
pub use stats::{CgroupStats, stats, stats_v1, stats_v2};

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the host runs the unified (v2-only) hierarchy.
pub fn is_v2() -> bool {
    // Asked for every stats call; the host's cgroup layout does not change under a running crustd.
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V2.get_or_init(|| Path::new(CGROUP_ROOT).join("cgroup.controllers").exists())
}

/// Every hierarchy mount point (v1 controllers, named hierarchies, and `unified`), or the root on v2.
/// Symlinks (`cpu,cpuacct` aliases) are skipped so each hierarchy appears once.
pub fn hierarchies() -> Vec<PathBuf> {
    if is_v2() {
        return vec![PathBuf::from(CGROUP_ROOT)];
    }
    let Ok(rd) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Normalises a cgroup path: no leading or trailing '/', no `..` components (refused), no NUL or newline
/// (no cgroup can be named so).
pub fn normalize(rel: &str) -> Result<String> {
    if rel.contains(['\0', '\n']) {
        return Err(Error::invalid(
            "cgroup_parent",
            format!("{rel:?} holds a NUL or newline, which no cgroup name can"),
        ));
    }
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(Error::invalid("cgroup_parent", format!("{rel:?} contains '..'")));
    }
    if parts.is_empty() {
        return Err(Error::invalid(
            "cgroup_parent",
            "must name a cgroup below the root",
        ));
    }
    Ok(parts.join("/"))
}

/// Creates `rel` in every controller hierarchy (v1: not in named or unified ones; those are made by
/// the runtime when it needs them). On v1, `cpuset.cpus` and `cpuset.mems` of each level left empty
/// are copied from its parent so tasks can join it (concurrent creates under one new parent included).
pub fn create(rel: &str) -> Result<()> {
    let rel = normalize(rel)?;
    for h in hierarchies() {
        let name = h.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !is_v2() && !controller_hierarchy(&h) {
            continue;
        }
        let mut cur = h.clone();
        for part in rel.split('/') {
            let parent = cur.clone();
            cur.push(part);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create cgroup {}", cur.display()), e)),
            }
            if name == "cpuset" {
                // Also for a level that exists: a concurrent create may have made it and not yet
                // filled it in, and a task cannot join below an empty cpuset (ENOSPC).
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let here = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
                    if here.trim().is_empty() {
                        let v = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
                        std::fs::write(cur.join(f), v.trim())
                            .ctx(format!("write {}", cur.join(f).display()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Removes `rel` (and any child cgroups left in it, deepest first) from every hierarchy. Idempotent. A
/// cgroup that still has processes fails with `FailedPrecondition` naming it.
pub fn remove(rel: &str) -> Result<()> {
    let rel = normalize(rel)?;
    let mut first_err = None;
    for h in hierarchies() {
        let dir = h.join(&rel);
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(Error::FailedPrecondition(format!(
                "remove cgroup {}: {e}",
                dir.display()
            )));
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    // A cgroup whose last task just exited can report EBUSY briefly.
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The `cgroup.procs` files of `rel` in the hierarchies [`create`] makes it in (the files a process
/// writes to join it).
pub fn procs_files(rel: &str) -> Result<Vec<PathBuf>> {
    let rel = normalize(rel)?;
    Ok(hierarchies()
        .into_iter()
        .filter(|h| is_v2() || controller_hierarchy(h))
        .map(|h| h.join(&rel).join("cgroup.procs"))
        .filter(|p| p.exists())
        .collect())
}

/// Whether a v1 hierarchy holds controllers (not `unified`, `systemd` or a named one).
fn controller_hierarchy(h: &Path) -> bool {
    let name = h.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    !(name == "unified" || name == "systemd" || name.starts_with("name="))
}

/// SIGKILLs every process listed in `rel` (the first hierarchy that has it); returns how many.
pub fn kill_listed(rel: &str) -> usize {
    let Ok(files) = procs_files(rel) else { return 0 };
    let Some(pids) = files.first().and_then(|f| std::fs::read_to_string(f).ok()) else {
        return 0;
    };
    pids.lines()
        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter(|p| *p > 0)
        // SAFETY: kill(2) of a process the cgroup lists right now.
        .filter(|p| unsafe { libc::kill(*p, libc::SIGKILL) } == 0)
        .count()
}

/// Whether `rel` exists in any hierarchy.
pub fn exists(rel: &str) -> bool {
    let Ok(rel) = normalize(rel) else { return false };
    hierarchies().iter().any(|h| h.join(&rel).is_dir())
}

/// SIGKILLs every process left in cgroup `rel` and waits up to `timeout` until all are gone (reaped),
/// through the cgroup v2 core files `cgroup.kill` and `cgroup.events` (Linux 5.14+; on v1 hybrid hosts
/// in the `unified` hierarchy, which the runtime populates too). Returns whether the cgroup is known to
/// be empty now; `false` where those files are missing (older kernels, v1-only hosts) or time ran out.
pub async fn kill_all(rel: &str, timeout: std::time::Duration) -> bool {
    let Ok(rel) = normalize(rel) else { return false };
    let base = if is_v2() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        Path::new(CGROUP_ROOT).join("unified")
    };
    let dir = base.join(rel);
    match populated(&dir) {
        None => return false,
        Some(false) => return true,
        Some(true) => {}
    }
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        return false;
    }
    // The killed processes are reaped by their parents (the pod's pause, in a shared PID namespace)
    // within a few milliseconds; check in short, growing steps.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_micros(500);
    loop {
        match populated(&dir) {
            None | Some(false) => return true,
            Some(true) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// `populated` of a v2 cgroup's `cgroup.events`; `None` when the file is missing.
fn populated(dir: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("/kubepods/pod1/").unwrap(), "kubepods/pod1");
        assert!(normalize("a/../b").is_err());
        assert!(normalize("/").is_err());
    }

    #[test]
    fn create_stats_remove() {
        let rel = format!("crust-unit-{}/pod", std::process::id());
        create(&rel).unwrap();
        assert!(exists(&rel));
        if !is_v2() {
            let cpus = std::fs::read_to_string(
                Path::new(CGROUP_ROOT)
                    .join("cpuset")
                    .join(&rel)
                    .join("cpuset.cpus"),
            )
            .unwrap();
            assert!(!cpus.trim().is_empty());
        }
        let s = stats(&rel).unwrap();
        assert_eq!(s.threads, 0);
        // A child (like a container's) is removed with it.
        create(&format!("{rel}/child")).unwrap();
        let top = rel.split('/').next().unwrap().to_string();
        remove(&top).unwrap();
        assert!(!exists(&rel) && !exists(&top));
        remove(&top).unwrap();
    }

    #[test]
    fn a_level_another_create_left_empty_is_filled_in() {
        if is_v2() {
            return; // cpuset.cpus/mems of v2 are not copied
        }
        // What a concurrent create leaves for a moment: the new parent made, its cpuset not yet set.
        let top = format!("crust-unit-race-{}", std::process::id());
        let dir = Path::new(CGROUP_ROOT).join("cpuset").join(&top);
        std::fs::create_dir(&dir).unwrap();
        assert!(
            std::fs::read_to_string(dir.join("cpuset.cpus"))
                .unwrap()
                .trim()
                .is_empty()
        );
        let rel = format!("{top}/pod");
        create(&rel).unwrap();
        for d in [dir.clone(), dir.join("pod")] {
            let cpus = std::fs::read_to_string(d.join("cpuset.cpus")).unwrap();
            assert!(!cpus.trim().is_empty(), "{}", d.display());
        }
        remove(&top).unwrap();
    }

    #[tokio::test]
    async fn kill_all_kills_and_waits_for_every_process() {
        use std::os::unix::process::ExitStatusExt;
        let base = if is_v2() {
            PathBuf::from(CGROUP_ROOT)
        } else {
            Path::new(CGROUP_ROOT).join("unified")
        };
        let rel = format!("crust-unit-kill-{}", std::process::id());
        let dir = base.join(&rel);
        if std::fs::create_dir(&dir).is_err() {
            return; // no cgroup v2 hierarchy here (or not root)
        }
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return; // kernel older than 5.14
        }
        assert!(kill_all(&rel, std::time::Duration::from_secs(5)).await, "empty");
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        let was = populated(&dir);
        // Reaped by its parent, as the pause reaps a container's leftovers.
        let waiter = std::thread::spawn(move || child.wait());
        let emptied = kill_all(&rel, std::time::Duration::from_secs(5)).await;
        let status = waiter.join().unwrap().unwrap();
        let now = populated(&dir);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(was, Some(true));
        assert!(emptied);
        assert_eq!(now, Some(false));
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
