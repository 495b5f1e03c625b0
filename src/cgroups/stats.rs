//! Usage of one cgroup: CPU time, memory (usage, working set, RSS, page faults) and process count,
//! from the v1 controllers (`cpuacct`, `memory`, `pids`) or the v2 files.

use std::collections::HashMap;
use std::path::Path;

use super::{CGROUP_ROOT, is_v2, normalize};
use crate::{Error, Result};

/// What a cgroup has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Cumulative CPU time, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes (page cache included).
    pub memory_usage: u64,
    /// Usage less inactive file pages (what kubelet evicts on).
    pub memory_working_set: u64,
    /// Anonymous and swap cache memory, bytes.
    pub memory_rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// Processes in the cgroup.
    pub pids: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads the usage of `rel`. NotFound when the cgroup does not exist.
pub fn stats(rel: &str) -> Result<CgroupStats> {
    let rel = normalize(rel)?;
    let root = Path::new(CGROUP_ROOT);
    if is_v2() {
        let dir = root.join(&rel);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("cgroup {rel} does not exist")));
        }
        let cpu = read_kv(&dir.join("cpu.stat"));
        let mem = read_kv(&dir.join("memory.stat"));
        let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = mem.get("inactive_file").copied().unwrap_or(0);
        return Ok(CgroupStats {
            cpu_usage_ns: cpu.get("usage_usec").copied().unwrap_or(0) * 1000,
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(inactive),
            memory_rss: mem.get("anon").copied().unwrap_or(0),
            page_faults: mem.get("pgfault").copied().unwrap_or(0),
            major_page_faults: mem.get("pgmajfault").copied().unwrap_or(0),
            pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
        });
    }
    let mem_dir = root.join("memory").join(&rel);
    let cpu_dir = root.join("cpuacct").join(&rel);
    if !mem_dir.is_dir() && !cpu_dir.is_dir() {
        return Err(Error::NotFound(format!("cgroup {rel} does not exist")));
    }
    let mem = read_kv(&mem_dir.join("memory.stat"));
    let usage = read_u64(&mem_dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = mem.get("total_inactive_file").copied().unwrap_or(0);
    Ok(CgroupStats {
        cpu_usage_ns: read_u64(&cpu_dir.join("cpuacct.usage")).unwrap_or(0),
        memory_usage: usage,
        memory_working_set: usage.saturating_sub(inactive),
        memory_rss: mem.get("total_rss").copied().unwrap_or(0),
        page_faults: mem.get("total_pgfault").copied().unwrap_or(0),
        major_page_faults: mem.get("total_pgmajfault").copied().unwrap_or(0),
        pids: read_u64(&root.join("pids").join(&rel).join("pids.current")).unwrap_or(0),
    })
}
