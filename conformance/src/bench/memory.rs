//! Process memory as operators compare it: RSS and PSS (proportional set size, which splits shared
//! pages such as libc between the processes that map them) from `/proc/PID/smaps_rollup`.

/// RSS and PSS of one process, in KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Mem {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// Reads a process's memory; `None` when it is gone.
pub fn of(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        rss_kib: field("Rss:"),
        pss_kib: field("Pss:"),
    })
}

/// PIDs whose `comm` starts with `comm` and whose command line contains `needle`.
pub fn find(comm: &str, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !c.trim().starts_with(comm) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Mean RSS and PSS over `pids`.
pub fn mean(pids: &[u32]) -> Option<Mem> {
    let all: Vec<Mem> = pids.iter().filter_map(|p| of(*p)).collect();
    if all.is_empty() {
        return None;
    }
    let n = all.len() as u64;
    Some(Mem {
        rss_kib: all.iter().map(|m| m.rss_kib).sum::<u64>() / n,
        pss_kib: all.iter().map(|m| m.pss_kib).sum::<u64>() / n,
    })
}

/// Samples a process's memory in the background and keeps the peak until stopped.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Mem>>,
}

impl PeakSampler {
    /// Starts sampling `pid` every 50 ms.
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = Mem::default();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(m) = of(pid) {
                    peak.rss_kib = peak.rss_kib.max(m.rss_kib);
                    peak.pss_kib = peak.pss_kib.max(m.pss_kib);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            peak
        });
        PeakSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns the peak.
    pub fn finish(mut self) -> Mem {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}
