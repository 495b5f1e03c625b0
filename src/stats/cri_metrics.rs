//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor's metric names and labels, so that
//! kubelet's `/metrics/cadvisor` (with `PodAndContainerStatsFromCRI`) serves crust's pods and
//! containers under the series dashboards already query.
//!
//! Every series has cAdvisor's labels `container`, `id` (the cgroup path), `image`, `name` (the
//! container ID), `namespace`, `pod`, then its own (`cpu`, `interface`, `device`). Pod-level series
//! (the pod cgroup and the pod's network) have `container=""`, as cAdvisor's pod cgroup series do.
//! The CRI carries integer values: seconds are whole seconds. Metrics the kernel does not offer
//! (swap without accounting, PSI on cgroup v1) are left out, not reported as zero.

use cri_api::v1;

use crate::cgroups::CgroupStats;

/// cAdvisor's labels, in order, on every series.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const COUNTER: v1::MetricType = v1::MetricType::Counter;
const GAUGE: v1::MetricType = v1::MetricType::Gauge;

/// (name, help, extra labels).
const DESCRIPTORS: &[(&str, &str, &[&str])] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        &["cpu"],
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        &[],
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        &[],
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
    ),
    ("container_memory_rss", "Size of RSS in bytes.", &[]),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        &[],
    ),
    ("container_memory_swap", "Container swap usage in bytes.", &[]),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        &[],
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        &[],
    ),
    (
        "container_threads",
        "Number of threads running inside the container",
        &[],
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        &["device"],
    ),
    (
        "container_fs_inodes_used",
        "Number of inodes used by the container on this filesystem (crust: its writable layer).",
        &["device"],
    ),
    (
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read",
        &["device"],
    ),
    (
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written",
        &["device"],
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        &["interface"],
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        &["interface"],
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        &["interface"],
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        &["interface"],
    ),
    (
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        &[],
    ),
    (
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        &[],
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        &[],
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        &[],
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
        &[],
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        &[],
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter",
        &[],
    ),
];

/// ListMetricDescriptors.
pub fn descriptors() -> Vec<v1::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, extra)| v1::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(extra.iter())
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// The values of [`BASE_LABELS`] for one container, or a pod (`container` and `image` empty,
/// `name` the pod sandbox ID).
pub struct Identity {
    pub container: String,
    pub cgroup: String,
    pub image: String,
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

/// Collects one object's metrics.
struct Out<'a> {
    base: [&'a str; 6],
    now: i64,
    metrics: Vec<v1::Metric>,
}

impl Out<'_> {
    fn push(&mut self, name: &str, kind: v1::MetricType, extra: &[&str], value: u64) {
        let mut label_values: Vec<String> = self.base.iter().map(|s| s.to_string()).collect();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.metrics.push(v1::Metric {
            name: name.to_string(),
            timestamp: self.now,
            metric_type: kind as i32,
            label_values,
            value: Some(v1::UInt64Value { value }),
        });
    }

    fn cgroup(&mut self, s: &CgroupStats) {
        const S: u64 = 1_000_000_000;
        self.push(
            "container_cpu_usage_seconds_total",
            COUNTER,
            &["total"],
            s.cpu_usage_ns / S,
        );
        self.push(
            "container_cpu_user_seconds_total",
            COUNTER,
            &[],
            s.cpu_user_ns / S,
        );
        self.push(
            "container_cpu_system_seconds_total",
            COUNTER,
            &[],
            s.cpu_system_ns / S,
        );
        self.push("container_memory_usage_bytes", GAUGE, &[], s.memory_usage);
        self.push(
            "container_memory_working_set_bytes",
            GAUGE,
            &[],
            s.memory_working_set,
        );
        self.push("container_memory_rss", GAUGE, &[], s.memory_rss);
        self.push("container_memory_cache", GAUGE, &[], s.memory_cache);
        if let Some(sw) = s.swap_usage {
            self.push("container_memory_swap", GAUGE, &[], sw);
        }
        // cAdvisor reports 0 for no limit.
        self.push(
            "container_spec_memory_limit_bytes",
            GAUGE,
            &[],
            s.memory_limit.unwrap_or(0),
        );
        self.push("container_oom_events_total", COUNTER, &[], s.oom_kills);
        self.push("container_processes", GAUGE, &[], s.processes);
        self.push("container_threads", GAUGE, &[], s.threads);
        if let (Some(r), Some(w)) = (s.io_read_bytes, s.io_write_bytes) {
            self.push("container_fs_reads_bytes_total", COUNTER, &[""], r);
            self.push("container_fs_writes_bytes_total", COUNTER, &[""], w);
        }
        for (what, p) in [("cpu", s.cpu_psi), ("memory", s.memory_psi), ("io", s.io_psi)] {
            let Some(p) = p else { continue };
            let waiting = format!("container_pressure_{what}_waiting_seconds_total");
            self.push(&waiting, COUNTER, &[], p.some.total_us / 1_000_000);
            if let Some(full) = p.full {
                let stalled = format!("container_pressure_{what}_stalled_seconds_total");
                self.push(&stalled, COUNTER, &[], full.total_us / 1_000_000);
            }
        }
        self.push(
            "container_last_seen",
            GAUGE,
            &[],
            u64::try_from(self.now / 1_000_000_000).unwrap_or(0),
        );
    }
}

