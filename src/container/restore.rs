//! A container created from a checkpoint: an archive (its path given as the image, as CRI-O takes
//! it), or an image made from one (`crustctl images import-checkpoint`), marked as CRI-O marks it
//! (`io.kubernetes.cri-o.annotations.checkpoint.name`, a config label here) and holding the archive's
//! files in its one layer. CreateContainer reads `spec.dump` and `config.dump` to make the container as the
//! checkpointed one was (its image, command, environment, working dir, annotations; the pod, mounts,
//! labels, resources and security context are the request's, as with CRI-O), unpacks CRIU's images
//! beside the writable layer and applies `rootfs-diff.tar` and `deleted.files` to the new rootfs;
//! StartContainer then has the monitor run `runtime restore --detach` instead of `run`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use cri_api::v1;

use super::checkpoint::{
    BIND_MOUNTS, CHECKPOINT_DIR, CONFIG_DUMP, CONTAINER_LOG, ConfigDump, DELETED_FILES, ROOTFS_DIFF,
    SPEC_DUMP,
};
use super::create::NewContainer;
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::{Error, Result};

/// Where a restore's CRIU images go, in the container's layer dir.
pub const RESTORE_DIR: &str = "restore";

/// The mounts crust gives every container itself: a restore needs no request mount for them.
const OWN_MOUNTS: [&str; 10] = [
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/dev/shm",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
];

/// The label (annotation, with CRI-O) that marks a checkpoint image.
pub const CHECKPOINT_LABEL: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";

/// Where a checkpoint comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A checkpoint archive.
    Archive(PathBuf),
    /// A checkpoint image's layer: the archive's files, unpacked.
    Dir(PathBuf),
}

/// The checkpoint `image` names: an absolute path to an existing file (as CRI-O, which takes a
/// CreateContainer image that is a path to a file as an archive to restore), or a checkpoint image.
pub fn source_of(image: &str, images: &crate::image::ImageStore) -> Option<Source> {
    let p = Path::new(image);
    if p.is_absolute() && p.is_file() {
        return Some(Source::Archive(p.to_path_buf()));
    }
    let info = images.resolve(image)?;
    let labels = info.config.config().as_ref()?.labels().clone()?;
    labels
        .contains_key(CHECKPOINT_LABEL)
        .then(|| info.layers.last().cloned().map(Source::Dir))?
}

/// `config.dump` and `spec.dump` of a checkpoint.
fn read_dumps(src: &Source) -> Result<(ConfigDump, serde_json::Value)> {
    let archive = match src {
        Source::Archive(a) => a,
        Source::Dir(d) => {
            let read = |n: &str| {
                std::fs::read(d.join(n))
                    .map_err(|e| Error::invalid("config.image.image", format!("checkpoint image: {n}: {e}")))
            };
            let config = serde_json::from_slice(&read(CONFIG_DUMP)?).map_err(|e| {
                Error::invalid(
                    "config.image.image",
                    format!("checkpoint image: {CONFIG_DUMP}: {e}"),
                )
            })?;
            let spec = serde_json::from_slice(&read(SPEC_DUMP)?).map_err(|e| {
                Error::invalid(
                    "config.image.image",
                    format!("checkpoint image: {SPEC_DUMP}: {e}"),
                )
            })?;
            return Ok((config, spec));
        }
    };
    let field = "config.image.image";
    let bad = |m: String| Error::invalid(field, format!("checkpoint archive {}: {m}", archive.display()));
    let f = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(f));
    let (mut config, mut spec) = (None, None);
    for e in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        let name = e.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let which = match name.to_str() {
            Some(CONFIG_DUMP) => &mut config,
            Some(SPEC_DUMP) => &mut spec,
            _ => continue,
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(|e| bad(e.to_string()))?;
        *which = Some(data);
        if config.is_some() && spec.is_some() {
            break;
        }
    }
    let (Some(config), Some(spec)) = (config, spec) else {
        return Err(bad(format!(
            "no {CONFIG_DUMP} or no {SPEC_DUMP}: not a checkpoint archive"
        )));
    };
    let config = serde_json::from_slice(&config).map_err(|e| bad(format!("{CONFIG_DUMP}: {e}")))?;
    let spec = serde_json::from_slice(&spec).map_err(|e| bad(format!("{SPEC_DUMP}: {e}")))?;
    Ok((config, spec))
}

