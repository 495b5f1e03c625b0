//! ContainerStats / ListContainerStats: CPU (cumulative, and nanocores from the previous sample),
//! memory (working set, usage, RSS, page faults) from the container's cgroup, and the writable layer's
//! bytes and inodes. Walking a writable layer costs a directory walk, so layer usage is cached
//! ([`LayerUsage`], one entry per container, dropped with it): a container's first stats walk its layer,
//! later ones answer from the cache and have it refreshed in the background once older than
//! [`LAYER_USAGE_TTL`], one refresh at a time (as containerd's snapshot syncer does every 10 s).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cri_api::v1;

use super::record::ContainerRecord;
use super::status::ListFilter;
use super::{Inner, lock, rootfs};
use crate::Result;
use crate::daemon::Daemon;

fn u(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

/// How old a cached layer usage may be before a stats call has it walked again.
pub const LAYER_USAGE_TTL: Duration = Duration::from_secs(10);

/// Writable-layer usage (bytes, inodes) per container, with when it was walked.
#[derive(Default)]
pub(crate) struct LayerUsage {
    cache: Mutex<HashMap<String, (u64, u64, Instant)>>,
    refreshing: Arc<AtomicBool>,
}

impl LayerUsage {
    /// Drops a container's entry.
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.cache).remove(id);
    }
}

impl Inner {
    /// The layer usage of `ids`: walked now for those never walked, from the cache for the others;
    /// stale entries are walked again by one background refresh.
    async fn layer_usage(self: &Arc<Self>, ids: &[&str]) -> HashMap<String, (u64, u64)> {
        let now = Instant::now();
        let (mut out, mut missing, mut stale) = (HashMap::new(), Vec::new(), Vec::new());
        {
            let cache = lock(&self.layer_usage.cache);
            for id in ids {
                match cache.get(*id) {
                    Some(&(b, i, at)) => {
                        out.insert(id.to_string(), (b, i));
                        if now.duration_since(at) > LAYER_USAGE_TTL {
                            stale.push(id.to_string());
                        }
                    }
                    None => missing.push(id.to_string()),
                }
            }
        }
        if !missing.is_empty() {
            let walked = self.walk_layers(missing).await;
            out.extend(walked);
        }
        if !stale.is_empty() && !self.layer_usage.refreshing.swap(true, Ordering::AcqRel) {
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                inner.walk_layers(stale).await;
                inner.layer_usage.refreshing.store(false, Ordering::Release);
            });
        }
        out
    }

    /// Walks the layers of `ids` (in one blocking task) into the cache; returns what it found.
    async fn walk_layers(self: &Arc<Self>, ids: Vec<String>) -> Vec<(String, (u64, u64))> {
        let dirs: Vec<(String, PathBuf)> = ids
            .into_iter()
            .map(|id| {
                let upper = self.rootfs_paths(&id).upper();
                (id, upper)
            })
            .collect();
        let walked = tokio::task::spawn_blocking(move || {
            dirs.into_iter()
                .map(|(id, d)| (id, rootfs::usage(&d)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let at = Instant::now();
        let recs = lock(&self.records);
        let mut cache = lock(&self.layer_usage.cache);
        for (id, (b, i)) in &walked {
            // Not for a container removed meanwhile.
            if recs.contains_key(id) {
                cache.insert(id.clone(), (*b, *i, at));
            }
        }
        walked
    }

    /// Stats of one container (an exited one has no cgroup left: attributes and writable layer only).
    fn stats(&self, r: &ContainerRecord, layer: (u64, u64)) -> v1::ContainerStats {
        let now = crate::state::now_nanos();
        let cg = if r.exited {
            None
        } else {
            crate::cgroups::stats(&r.cgroup).ok()
        };
        let (cpu, memory) = match cg {
            Some(s) => {
                let prev = lock(&self.cpu_samples).insert(r.id.clone(), (now, s.cpu_usage_ns));
                let nano_cores = prev.and_then(|(t, c)| {
                    let dt = now.checked_sub(t).filter(|d| *d > 0)? as u128;
                    let dc = s.cpu_usage_ns.checked_sub(c)? as u128;
                    Some((dc * 1_000_000_000 / dt) as u64)
                });
                let limit = r.resources.memory_limit_in_bytes.max(0) as u64;
                (
                    Some(v1::CpuUsage {
                        timestamp: now,
                        usage_core_nano_seconds: u(s.cpu_usage_ns),
                        usage_nano_cores: nano_cores.and_then(u),
                        psi: None,
                    }),
                    Some(v1::MemoryUsage {
                        timestamp: now,
                        working_set_bytes: u(s.memory_working_set),
                        available_bytes: if limit > 0 {
                            u(limit.saturating_sub(s.memory_working_set))
                        } else {
                            None
                        },
                        usage_bytes: u(s.memory_usage),
                        rss_bytes: u(s.memory_rss),
                        page_faults: u(s.page_faults),
                        major_page_faults: u(s.major_page_faults),
                        psi: None,
                    }),
                )
            }
            None => (None, None),
        };
        let (bytes, inodes) = layer;
        v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: r.id.clone(),
                metadata: Some(v1::ContainerMetadata {
                    name: r.name.clone(),
                    attempt: r.attempt,
                }),
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
            }),
            cpu,
            memory,
            writable_layer: Some(v1::FilesystemUsage {
                timestamp: now,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: self.dirs.container_records().display().to_string(),
                }),
                used_bytes: u(bytes),
                inodes_used: u(inodes),
            }),
            swap: None,
            io: None,
        }
    }
}

impl Daemon {
    /// ContainerStats.
    pub async fn container_stats(&self, id: &str) -> Result<v1::ContainerStats> {
        let r = self.containers.get(id)?;
        let inner = &self.containers.inner;
        let layer = inner.layer_usage(&[&r.id]).await;
        Ok(inner.stats(&r, layer.get(&r.id).copied().unwrap_or((0, 0))))
    }

    /// ListContainerStats.
    pub async fn list_container_stats(&self, f: &ListFilter) -> Vec<v1::ContainerStats> {
        let recs = self.containers.list(f);
        let inner = &self.containers.inner;
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        let layers = inner.layer_usage(&ids).await;
        recs.iter()
            .map(|r| inner.stats(r, layers.get(&r.id).copied().unwrap_or((0, 0))))
            .collect()
    }
}