fn out(id: &Identity, now: i64) -> Out<'_> {
    Out {
        base: [
            &id.container,
            &id.cgroup,
            &id.image,
            &id.name,
            &id.namespace,
            &id.pod,
        ],
        now,
        metrics: Vec::new(),
    }
}

/// A container's metrics: its cgroup (when it has one), its writable layer (bytes, inodes, and the
/// directory as `device`) and its start time.
pub fn container(
    id: &Identity,
    s: Option<&CgroupStats>,
    layer: Option<(&str, u64, u64)>,
    started_at_ns: i64,
    now: i64,
) -> Vec<v1::Metric> {
    let mut o = out(id, now);
    if let Some(s) = s {
        o.cgroup(s);
    }
    if let Some((dev, bytes, inodes)) = layer {
        o.push("container_fs_usage_bytes", GAUGE, &[dev], bytes);
        o.push("container_fs_inodes_used", GAUGE, &[dev], inodes);
    }
    if started_at_ns > 0 {
        o.push(
            "container_start_time_seconds",
            GAUGE,
            &[],
            u64::try_from(started_at_ns / 1_000_000_000).unwrap_or(0),
        );
    }
    o.metrics
}

/// A pod's metrics: its cgroup and its interfaces (name, rx bytes, rx errors, tx bytes, tx errors).
pub fn pod(
    id: &Identity,
    s: Option<&CgroupStats>,
    interfaces: &[(String, u64, u64, u64, u64)],
    now: i64,
) -> Vec<v1::Metric> {
    let mut o = out(id, now);
    if let Some(s) = s {
        o.cgroup(s);
    }
    for (name, rx, rxe, tx, txe) in interfaces {
        let l = [name.as_str()];
        o.push("container_network_receive_bytes_total", COUNTER, &l, *rx);
        o.push("container_network_receive_errors_total", COUNTER, &l, *rxe);
        o.push("container_network_transmit_bytes_total", COUNTER, &l, *tx);
        o.push("container_network_transmit_errors_total", COUNTER, &l, *txe);
    }
    o.metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_descriptor_and_its_labels() {
        let ds = descriptors();
        let id = Identity {
            container: "c".into(),
            cgroup: "/crust/p/c".into(),
            image: "busybox".into(),
            name: "abc".into(),
            namespace: "ns".into(),
            pod: "p".into(),
        };
        let s = CgroupStats {
            cpu_usage_ns: 3_500_000_000,
            swap_usage: Some(1),
            io_read_bytes: Some(1),
            io_write_bytes: Some(2),
            cpu_psi: Some(Default::default()),
            memory_psi: Some(crate::cgroups::Psi {
                full: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut all = container(&id, Some(&s), Some(("/var/lib/crust", 10, 2)), 5_000_000_000, 9);
        all.extend(pod(&id, Some(&s), &[("eth0".into(), 1, 0, 2, 0)], 9));
        for m in &all {
            let d = ds
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let cpu = all
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.value.unwrap().value, 3);
        assert_eq!(cpu.label_values.last().unwrap(), "total");
        assert!(
            all.iter()
                .any(|m| m.name == "container_pressure_memory_stalled_seconds_total")
        );
        assert!(
            !all.iter()
                .any(|m| m.name == "container_pressure_cpu_stalled_seconds_total")
        );
        assert!(
            !all.iter()
                .any(|m| m.name == "container_pressure_io_waiting_seconds_total")
        );
        let names: std::collections::HashSet<&str> = ds.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), ds.len(), "duplicate descriptors");
    }
}
