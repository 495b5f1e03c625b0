//! Volumes an image's config declares (`VOLUME` in a Dockerfile), per `image.volumes`:
//!
//! - `copy` (the default, containerd's behaviour): each gets a directory of the container's own,
//!   `<root>/containers/<id>/volumes/<n>`, beside the writable layer and persistent like it (on disk,
//!   not in the state tmpfs, whose memory a large volume would take), filled at create with the
//!   image's content at that path ([`super::copy_up`]: owners, modes, xattrs, times and links kept)
//!   and bound read-write there, also under a read-only root filesystem. It goes with the writable
//!   layer's directory, so a crash at any point leaves nothing that recovery's rollback of the
//!   half-made container (or RemoveContainer) does not remove.
//!   The content is copied from a read-only overlay of the image's layers of its own, not from the
//!   container's rootfs: for a pod with its own user namespace that rootfs is idmapped, while the
//!   copy keeps the image's ids on disk, as the writable layer does, and is bound from an idmapped
//!   clone attached with the idmapped CRI volumes (`idmap::volumes_dir`), so that the pod sees the
//!   image's owners (containerd also copies unmapped and binds with the pod's mappings).
//! - `mkdir` (CRI-O's default): the path is made a directory in the container's root filesystem if
//!   missing, owned by the container's user; nothing is mounted, so it is read-only under a read-only
//!   root filesystem, as in CRI-O.
//! - `ignore`: nothing is done (containerd's `ignore_image_defined_volumes`).
//!
//! A CRI mount at the same path wins. Paths are taken as containerd takes them: a relative one
//! (`data`, `C:/data`, `../x`) is joined to `/` (`/data`, `/C:/data`, `/x`); a path that is the root
//! itself is skipped.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use cri_api::v1;

use crate::config::ImageVolumes;
use crate::error::ResultExt;
use crate::{Error, Result};

/// A declared volume of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The clean absolute path in the container.
    pub path: String,
    /// Its own directory (`copy`).
    pub dir: PathBuf,
    /// What the runtime binds: `dir`, or for a pod with its own user namespace an idmapped clone.
    pub source: PathBuf,
}

/// The volumes `declared` (an image's config) gives a container whose writable layer's directory is
/// `layer_dir` and state directory `state`, in `mode`: each path once, sorted, without those a CRI
/// mount covers. Empty for `ignore`.
pub fn plan(
    mode: ImageVolumes,
    declared: &[String],
    cri: &[v1::Mount],
    layer_dir: &Path,
    state: &Path,
    userns: bool,
) -> Vec<Declared> {
    if mode == ImageVolumes::Ignore {
        return Vec::new();
    }
    let mut paths: Vec<String> = declared.iter().map(|p| super::mounts::clean(p)).collect();
    paths.sort();
    paths.dedup();
    paths.retain(|p| {
        if p == "/" {
            tracing::warn!("the image declares a volume at the root filesystem itself; skipped");
            return false;
        }
        // As containerd: the CRI's mount at the same path is the volume (kubelet decides).
        !cri.iter().any(|m| super::mounts::clean(&m.container_path) == *p)
    });
    paths
        .into_iter()
        .enumerate()
        .map(|(n, path)| {
            let dir = layer_dir.join("volumes").join(n.to_string());
            let source = if userns {
                super::idmap::volumes_dir(state).join(format!("declared-{n}"))
            } else {
                dir.clone()
            };
            Declared { path, dir, source }
        })
        .collect()
}

/// What the container's user is on the host (its ids through the pod's user namespace, if any).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The host id of `id` through CRI id mappings (itself without mappings).
pub fn host_id(maps: &[v1::IdMapping], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter().find_map(|m| {
        let off = id.checked_sub(m.container_id)?;
        (off < m.length).then(|| m.host_id.checked_add(off)).flatten()
    })
}

/// The container's user (`user`) on the host: through the pod's user namespace, if it has one.
pub fn owner(user: &super::user::ResolvedUser, userns: Option<&v1::UserNamespace>) -> Result<Owner> {
    let (uids, gids) = userns.map_or((&[][..], &[][..]), |u| (&u.uids[..], &u.gids[..]));
    let map = |maps, id, what| {
        host_id(maps, id).ok_or_else(|| {
            Error::invalid(
                "config.linux.security_context",
                format!("{what} {id} is not mapped by the pod's user namespace"),
            )
        })
    };
    Ok(Owner {
        uid: map(uids, user.uid, "uid")?,
        gid: map(gids, user.gid, "gid")?,
    })
}

/// What a container's declared volumes need at create.
pub struct Make {
    pub mode: ImageVolumes,
    pub vols: Vec<Declared>,
    /// The image's layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub container_state: PathBuf,
    /// The container's mounted root filesystem.
    pub rootfs: PathBuf,
    /// The pod's user namespace, if it has its own.
    pub userns: Option<PathBuf>,
    /// The container's user on the host (`mkdir`).
    pub owner: Owner,
}

/// Makes the volumes of a planned container (see the module doc), on a blocking thread. What it made
/// is removed with the writable layer and the staged mounts when the create fails.
pub async fn make(m: Make) -> Result<()> {
    tokio::task::spawn_blocking(move || make_now(&m))
        .await
        .map_err(|e| Error::Internal(format!("declared volume task failed: {e}")))?
}

