//! Idmapped mounts for pods with their own user namespace: the image layers and the writable layer are
//! shown to the pod's uids through `mount_setattr(MOUNT_ATTR_IDMAP)` (as containerd 2 and CRI-O do), not
//! through chowned copies. overlayfs cannot itself be idmapped, but takes idmapped layers: each layer
//! is cloned (`open_tree`), idmapped with the pod's user namespace and attached in a staging directory;
//! the overlay is mounted over those, and the staging mounts are detached again (the overlay keeps its
//! own private clones of them).
//!
//! Volumes for which kubelet sets `uid_mappings`/`gid_mappings` in the CRI `Mount` are idmapped clones
//! too, attached in `<state>/containers/<id>.volumes/` (beside the container's state directory, so no
//! recursive removal of that directory can ever reach into a volume) and bound into the container from
//! there; they are detached once the runtime has made the container's mounts, or at removal.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::ResultExt;
use crate::{Error, Result};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Internal(format!("{} contains a NUL byte", p.display())))
}

/// A detached, idmapped clone of the directory `src` (freed when the fd closes).
fn idmapped_tree(src: &Path, userns: &OwnedFd, what: &str) -> Result<OwnedFd> {
    let s = cpath(src)?;
    // SAFETY: open_tree on a NUL-terminated path; a new fd is owned right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            s.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("{what}: open_tree"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our fd with a local struct of the kernel's layout and size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Error::io(
            format!("{what}: mount_setattr"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(tree)
}

/// Attaches an idmapped clone of the directory `src` at the (existing, empty) directory `dst`.
pub fn attach(src: &Path, userns: &OwnedFd, dst: &Path) -> Result<()> {
    let what = format!("idmapped mount of {} at {}", src.display(), dst.display());
    let tree = idmapped_tree(src, userns, &what)?;
    let d = cpath(dst)?;
    // SAFETY: move_mount of our detached tree onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::io(
            format!("{what}: move_mount"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether pods can have user namespaces here: a user namespace can be made, a directory of `dir`'s
/// filesystem (where the layers live) can be idmapped with it, an overlay can be made over such
/// layers as a pod's rootfs is (Debian 12's kernel 6.1 refuses that step: EINVAL), and the namespace's
/// root, an unprivileged uid on the host, can reach a file in that rootfs mounted where containers'
/// rootfs are (`mountpoint_dir`, a directory beside them under the state dir, made as theirs are): a
/// directory above the state dir closed to others (mode 0700) stops the runtime's init there.
/// Checked once at start-up.
pub fn probe(dir: &Path, mountpoint_dir: &Path) -> Result<()> {
    let line = "0 100000 65536\n";
    crate::sys::in_new_userns(0, line, line, |pid| {
        let fd: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into();
        idmapped_tree(dir, &fd, "probe").map_err(std::io::Error::other)?;
        probe_rootfs(
            &dir.with_file_name(format!("userns-probe-{}", std::process::id())),
            mountpoint_dir,
            &fd,
            pid,
        )
    })
    .map_err(|e| {
        Error::io(
            format!(
                "user namespaces with idmapped mounts of {} (a rootfs at {})",
                dir.display(),
                mountpoint_dir.display()
            ),
            e,
        )
    })
}

/// A one-layer rootfs under `base` for the user namespace `userns` of process `pid`, mounted at
/// `mountpoint_dir`/rootfs, reached from inside that namespace, and unmounted; `base` and
/// `mountpoint_dir` are removed again, unless the rootfs could not be unmounted (never recursively into
/// a mount).
fn probe_rootfs(base: &Path, mountpoint_dir: &Path, userns: &OwnedFd, pid: i32) -> std::io::Result<()> {
    let lower = base.join("lower");
    let paths = super::rootfs::RootfsPaths {
        layer_dir: base.join("layer"),
        mountpoint: mountpoint_dir.join("rootfs"),
    };
    let idmap = super::rootfs::Idmap {
        userns: PathBuf::from(format!("/proc/{pid}/ns/user")),
        root_uid: 100000,
        root_gid: 100000,
    };
    let mode = crate::state::private_dir_mode(true);
    let mounted = std::fs::create_dir_all(&lower)
        .and_then(|()| std::fs::write(lower.join("probe"), b""))
        .and_then(|()| std::fs::create_dir_all(mountpoint_dir))
        .and_then(|()| crate::state::set_mode(mountpoint_dir, mode))
        .and_then(|()| {
            super::rootfs::mount(&paths, std::slice::from_ref(&lower), Some(&idmap))
                .map_err(std::io::Error::other)
        });
    // A failed mount leaves nothing mounted (`rootfs::mount` rolls back).
    let r = match mounted {
        Err(e) => Err(e),
        Ok(()) => {
            let probe = paths.mountpoint.join("probe");
            let seen = std::fs::metadata(&probe).map(drop).and_then(|()| {
                crate::sys::reachable_as_mapped_root(userns, &probe).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "root of a pod's user namespace (uid 100000 here) cannot reach {}: {e} \
                             (is a directory above it closed to others?)",
                            probe.display()
                        ),
                    )
                })
            });
            // Still mounted: `base` stays as it is.
            super::rootfs::unmount(&paths.mountpoint).map_err(std::io::Error::other)?;
            seen
        }
    };
    let _ = std::fs::remove_dir_all(base);
    let _ = std::fs::remove_dir_all(mountpoint_dir);
    r
}

