//! A container's root filesystem: an overlay of the image layers (topmost first) with the writable
//! layer (`upper`, `work`) under `<root>/containers/<id>/`, mounted at `<state>/containers/<id>/rootfs`;
//! and the writable layer's usage for stats.
//!
//! `mount(2)` takes at most one page of options. When the `lowerdir=` list does not fit, the layers are
//! added one by one through the new mount API (`fsopen` + `fsconfig("lowerdir+")`, Linux 6.8+).

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::ResultExt;
use crate::{Error, Result};

/// Largest option string handed to `mount(2)` (one page, with room for the NUL).
const MAX_MOUNT_DATA: usize = 4000;

/// Paths of one container's rootfs.
#[derive(Debug, Clone)]
pub struct RootfsPaths {
    /// `<root>/containers/<id>`: holds `upper` and `work`.
    pub layer_dir: PathBuf,
    /// The mount point.
    pub mountpoint: PathBuf,
}

impl RootfsPaths {
    /// The writable layer.
    pub fn upper(&self) -> PathBuf {
        self.layer_dir.join("upper")
    }
    /// overlayfs's work dir.
    pub fn work(&self) -> PathBuf {
        self.layer_dir.join("work")
    }
}

/// A pod's user namespace for its containers' rootfs: the pinned namespace and the host uid and gid its
/// root maps to.
#[derive(Debug, Clone)]
pub struct Idmap {
    pub userns: PathBuf,
    pub root_uid: u32,
    pub root_gid: u32,
}

/// Creates the writable layer and mounts the overlay. `layers` are lowest first. With `idmap`, every
/// layer is seen through an idmapped mount of the pod's user namespace. On failure the directories
/// made here are removed again.
pub fn mount(paths: &RootfsPaths, layers: &[PathBuf], idmap: Option<&Idmap>) -> Result<()> {
    let what = format!("mount rootfs at {}", paths.mountpoint.display());
    let mut lowers: Vec<PathBuf> = layers.iter().rev().cloned().collect();
    if lowers.is_empty() {
        // An image without layers: an empty lower dir.
        let empty = paths.layer_dir.join("empty");
        std::fs::create_dir_all(&empty).ctx(format!("{what}: create {}", empty.display()))?;
        lowers.push(empty);
    }
    for d in [paths.upper(), paths.work(), paths.mountpoint.clone()] {
        std::fs::create_dir_all(&d).ctx(format!("{what}: create {}", d.display()))?;
    }
    let r = match idmap {
        None => mount_overlay(paths, &lowers, &what),
        Some(idmap) => mount_idmapped(paths, &lowers, idmap, &what),
    };
    if let Err(e) = r {
        let _ = crate::state::remove_dir_idempotent(&paths.layer_dir);
        let _ = std::fs::remove_dir(&paths.mountpoint);
        return Err(e);
    }
    Ok(())
}

/// The overlay over idmapped clones of the layers and of the writable layer's directory.
///
/// overlayfs does its upper-layer work (its `work` dir, copy-ups) with the mounter's credentials,
/// which must map through the idmapped writable layer: host root does not (EOVERFLOW, and the overlay
/// falls back to read-only), the pod's root does. So the overlay is made on a thread of its own whose
/// filesystem ids are the pod root's, with its capabilities kept.
fn mount_idmapped(paths: &RootfsPaths, lowers: &[PathBuf], idmap: &Idmap, what: &str) -> Result<()> {
    let userns = &idmap.userns;
    let fd: OwnedFd = std::fs::File::open(userns)
        .ctx(format!(
            "{what}: open the pod user namespace {}",
            userns.display()
        ))?
        .into();
    let mut staging = super::idmap::Staging::new(paths.mountpoint.with_extension("idmap"))?;
    let mut mapped = Vec::with_capacity(lowers.len());
    for (i, l) in lowers.iter().enumerate() {
        mapped.push(staging.add(l, &fd, &i.to_string()).ctx(what)?);
    }
    let rw = staging.add(&paths.layer_dir, &fd, "rw").ctx(what)?;
    let mapped_paths = RootfsPaths {
        layer_dir: rw,
        mountpoint: paths.mountpoint.clone(),
    };
    let (uid, gid) = (idmap.root_uid, idmap.root_gid);
    let what2 = what.to_string();
    std::thread::scope(|s| {
        s.spawn(move || {
            crate::sys::set_fs_ids_keeping_caps(uid, gid)
                .map_err(|e| Error::io(format!("{what2}: take the pod root's filesystem ids"), e))?;
            mount_fsconfig(&mapped_paths, &mapped).ctx(&what2)
        })
        .join()
        .map_err(|_| Error::Internal(format!("{what}: mount thread panicked")))?
    })
    // The staging mounts are detached here: the overlay holds clones of its own.
}

/// Mounts the overlay of `lowers` (topmost first) and the writable layer at the mount point.
fn mount_overlay(paths: &RootfsPaths, lowers: &[PathBuf], what: &str) -> Result<()> {
    for l in lowers {
        let s = l.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::Internal(format!(
                "{what}: layer path {s:?} contains ':' or ','"
            )));
        }
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        paths.upper().display(),
        paths.work().display()
    );
    if data.len() <= MAX_MOUNT_DATA {
        nix::mount::mount(
            Some("overlay"),
            &paths.mountpoint,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| Error::io(format!("{what}: mount overlay"), e.into()))
    } else {
        mount_fsconfig(paths, lowers).ctx(what)
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Internal(format!("{s:?} contains NUL")))
}

