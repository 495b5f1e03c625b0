//! CRI stats and metrics of pods and containers, shared by `container` and `sandbox`: cgroup usage
//! ([`crate::cgroups::CgroupStats`]) as CRI messages (CPU with `usage_nano_cores`, memory, swap, IO
//! pressure; PSI only where the kernel offers it), the last CPU sample per container or pod that
//! nanocores need ([`CpuSampler`]), and the cAdvisor-named metrics of `ListPodSandboxMetrics`
//! ([`cri_metrics`]).

pub mod cri_metrics;

use std::collections::HashMap;
use std::sync::Mutex;

use cri_api::v1;

use crate::cgroups::{CgroupStats, Psi, PsiLine};

/// A `UInt64Value`.
pub fn u(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

/// The last (timestamp ns, cumulative CPU ns) per container or pod, for nanocores.
#[derive(Default)]
pub struct CpuSampler(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSampler {
    /// Records a sample of `key`; returns the average usage in nanocores since the previous one
    /// (None on the first sample, or when the counter went back: a new cgroup under the same key).
    pub fn nano_cores(&self, key: &str, now: i64, cpu_ns: u64) -> Option<u64> {
        let prev = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), (now, cpu_ns));
        let (t, c) = prev?;
        let dt = u128::try_from(now.checked_sub(t).filter(|d| *d > 0)?).ok()?;
        let dc = u128::from(cpu_ns.checked_sub(c)?);
        u64::try_from(dc * 1_000_000_000 / dt).ok()
    }

    /// Forgets `key` (removed container or pod).
    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn psi_data(l: &PsiLine) -> v1::PsiData {
    v1::PsiData {
        total: l.total_us,
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    }
}

/// PSI as the CRI has it.
pub fn psi(p: Option<Psi>) -> Option<v1::PsiStats> {
    let p = p?;
    Some(v1::PsiStats {
        some: Some(psi_data(&p.some)),
        full: p.full.as_ref().map(psi_data),
    })
}

/// CPU usage.
pub fn cpu(s: &CgroupStats, now: i64, nano_cores: Option<u64>) -> v1::CpuUsage {
    v1::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: u(s.cpu_usage_ns),
        usage_nano_cores: nano_cores.and_then(u),
        psi: psi(s.cpu_psi),
    }
}

/// Memory usage; `available_bytes` only under a limit.
pub fn memory(s: &CgroupStats, now: i64) -> v1::MemoryUsage {
    v1::MemoryUsage {
        timestamp: now,
        working_set_bytes: u(s.memory_working_set),
        available_bytes: s
            .memory_limit
            .and_then(|l| u(l.saturating_sub(s.memory_working_set))),
        usage_bytes: u(s.memory_usage),
        rss_bytes: u(s.memory_rss),
        page_faults: u(s.page_faults),
        major_page_faults: u(s.major_page_faults),
        psi: psi(s.memory_psi),
    }
}

/// Swap usage, where swap is accounted.
pub fn swap(s: &CgroupStats, now: i64) -> Option<v1::SwapUsage> {
    let used = s.swap_usage?;
    Some(v1::SwapUsage {
        timestamp: now,
        swap_available_bytes: s.swap_limit.and_then(|l| u(l.saturating_sub(used))),
        swap_usage_bytes: u(used),
    })
}

/// IO pressure, where the kernel has it.
pub fn io(s: &CgroupStats, now: i64) -> Option<v1::IoUsage> {
    Some(v1::IoUsage {
        timestamp: now,
        psi: Some(psi(s.io_psi)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_from_two_samples() {
        let s = CpuSampler::default();
        assert_eq!(s.nano_cores("a", 1_000_000_000, 0), None);
        // Half a core over one second.
        assert_eq!(s.nano_cores("a", 2_000_000_000, 500_000_000), Some(500_000_000));
        // A counter that went back (a new cgroup) gives nothing, then counts from there.
        assert_eq!(s.nano_cores("a", 3_000_000_000, 10), None);
        assert_eq!(s.nano_cores("a", 3_000_000_000, 20), None);
        s.forget("a");
        assert_eq!(s.nano_cores("a", 4_000_000_000, 30), None);
    }

    #[test]
    fn messages_only_with_what_the_kernel_offers() {
        let mut s = CgroupStats {
            memory_working_set: 100,
            memory_limit: Some(1000),
            ..Default::default()
        };
        assert_eq!(memory(&s, 1).available_bytes.unwrap().value, 900);
        assert!(swap(&s, 1).is_none() && io(&s, 1).is_none());
        assert!(cpu(&s, 1, None).psi.is_none());
        s.swap_usage = Some(10);
        s.io_psi = Some(Psi::default());
        assert_eq!(swap(&s, 1).unwrap().swap_usage_bytes.unwrap().value, 10);
        assert!(io(&s, 1).unwrap().psi.unwrap().full.is_none());
    }
}
