//! The soak's measurements of crustd and its monitors (resident memory, fds, threads, alive tasks) and
//! the least-squares line it fits through them.

use std::path::{Path, PathBuf};

use harness::Crustd;

/// `pid`'s threads by name (`/proc/<pid>/task/*/comm`, 15 characters), each with its count.
pub(super) fn thread_names(pid: u32) -> String {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(n) = std::fs::read_to_string(t.path().join("comm")) {
            *names.entry(n.trim().to_string()).or_default() += 1;
        }
    }
    names
        .iter()
        .map(|(n, c)| format!("{n} x{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A figure the soak fits a line through: its name, unit, and how to read it from a sample.
pub(super) type Series = (&'static str, &'static str, fn(&Sample) -> Option<f64>);

/// One measurement of crustd and its monitors.
#[derive(Debug, Default, Clone)]
pub(super) struct Sample {
    pub(super) rss_kib: u64,
    pub(super) fds: usize,
    pub(super) threads: u64,
    /// `crust_tokio_alive_tasks` from crustd's /metrics.
    pub(super) tasks: Option<u64>,
    pub(super) monitors: usize,
    pub(super) monitor_steady_kib: u64,
    pub(super) monitor_mean_kib: u64,
    pub(super) monitor_max_kib: u64,
}

impl Sample {
    pub(super) fn take(c: &Crustd, metrics_addr: &str, steady: &str) -> Sample {
        let pid = c.pid().expect("crustd runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mons = monitors(&c.state);
        let steady_dir = c.state.join("containers").join(steady);
        let steady_kib = mons
            .iter()
            .find(|(_, dir, _)| *dir == steady_dir)
            .map_or(0, |(_, _, kib)| *kib);
        let kibs: Vec<u64> = mons.iter().map(|(_, _, k)| *k).collect();
        Sample {
            rss_kib: status_field(&status, "VmRSS:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
            threads: status_field(&status, "Threads:"),
            tasks: harness::http::request(metrics_addr, "GET", "/metrics", &[], b"")
                .ok()
                .and_then(|r| {
                    String::from_utf8_lossy(&r.body).lines().find_map(|l| {
                        l.strip_prefix("crust_tokio_alive_tasks ")?
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
                })
                .map(|v| v as u64),
            monitors: mons.len(),
            monitor_steady_kib: steady_kib,
            monitor_mean_kib: if kibs.is_empty() {
                0
            } else {
                kibs.iter().sum::<u64>() / kibs.len() as u64
            },
            monitor_max_kib: kibs.iter().copied().max().unwrap_or(0),
        }
    }
}

/// A `/proc/<pid>/status` field's number (`VmRSS:` in KiB, `Threads:`).
pub(super) fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The monitors of this crustd (a `crust-monitor` whose `--state-dir` is under `state`): pid, state
/// dir, resident KiB.
pub(super) fn monitors(state: &Path) -> Vec<(u32, PathBuf, u64)> {
    let needle = state.display().to_string();
    harness::bench::memory::find("crust-monitor", &needle)
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let dir = args
                .iter()
                .position(|a| a == "--state-dir")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
                .filter(|d| d.starts_with(state))?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            Some((pid, dir, status_field(&status, "VmRSS:")))
        })
        .collect()
}

/// Least squares through `pts`: the slope and the residuals' standard deviation.
pub(super) fn fit(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let sd = (pts
        .iter()
        .map(|p| (p.1 - my - slope * (p.0 - mx)).powi(2))
        .sum::<f64>()
        / (n - 2.0))
        .sqrt();
    Some((slope, sd))
}
