//! Image volumes (CRI `Mount.image`, Kubernetes `image` volumes): an image kubelet already pulled is
//! shown read-only (nosuid, nodev) at the mount's container path. Its layers are mounted as an overlay
//! without an upper layer in `<state>/containers/<id>.images/<i>` (beside the container's state
//! directory, so no recursive removal of that directory reaches into an image) and bound into the
//! container from there by the runtime, or only `image_sub_path` of it.
//!
//! The overlay stays mounted while the container exists: the image store keeps the layers any mounted
//! overlay uses, so a RemoveImage of an image in use removes the image (as containerd does) but not its
//! layers, which go at the first collection after the container is removed. The overlays are unmounted
//! at removal (and when a create fails).
//!
//! The same kind of overlay, mounted there only while a create copies from it (`with_layers`), is
//! the source of the volumes an image declares (`declared_volumes`).

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// An image volume to mount: the index of its CRI mount and the image's layers, lowest first.
#[derive(Debug, Clone)]
pub struct ImageVolume {
    pub index: usize,
    pub layers: Vec<PathBuf>,
    pub sub_path: String,
    /// The image's digest reference, as a container's `image_ref` (the status's `image.image_ref`).
    pub image_ref: String,
}

pub(super) fn dir(container_state: &Path) -> PathBuf {
    container_state.with_extension("images")
}

/// Checks an `image_sub_path`: relative, without `..`.
pub fn check_sub_path(field: &str, sub: &str) -> Result<()> {
    let p = Path::new(sub);
    if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            format!("{sub:?} must be a relative path without '..'"),
        ));
    }
    Ok(())
}

/// Mounts each image volume; returns the host path to bind for each (by mount index). On failure
/// what was mounted is released again.
pub fn stage(
    container_state: &Path,
    vols: &[ImageVolume],
) -> Result<std::collections::HashMap<usize, PathBuf>> {
    let mut out = std::collections::HashMap::new();
    if vols.is_empty() {
        return Ok(out);
    }
    let r = (|| {
        let base = dir(container_state);
        for v in vols {
            let field = format!("config.mounts[{}]", v.index);
            let mp = base.join(v.index.to_string());
            mount_layers(&base, &mp, &v.layers).map_err(|e| e.context(&field))?;
            let src = if v.sub_path.is_empty() {
                mp
            } else {
                sub_path(&mp, &v.sub_path)
                    .map_err(|m| Error::invalid(format!("{field}.image_sub_path"), m))?
            };
            out.insert(v.index, src);
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(out),
        Err(e) => {
            if let Err(u) = release(container_state) {
                tracing::warn!(error = %u, "releasing the image volumes of a failed create");
            }
            Err(e)
        }
    }
}

/// Mounts a read-only overlay of `layers` (lowest first) at `mp`, made in `base`.
fn mount_layers(base: &Path, mp: &Path, layers: &[PathBuf]) -> Result<()> {
    std::fs::create_dir_all(mp).map_err(|e| Error::io(format!("create {}", mp.display()), e))?;
    let mut lowers: Vec<PathBuf> = layers.iter().rev().cloned().collect();
    // An overlay without an upper layer needs two lower ones.
    while lowers.len() < 2 {
        let empty = base.join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| Error::io(format!("create {}", empty.display()), e))?;
        lowers.push(empty);
    }
    super::rootfs::mount_readonly(mp, &lowers)
}

/// Runs `f` on the image of `layers` (lowest first), mounted read-only for it alone in the
/// container's image volume directory (so that a crash leaves it for [`release`]), and unmounts it
/// again. The image's own ids, unlike a pod's idmapped rootfs.
pub fn with_layers<T>(
    container_state: &Path,
    layers: &[PathBuf],
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let base = dir(container_state);
    let mp = base.join("declared");
    mount_layers(&base, &mp, layers)?;
    let r = f(&mp);
    super::rootfs::unmount(&mp)?;
    std::fs::remove_dir(&mp).map_err(|e| Error::io(format!("remove {}", mp.display()), e))?;
    r
}

/// `sub` inside the mounted image, symlinks resolved, which must stay inside it and exist.
fn sub_path(root: &Path, sub: &str) -> std::result::Result<PathBuf, String> {
    let p = root
        .join(sub)
        .canonicalize()
        .map_err(|e| format!("{sub:?} in the image: {e}"))?;
    if !p.starts_with(root) {
        return Err(format!("{sub:?} leads outside the image"));
    }
    Ok(p)
}

/// Unmounts a container's image volumes and removes their mount points, never recursively;
/// idempotent. Whether it held any.
pub fn release(container_state: &Path) -> Result<bool> {
    super::rootfs::release_staged(&dir(container_state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_are_checked() {
        assert!(check_sub_path("f", "a/b").is_ok());
        assert!(check_sub_path("f", "/a").is_err());
        assert!(check_sub_path("f", "a/../../b").is_err());
    }

    #[test]
    fn read_only_overlay_mounts_and_releases() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("layer");
        std::fs::create_dir_all(layer.join("sub")).unwrap();
        std::fs::write(layer.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", layer.join("escape")).unwrap();
        let state = d.path().join("ctr");
        let vols = [
            ImageVolume {
                index: 0,
                layers: vec![layer.clone()],
                sub_path: String::new(),
                image_ref: String::new(),
            },
            ImageVolume {
                index: 3,
                layers: vec![layer.clone()],
                sub_path: "sub".into(),
                image_ref: String::new(),
            },
        ];
        let m = stage(&state, &vols).unwrap();
        let f = std::fs::read_to_string(m[&0].join("sub/f"));
        let sub = std::fs::read_to_string(m[&3].join("f"));
        let write = std::fs::write(m[&0].join("new"), "y");
        let bad = stage(
            &d.path().join("ctr2"),
            &[ImageVolume {
                index: 1,
                layers: vec![layer.clone()],
                sub_path: "escape/etc".into(),
                image_ref: String::new(),
            }],
        );
        assert!(release(&state).unwrap());
        assert_eq!(f.unwrap(), "x");
        assert_eq!(sub.unwrap(), "x");
        assert!(write.is_err(), "read-only");
        assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");
        assert!(!state.with_extension("images").exists());
        assert!(!d.path().join("ctr2.images").exists(), "a failed stage releases");
        assert!(!release(&state).unwrap());
    }
}
