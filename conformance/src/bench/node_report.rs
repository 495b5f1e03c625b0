//! The node scenario's part of the bench table: the polled RPCs (p50/p99) at the node's size, the cost
//! of the polling (CPU, memory), the burst and the cold node, crust beside containerd, and the goals of
//! issue 15 (as ratios within one run) marked met or not.

use std::fmt::Write;

use super::memory::Mem;
use super::node::NodeResults;

fn ms(v: Option<f64>) -> String {
    v.map(|v| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    })
    .unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn r(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

fn kib(m: Option<Mem>, pss: bool) -> Option<f64> {
    m.map(|m| if pss { m.pss_kib } else { m.rss_kib } as f64)
}

/// The node section of the table: `c` is crust's, `d` containerd's (when measured).
pub fn table(c: &NodeResults, d: Option<&NodeResults>) -> String {
    let mut out = String::new();
    let Some(o) = c.options else {
        return out;
    };
    let _ = writeln!(
        out,
        "\nnode: {} pods x {} containers, {} s of kubelet-like polling; burst of {} pods   crust p50       p99  containerd p50       p99   ratio",
        o.pods, o.containers_per_pod, o.seconds, o.burst
    );
    let names = [
        "Version (transport floor, not a goal)",
        "ListPodSandbox",
        "ListContainers",
        "PodSandboxStatus",
        "ListContainerStats",
        "ListPodSandboxStats",
    ];
    let mut rpc_goal = Some(true);
    for name in names {
        let a = c.polled.get(name);
        let b = d.and_then(|d| d.polled.get(name));
        let q = ratio(a.map(|p| p.p50_ms), b.map(|p| p.p50_ms));
        if name.starts_with("Version") {
            let _ = writeln!(
                out,
                "{:<72} {:>9} {:>9} {:>14} {:>9} {:>7}",
                name,
                ms(a.map(|p| p.p50_ms)),
                ms(a.map(|p| p.p99_ms)),
                ms(b.map(|p| p.p50_ms)),
                ms(b.map(|p| p.p99_ms)),
                r(q),
            );
            continue;
        }
        rpc_goal = match (rpc_goal, q) {
            (Some(g), Some(q)) => Some(g && q <= 0.5),
            _ => None,
        };
        let _ = writeln!(
            out,
            "{:<72} {:>9} {:>9} {:>14} {:>9} {:>7}",
            format!("{name} (ms, n = {})", a.map(|p| p.n).unwrap_or(0)),
            ms(a.map(|p| p.p50_ms)),
            ms(a.map(|p| p.p99_ms)),
            ms(b.map(|p| p.p50_ms)),
            ms(b.map(|p| p.p99_ms)),
            r(q),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<72} {:>9} {:>14} {:>7}",
        "daemon CPU per call, 500 sent back to back (us, not a goal)", "crust", "containerd", "ratio"
    );
    for name in ["ListPodSandbox", "ListContainers", "PodSandboxStatus"] {
        let a = c.cpu_per_call_us.get(name).copied();
        let b = d.and_then(|d| d.cpu_per_call_us.get(name).copied());
        let _ = writeln!(
            out,
            "{:<72} {:>9} {:>14} {:>7}",
            name,
            ms(a),
            ms(b),
            r(ratio(a, b))
        );
    }
    let _ = writeln!(
        out,
        "\n{:<72} {:>9} {:>14} {:>7}",
        "node costs", "crust", "containerd", "ratio"
    );
    let dn = |f: &dyn Fn(&NodeResults) -> Option<f64>| d.and_then(f);
    let total = |n: &NodeResults| sum(n.daemon_cpu_ms, n.monitors_cpu_ms);
    let rows: Vec<(String, Option<f64>, Option<f64>)> = vec![
        (
            format!("daemon CPU over the {} s loop (ms, user+sys)", o.seconds),
            c.daemon_cpu_ms,
            dn(&|n| n.daemon_cpu_ms),
        ),
        (
            "monitors / shims CPU over the loop (ms, summed)".into(),
            c.monitors_cpu_ms,
            dn(&|n| n.monitors_cpu_ms),
        ),
        ("daemon + monitors / shims CPU (ms)".into(), total(c), dn(&total)),
        (
            "daemon RSS at the end (KiB)".into(),
            kib(c.daemon_mem, false),
            dn(&|n| kib(n.daemon_mem, false)),
        ),
        (
            "daemon PSS at the end (KiB)".into(),
            kib(c.daemon_mem, true),
            dn(&|n| kib(n.daemon_mem, true)),
        ),
        (
            format!(
                "monitors / shims RSS, summed (KiB; {} / {} processes)",
                c.monitor_processes,
                d.map(|d| d.monitor_processes).unwrap_or(0)
            ),
            kib(c.monitors_mem, false),
            dn(&|n| kib(n.monitors_mem, false)),
        ),
        (
            "monitors / shims PSS, summed (KiB)".into(),
            kib(c.monitors_mem, true),
            dn(&|n| kib(n.monitors_mem, true)),
        ),
        (
            format!(
                "burst: {} x (RunPodSandbox + Create + Start) at once, all running (ms)",
                o.burst
            ),
            c.burst_ms,
            dn(&|n| n.burst_ms),
        ),
        (
            "cold node: restart to the first answered ListPodSandbox (ms)".into(),
            c.cold_first_list_ms,
            dn(&|n| n.cold_first_list_ms),
        ),
        (
            "cold node: restart to every pod and container right (ms)".into(),
            c.cold_all_right_ms,
            dn(&|n| n.cold_all_right_ms),
        ),
        (
            format!("(setup: {} pods, 4 at a time (ms))", o.pods),
            c.setup_ms,
            dn(&|n| n.setup_ms),
        ),
    ];
    for (name, a, b) in &rows {
        let _ = writeln!(
            out,
            "{:<72} {:>9} {:>14} {:>7}",
            name,
            ms(*a),
            ms(*b),
            r(ratio(*a, *b))
        );
    }
    let cpu_q = ratio(c.daemon_cpu_ms, d.and_then(total));
    let rss_mib = c.daemon_mem.map(|m| m.rss_kib as f64 / 1024.0);
    let burst_q = ratio(c.burst_ms, d.and_then(|d| d.burst_ms));
    let _ = writeln!(out, "\ngoals (issue 15, ratios in this run):");
    let _ = writeln!(
        out,
        "  each polled RPC's p50 <= 1/2 of containerd's: {}",
        met(rpc_goal)
    );
    let _ = writeln!(
        out,
        "  crustd CPU over the loop <= 1/4 of containerd + shims ({}): {}",
        r(cpu_q),
        met(cpu_q.map(|q| q <= 0.25))
    );
    let _ = writeln!(
        out,
        "  crustd RSS at {} pods <= 32 MiB ({:.1} MiB): {}",
        o.pods,
        rss_mib.unwrap_or(f64::NAN),
        met(rss_mib.map(|m| m <= 32.0))
    );
    let _ = writeln!(
        out,
        "  burst <= 1/2 of containerd's ({}): {}",
        r(burst_q),
        met(burst_q.map(|q| q <= 0.5))
    );
    let _ = writeln!(
        out,
        "  cold node within 1 s ({} ms): {}",
        ms(c.cold_all_right_ms),
        met(c.cold_all_right_ms.map(|v| v <= 1000.0))
    );
    out
}
