//! ContainerStats / ListContainerStats: CPU (cumulative, and nanocores from the previous sample),
//! memory (working set, usage, RSS, page faults) from the container's cgroup, and the writable layer's
//! bytes and inodes.

use cri_api::v1;

use super::record::ContainerRecord;
use super::status::ListFilter;
use super::{Inner, lock, rootfs};
use crate::Result;
use crate::daemon::Daemon;

fn u(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

impl Inner {
    /// Stats of one container (an exited one has no cgroup left: attributes and writable layer only).
    async fn stats(&self, r: &ContainerRecord) -> v1::ContainerStats {
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
        let upper = self.rootfs_paths(&r.id).upper();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || rootfs::usage(&upper))
            .await
            .unwrap_or((0, 0));
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
        Ok(self.containers.inner.stats(&r).await)
    }

    /// ListContainerStats.
    pub async fn list_container_stats(&self, f: &ListFilter) -> Vec<v1::ContainerStats> {
        let mut out = Vec::new();
        for r in self.containers.list(f) {
            out.push(self.containers.inner.stats(&r).await);
        }
        out
    }
}