impl Daemon {
    /// Makes `req` the CreateContainer of the checkpointed container in `archive`, in the request's pod.
    pub(super) async fn restore_request(&self, src: &Source, req: &mut NewContainer) -> Result<()> {
        crate::oci::criu::require("restore").await?;
        let handler = self.sandboxes.pod_context(&req.pod_id)?.runtime_handler;
        let rt = self.containers.inner.runtimes.get(&handler)?;
        crate::oci::criu::require_runtime("restore", &handler, rt.path()).await?;
        let archive = match src {
            Source::Archive(a) | Source::Dir(a) => a.clone(),
        };
        let s = src.clone();
        let (config, spec) = tokio::task::spawn_blocking(move || read_dumps(&s))
            .await
            .map_err(|e| Error::Internal(format!("read checkpoint task: {e}")))??;
        let image = [
            &config.rootfs_image_name,
            &config.rootfs_image_ref,
            &config.rootfs_image,
        ]
        .into_iter()
        .find(|r| !r.is_empty() && self.images.resolve(r).is_some())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "config.image.image: the image {:?} of the checkpoint in {} is not present (pull it first)",
                config.rootfs_image_name,
                archive.display()
            ))
        })?;
        let c = &mut req.config;
        let missing: Vec<&str> = spec["mounts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|m| m["type"] == "bind")
            .filter_map(|m| m["destination"].as_str())
            .filter(|d| !OWN_MOUNTS.contains(d) && !c.mounts.iter().any(|m| m.container_path == *d))
            .collect();
        if !missing.is_empty() {
            // As CRI-O: the checkpointed process has these open or mapped; the request must give them.
            return Err(Error::invalid(
                "config.mounts",
                format!(
                    "restoring {} needs the bind mounts {} as the checkpointed container had",
                    archive.display(),
                    missing.join(", ")
                ),
            ));
        }
        let process = &spec["process"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        c.image = Some(v1::ImageSpec {
            image: image.clone(),
            ..Default::default()
        });
        c.command = strings(&process["args"]);
        c.args = Vec::new();
        c.working_dir = process["cwd"].as_str().unwrap_or_default().to_string();
        c.envs = strings(&process["env"])
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| v1::KeyValue {
                key: k.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        c.tty = process["terminal"].as_bool().unwrap_or(false);
        // The checkpointed container's own annotations (not those crust adds), then the request's.
        let mut annotations: std::collections::HashMap<String, String> = spec["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with("io.kubernetes.cri."))
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        annotations.extend(c.annotations.drain());
        c.annotations = annotations;
        Ok(())
    }
}

/// Unpacks `archive` for a restore into the container being made: CRIU's images (and the other
/// metadata) into `<layer_dir>/restore`, `rootfs-diff.tar` into the mounted `rootfs`, then the
/// deletions of `deleted.files`. Returns the restore dir.
pub fn unpack(src: &Source, layer_dir: &Path, rootfs: &Path) -> Result<PathBuf> {
    let dir = layer_dir.join(RESTORE_DIR);
    std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
    let archive = match src {
        Source::Archive(a) => a,
        Source::Dir(d) => {
            unpack_dir(d, &dir, rootfs)?;
            return Ok(dir);
        }
    };
    let ctx = format!("unpack the checkpoint archive {}", archive.display());
    let f = std::fs::File::open(archive).ctx(ctx.clone())?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(f));
    let mut deleted: Vec<String> = Vec::new();
    let entries = tar.entries().ctx(ctx.clone())?;
    for e in entries {
        let mut e = e.ctx(ctx.clone())?;
        let name = e.path().ctx(ctx.clone())?.into_owned();
        let first = name.components().next();
        match name.to_str() {
            Some(ROOTFS_DIFF) => {
                let mut diff = tar::Archive::new(&mut e);
                diff.set_preserve_permissions(true);
                diff.set_preserve_ownerships(true);
                diff.set_preserve_mtime(true);
                diff.set_overwrite(true);
                // `unpack` keeps every entry inside `rootfs` (no '..', no symlink out).
                diff.unpack(rootfs).ctx(format!("{ctx}: {ROOTFS_DIFF}"))?;
            }
            Some(DELETED_FILES) => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).ctx(ctx.clone())?;
                deleted = serde_json::from_slice(&data).map_err(|x| {
                    Error::invalid("config.image.image", format!("{ctx}: {DELETED_FILES}: {x}"))
                })?;
            }
            Some(CONFIG_DUMP | SPEC_DUMP | BIND_MOUNTS | CONTAINER_LOG) => {
                e.unpack_in(&dir).ctx(ctx.clone())?;
            }
            _ if first == Some(Component::Normal(CHECKPOINT_DIR.as_ref())) => {
                e.unpack_in(&dir).ctx(ctx.clone())?;
            }
            _ => {}
        }
    }
    for d in &deleted {
        remove_in(rootfs, d).ctx(format!("{ctx}: delete {d}"))?;
    }
    if !dir.join(CHECKPOINT_DIR).is_dir() {
        return Err(Error::invalid(
            "config.image.image",
            format!("{ctx}: it holds no {CHECKPOINT_DIR}/ (CRIU's images)"),
        ));
    }
    Ok(dir)
}

