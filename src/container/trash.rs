//! Removed containers' directories on their way out. RemoveContainer renames a container's state dir
//! (holding its rootfs mount point and bundle) with its staged mounts into `<state>/trash`, and its
//! writable layer into `<root>/trash` — a rename on the same filesystem, not a copy — and deletes the
//! record; the unmount (tearing an overlay down syncs the filesystem of its writable layer) and the
//! recursive deletes run in a background task. containerd's RemoveContainer likewise only deletes
//! metadata, leaving the snapshot to its asynchronous garbage collection. What a crash or a failed
//! cleanup leaves in the trash is cleaned when crustd starts. RemovePodSandbox and a graceful shutdown
//! wait for the cleanups under way, so a removed pod leaves no mount behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{idmap, image_volume, rootfs};
use crate::state::Dirs;
use crate::{Error, Result};

/// Where one container's directories are: in place or in the trash.
#[derive(Debug, Clone)]
pub(super) struct Place {
    /// `<state>/containers/<id>`: bundle, rootfs mount point; beside it `<id>.volumes`, `<id>.images`.
    pub state_dir: PathBuf,
    /// `<root>/containers/<id>`: the writable layer.
    pub layer_dir: PathBuf,
}

impl Place {
    /// A container's directories in place.
    pub fn of(dirs: &Dirs, id: &str) -> Place {
        Place {
            state_dir: dirs.container_state(id),
            layer_dir: dirs.container_root(id),
        }
    }

    /// Its rootfs.
    pub fn rootfs(&self) -> rootfs::RootfsPaths {
        rootfs::RootfsPaths {
            layer_dir: self.layer_dir.clone(),
            mountpoint: self.state_dir.join("rootfs"),
        }
    }

    /// Each directory with the mounts staged beside the state dir.
    fn parts(&self) -> [PathBuf; 4] {
        [
            idmap::volumes_dir(&self.state_dir),
            image_volume::dir(&self.state_dir),
            self.state_dir.clone(),
            self.layer_dir.clone(),
        ]
    }
}

/// Unmounts and deletes what a container has at `p`: the rootfs, the staged mounts, the state dir.
/// Idempotent; stops at the first failure (a mount that cannot be detached keeps what is under it).
pub(super) fn clean(p: &Place) -> Result<()> {
    let paths = p.rootfs();
    if rootfs::remove(&paths).is_err() {
        // A process a forced delete only just killed may have been writing to the writable layer.
        std::thread::sleep(Duration::from_millis(50));
        rootfs::remove(&paths)?;
    }
    idmap::release_volumes(&p.state_dir)?;
    image_volume::release(&p.state_dir)?;
    crate::state::remove_dir_idempotent(&p.state_dir)
        .map_err(|e| Error::io(format!("remove {}", p.state_dir.display()), e))
}

/// Done once every sender of it is dropped (nothing is ever sent).
type Done = tokio::sync::watch::Receiver<()>;

/// The trash directories and the cleanups under way.
pub(super) struct Trash {
    state: PathBuf,
    root: PathBuf,
    /// Cleanups under way, by container ID: the pod and the cleanup's end.
    pending: Arc<Mutex<HashMap<String, (String, Done)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Trash {
    pub fn new(dirs: &Dirs) -> Trash {
        Trash {
            state: dirs.state.join("trash"),
            root: dirs.root.join("trash"),
            pending: Default::default(),
        }
    }

    fn place(&self, id: &str) -> Place {
        Place {
            state_dir: self.state.join(id),
            layer_dir: self.root.join(id),
        }
    }

    /// Moves the directories of container `id` into the trash and cleans them in the background;
    /// returns when that cleanup ends. Where a rename fails (the writable layers on a filesystem of
    /// their own: EXDEV), everything is cleaned here and now instead, in place and in the trash.
    pub async fn discard(&self, dirs: &Dirs, id: &str, pod_id: &str) -> Result<Done> {
        let from = Place::of(dirs, id);
        let to = self.place(id);
        let moved = (|| -> std::io::Result<()> {
            for d in [&self.state, &self.root] {
                std::fs::create_dir_all(d)?;
            }
            for (a, b) in from.parts().iter().zip(to.parts().iter()) {
                match std::fs::rename(a, b) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })();
        let (tx, done) = tokio::sync::watch::channel(());
        if let Err(e) = moved {
            tracing::info!(%id, error = %e, "cannot move the container's directories aside; removing them now");
            tokio::task::spawn_blocking(move || clean(&from).and_then(|()| clean(&to)))
                .await
                .map_err(|e| Error::Internal(format!("cleanup task failed: {e}")))??;
            return Ok(done);
        }
        lock(&self.pending).insert(id.to_string(), (pod_id.to_string(), done.clone()));
        let pending = Arc::clone(&self.pending);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = clean(&to) {
                tracing::warn!(%id, error = %e, "cleaning a removed container's directories failed; crustd retries at its next start");
            }
            lock(&pending).remove(&id);
            drop(tx);
        });
        Ok(done)
    }

