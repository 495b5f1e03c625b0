//! What survives a restart: the directory layout under `root` (persistent) and `state` (tmpfs), crash-safe
//! writes (write, fsync, rename), JSON records, per-ID locks for request concurrency, and the in-memory
//! record tables whose writes are counted (`Versioned`).

pub mod format;
mod locks;
mod versioned;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use locks::{Guard, Locks};
pub use versioned::{ReadGuard, Versioned, WriteGuard};

use crate::config::Config;

/// The directories crust uses, derived from `root` and `state`.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Persistent root (`/var/lib/crust`).
    pub root: PathBuf,
    /// Runtime state (`/run/crust`).
    pub state: PathBuf,
}

impl Dirs {
    /// Makes `root` (`0700`: images, records, writable layers are root's alone) and `state` (`0711`:
    /// passable, for the socket and the rootfs of pods with their own user namespace, not listable).
    pub fn make_private(&self) -> std::io::Result<()> {
        for (d, mode) in [(&self.root, 0o700), (&self.state, 0o711)] {
            std::fs::create_dir_all(d)?;
            set_mode(d, mode)?;
        }
        Ok(())
    }

    /// From the configuration.
    pub fn new(cfg: &Config) -> Self {
        Dirs {
            root: cfg.root.clone(),
            state: cfg.state.clone(),
        }
    }
    /// Image store: blobs, layers, index.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// Pod records dir (`<root>/pods`); a record is `<root>/pods/<id>.json`.
    pub fn pod_records(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// Container records dir (`<root>/containers`); a record is `<root>/containers/<id>.json`.
    pub fn container_records(&self) -> PathBuf {
        self.root.join("containers")
    }
    /// A container's persistent dir (writable layer `upper`, `work`).
    pub fn container_root(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
    /// Pinned network namespaces.
    pub fn userns_dir(&self) -> PathBuf {
        self.state.join("userns")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }
    /// A pod's runtime dir (hostname, hosts, resolv.conf, shm).
    pub fn pod_state(&self, id: &str) -> PathBuf {
        self.state.join("pods").join(id)
    }
    /// A container's runtime dir (bundle, rootfs mount, exit file, ctl.sock, monitor pid).
    pub fn container_state(&self, id: &str) -> PathBuf {
        self.state.join("containers").join(id)
    }
    /// The OCI runtime's own state dir (`runc --root`) for a handler.
    pub fn runtime_root(&self, handler: &str) -> PathBuf {
        self.state.join("runtime").join(handler)
    }
}

/// What a write must survive (each level costs fewer syncs on the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Power loss: the file is synced before the rename (so the old or the new version survives
    /// intact, never a torn or empty one) and the directory after it (so the new name itself is on
    /// disk when the call returns). For a record that must exist before the resource it describes is
    /// made (write-before-make under `root`).
    Full,
    /// Power loss, but the rename is not forced to disk: the file is synced before the rename, so a
    /// power loss leaves the old or the new version intact, possibly the old one (plus a stray
    /// temporary file, which readers skip). For updates of a record that exists (and was written
    /// with `Full`) when going back to the previous version after a power loss is harmless.
    Replace,
    /// Only crustd crashing: no sync at all; the rename still keeps readers (and a crustd that dies
    /// half-way) from seeing a torn file. For files under `state` (tmpfs, gone with the host) and
    /// anything else that means nothing after a reboot.
    Volatile,
}

/// The entries of a table keyed by ID after `from` (all when `None`): where a list stream's next
/// message starts, so that each record is sent once however the table changes between messages.
pub fn after<'a, V>(
    table: &'a std::collections::BTreeMap<String, V>,
    from: Option<&str>,
) -> std::collections::btree_map::Range<'a, String, V> {
    use std::ops::Bound;
    match from {
        None => table.range::<str, _>(..),
        Some(id) => table.range::<str, _>((Bound::Excluded(id), Bound::Unbounded)),
    }
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file: a temporary file in
/// the same directory, fsync, rename, fsync of the directory ([`Durability::Full`]).
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    atomic_write_with(path, data, Durability::Full)
}