/// [`unpack`] of a checkpoint image's layer `src`.
fn unpack_dir(src: &Path, dir: &Path, rootfs: &Path) -> Result<()> {
    let ctx = format!("restore from the checkpoint image layer {}", src.display());
    let images = src.join(CHECKPOINT_DIR);
    if !images.is_dir() {
        return Err(Error::invalid(
            "config.image.image",
            format!("{ctx}: it holds no {CHECKPOINT_DIR}/ (CRIU's images)"),
        ));
    }
    super::copy_up::copy_tree(&images, &dir.join(CHECKPOINT_DIR)).ctx(ctx.clone())?;
    let log = src.join(CONTAINER_LOG);
    if std::fs::symlink_metadata(&log).is_ok_and(|m| m.is_file()) {
        std::fs::copy(&log, dir.join(CONTAINER_LOG)).ctx(format!("{ctx}: {CONTAINER_LOG}"))?;
    }
    if let Ok(f) = std::fs::File::open(src.join(ROOTFS_DIFF)) {
        let mut diff = tar::Archive::new(std::io::BufReader::new(f));
        diff.set_preserve_permissions(true);
        diff.set_preserve_ownerships(true);
        diff.set_preserve_mtime(true);
        diff.set_overwrite(true);
        diff.unpack(rootfs).ctx(format!("{ctx}: {ROOTFS_DIFF}"))?;
    }
    let deleted: Vec<String> = std::fs::read(src.join(DELETED_FILES))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    for d in &deleted {
        remove_in(rootfs, d).ctx(format!("{ctx}: delete {d}"))?;
    }
    Ok(())
}

/// Removes `path` (absolute in the container) under `rootfs`, never outside it: a path with '..', or
/// whose parent resolves out of `rootfs` (a symlink), is skipped.
fn remove_in(rootfs: &Path, path: &str) -> std::io::Result<()> {
    let rel = Path::new(path.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let root = rootfs.canonicalize()?;
    let Ok(parent) = rootfs.join(parent).canonicalize() else {
        return Ok(());
    };
    if !parent.starts_with(&root) {
        return Ok(());
    }
    let p = parent.join(name);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
        Ok(_) => std::fs::remove_file(&p),
        Err(_) => Ok(()),
    }
}

/// Starts the restored container's log (`log`, in kubelet's log directory) with the checkpointed
/// container's, as containerd does: the monitor then appends to it. Never through a symlink; an
/// existing log is replaced.
pub fn restore_log(dir: &Path, log: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let saved = dir.join(CONTAINER_LOG);
    let Ok(mut from) = std::fs::File::open(&saved) else {
        return Ok(());
    };
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).ctx(format!("create log directory {}", parent.display()))?;
    }
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)
        .ctx(format!("restore the checkpointed log into {}", log.display()))?;
    std::io::copy(&mut from, &mut to).ctx(format!("restore the checkpointed log into {}", log.display()))?;
    let _ = std::fs::remove_file(&saved);
    Ok(())
}

/// A restored container's CRIU images are spent once it runs: removed (and no longer recorded).
pub fn done(rec: &mut super::ContainerRecord) {
    if rec.restore.is_empty() {
        return;
    }
    let dir = PathBuf::from(std::mem::take(&mut rec.restore));
    if let Err(e) = std::fs::remove_dir_all(dir.join(CHECKPOINT_DIR)) {
        tracing::warn!(id = %rec.id, error = %e, "removing the restored checkpoint's images");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpointed_log_starts_the_new_one_never_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let restore = d.path().join("restore");
        std::fs::create_dir(&restore).unwrap();
        // No log in the checkpoint: nothing is made.
        let log = d.path().join("logs/ctr/0.log");
        restore_log(&restore, &log).unwrap();
        assert!(!log.exists());
        std::fs::write(restore.join(CONTAINER_LOG), "2026-12-06T00:00:00Z stdout F 1\n").unwrap();
        restore_log(&restore, &log).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "2026-12-06T00:00:00Z stdout F 1\n"
        );
        // A log path that is a symlink (to a host file) is refused, and the file it names is untouched.
        let target = d.path().join("host-file");
        std::fs::write(&target, "host").unwrap();
        let link = d.path().join("logs/ctr/1.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::write(restore.join(CONTAINER_LOG), "x\n").unwrap();
        assert!(restore_log(&restore, &link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "host");
    }
}