    /// Waits (up to `timeout`) for the cleanups of the containers `which` accepts by pod ID.
    pub async fn settle(&self, which: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let waits: Vec<Done> = lock(&self.pending)
            .values()
            .filter(|(pod, _)| which(pod))
            .map(|(_, d)| d.clone())
            .collect();
        let all = futures::future::join_all(waits.into_iter().map(|mut d| async move {
            let _ = d.changed().await;
        }));
        tokio::time::timeout(timeout, all).await.is_ok()
    }

    /// Makes the trash directories (root's alone) and cleans, in the background, whatever an
    /// earlier crustd left in them.
    pub fn open(&self) -> std::io::Result<()> {
        for d in [&self.state, &self.root] {
            std::fs::create_dir_all(d)?;
            crate::state::set_mode(d, 0o700)?;
        }
        self.empty();
        Ok(())
    }

    /// Cleans (in the background) whatever an earlier crustd left in the trash.
    fn empty(&self) {
        let mut ids: Vec<String> = [&self.state, &self.root]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.split('.').next().unwrap_or_default().to_string();
                (!id.is_empty()).then_some(id)
            })
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return;
        }
        let (tx, done) = tokio::sync::watch::channel(());
        // Under no pod: only a shutdown waits for it.
        lock(&self.pending).insert(String::new(), (String::new(), done));
        let places: Vec<Place> = ids.iter().map(|id| self.place(id)).collect();
        let pending = Arc::clone(&self.pending);
        tokio::task::spawn_blocking(move || {
            for p in places {
                match clean(&p) {
                    Ok(()) => {
                        tracing::info!(dir = %p.state_dir.display(), "cleaned a removed container's directories")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %p.state_dir.display(), error = %e, "cannot clean a removed container's directories")
                    }
                }
            }
            lock(&pending).remove("");
            drop(tx);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root and state under `d`, a lower layer holding `f`.
    fn setup(d: &std::path::Path) -> (Dirs, PathBuf) {
        let dirs = Dirs {
            root: d.join("root"),
            state: d.join("state"),
        };
        let lower = d.join("lower");
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::write(lower.join("f"), "x").unwrap();
        (dirs, lower)
    }

    /// The trash is empty and nothing is mounted under `d`.
    async fn assert_clean(trash: &Trash, dirs: &Dirs, d: &std::path::Path) {
        let is_empty = |dir: PathBuf| std::fs::read_dir(dir).map_or(true, |mut rd| rd.next().is_none());
        assert!(trash.settle(|_| true, Duration::from_secs(5)).await);
        assert!(is_empty(dirs.state.join("trash")) && is_empty(dirs.root.join("trash")));
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!info.contains(&d.display().to_string()), "{info}");
    }

    #[tokio::test]
    async fn discard_moves_aside_and_cleans_a_mounted_rootfs() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (dirs, lower) = setup(d.path());
        let id = "c1";
        let at = Place::of(&dirs, id);
        rootfs::mount(&at.rootfs(), std::slice::from_ref(&lower), None).unwrap();
        std::fs::write(at.rootfs().mountpoint.join("new"), "y").unwrap();
        std::fs::write(at.state_dir.join("config.json"), "{}").unwrap();
        let trash = Trash::new(&dirs);
        let mut done = trash.discard(&dirs, id, "pod").await.unwrap();
        assert!(!at.state_dir.exists() && !at.layer_dir.exists());
        let _ = done.changed().await;
        assert_clean(&trash, &dirs, d.path()).await;
        // Again: nothing to move, nothing fails.
        let _ = trash.discard(&dirs, id, "pod").await.unwrap();
        assert_clean(&trash, &dirs, d.path()).await;
    }

    #[tokio::test]
    async fn what_a_crash_left_in_the_trash_is_cleaned() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (dirs, lower) = setup(d.path());
        let trash = Trash::new(&dirs);
        let left = trash.place("c2");
        rootfs::mount(&left.rootfs(), std::slice::from_ref(&lower), None).unwrap();
        std::fs::write(left.rootfs().mountpoint.join("new"), "y").unwrap();
        trash.empty();
        assert_clean(&trash, &dirs, d.path()).await;
    }
}
