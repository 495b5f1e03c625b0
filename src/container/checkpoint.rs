//! CheckpointContainer: the archive kubelet's checkpoint API asks for, laid out as CRI-O and
//! containerd write it (what `checkpointctl` reads): `checkpoint/` (CRIU's images, from runc's
//! `checkpoint --leave-running`: the container keeps running), `dump.log` and `stats-dump` (CRIU's log
//! and statistics), `config.dump` (the container's name, image and times), `spec.dump` (its OCI spec),
//! `rootfs-diff.tar` (what the writable layer added or changed) and `deleted.files` (what it deleted,
//! a JSON list), `bind.mounts` (its bind mounts' sources and types). An uncompressed tar, mode 0600: it
//! holds every memory page of the container's processes.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::ContainerRecord;
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::{Error, Result};

/// CRIU's images in the archive.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The container's metadata (`ContainerConfig` of checkpointctl).
pub const CONFIG_DUMP: &str = "config.dump";
/// The container's OCI spec.
pub const SPEC_DUMP: &str = "spec.dump";
/// The writable layer's added and changed files.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// The writable layer's deletions.
pub const DELETED_FILES: &str = "deleted.files";
/// The bind mounts' sources and file types.
pub const BIND_MOUNTS: &str = "bind.mounts";
/// The container's CRI log up to the checkpoint (as containerd 2.x archives it; a restore starts the new
/// container's log with it).
pub const CONTAINER_LOG: &str = "container.log";
/// What runc's `checkpoint` leaves in its work path, taken into the archive.
const WORK_FILES: [&str; 2] = ["dump.log", "stats-dump"];

/// `config.dump`, with the field names checkpointctl reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image_ref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_image_name: String,
    #[serde(default, rename = "runtime", skip_serializing_if = "String::is_empty")]
    pub oci_runtime: String,
    #[serde(default)]
    pub created_time: String,
    #[serde(default, rename = "checkpointedTime")]
    pub checkpointed_at: String,
    #[serde(default, rename = "restoredTime")]
    pub restored_at: String,
    #[serde(default)]
    pub restored: bool,
}

#[derive(Serialize)]
struct BindMount {
    source: String,
    destination: String,
    file_type: &'static str,
    permissions: u32,
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Daemon {
    /// CheckpointContainer: writes the checkpoint archive of running container `id` to `location`.
    pub async fn checkpoint_container(&self, id: &str, location: &Path) -> Result<()> {
        let inner = &self.containers.inner;
        let id = inner.resolve_id(id)?;
        let _g = inner.locks.lock(&id).await;
        let rec = inner.get(&id)?;
        if rec.exited || rec.started_at == 0 || rec.pid == 0 {
            // As CRI-O: only a running container has processes to checkpoint.
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running (it is {:?})",
                super::record::cri_state(&rec)
            )));
        }
        // Opened before any work: an unwritable location is the caller's to fix.
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(location)
            .map_err(|e| Error::invalid("location", format!("cannot write {}: {e}", location.display())))?;
        let r = self.checkpoint_into(&rec, out).await;
        if r.is_err() {
            let _ = std::fs::remove_file(location);
        }
        r.map_err(|e| e.context(format!("CheckpointContainer {id}")))
    }

    async fn checkpoint_into(&self, rec: &ContainerRecord, out: std::fs::File) -> Result<()> {
        crate::oci::criu::require("checkpoint").await?;
        let inner = &self.containers.inner;
        let rt = inner.runtime(rec)?;
        crate::oci::criu::require_runtime("checkpoint", &rec.runtime_handler, rt.path()).await?;
        let work = inner.dirs.container_root(&rec.id).join("checkpoint.tmp");
        crate::state::remove_dir_idempotent(&work).ctx(format!("remove {}", work.display()))?;
        let images = work.join(CHECKPOINT_DIR);
        std::fs::create_dir_all(&images).ctx(format!("create {}", images.display()))?;
        // As CRI-O: frozen while CRIU dumps and the writable layer is read, so the two agree.
        rt.pause(&rec.id).await?;
        let r = async {
            rt.checkpoint(&rec.id, &images, &work).await?;
            let (rec, work2) = (rec.clone(), work.clone());
            let paths = inner.rootfs_paths(&rec.id);
            let bundle = inner.dirs.container_state(&rec.id).join("config.json");
            tokio::task::spawn_blocking(move || write_archive(&rec, &bundle, &paths.upper(), &work2, out))
                .await
                .map_err(|e| Error::Internal(format!("checkpoint archive task: {e}")))?
        }
        .await;
        if let Err(e) = rt.resume(&rec.id).await {
            tracing::warn!(id = %rec.id, error = %e, "resuming the container after its checkpoint");
        }
        let _ = crate::state::remove_dir_idempotent(&work);
        r
    }
}