/// The staging directory of a rootfs's idmapped layers, and the mounts attached in it.
pub struct Staging {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Staging {
    /// An empty staging directory at `dir`.
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        Ok(Staging {
            dir,
            mounted: Vec::new(),
        })
    }

    /// Attaches an idmapped clone of `src` as the staging entry `name`; returns its path.
    pub fn add(&mut self, src: &Path, userns: &OwnedFd, name: &str) -> Result<PathBuf> {
        let dst = self.dir.join(name);
        std::fs::create_dir_all(&dst).ctx(format!("create {}", dst.display()))?;
        attach(src, userns, &dst)?;
        self.mounted.push(dst.clone());
        Ok(dst)
    }
}

impl Drop for Staging {
    /// Detaches every staging mount and removes the (then empty) directories, never recursively: a
    /// mount that could not be detached keeps its directory, and what is under it, untouched.
    fn drop(&mut self) {
        for m in self.mounted.drain(..) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %m.display(), error = %e, "detach a staging idmapped mount");
            }
            let _ = std::fs::remove_dir(&m);
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "remove the idmap staging dir");
        }
    }
}

/// Where a container's idmapped volumes are attached: beside its state directory, never inside.
pub fn volumes_dir(container_state: &Path) -> PathBuf {
    container_state.with_extension("volumes")
}

/// The `uid_map`/`gid_map` text of CRI id mappings.
fn map_lines(field: &str, maps: &[cri_api::v1::IdMapping]) -> Result<String> {
    if maps.is_empty() {
        return Err(Error::invalid(field, "must be set with the other id mappings"));
    }
    let mut out = String::new();
    for m in maps {
        if m.length == 0 || u64::from(m.host_id) + u64::from(m.length) > 1 << 32 {
            return Err(Error::invalid(
                field,
                format!("{} ids from host id {} do not fit", m.length, m.host_id),
            ));
        }
        out.push_str(&format!("{} {} {}\n", m.container_id, m.host_id, m.length));
    }
    Ok(out)
}

/// Attaches an idmapped clone of every CRI mount that has id mappings, in a user namespace made with
/// those mappings; returns the clones by mount index. On failure nothing stays attached.
pub fn stage_volumes(
    container_state: &Path,
    mounts: &[cri_api::v1::Mount],
) -> Result<std::collections::HashMap<usize, PathBuf>> {
    let dir = volumes_dir(container_state);
    let mut out = std::collections::HashMap::new();
    let r = (|| {
        for (i, m) in mounts.iter().enumerate() {
            if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
                continue;
            }
            let f = format!("config.mounts[{i}]");
            let uid_map = map_lines(&format!("{f}.uid_mappings"), &m.uid_mappings)?;
            let gid_map = map_lines(&format!("{f}.gid_mappings"), &m.gid_mappings)?;
            let src = Path::new(&m.host_path);
            let is_dir = std::fs::metadata(src)
                .map_err(|e| Error::invalid(format!("{f}.host_path"), format!("{}: {e}", m.host_path)))?
                .is_dir();
            std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
            let dst = dir.join(i.to_string());
            if is_dir {
                std::fs::create_dir(&dst).ctx(format!("create {}", dst.display()))?;
            } else {
                std::fs::File::create(&dst).ctx(format!("create {}", dst.display()))?;
            }
            out.insert(i, dst.clone());
            let what = format!("{f}: idmapped mount of {}", m.host_path);
            crate::sys::in_new_userns(0, &uid_map, &gid_map, |pid| {
                let fd: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into();
                attach(src, &fd, &dst).map_err(std::io::Error::other)
            })
            .map_err(|e| Error::io(what, e))?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(out),
        Err(e) => {
            if let Err(u) = release_volumes(container_state) {
                tracing::warn!(error = %u, "releasing the idmapped volumes of a failed create");
            }
            Err(e)
        }
    }
}

/// Detaches a container's idmapped volumes (the container's own mounts, made from them, stay) and
/// removes their mount points, never recursively; idempotent. A mount that cannot be detached is an
/// error and keeps its directory.
pub fn release_volumes(container_state: &Path) -> Result<()> {
    super::rootfs::release_staged(&volumes_dir(container_state)).map(drop)
}
