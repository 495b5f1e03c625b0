//! Checks of CRI `LinuxContainerResources` (a container's, an update's, a pod's overhead and
//! resources) before anything is made of them: a value the kernel or runc could never take is refused
//! with InvalidArgument naming its field, instead of reaching runc at start or update and failing
//! there as an INTERNAL error. Values that are valid but may not fit this cgroup tree (a CPU outside
//! the parent's cpuset, a memory limit below current usage) are left to the kernel, as containerd and
//! CRI-O leave them.

use cri_api::v1;

use crate::{Error, Result};

/// The kernel's CFS bandwidth bounds (kernel/sched/core.c): a period of 1 ms to 1 s, a quota of at
/// least 1 ms and at most 2^44-1 µs (`max_cfs_runtime`).
const CFS_PERIOD_MIN: i64 = 1_000;
const CFS_PERIOD_MAX: i64 = 1_000_000;
const CFS_QUOTA_MIN: i64 = 1_000;
const CFS_QUOTA_MAX: i64 = (1 << 44) - 1;
/// cgroup v1 `cpu.shares` bounds; runc reads the file back and refuses a value the kernel clamped,
/// and on v2 maps shares 2..=262144 onto `cpu.weight` 1..=10000 (beyond it the write fails).
const SHARES_MIN: i64 = 2;
const SHARES_MAX: i64 = 262_144;
/// The kernel's `oom_score_adj` range.
const OOM_SCORE_ADJ: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Where the host lists the CPUs and memory nodes that can ever exist on it (online or not).
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";
const POSSIBLE_NODES: &str = "/sys/devices/system/node/possible";

/// Checks every field of `r`; `field` names `r` in the request (e.g. `config.linux.resources`), and
/// each error names the offending field under it. `v2`: the host's cgroups are the unified hierarchy.
///
/// Zero is "unset" for every number, as in the CRI. A negative `cpu_quota` is "no limit" (the kernel's
/// v1 file and runc's v2 conversion both read any negative so; -1 is what kubelet sends), as is -1 for
/// the two memory limits (the value runc and the kernel take for "unlimited").
pub fn check(r: &v1::LinuxContainerResources, v2: bool, field: &str) -> Result<()> {
    let f = |name: &str| format!("{field}.{name}");
    if r.cpu_period != 0 && !(CFS_PERIOD_MIN..=CFS_PERIOD_MAX).contains(&r.cpu_period) {
        return Err(Error::invalid(
            f("cpu_period"),
            format!(
                "{} µs is outside the kernel's CFS period bounds, {CFS_PERIOD_MIN}..={CFS_PERIOD_MAX} µs (0: unset)",
                r.cpu_period
            ),
        ));
    }
    if r.cpu_quota > 0 && !(CFS_QUOTA_MIN..=CFS_QUOTA_MAX).contains(&r.cpu_quota) {
        return Err(Error::invalid(
            f("cpu_quota"),
            format!(
                "{} µs is outside the kernel's CFS quota bounds, {CFS_QUOTA_MIN}..={CFS_QUOTA_MAX} µs (0: unset, negative: no limit)",
                r.cpu_quota
            ),
        ));
    }
    if r.cpu_shares != 0 && !(SHARES_MIN..=SHARES_MAX).contains(&r.cpu_shares) {
        return Err(Error::invalid(
            f("cpu_shares"),
            format!(
                "{} is outside {SHARES_MIN}..={SHARES_MAX}, the range the kernel and runc take (0: unset)",
                r.cpu_shares
            ),
        ));
    }
    for (name, v) in [
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes),
    ] {
        if v < -1 {
            return Err(Error::invalid(
                f(name),
                format!("{v} is not a byte count (0: unset, -1: no limit)"),
            ));
        }
    }
    if r.memory_swap_limit_in_bytes > 0
        && r.memory_limit_in_bytes > 0
        && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes
    {
        // runc refuses it ("memory+swap limit should be >= memory limit"): the swap limit counts
        // memory and swap together.
        return Err(Error::invalid(
            f("memory_swap_limit_in_bytes"),
            format!(
                "{} is below memory_limit_in_bytes ({}); it limits memory and swap together",
                r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
            ),
        ));
    }
    if !OOM_SCORE_ADJ.contains(&r.oom_score_adj) {
        return Err(Error::invalid(
            f("oom_score_adj"),
            format!("{} is outside the kernel's range, -1000..=1000", r.oom_score_adj),
        ));
    }
    id_list(&f("cpuset_cpus"), "CPU", &r.cpuset_cpus, POSSIBLE_CPUS)?;
    id_list(&f("cpuset_mems"), "memory node", &r.cpuset_mems, POSSIBLE_NODES)?;
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        page_size(&f(&format!("hugepage_limits[{i}].page_size")), &h.page_size)?;
    }
    if !r.unified.is_empty() {
        let uf = f("unified");
        if !v2 {
            // runc and crun refuse them on v1 too; said here, naming the field, instead.
            return Err(Error::invalid(
                uf,
                "cgroup v2 (unified) settings cannot apply: this host uses cgroup v1",
            ));
        }
        for (k, v) in &r.unified {
            unified(&uf, k, v)?;
        }
    }
    Ok(())
}

