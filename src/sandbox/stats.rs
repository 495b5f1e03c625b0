//! PodSandboxStats and ListPodSandboxStats: CPU, memory and process count from the pod cgroup, network
//! bytes from the pod netns (`/proc/<pause pid>/net/dev`).

use cri_api::v1;

use super::record::PodRecord;
use super::status::labels_match;
use super::{Inner, Sandboxes};
use crate::Result;

fn u(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

/// Interface counters from a `/proc/<pid>/net/dev` text: (name, rx bytes, rx errors, tx bytes, tx errors).
pub fn parse_net_dev(text: &str) -> Vec<(String, u64, u64, u64, u64)> {
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
    fn stats_of(&self, rec: &PodRecord) -> v1::PodSandboxStats {
        let now = crate::state::now_nanos();
        let cg = rec
            .cgroup
            .as_deref()
            .and_then(|c| crate::cgroups::stats(c).ok())
            .unwrap_or_default();
        let network = if rec.namespaces.host_network() || rec.pause_pid == 0 || !self.is_ready(rec) {
            None
        } else {
            let text =
                std::fs::read_to_string(format!("/proc/{}/net/dev", rec.pause_pid)).unwrap_or_default();
            let ifs: Vec<v1::NetworkInterfaceUsage> = parse_net_dev(&text)
                .into_iter()
                .filter(|(n, ..)| n != "lo")
                .map(|(name, rx, rxe, tx, txe)| v1::NetworkInterfaceUsage {
                    name,
                    rx_bytes: u(rx),
                    rx_errors: u(rxe),
                    tx_bytes: u(tx),
                    tx_errors: u(txe),
                })
                .collect();
            Some(v1::NetworkUsage {
                timestamp: now,
                default_interface: ifs.iter().find(|i| i.name == "eth0").or(ifs.first()).cloned(),
                interfaces: ifs,
            })
        };
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
                cpu: Some(v1::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u(cg.cpu_usage_ns),
                    usage_nano_cores: None,
                    psi: None,
                }),
                memory: Some(v1::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u(cg.memory_working_set),
                    available_bytes: None,
                    usage_bytes: u(cg.memory_usage),
                    rss_bytes: u(cg.memory_rss),
                    page_faults: u(cg.page_faults),
                    major_page_faults: u(cg.major_page_faults),
                    psi: None,
                }),
                network,
                process: Some(v1::ProcessUsage {
                    timestamp: now,
                    process_count: u(cg.pids),
                }),
                containers: Vec::new(),
                io: None,
            }),
            windows: None,
        }
    }
}

impl Sandboxes {
    /// PodSandboxStats of one pod.
    pub fn stats(&self, id: &str) -> Result<v1::PodSandboxStats> {
        let rec = self.inner.get(id)?;
        Ok(self.inner.stats_of(&rec))
    }

    /// ListPodSandboxStats: ready pods matching the filter.
    pub fn list_stats(
        &self,
        id: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> Vec<v1::PodSandboxStats> {
        self.inner
            .snapshot()
            .iter()
            .filter(|r| id.is_empty() || r.id.starts_with(id))
            .filter(|r| labels_match(labels, &r.labels))
            .filter(|r| self.inner.is_ready(r))
            .map(|r| self.inner.stats_of(r))
            .collect()
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
