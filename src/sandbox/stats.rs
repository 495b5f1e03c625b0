//! PodSandboxStats, ListPodSandboxStats and ListPodSandboxMetrics: CPU (with nanocores from the
//! previous sample), memory, swap, IO pressure and process count from the pod cgroup, network
//! bytes from the pod netns (`/proc/<pause pid>/net/dev`), and the pod's running containers
//! (`linux.containers`, `container_metrics`) from `container`.

use std::collections::HashMap;

use cri_api::v1;

use super::Inner;
use super::record::PodRecord;
use super::status::labels_match;
use crate::Result;
use crate::cgroups::CgroupStats;
use crate::daemon::Daemon;
use crate::stats::{self, u};

/// One interface's counters: (name, rx bytes, rx errors, tx bytes, tx errors).
pub type IfCounters = (String, u64, u64, u64, u64);

/// Interface counters from a `/proc/<pid>/net/dev` text.
pub fn parse_net_dev(text: &str) -> Vec<IfCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_ascii_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() < 11 {
                return None;
            }
            Some((name.trim().to_string(), f[0], f[2], f[8], f[10]))
        })
        .collect()
}

impl Inner {
    /// The pod's interfaces but `lo`, read in its netns through the pause (none on the host network
    /// or when the pod is not ready).
    fn interfaces(&self, rec: &PodRecord) -> Option<Vec<IfCounters>> {
        if rec.namespaces.host_network() || rec.pause_pid == 0 || !self.is_ready(rec) {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.pause_pid)).unwrap_or_default();
        Some(
            parse_net_dev(&text)
                .into_iter()
                .filter(|(n, ..)| n != "lo")
                .collect(),
        )
    }

    fn cgroup_stats(rec: &PodRecord) -> Option<CgroupStats> {
        rec.cgroup.as_deref().and_then(|c| crate::cgroups::stats(c).ok())
    }

    fn stats_of(&self, rec: &PodRecord) -> v1::PodSandboxStats {
        let now = crate::state::now_nanos();
        let cg = Self::cgroup_stats(rec).unwrap_or_default();
        let nano_cores = self.cpu_samples.nano_cores(&rec.id, now, cg.cpu_usage_ns);
        let network = self.interfaces(rec).map(|ifs| {
            let ifs: Vec<v1::NetworkInterfaceUsage> = ifs
                .into_iter()
                .map(|(name, rx, rxe, tx, txe)| v1::NetworkInterfaceUsage {
                    name,
                    rx_bytes: u(rx),
                    rx_errors: u(rxe),
                    tx_bytes: u(tx),
                    tx_errors: u(txe),
                })
                .collect();
            v1::NetworkUsage {
                timestamp: now,
                default_interface: ifs.iter().find(|i| i.name == "eth0").or(ifs.first()).cloned(),
                interfaces: ifs,
            }
        });
        v1::PodSandboxStats {
            attributes: Some(v1::PodSandboxAttributes {
                id: rec.id.clone(),
                metadata: Some(v1::PodSandboxMetadata {
                    name: rec.name.clone(),
                    uid: rec.uid.clone(),
                    namespace: rec.namespace.clone(),
                    attempt: rec.attempt,
                }),
                labels: rec.labels.clone(),
                annotations: rec.annotations.clone(),
            }),
            linux: Some(v1::LinuxPodSandboxStats {
                cpu: Some(stats::cpu(&cg, now, nano_cores)),
                memory: Some(stats::memory(&cg, now)),
                network,
                process: Some(v1::ProcessUsage {
                    timestamp: now,
                    process_count: u(cg.processes),
                }),
                containers: Vec::new(),
                io: stats::io(&cg, now),
            }),
            windows: None,
        }
    }

    /// Ready pods matching the filter.
    fn ready_matching(&self, id: &str, labels: &HashMap<String, String>) -> Vec<PodRecord> {
        self.ready_page(id, labels, None, usize::MAX).0
    }

    /// Up to `n` ready pods matching the filter after the ID `from` (from the first when `None`),
    /// in ID order, and where the next page starts (`None`: no pod is left).
    pub(super) fn ready_page(
        &self,
        id: &str,
        labels: &HashMap<String, String>,
        from: Option<&str>,
        n: usize,
    ) -> (Vec<PodRecord>, Option<String>) {
        let pods = self.pods.read();
        let watched = self.running.watched();
        let mut out = Vec::new();
        for (key, r) in crate::state::after(&pods, from) {
            if (id.is_empty() || r.id.starts_with(id))
                && labels_match(labels, &r.labels)
                && self.is_ready_among(r, &watched)
            {
                out.push(r.clone());
            }
            if out.len() == n {
                return (out, Some(key.clone()));
            }
        }
        (out, None)
    }
}

impl Daemon {
    /// PodSandboxStats of one pod, with its running containers.
    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<v1::PodSandboxStats> {
        let rec = self.sandboxes.inner.get(id)?;
        Ok(self.pod_stats_of(&rec).await)
    }

    /// ListPodSandboxStats: ready pods matching the filter, with their running containers.
    pub async fn list_pod_sandbox_stats(
        &self,
        id: &str,
        labels: &HashMap<String, String>,
    ) -> Vec<v1::PodSandboxStats> {
        let mut out = Vec::new();
        for rec in self.sandboxes.inner.ready_matching(id, labels) {
            out.push(self.pod_stats_of(&rec).await);
        }
        out
    }

    /// One pod's entry of ListPodSandboxStats.
    pub(super) async fn pod_stats_of(&self, rec: &PodRecord) -> v1::PodSandboxStats {
        let mut s = self.sandboxes.inner.stats_of(rec);
        if let Some(l) = s.linux.as_mut() {
            l.containers = self.pod_container_stats(&rec.id).await;
        }
        s
    }

    /// ListPodSandboxMetrics: every ready pod's cgroup and network series, and its running
    /// containers' series (see [`crate::stats::cri_metrics`]).
    pub async fn list_pod_sandbox_metrics(&self) -> Vec<v1::PodSandboxMetrics> {
        let mut out = Vec::new();
        for rec in self.sandboxes.inner.ready_matching("", &HashMap::new()) {
            out.push(self.pod_metrics_of(&rec).await);
        }
        out
    }

    /// One pod's entry of ListPodSandboxMetrics.
    pub(super) async fn pod_metrics_of(&self, rec: &PodRecord) -> v1::PodSandboxMetrics {
        let now = crate::state::now_nanos();
        let id = stats::cri_metrics::Identity {
            container: String::new(),
            cgroup: rec
                .cgroup
                .as_deref()
                .map(|c| format!("/{}", c.trim_start_matches('/')))
                .unwrap_or_default(),
            image: String::new(),
            name: rec.id.clone(),
            namespace: rec.namespace.clone(),
            pod: rec.name.clone(),
        };
        let cg = Inner::cgroup_stats(rec);
        let ifs = self.sandboxes.inner.interfaces(rec).unwrap_or_default();
        v1::PodSandboxMetrics {
            pod_sandbox_id: rec.id.clone(),
            metrics: stats::cri_metrics::pod(&id, cg.as_ref(), &ifs, now),
            container_metrics: self
                .pod_container_metrics(&rec.id, &rec.namespace, &rec.name)
                .await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_parsing() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    2048      10    3    0    0     0          0         0     4096      20    4    0    0     0       0          0\n";
        let v = parse_net_dev(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], ("eth0".to_string(), 2048, 3, 4096, 4));
    }
}