/// [`atomic_write`] with the syncs `durability` asks for.
pub fn atomic_write_with(path: &Path, data: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per write: two writers of one file (a watcher and a request) must not share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}.{seq}", std::process::id()));
    // Records, bundles and exec specs hold environments (secrets): readable by root only.
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if durability != Durability::Volatile {
            // The new contents are on disk before any name points at them.
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A write that failed (a full filesystem) leaves no temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durability == Durability::Full {
        // The rename itself is on disk.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes a JSON record atomically ([`Durability::Full`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_json_with(path, value, Durability::Full)
}

/// Writes a JSON record atomically with the syncs `durability` asks for.
pub fn write_json_with<T: Serialize>(path: &Path, value: &T, durability: Durability) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    atomic_write_with(path, &data, durability)
}

/// Reads a JSON record.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads every `*.json` record in `dir` (skipping temporary files). One that cannot be read (damaged,
/// or of a newer format) fails the whole load, naming the file: a crustd that went on without it would
/// drop what the record holds (a running container, a pod's network) without a word.
pub fn read_all_json<T: DeserializeOwned>(dir: &Path) -> std::io::Result<Vec<T>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let is_record = p.extension().is_some_and(|x| x == "json")
            && !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
        if !is_record {
            continue;
        }
        let v = read_json(&p).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{}: {e}; crustd does not start without it (move it away to start without what it records)",
                    p.display()
                ),
            )
        })?;
        out.push(v);
    }
    Ok(out)
}

/// Sets a directory's mode (when it differs).
pub fn set_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(dir)?.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The mode of a directory of one pod or container: private to root (`0700`: no host user reaches a
/// container's files, its rootfs or its bundle), or, for a pod with its own user namespace, passable
/// but not listable (`0711`): the pod's root, an unprivileged host uid, must pass through to its
/// rootfs, pod files and volumes, and finds nothing it may read on the way (bundles are `0600`).
pub fn private_dir_mode(userns: bool) -> u32 {
    if userns { 0o711 } else { 0o700 }
}

/// Removes a file, treating "already gone" as success.
pub fn remove_file_idempotent(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes a directory tree, treating "already gone" as success.
pub fn remove_dir_idempotent(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// A new random 64-hex-digit ID (like containerd's and CRI-O's).
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Now, as nanoseconds since the epoch (the CRI's timestamps).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.json");
        write_json(&p, &vec![1, 2]).unwrap();
        write_json(&p, &vec![3]).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, vec![3]);
        let names: Vec<_> = std::fs::read_dir(d.path().join("a"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let all: Vec<Vec<i32>> = read_all_json(&d.path().join("a")).unwrap();
        assert_eq!(all, vec![vec![3]]);
        // A record that cannot be read fails the load, naming the file.
        std::fs::write(d.path().join("a/bad.json"), b"{").unwrap();
        let e = read_all_json::<Vec<i32>>(&d.path().join("a")).unwrap_err();
        assert!(
            e.to_string().contains("bad.json") && e.to_string().contains("does not start without it"),
            "{e}"
        );
        std::fs::remove_file(d.path().join("a/bad.json")).unwrap();
        assert!(
            read_all_json::<Vec<i32>>(&d.path().join("nowhere"))
                .unwrap()
                .is_empty()
        );
        for dur in [Durability::Replace, Durability::Volatile] {
            write_json_with(&p, &vec![4], dur).unwrap();
            assert_eq!(read_json::<Vec<i32>>(&p).unwrap(), vec![4]);
            let n = std::fs::read_dir(d.path().join("a")).unwrap().count();
            assert_eq!(n, 1, "{dur:?} left a temporary file");
            write_json_with(&p, &vec![5], dur).unwrap();
            assert_eq!(read_json::<Vec<i32>>(&p).unwrap(), vec![5]);
        }
    }
}