/// A hugepage size as the hugetlb controller names it in its files and kubelet sends it: a power of
/// two with a unit, `64KB`, `2MB`, `1GB`.
fn page_size(field: &str, v: &str) -> Result<()> {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &v[digits.len()..];
    let n: u64 = digits.parse().unwrap_or(0);
    if !matches!(unit, "KB" | "MB" | "GB" | "TB" | "PB") || !n.is_power_of_two() || digits.starts_with('0') {
        return Err(Error::invalid(
            field,
            format!("{v:?} is not a hugepage size such as \"2MB\" or \"1GB\""),
        ));
    }
    Ok(())
}

/// A `unified` entry names a cgroup v2 interface file of the container's own cgroup
/// (`<controller>.<name>`: no path, no `..`) that sets something: the files that move or kill
/// processes are refused, as are values a file could not take (newline, NUL).
fn unified(field: &str, key: &str, value: &str) -> Result<()> {
    let f = format!("{field}[{key}]");
    let well_formed = key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !key.contains("..")
        && key
            .split_once('.')
            .is_some_and(|(c, n)| !c.is_empty() && !n.is_empty());
    if !well_formed {
        return Err(Error::invalid(
            f,
            "not a cgroup v2 interface file name (<controller>.<name>, no '/' or '..')",
        ));
    }
    if matches!(
        key,
        "cgroup.procs" | "cgroup.threads" | "cgroup.kill" | "cgroup.subtree_control" | "cgroup.type"
    ) {
        return Err(Error::invalid(
            f,
            "moves, kills or restructures processes rather than setting a limit",
        ));
    }
    if value.contains(['\n', '\0']) {
        return Err(Error::invalid(f, "the value holds a newline or NUL"));
    }
    Ok(())
}

/// A `cpuset.cpus` / `cpuset.mems` list (empty: unset), checked against the kernel's list grammar
/// (`bitmap_parselist`, what the cpuset files parse): regions separated by commas, each `A`, `A-B` or
/// `A-B:U/G` (U of every G from A to B), or `all`, `N` standing for the highest id. An id the host
/// could never have (beyond `possible`, which counts CPUs not plugged in yet) is refused too: the
/// kernel refuses it at every start. Ids that are possible but outside the pod's cpuset (offline, or
/// kept from the pod) are left to the kernel at start, as containerd, CRI-O and runc leave them.
fn id_list(field: &str, what: &str, list: &str, possible: &str) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let highest = std::fs::read_to_string(possible)
        .ok()
        .and_then(|s| parse_id_list(s.trim(), None).ok())
        .flatten();
    match parse_id_list(list, highest) {
        Err(why) => Err(Error::invalid(
            field,
            format!("{list:?} is not a {what} list such as \"0-3,6\": {why}"),
        )),
        Ok(None) => Err(Error::invalid(field, format!("{list:?} names no {what}"))),
        Ok(Some(top)) => match highest {
            Some(h) if top > h => Err(Error::invalid(
                field,
                format!("{list:?} names {what} {top}; this host has {what}s 0-{h} at most ({possible})"),
            )),
            _ => Ok(()),
        },
    }
}

