//! Writable-layer usage (bytes, inodes) per container, cached: walking a layer costs a `stat` per
//! file, too much for every ContainerStats/ListContainerStats call (kubelet lists stats every few
//! seconds). A background task walks each running container's upper dir at most every
//! `runtime.writable_layer_refresh_seconds`, two walks at a time; stats answer from the cache. A
//! container not measured yet is measured once when first asked for (its layer is new and small,
//! or, after a restart of crustd, measured once); an exited container's layer no longer changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Inner, lock, rootfs};

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerUsage {
    /// When it was measured (ns since the epoch).
    pub timestamp: i64,
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks of layers at once in a refresh.
const CONCURRENT_WALKS: usize = 2;

/// The cache.
#[derive(Default)]
pub struct LayerUsageCache(Mutex<HashMap<String, LayerUsage>>);

impl LayerUsageCache {
    fn get(&self, id: &str) -> Option<LayerUsage> {
        lock(&self.0).get(id).copied()
    }

    fn put(&self, id: &str, u: LayerUsage) {
        lock(&self.0).insert(id.to_string(), u);
    }

    /// Forgets a removed container.
    pub fn forget(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

impl Inner {
    /// Measures a container's writable layer now (off the async workers) and caches the result.
    async fn measure_layer(&self, id: &str) -> LayerUsage {
        let upper = self.rootfs_paths(id).upper();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || rootfs::usage(&upper))
            .await
            .unwrap_or((0, 0));
        let u = LayerUsage {
            timestamp: crate::state::now_nanos(),
            bytes,
            inodes,
        };
        // A container removed during the walk stays forgotten.
        if self.records.read().contains_key(id) {
            self.layer_usage.put(id, u);
        }
        u
    }

    /// The cached usage of a container's writable layer, measured now when it has none yet.
    pub(super) async fn layer_usage(&self, id: &str) -> LayerUsage {
        match self.layer_usage.get(id) {
            Some(u) => u,
            None => self.measure_layer(id).await,
        }
    }

    /// One refresh: measures every running container's layer, [`CONCURRENT_WALKS`] at a time.
    /// Returns how many were measured.
    pub(super) async fn refresh_layers(self: &Arc<Self>) -> usize {
        let ids: Vec<String> = self
            .records
            .read()
            .values()
            .filter(|r| r.started_at != 0 && !r.exited)
            .map(|r| r.id.clone())
            .collect();
        let n = ids.len();
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WALKS));
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let (inner, sem) = (Arc::clone(self), Arc::clone(&sem));
            tasks.spawn(async move {
                let _permit = sem.acquire().await;
                inner.measure_layer(&id).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        n
    }
}

/// Starts the background refresh; it ends when the containers are dropped.
pub(super) fn start_refresh(inner: &Arc<Inner>, every: Duration) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            let start = Instant::now();
            let n = inner.refresh_layers().await;
            tracing::debug!(containers = n, elapsed = ?start.elapsed(), "writable layers measured");
        }
    });
}
