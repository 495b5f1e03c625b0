//! ContainerStats / ListContainerStats, the containers of a PodSandboxStats, and the container
//! series of ListPodSandboxMetrics: CPU (cumulative, and nanocores from the previous sample),
//! memory, swap and IO pressure from the container's cgroup (see [`crate::stats`]), and the writable
//! layer's bytes and inodes from the background-refreshed cache (`layer_usage`).

use cri_api::v1;

use super::record::ContainerRecord;
use super::status::ListFilter;
use super::{Inner, Step};
use crate::Result;
use crate::cgroups::CgroupStats;
use crate::daemon::Daemon;
use crate::stats::{self, u};

impl Inner {
    /// The cgroup usage of a container that runs (an exited one has no cgroup left).
    fn cgroup_stats(r: &ContainerRecord) -> Option<CgroupStats> {
        if r.exited || r.started_at == 0 {
            return None;
        }
        crate::cgroups::stats(&r.cgroup).ok()
    }

    /// Stats of one container.
    pub(super) async fn stats(&self, r: &ContainerRecord) -> v1::ContainerStats {
        let now = crate::state::now_nanos();
        let cg = Self::cgroup_stats(r);
        let layer = self.layer_usage(&r.id).await;
        let (cpu, memory, swap, io) = match &cg {
            Some(s) => {
                let nano_cores = self.cpu_samples.nano_cores(&r.id, now, s.cpu_usage_ns);
                (
                    Some(stats::cpu(s, now, nano_cores)),
                    Some(stats::memory(s, now)),
                    stats::swap(s, now),
                    stats::io(s, now),
                )
            }
            None => (None, None, None, None),
        };
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
                timestamp: layer.timestamp,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: self.dirs.container_records().display().to_string(),
                }),
                used_bytes: u(layer.bytes),
                inodes_used: u(layer.inodes),
            }),
            swap,
            io,
        }
    }

    /// The metrics of one container (pod `namespace`/`pod` for the labels).
    async fn metrics(&self, r: &ContainerRecord, namespace: &str, pod: &str) -> v1::ContainerMetrics {
        let now = crate::state::now_nanos();
        let cg = Self::cgroup_stats(r);
        let layer = self.layer_usage(&r.id).await;
        let device = self.dirs.container_records().display().to_string();
        let id = stats::cri_metrics::Identity {
            container: r.name.clone(),
            cgroup: format!("/{}", r.cgroup.trim_start_matches('/')),
            image: r.image.clone(),
            name: r.id.clone(),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        v1::ContainerMetrics {
            container_id: r.id.clone(),
            metrics: stats::cri_metrics::container(
                &id,
                cg.as_ref(),
                Some((&device, layer.bytes, layer.inodes)),
                r.started_at,
                now,
            ),
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

    /// The running containers of a pod (PodSandboxStats' `linux.containers`).
    fn running_in_pod(&self, pod_id: &str) -> Vec<ContainerRecord> {
        let f = ListFilter {
            pod_id: pod_id.to_string(),
            ..Default::default()
        };
        self.containers
            .list(&f)
            .into_iter()
            .filter(|r| r.pod_id == pod_id && r.step == Step::Created && !r.exited && r.started_at != 0)
            .collect()
    }

    /// Stats of a pod's running containers.
    pub async fn pod_container_stats(&self, pod_id: &str) -> Vec<v1::ContainerStats> {
        let mut out = Vec::new();
        for r in self.running_in_pod(pod_id) {
            out.push(self.containers.inner.stats(&r).await);
        }
        out
    }

    /// Metrics of a pod's running containers.
    pub async fn pod_container_metrics(
        &self,
        pod_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Vec<v1::ContainerMetrics> {
        let mut out = Vec::new();
        for r in self.running_in_pod(pod_id) {
            out.push(self.containers.inner.metrics(&r, namespace, pod).await);
        }
        out
    }
}
