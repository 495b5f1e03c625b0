//! Usage of one cgroup: CPU time (total, user, system), memory (usage, working set, RSS, cache, page
//! faults, limit), swap, block I/O bytes, OOM kills, processes and threads, and pressure (PSI), from
//! the v1 controllers (`cpuacct`, `memory`, `blkio`, `pids`) or the v2 files. What a kernel does not
//! offer (PSI on v1, swap without swap accounting) is `None`, never zero. The file formats are parsed
//! in `parse`.

use std::collections::HashMap;
use std::path::Path;

use super::parse::{self, Psi};
use super::{CGROUP_ROOT, is_v2, normalize};
use crate::{Error, Result};

/// What a cgroup has used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupStats {
    /// Cumulative CPU time, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Cumulative user and system CPU time, in nanoseconds.
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Memory in use, bytes (page cache included).
    pub memory_usage: u64,
    /// Usage less inactive file pages (what kubelet evicts on).
    pub memory_working_set: u64,
    /// Anonymous and swap cache memory, bytes.
    pub memory_rss: u64,
    /// Page cache, bytes.
    pub memory_cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The memory limit, when there is one.
    pub memory_limit: Option<u64>,
    /// Swap in use and its limit, where swap is accounted.
    pub swap_usage: Option<u64>,
    pub swap_limit: Option<u64>,
    /// Bytes read from and written to block devices (all devices).
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
    /// Tasks (threads) in the cgroup and below (`pids.current`).
    pub threads: u64,
    /// Processes in the cgroup and below (`cgroup.procs`).
    pub processes: u64,
    /// Pressure stall information (v2 only).
    pub cpu_psi: Option<Psi>,
    pub memory_psi: Option<Psi>,
    pub io_psi: Option<Psi>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

fn read_kv(p: &Path) -> HashMap<String, u64> {
    parse::kv(&read(p).unwrap_or_default())
}

/// Processes listed in `cgroup.procs` of `dir` and every cgroup below it.
fn count_procs(dir: &Path) -> u64 {
    let own = read(&dir.join("cgroup.procs")).map_or(0, |t| t.lines().count() as u64);
    let below: u64 = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| count_procs(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    own + below
}

/// A limit file's value: `max` (v2) or a value near `i64::MAX` (v1's "unlimited") is no limit.
fn limit(p: &Path) -> Option<u64> {
    let t = read(p)?;
    let t = t.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v < (1 << 62))
}

/// Reads the usage of `rel`. NotFound when the cgroup does not exist.
pub fn stats(rel: &str) -> Result<CgroupStats> {
    let rel = normalize(rel)?;
    let root = Path::new(CGROUP_ROOT);
    if is_v2() {
        stats_v2(&root.join(&rel))
    } else {
        stats_v1(root, &rel)
    }
}

/// The v2 files of the cgroup directory `dir`.
pub fn stats_v2(dir: &Path) -> Result<CgroupStats> {
    if !dir.is_dir() {
        return Err(Error::NotFound(format!(
            "cgroup {} does not exist",
            dir.display()
        )));
    }
    let cpu = read_kv(&dir.join("cpu.stat"));
    let mem = read_kv(&dir.join("memory.stat"));
    let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
    let inactive = mem.get("inactive_file").copied().unwrap_or(0);
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let io = read(&dir.join("io.stat")).map(|t| parse::io_stat(&t));
    let psi = |f: &str| read(&dir.join(f)).and_then(|t| parse::psi(&t));
    Ok(CgroupStats {
        cpu_usage_ns: get(&cpu, "usage_usec") * 1000,
        cpu_user_ns: get(&cpu, "user_usec") * 1000,
        cpu_system_ns: get(&cpu, "system_usec") * 1000,
        memory_usage: usage,
        memory_working_set: usage.saturating_sub(inactive),
        memory_rss: get(&mem, "anon"),
        memory_cache: get(&mem, "file"),
        page_faults: get(&mem, "pgfault"),
        major_page_faults: get(&mem, "pgmajfault"),
        memory_limit: limit(&dir.join("memory.max")),
        swap_usage: read_u64(&dir.join("memory.swap.current")),
        swap_limit: limit(&dir.join("memory.swap.max")),
        io_read_bytes: io.map(|(r, _)| r),
        io_write_bytes: io.map(|(_, w)| w),
        oom_kills: get(&read_kv(&dir.join("memory.events")), "oom_kill"),
        threads: read_u64(&dir.join("pids.current")).unwrap_or(0),
        processes: count_procs(dir),
        cpu_psi: psi("cpu.pressure"),
        memory_psi: psi("memory.pressure"),
        io_psi: psi("io.pressure"),
    })
}

