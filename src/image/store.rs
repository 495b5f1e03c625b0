//! The on-disk layout under `<root>/images`: content-addressed blobs (`blobs/sha256/<hex>`), unpacked
//! layers (`layers/<chain-id hex>/`), downloads in progress (`ingest/`), and `trash/` for what is being
//! deleted. Nothing appears under `blobs/` or `layers/` before it is complete and verified (rename).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Paths of the store.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.blobs().join(super::index::hex_of(digest))
    }
    pub fn layers(&self) -> PathBuf {
        self.dir.join("layers")
    }
    pub fn layer(&self, chain_id: &str) -> PathBuf {
        self.layers().join(super::index::hex_of(chain_id))
    }
    pub fn ingest(&self) -> PathBuf {
        self.dir.join("ingest")
    }
    pub fn trash(&self) -> PathBuf {
        self.dir.join("trash")
    }
    pub fn index(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// A fresh path under `ingest/` (or, for unpacking, under `layers/` with a dot name, so that the final
    /// rename stays on one filesystem and is never mistaken for a layer).
    pub fn temp(&self, what: &str) -> PathBuf {
        let r: u64 = rand::random();
        match what {
            "layer" => self.layers().join(format!(".tmp-{r:016x}")),
            _ => self.ingest().join(format!("{what}-{r:016x}")),
        }
    }

    /// Creates the directories and removes leftovers of interrupted pulls and deletions.
    pub fn prepare(&self) -> Result<()> {
        for d in [self.blobs(), self.layers(), self.ingest(), self.trash()] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        for d in [self.ingest(), self.trash()] {
            for e in read_dir(&d) {
                remove_any(&e);
            }
        }
        for e in read_dir(&self.layers()) {
            if e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            {
                remove_any(&e);
            }
        }
        Ok(())
    }

    /// Moves a blob or layer into `trash/` (fast, so it can happen under the store lock); `empty_trash`
    /// deletes it later.
    pub fn discard(&self, path: &Path) {
        let r: u64 = rand::random();
        let to = self.trash().join(format!("{r:016x}"));
        if let Err(e) = std::fs::rename(path, &to)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot discard");
        }
    }

    /// Deletes everything in `trash/`.
    pub fn empty_trash(&self) {
        for e in read_dir(&self.trash()) {
            remove_any(&e);
        }
    }
}

/// Entries of a directory (empty when unreadable).
pub fn read_dir(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Removes a file or a directory tree, logging failures.
pub fn remove_any(p: &Path) {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cannot remove");
    }
}

/// Layer directories some mounted overlay uses as a lower dir (per `/proc/self/mountinfo`): never
/// deleted, even when no image refers to them any more.
pub fn layers_in_use(layers_dir: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    layers_in(&info, layers_dir)
}

/// The layer IDs under `layers_dir` that overlay mounts in `mountinfo` text use.
fn layers_in(info: &str, layers_dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", layers_dir.display());
    let mut out = Vec::new();
    for line in info.lines().filter(|l| l.contains(" - overlay ")) {
        let mut rest = line;
        while let Some(i) = rest.find(&prefix) {
            rest = &rest[i + prefix.len()..];
            let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if hex.len() == 64 {
                out.push(hex);
            }
        }
    }
    out
}

/// Bytes and inodes of the files directly in `dir` (the blobs).
pub fn usage_of_files(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    for p in read_dir(dir) {
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            bytes += m.len();
            inodes += 1;
        }
    }
    (bytes, inodes)
}

/// Renames `from` to `to` unless `to` exists already (then `from` is removed). Returns whether it moved.
pub fn commit(from: &Path, to: &Path) -> Result<bool> {
    if to.exists() {
        remove_any(from);
        return Ok(false);
    }
    std::fs::rename(from, to)
        .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_removes_leftovers_only() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout {
            dir: t.path().to_path_buf(),
        };
        l.prepare().unwrap();
        std::fs::write(l.ingest().join("blob-1"), b"partial").unwrap();
        std::fs::create_dir_all(l.temp("layer").join("x")).unwrap();
        std::fs::create_dir_all(l.layers().join("ab")).unwrap();
        std::fs::write(l.blobs().join("cd"), b"b").unwrap();
        l.prepare().unwrap();
        assert_eq!(read_dir(&l.ingest()).len(), 0);
        assert_eq!(read_dir(&l.layers()), vec![l.layers().join("ab")]);
        assert!(l.blobs().join("cd").exists());
        l.discard(&l.layers().join("ab"));
        assert_eq!(read_dir(&l.layers()).len(), 0);
        l.empty_trash();
        assert_eq!(read_dir(&l.trash()).len(), 0);
    }

    #[test]
    fn layers_used_by_overlay_mounts() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let info = format!(
            "36 25 0:32 / /run/x/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/images/layers/{a}:/s/images/layers/{b},upperdir=/u,workdir=/w\n\
             37 25 0:33 / /mnt rw - ext4 /dev/sda1 rw,data=/s/images/layers/{}\n",
            "c".repeat(64)
        );
        assert_eq!(layers_in(&info, Path::new("/s/images/layers")), vec![a, b]);
    }
}
