//! Parsers of cgroup file formats: flat `key value` files, v2 `io.stat`, v1
//! `blkio.throttle.io_service_bytes_recursive`, and v2 pressure (PSI) files.

use std::collections::HashMap;

/// One PSI line: cumulative stall time (µs) and the moving averages (percent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    pub total_us: u64,
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

/// A pressure file: `some` always, `full` where the kernel has it (cpu.pressure has no `full`
/// before Linux 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// A flat `key value` file (cpu.stat, memory.stat, memory.events, memory.oom_control, cpuacct.stat).
pub fn kv(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// v2 `io.stat`: (bytes read, bytes written) summed over devices.
pub fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for field in text.split_ascii_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r = r.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w = w.saturating_add(v.parse().unwrap_or(0));
        }
    }
    (r, w)
}

/// v1 `blkio.throttle.io_service_bytes_recursive`: (bytes read, bytes written) summed over devices
/// (`<major:minor> Read <n>` lines; the trailing `Total <n>` line is skipped).
pub fn blkio_service_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        let f: Vec<&str> = l.split_ascii_whitespace().collect();
        if let [_dev, op, n] = f[..] {
            let n: u64 = n.parse().unwrap_or(0);
            match op {
                "Read" => r = r.saturating_add(n),
                "Write" => w = w.saturating_add(n),
                _ => {}
            }
        }
    }
    (r, w)
}

fn psi_line(l: &str) -> Option<(&str, PsiLine)> {
    let mut it = l.split_ascii_whitespace();
    let kind = it.next()?;
    let mut p = PsiLine::default();
    for f in it {
        let (k, v) = f.split_once('=')?;
        match k {
            "avg10" => p.avg10 = v.parse().ok()?,
            "avg60" => p.avg60 = v.parse().ok()?,
            "avg300" => p.avg300 = v.parse().ok()?,
            "total" => p.total_us = v.parse().ok()?,
            _ => {}
        }
    }
    Some((kind, p))
}

/// A v2 `*.pressure` file; `None` when it has no `some` line.
pub fn psi(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for l in text.lines() {
        match psi_line(l) {
            Some(("some", p)) => some = Some(p),
            Some(("full", p)) => full = Some(p),
            _ => {}
        }
    }
    Some(Psi { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_files() {
        let p = psi(
            "some avg10=0.12 avg60=3.40 avg300=5.67 total=8910\nfull avg10=0.01 avg60=0.02 avg300=0.03 total=44\n",
        )
        .unwrap();
        assert_eq!(
            p.some,
            PsiLine {
                total_us: 8910,
                avg10: 0.12,
                avg60: 3.4,
                avg300: 5.67
            }
        );
        assert_eq!(p.full.unwrap().total_us, 44);
        assert!(psi("").is_none());
        assert!(psi("garbage\n").is_none());
    }

    #[test]
    fn io_files() {
        assert_eq!(
            io_stat("259:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n8:0 rbytes=10 wbytes=20\n"),
            (11, 22)
        );
        assert_eq!(io_stat(""), (0, 0));
        assert_eq!(
            blkio_service_bytes("8:0 Read 1\n8:0 Write 2\n8:0 Total 3\n8:16 Read 10\nTotal 13\n"),
            (11, 2)
        );
    }
}