fn make_now(m: &Make) -> Result<()> {
    let Some(first) = m.vols.first() else {
        return Ok(());
    };
    match m.mode {
        ImageVolumes::Ignore => Ok(()),
        ImageVolumes::Mkdir => mkdir_all(&m.rootfs, &m.vols, m.owner),
        ImageVolumes::Copy => {
            if let Some(parent) = first.dir.parent() {
                std::fs::create_dir_all(parent).ctx(format!("create {}", parent.display()))?;
            }
            super::image_volume::with_layers(&m.container_state, &m.layers, |root| {
                m.vols.iter().try_for_each(|v| fill(root, v))
            })?;
            if let Some(userns) = &m.userns {
                let fd: OwnedFd = std::fs::File::open(userns)
                    .ctx(format!("open the pod user namespace {}", userns.display()))?
                    .into();
                for v in &m.vols {
                    if let Some(parent) = v.source.parent() {
                        std::fs::create_dir_all(parent).ctx(format!("create {}", parent.display()))?;
                    }
                    std::fs::create_dir(&v.source).ctx(format!("create {}", v.source.display()))?;
                    super::idmap::attach(&v.dir, &fd, &v.source)
                        .map_err(|e| e.context(format!("the image's volume {}", v.path)))?;
                }
            }
            Ok(())
        }
    }
}

/// Fills the volume's directory from the image mounted at `root`: a copy of the directory at its
/// path, or an empty directory (root's, 0755, as containerd makes it) when the image has none.
fn fill(root: &Path, v: &Declared) -> Result<()> {
    let what = format!("the image's volume {}", v.path);
    let src = resolve_in(root, &v.path).ctx(&what)?;
    match std::fs::symlink_metadata(&src) {
        Ok(meta) if meta.is_dir() => super::copy_up::copy_tree(&src, &v.dir).ctx(&what),
        // containerd fails such a container too (its copy takes directories only).
        Ok(_) => Err(Error::invalid(
            "image config Volumes",
            format!("{:?} is not a directory in the image", v.path),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&v.dir)
                .ctx(format!("{what}: create {}", v.dir.display()))
        }
        Err(e) => Err(Error::io(format!("{what}: {}", src.display()), e)),
    }
}

/// `path` inside `root` with every symlink on the way resolved inside `root` too (an absolute target
/// starts again at `root`, `..` stops there), as runc and containerd resolve paths in a rootfs. The
/// components after the first missing one are taken as they are.
pub fn resolve_in(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    let mut todo: Vec<OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = done.iter().collect::<PathBuf>().join(&c);
        let full = root.join(&here);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    done.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done.push(c),
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// `mkdir`: each path made a directory in the rootfs where missing (0755), on a thread whose
/// filesystem ids are the container user's on the host, so that what is made is the user's (the
/// rootfs of a pod with its own user namespace takes only ids its namespace maps).
fn mkdir_all(rootfs: &Path, vols: &[Declared], owner: Owner) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::set_fs_ids_keeping_caps(owner.uid, owner.gid)
                .map_err(|e| Error::io("take the container user's filesystem ids", e))?;
            for v in vols {
                let what = format!("the image's volume {}", v.path);
                let p = resolve_in(rootfs, &v.path).ctx(&what)?;
                if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                    return Err(Error::invalid(
                        "image config Volumes",
                        format!("{:?} is not a directory in the image", v.path),
                    ));
                }
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&p)
                    .ctx(format!("{what}: create {}", p.display()))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| Error::Internal("the volume thread panicked".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> v1::Mount {
        v1::Mount {
            container_path: path.into(),
            host_path: "/tmp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plans_paths_as_containerd_takes_them() {
        let declared: Vec<String> = [
            "./v1", "C:/v2", "../../v3", "/abs/v4/", "/abs/v4", "/", "/cri/", "", ":/odd",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let l = Path::new("/root/containers/x");
        let s = Path::new("/state/containers/x");
        let p = plan(ImageVolumes::Copy, &declared, &[mount("/cri")], l, s, false);
        let paths: Vec<&str> = p.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/:/odd", "/C:/v2", "/abs/v4", "/v1", "/v3"]);
        assert_eq!(p[1].dir, l.join("volumes/1"));
        assert_eq!(p[1].source, p[1].dir);
        let u = plan(ImageVolumes::Mkdir, &declared, &[], l, s, true);
        assert_eq!(u.len(), 6);
        assert_eq!(u[0].source, Path::new("/state/containers/x.volumes/declared-0"));
        assert!(plan(ImageVolumes::Ignore, &declared, &[], l, s, false).is_empty());
    }

    #[test]
    fn host_ids_through_mappings() {
        let m = [v1::IdMapping {
            container_id: 0,
            host_id: 100000,
            length: 65536,
        }];
        assert_eq!(host_id(&m, 65534), Some(165534));
        assert_eq!(host_id(&m, 65536), None);
        assert_eq!(host_id(&[], 7), Some(7));
    }

    #[test]
    fn resolves_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("real/data")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../real", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in(r, "/abs/data").unwrap(), r.join("real/data"));
        assert_eq!(resolve_in(r, "/rel/data").unwrap(), r.join("real/data"));
        assert_eq!(resolve_in(r, "/../../abs/x/y").unwrap(), r.join("real/x/y"));
        assert!(resolve_in(r, "/loop/x").is_err());
    }
}