fn fsconfig_string(fd: &OwnedFd, key: &str, value: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    let (k, v) = (cstr(key)?, cstr(value)?);
    // SAFETY: fd is an fs context; key and value are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::io(
            format!("fsconfig {key}={value}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn mount_fsconfig(paths: &RootfsPaths, lowers: &[PathBuf]) -> Result<()> {
    fsconfig_overlay(&paths.mountpoint, lowers, Some(paths))
}

/// An overlay through the new mount API; without `rw` (no upper layer) it is read-only.
fn fsconfig_overlay(mountpoint: &Path, lowers: &[PathBuf], rw: Option<&RootfsPaths>) -> Result<()> {
    use std::os::fd::AsRawFd;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let name = cstr("overlay")?;
    // SAFETY: plain syscalls on NUL-terminated strings and fds we own.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), 1u32) };
    if fs < 0 {
        return Err(Error::io("fsopen overlay", std::io::Error::last_os_error()));
    }
    // SAFETY: fsopen returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    for l in lowers {
        fsconfig_string(&fs, "lowerdir+", &l.to_string_lossy())?;
    }
    if let Some(paths) = rw {
        fsconfig_string(&fs, "upperdir", &paths.upper().to_string_lossy())?;
        fsconfig_string(&fs, "workdir", &paths.work().to_string_lossy())?;
    }
    // SAFETY: as above; null key and value are what FSCONFIG_CMD_CREATE takes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::io(
            "fsconfig create overlay",
            std::io::Error::last_os_error(),
        ));
    }
    // Read-only overlays (image volumes) are also nosuid and nodev.
    const MOUNT_ATTR_RDONLY_NOSUID_NODEV: libc::c_uint = 0x1 | 0x2 | 0x4;
    let attrs = if rw.is_some() {
        0
    } else {
        MOUNT_ATTR_RDONLY_NOSUID_NODEV
    };
    // SAFETY: as above.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(Error::io("fsmount overlay", std::io::Error::last_os_error()));
    }
    // SAFETY: fsmount returned a new fd that nothing else owns.
    let m = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let empty = cstr("")?;
    let target = cstr(&mountpoint.to_string_lossy())?;
    // SAFETY: as above.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            m.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::io("move_mount overlay", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Mounts a read-only (and nosuid, nodev) overlay of `lowers` (topmost first, at least two: an
/// overlay without an upper layer needs two) at `mountpoint`: an image volume.
pub fn mount_readonly(mountpoint: &Path, lowers: &[PathBuf]) -> Result<()> {
    let what = format!("mount image layers read-only at {}", mountpoint.display());
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    if lowers.iter().any(|l| l.to_string_lossy().contains([':', ','])) || lowerdir.len() + 10 > MAX_MOUNT_DATA
    {
        return fsconfig_overlay(mountpoint, lowers, None).ctx(what);
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("overlay"),
        mountpoint,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("lowerdir={lowerdir}").as_str()),
    )
    .map_err(|e| Error::io(format!("{what}: mount overlay"), e.into()))
}

/// Unmounts the rootfs (lazily, so a process still inside cannot block removal); not mounted or gone
/// is fine.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    loop {
        match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue, // stacked mounts: until none is left
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::io(format!("unmount {}", mountpoint.display()), e.into()));
            }
        }
    }
}

/// Detaches every mount staged in `dir` (idmapped volumes, image volumes: the container's own mounts,
/// made from them, stay) and removes their mount points and `dir`, never recursively: a mount that
/// cannot be detached is an error and keeps what is under it untouched. Idempotent; returns whether
/// `dir` existed.
pub fn release_staged(dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    for e in entries.flatten() {
        let p = e.path();
        unmount(&p)?;
        let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(err) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::io(format!("remove {}", p.display()), err));
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", dir.display()), e))
        }
        _ => Ok(true),
    }
}

/// Removes the writable layer and the mount point (after [`unmount`]).
pub fn remove(paths: &RootfsPaths) -> Result<()> {
    unmount(&paths.mountpoint)?;
    crate::state::remove_dir_idempotent(&paths.layer_dir).ctx("remove writable layer")?;
    match std::fs::remove_dir(&paths.mountpoint) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", paths.mountpoint.display()), e))
        }
        _ => Ok(()),
    }
}

/// Bytes and inodes used by a directory tree (the writable layer), without following symlinks or
/// crossing into other filesystems.
pub fn usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = root.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), vec![1u8; 10000]).unwrap();
        let (bytes, inodes) = usage(d.path());
        assert_eq!(inodes, 2);
        assert!(bytes >= 10000, "{bytes}");
    }

    #[test]
    fn overlay_mounts_long_layer_lists_and_unmounts() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut layers = Vec::new();
        for i in 0..60 {
            let l = d.path().join(format!("layers/{i:0>100}"));
            std::fs::create_dir_all(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), format!("{i}")).unwrap();
            std::fs::write(l.join("top"), format!("{i}")).unwrap();
            layers.push(l);
        }
        let paths = RootfsPaths {
            layer_dir: d.path().join("ctr"),
            mountpoint: d.path().join("rootfs"),
        };
        mount(&paths, &layers, None).unwrap();
        let top = std::fs::read_to_string(paths.mountpoint.join("top"));
        let f0 = std::fs::read_to_string(paths.mountpoint.join("f0"));
        std::fs::write(paths.mountpoint.join("new"), "x").unwrap();
        let upper_has_new = paths.upper().join("new").exists();
        remove(&paths).unwrap();
        assert_eq!(top.unwrap(), "59", "the last layer is the topmost");
        assert_eq!(f0.unwrap(), "0");
        assert!(upper_has_new);
        assert!(!paths.mountpoint.exists() && !paths.layer_dir.exists());
        remove(&paths).unwrap();
    }
}
