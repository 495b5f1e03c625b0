//! `make bench`: drives a CRI runtime over gRPC and measures what operators compare — pod and container
//! lifecycle latencies (sequential and 2 at a time), ExecSync, pulls, ListContainers with 100 containers,
//! and the memory of the daemon and of the per-container monitors — for crust and, when installed, for
//! containerd in the same run, plus a floor made of the same parts called directly (ip netns, the CNI
//! plugins, runc); and a node scenario (`node`): 110 pods x 3 containers under kubelet's polling, a
//! burst of 30 pods, and a cold restart under the running pods. When critest is on PATH, cri-tools' own
//! container benchmark (`critest --benchmark`) runs against each runtime too (`critest`).

pub mod containerd;
pub mod critest;
pub mod floor;
pub mod memory;
pub mod node;
pub mod node_report;
pub mod report;
pub mod suite;

use std::time::Duration;

/// Latency samples of one row.
#[derive(Default, Clone, Debug, serde::Serialize)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one duration, in milliseconds.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    /// The q-quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[idx])
    }

    /// Median.
    pub fn p50(&self) -> Option<f64> {
        self.quantile(0.5)
    }

    /// 95th percentile.
    pub fn p95(&self) -> Option<f64> {
        self.quantile(0.95)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let s = Samples((1..=100).map(f64::from).collect());
        assert_eq!(s.p50(), Some(50.0));
        assert_eq!(s.p95(), Some(95.0));
        assert_eq!(Samples::default().p50(), None);
    }
}