/// The v1 controllers' files of `rel` under the hierarchies mounted at `root/<controller>`.
pub fn stats_v1(root: &Path, rel: &str) -> Result<CgroupStats> {
    let mem_dir = root.join("memory").join(rel);
    let cpu_dir = root.join("cpuacct").join(rel);
    if !mem_dir.is_dir() && !cpu_dir.is_dir() {
        return Err(Error::NotFound(format!("cgroup {rel} does not exist")));
    }
    let mem = read_kv(&mem_dir.join("memory.stat"));
    let get = |k: &str| mem.get(k).copied().unwrap_or(0);
    let usage = read_u64(&mem_dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = get("total_inactive_file");
    let acct = read_kv(&cpu_dir.join("cpuacct.stat"));
    // cpuacct.stat counts USER_HZ ticks.
    // SAFETY: sysconf takes a constant and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = |k: &str| acct.get(k).copied().unwrap_or(0) * (1_000_000_000 / hz);
    let memsw = read_u64(&mem_dir.join("memory.memsw.usage_in_bytes"));
    let memsw_limit = limit(&mem_dir.join("memory.memsw.limit_in_bytes"));
    let mem_limit = limit(&mem_dir.join("memory.limit_in_bytes"));
    let blkio = root.join("blkio").join(rel);
    let io = read(&blkio.join("blkio.throttle.io_service_bytes_recursive"))
        .map(|t| parse::blkio_service_bytes(&t));
    let pids_dir = root.join("pids").join(rel);
    Ok(CgroupStats {
        cpu_usage_ns: read_u64(&cpu_dir.join("cpuacct.usage")).unwrap_or(0),
        cpu_user_ns: ticks("user"),
        cpu_system_ns: ticks("system"),
        memory_usage: usage,
        memory_working_set: usage.saturating_sub(inactive),
        memory_rss: get("total_rss"),
        memory_cache: get("total_cache"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        memory_limit: mem_limit,
        swap_usage: memsw.map(|sw| sw.saturating_sub(usage)),
        swap_limit: match (memsw_limit, mem_limit) {
            (Some(sw), Some(m)) => Some(sw.saturating_sub(m)),
            _ => None,
        },
        io_read_bytes: io.map(|(r, _)| r),
        io_write_bytes: io.map(|(_, w)| w),
        oom_kills: read_kv(&mem_dir.join("memory.oom_control"))
            .get("oom_kill")
            .copied()
            .unwrap_or(0),
        threads: read_u64(&pids_dir.join("pids.current")).unwrap_or(0),
        processes: count_procs(&pids_dir),
        cpu_psi: None,
        memory_psi: None,
        io_psi: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v2_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("pod/ctr");
        put(
            &d,
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
        );
        put(
            &d,
            "memory.stat",
            "anon 4096\nfile 8192\ninactive_file 1024\npgfault 7\npgmajfault 1\n",
        );
        put(&d, "memory.current", "20480\n");
        put(&d, "memory.max", "max\n");
        put(&d, "memory.swap.current", "512\n");
        put(&d, "memory.swap.max", "1048576\n");
        put(&d, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        put(&d, "pids.current", "3\n");
        put(&d, "cgroup.procs", "10\n11\n");
        put(
            &d,
            "io.stat",
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=6 rios=1 wios=1\n",
        );
        put(
            &d,
            "memory.pressure",
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=67\n",
        );
        put(
            &d,
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        );
        let s = stats_v2(&d).unwrap();
        assert_eq!(s.cpu_usage_ns, 2_500_000);
        assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (2_000_000, 500_000));
        assert_eq!(s.memory_usage, 20480);
        assert_eq!(s.memory_working_set, 20480 - 1024);
        assert_eq!((s.memory_rss, s.memory_cache), (4096, 8192));
        assert_eq!(s.memory_limit, None);
        assert_eq!((s.swap_usage, s.swap_limit), (Some(512), Some(1 << 20)));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(105), Some(206)));
        assert_eq!((s.oom_kills, s.threads, s.processes), (1, 3, 2));
        let m = s.memory_psi.unwrap();
        assert_eq!(m.some.total_us, 12345);
        assert_eq!(m.some.avg10, 1.5);
        assert_eq!(m.full.unwrap().total_us, 67);
        // cpu.pressure without a "full" line (kernels before 5.13).
        assert!(s.cpu_psi.unwrap().full.is_none());
        assert!(s.io_psi.is_none());
        assert!(stats_v2(&t.path().join("gone")).is_err());
    }

    #[test]
    fn v1_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(&r.join("memory/a/b"), "memory.usage_in_bytes", "10000\n");
        put(
            &r.join("memory/a/b"),
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 3000\ntotal_rss 6000\ntotal_inactive_file 1000\ntotal_pgfault 5\ntotal_pgmajfault 0\n",
        );
        put(
            &r.join("memory/a/b"),
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        put(
            &r.join("memory/a/b"),
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        put(&r.join("cpuacct/a/b"), "cpuacct.usage", "123456789\n");
        put(&r.join("pids/a/b"), "pids.current", "4\n");
        put(&r.join("pids/a/b"), "cgroup.procs", "1\n");
        put(&r.join("pids/a/b/c"), "cgroup.procs", "2\n3\n");
        put(
            &r.join("blkio/a/b"),
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
        );
        let s = stats_v1(r, "a/b").unwrap();
        assert_eq!(s.cpu_usage_ns, 123_456_789);
        assert_eq!(s.memory_working_set, 9000);
        assert_eq!((s.memory_rss, s.memory_cache), (6000, 3000));
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.swap_usage, None);
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(4096), Some(8192)));
        assert_eq!((s.oom_kills, s.threads, s.processes), (2, 4, 3));
        assert!(s.cpu_psi.is_none() && s.memory_psi.is_none());
    }
}