/// Parses a kernel id list; gives the highest id named (`None`: none), `last` standing for `N` (and
/// the end of `all`) where known.
fn parse_id_list(list: &str, last: Option<u32>) -> std::result::Result<Option<u32>, String> {
    let num = |s: &str| -> std::result::Result<u32, String> {
        if s == "N" {
            return Ok(last.unwrap_or(0));
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a number"));
        }
        s.parse().map_err(|_| format!("{s} is too large"))
    };
    let mut top = None;
    for region in list
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|r| !r.is_empty())
    {
        let (range, pattern) = match region.split_once(':') {
            Some((r, p)) => (r, Some(p)),
            None => (region, None),
        };
        let (start, end) = if range == "all" {
            (0, last.unwrap_or(0))
        } else {
            match range.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if pattern.is_some() => {
                    return Err(format!("{region:?}: a U/G pattern needs a range A-B"));
                }
                None => (num(range)?, num(range)?),
            }
        };
        if start > end {
            return Err(format!("{region:?} runs backwards"));
        }
        if let Some(p) = pattern {
            let (used, group) = p
                .split_once('/')
                .ok_or_else(|| format!("{region:?}: the pattern after ':' is U/G"))?;
            let (used, group) = (num(used)?, num(group)?);
            if group == 0 || used > group {
                return Err(format!("{region:?}: the pattern {used}/{group} takes nothing"));
            }
        }
        top = top.max(Some(end));
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: &v1::LinuxContainerResources) -> String {
        match check(r, true, "r") {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn what_kubelet_and_the_peers_send_is_accepted() {
        let r = v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 1024,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            oom_score_adj: -997,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                v1::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                },
                v1::HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 1 << 30,
                },
            ],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
        };
        check(&r, true, "r").unwrap();
        check(&v1::LinuxContainerResources::default(), false, "r").unwrap();
        for quota in [-1, -5, 1000] {
            let r = v1::LinuxContainerResources {
                cpu_quota: quota,
                memory_limit_in_bytes: -1,
                memory_swap_limit_in_bytes: -1,
                ..Default::default()
            };
            check(&r, false, "r").unwrap();
        }
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let base = v1::LinuxContainerResources::default;
        let cases = [
            (
                v1::LinuxContainerResources {
                    cpu_period: 999,
                    ..base()
                },
                "r.cpu_period",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_period: 1_000_001,
                    ..base()
                },
                "r.cpu_period",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_quota: 10,
                    ..base()
                },
                "r.cpu_quota",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_shares: 1,
                    ..base()
                },
                "r.cpu_shares",
            ),
            (
                v1::LinuxContainerResources {
                    cpu_shares: 262_145,
                    ..base()
                },
                "r.cpu_shares",
            ),
            (
                v1::LinuxContainerResources {
                    memory_limit_in_bytes: -2,
                    ..base()
                },
                "r.memory_limit_in_bytes",
            ),
            (
                v1::LinuxContainerResources {
                    memory_limit_in_bytes: 100 << 20,
                    memory_swap_limit_in_bytes: 50 << 20,
                    ..base()
                },
                "r.memory_swap_limit_in_bytes",
            ),
            (
                v1::LinuxContainerResources {
                    oom_score_adj: 1001,
                    ..base()
                },
                "r.oom_score_adj",
            ),
            (
                v1::LinuxContainerResources {
                    cpuset_cpus: "any string".into(),
                    ..base()
                },
                "r.cpuset_cpus",
            ),
            (
                v1::LinuxContainerResources {
                    cpuset_mems: "1-0".into(),
                    ..base()
                },
                "r.cpuset_mems",
            ),
            (
                v1::LinuxContainerResources {
                    hugepage_limits: vec![v1::HugepageLimit {
                        page_size: "3MB".into(),
                        limit: 1,
                    }],
                    ..base()
                },
                "r.hugepage_limits[0].page_size",
            ),
            (
                v1::LinuxContainerResources {
                    unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
                    ..base()
                },
                "r.unified[cgroup.procs]",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(field_of(&r), want, "{r:?}");
        }
    }

    #[test]
    fn id_lists_follow_the_kernel_grammar() {
        for ok in ["0", "0-3,5", "0-3, 6", "0,1,2", "0-7:2/4", "N", "all", "1-N"] {
            assert!(parse_id_list(ok, Some(7)).is_ok(), "{ok}");
        }
        assert_eq!(parse_id_list("0-3,5", None), Ok(Some(5)));
        assert_eq!(parse_id_list(",", None), Ok(None));
        for bad in [
            "x",
            "0-",
            "-1",
            "3-1",
            "0:1/2",
            "0-7:3/2",
            "0-7:1/0",
            "1.5",
            "0;1",
            "99999999999",
        ] {
            assert!(parse_id_list(bad, Some(7)).is_err(), "{bad}");
        }
        // Beyond what the host could ever have (the file is read as the host's possible list).
        let e = id_list("f", "CPU", "99999", POSSIBLE_CPUS).unwrap_err();
        assert!(e.to_string().contains("99999"), "{e}");
        id_list("f", "CPU", "0", POSSIBLE_CPUS).unwrap();
        assert!(id_list("f", "CPU", " , ", POSSIBLE_CPUS).is_err());
    }

    #[test]
    fn unified_keys_are_checked() {
        let with = |k: &str, v: &str| v1::LinuxContainerResources {
            unified: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        };
        for ok in [
            "memory.high",
            "cpu.weight",
            "io.max",
            "memory.oom.group",
            "hugetlb.2MB.max",
        ] {
            assert!(check(&with(ok, "1"), true, "r").is_ok(), "{ok}");
        }
        for bad in [
            "../memory.max",
            "memory/x",
            "memory",
            ".max",
            "memory.",
            "cgroup.procs",
            "cgroup.kill",
            "",
        ] {
            assert_eq!(field_of(&with(bad, "1")), format!("r.unified[{bad}]"), "{bad}");
        }
        assert!(check(&with("memory.high", "1\nmax"), true, "r").is_err());
        let e = check(&with("memory.high", "1"), false, "r").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { field, .. } if field == "r.unified"),
            "{e}"
        );
    }
}
