//! The pod's network namespace, pinned by a bind mount at `<state>/netns/<pod-id>`: made on a thread of
//! its own (unshare switches only the calling thread), with `lo` brought up there, so no loopback plugin
//! run is needed; unpinned by a lazy unmount and removed.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::record::UserNs;
use crate::error::ResultExt;
use crate::{Error, Result};

/// `NSFS_MAGIC`: the filesystem type of a pinned namespace.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Makes a new network namespace with `lo` up and pins it at `path` (whose parent must exist).
pub async fn create(path: &Path) -> Result<()> {
    let p = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crust-netns".into())
        .spawn(move || {
            // This thread's network namespace changes; it exits right after, so no other work sees it.
            let _ = tx.send(create_on_this_thread(&p));
        })
        .ctx("spawn netns thread")?;
    let r = rx
        .await
        .map_err(|_| Error::Internal("netns thread ended without a result".into()))?;
    if r.is_err() {
        let _ = remove(path);
    }
    r
}

fn create_on_this_thread(path: &Path) -> Result<()> {
    std::fs::File::create(path).ctx(format!("create {}", path.display()))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("unshare(CLONE_NEWNET)", e.into()))?;
    loopback_up().ctx("bring up lo in the new netns")?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::io(format!("bind mount netns on {}", path.display()), e.into()))
}

/// For a pod with its own user namespace: makes the user namespace (with the pod's id mappings) and a
/// network namespace owned by it, pins both, and brings `lo` up. The netns must belong to the pod's user
/// namespace, or the pod's root could not mount its `/sys` nor set its network sysctls.
///
/// A forked child makes both namespaces in one call (the user namespace first, then the netns as its
/// child) and waits while crustd writes its maps and pins the namespaces.
pub async fn create_in_userns(netns: &Path, userns: &Path, maps: UserNs) -> Result<()> {
    let (net, user) = (netns.to_path_buf(), userns.to_path_buf());
    let r = tokio::task::spawn_blocking(move || userns_child(&net, &user, maps))
        .await
        .map_err(|e| Error::Internal(format!("userns task failed: {e}")))?;
    let r = match r {
        Ok(()) => set_lo_up_in(netns).await,
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = remove(netns);
        let _ = remove(userns);
    }
    r
}

fn userns_child(netns: &Path, userns: &Path, maps: UserNs) -> Result<()> {
    for p in [netns, userns] {
        std::fs::File::create(p).ctx(format!("create {}", p.display()))?;
    }
    let uid_map = maps.uids.line();
    let gid_map = maps.gids.line();
    crate::sys::in_new_userns(libc::CLONE_NEWNET, &uid_map, &gid_map, |pid| {
        for (src, dst) in [("user", userns), ("net", netns)] {
            nix::mount::mount(
                Some(format!("/proc/{pid}/ns/{src}").as_str()),
                dst,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
        Ok(())
    })
    .map_err(|e| Error::io("make and pin the pod's user and network namespaces", e))
}

/// Brings `lo` up in a pinned netns, from a thread that joins it.
async fn set_lo_up_in(netns: &Path) -> Result<()> {
    let f = std::fs::File::open(netns).ctx(format!("open {}", netns.display()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crust-netns".into())
        .spawn(move || {
            let r = nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("join the pod netns", e.into()))
                .and_then(|()| loopback_up().ctx("bring up lo in the new netns"));
            let _ = tx.send(r);
        })
        .ctx("spawn netns thread")?;
    rx.await
        .map_err(|_| Error::Internal("netns thread ended without a result".into()))?
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    lo_ioctl(true).map(|_| ())
}

/// The flags of `lo` in the calling thread's network namespace.
#[cfg(test)]
fn loopback_flags() -> std::io::Result<libc::c_short> {
    lo_ioctl(false)
}

/// Reads `lo`'s flags and, when `set_up`, sets IFF_UP|IFF_RUNNING.
fn lo_ioctl(set_up: bool) -> std::io::Result<libc::c_short> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket() takes no pointers; a valid fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads and writes the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union was just filled in by the kernel.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if !set_up {
        return Ok(flags);
    }
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(flags)
}

/// Whether `path` is a pinned namespace (a mounted nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Unpins and removes the file; idempotent.
pub fn remove(path: &Path) -> Result<()> {
    // Unmount every layer (a crash can leave more than one), then remove the file.
    for _ in 0..8 {
        if !is_pinned(path) {
            break;
        }
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(Error::io(format!("unmount netns {}", path.display()), e.into())),
        }
    }
    crate::state::remove_file_idempotent(path).ctx(format!("remove netns {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_pin_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ns");
        create(&p).await.unwrap();
        assert!(is_pinned(&p));
        // lo is up inside: checked from a thread that joins the netns.
        let p2 = p.clone();
        let up = std::thread::spawn(move || {
            let f = std::fs::File::open(&p2).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            loopback_flags().unwrap() & libc::IFF_UP as libc::c_short != 0
        })
        .join()
        .unwrap();
        assert!(up, "lo is down in the new netns");
        remove(&p).unwrap();
        assert!(!p.exists());
        remove(&p).unwrap();
    }
}