/// The metadata files and the rootfs diff into `work`, then everything into `out`.
fn write_archive(
    rec: &ContainerRecord,
    bundle: &Path,
    upper: &Path,
    work: &Path,
    out: std::fs::File,
) -> Result<()> {
    let spec = std::fs::read(bundle).ctx(format!("read {}", bundle.display()))?;
    let spec_json: serde_json::Value =
        serde_json::from_slice(&spec).map_err(|e| Error::Internal(format!("{}: {e}", bundle.display())))?;
    let config = ConfigDump {
        id: rec.id.clone(),
        name: rec.name.clone(),
        rootfs_image: rec.user_specified_image.clone(),
        rootfs_image_ref: rec.image_id.clone(),
        rootfs_image_name: rec.image.clone(),
        oci_runtime: rec.runtime_handler.clone(),
        created_time: rfc3339(rec.created_at),
        checkpointed_at: rfc3339(crate::state::now_nanos()),
        ..Default::default()
    };
    write_json(work, CONFIG_DUMP, &config)?;
    write_json(work, SPEC_DUMP, &spec_json)?;
    let mounts = spec_json["mounts"].as_array().cloned().unwrap_or_default();
    let skip: Vec<PathBuf> = mounts
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .map(|d| {
            Path::new(d)
                .strip_prefix("/")
                .unwrap_or(Path::new(d))
                .to_path_buf()
        })
        .collect();
    let binds: Vec<BindMount> = mounts
        .iter()
        .filter(|m| {
            m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "bind"))
        })
        .filter_map(|m| {
            let source = m["source"].as_str()?;
            let meta = std::fs::metadata(source).ok()?;
            Some(BindMount {
                source: source.to_string(),
                destination: m["destination"].as_str()?.to_string(),
                file_type: if meta.is_dir() { "directory" } else { "file" },
                permissions: meta.mode() & 0o7777,
            })
        })
        .collect();
    write_json(work, BIND_MOUNTS, &binds)?;
    let deleted = rootfs_diff(upper, &skip, &work.join(ROOTFS_DIFF))?;
    write_json(work, DELETED_FILES, &deleted)?;
    // The log as it is now; one that cannot be read leaves the archive without it (containerd, too,
    // takes it only where it exists).
    let log = Path::new(&rec.log_path);
    if !rec.log_path.is_empty()
        && std::fs::symlink_metadata(log).is_ok_and(|m| m.is_file())
        && let Err(e) = std::fs::copy(log, work.join(CONTAINER_LOG))
    {
        tracing::warn!(id = %rec.id, error = %e, "the container's log is not in its checkpoint");
    }

    let add = || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        tar.follow_symlinks(false);
        tar.append_dir_all(CHECKPOINT_DIR, work.join(CHECKPOINT_DIR))?;
        for name in [
            CONFIG_DUMP,
            SPEC_DUMP,
            BIND_MOUNTS,
            DELETED_FILES,
            ROOTFS_DIFF,
            CONTAINER_LOG,
        ]
        .into_iter()
        .chain(WORK_FILES)
        {
            let mut p = work.join(name);
            if !p.exists() {
                // CRIU puts its statistics in its work dir, older ones beside the images.
                p = work.join(CHECKPOINT_DIR).join(name);
            }
            if p.exists() {
                tar.append_path_with_name(&p, name)?;
            }
        }
        tar.into_inner()?.flush()
    };
    add().ctx("write the checkpoint archive")
}

/// Writes the writable layer's added and changed entries to `dest` (a tar, names relative to the
/// root) and returns its deletions (overlayfs whiteouts) as absolute paths. Mount points (`skip`) are
/// left out: the runtime made them, the restored container's runtime makes them again.
fn rootfs_diff(upper: &Path, skip: &[PathBuf], dest: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::create(dest).ctx(format!("create {}", dest.display()))?;
    let mut deleted = Vec::new();
    let walk = |deleted: &mut Vec<String>| -> std::io::Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        tar.follow_symlinks(false);
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = upper.join(&rel);
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let name = rel.join(e.file_name());
                if skip.contains(&name) {
                    continue;
                }
                let meta = e.metadata()?;
                if meta.file_type().is_char_device() && meta.rdev() == 0 {
                    deleted.push(format!("/{}", name.display()));
                    continue;
                }
                if meta.is_dir() {
                    tar.append_dir(&name, e.path())?;
                    stack.push(name);
                } else {
                    tar.append_path_with_name(e.path(), &name)?;
                }
            }
        }
        tar.into_inner()?.flush()
    };
    walk(&mut deleted).ctx(format!("write {}", dest.display()))?;
    deleted.sort();
    Ok(deleted)
}

/// `v` as pretty JSON (as checkpointctl's writer does) into `dir/name`.
fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> Result<()> {
    let p = dir.join(name);
    let data = serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(format!("{name} as JSON: {e}")))?;
    std::fs::write(&p, data).ctx(format!("write {}", p.display()))
}
