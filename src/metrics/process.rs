//! crustd's process metrics under the names every Prometheus client library uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` at each
//! scrape (prometheus-client ships no process collector), and `crust_tokio_alive_tasks`, the tasks alive
//! in crustd's async runtime.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self` says about crustd.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

/// Fields of a `/proc/<pid>/stat` line after the command name (which may hold spaces and parens):
/// index 0 is the state (field 3 of proc(5)).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_ascii_whitespace().collect())
        .unwrap_or_default()
}

/// Parses `/proc/self/stat` and `/proc/stat`'s `btime` into CPU seconds, virtual and resident bytes
/// and the start time, given the clock tick rate and page size.
pub fn parse(stat: &str, proc_stat: &str, ticks: f64, page: u64) -> ProcessStats {
    let f = stat_fields(stat);
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24 (1-based) → minus 3 here.
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    ProcessStats {
        cpu_seconds: (num(11) + num(12)) as f64 / ticks,
        resident_bytes: num(21) * page,
        virtual_bytes: num(20),
        open_fds: 0,
        max_fds: 0,
        start_time_seconds: btime as f64 + num(19) as f64 / ticks,
    }
}

/// Reads crustd's own figures now.
pub fn read() -> ProcessStats {
    // SAFETY: sysconf takes a constant and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let proc_stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut p = parse(&stat, &proc_stat, ticks, page);
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    p.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    p
}

/// Encodes [`read`] at each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = read();
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        // The scrape is answered on crustd's runtime; elsewhere (a test) there is none to count.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let g = ConstGauge::new(h.metrics().num_alive_tasks() as f64);
            g.encode(enc.encode_descriptor(
                "crust_tokio_alive_tasks",
                "Tasks alive in crustd's async runtime (a count that grows without bound is a leak)",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "1234 (crust d) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 4 0 1000 \
                    104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = parse(stat, "cpu  1 2 3\nbtime 1700000000\n", 100.0, 4096);
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 2560 * 4096);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
    }

    #[test]
    fn reads_itself() {
        let p = read();
        assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.start_time_seconds > 1e9);
    }
}
