//! The bench's table (one row per measurement, crust beside containerd and the floor, with ratios; the
//! floor's own ratio to containerd is the best any runtime built on the same parts could show) and its
//! JSON, so two runs can be compared.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::suite::{Latency, TargetResults};

/// Everything one `make bench` run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub date: String,
    pub cycles: usize,
    pub crust: TargetResults,
    pub containerd: Option<TargetResults>,
    pub floor: BTreeMap<String, Latency>,
    pub notes: Vec<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

impl Report {
    /// The table as text.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "crust bench, {} ({} cycles)\n", self.date, self.cycles);
        let _ = writeln!(
            out,
            "{:<48} {:>9} {:>9} {:>11} {:>11} {:>7} {:>9} {:>7} {:>11}",
            "latency (ms)",
            "crust p50",
            "p95",
            "containerd",
            "p95",
            "ratio",
            "floor p50",
            "/floor",
            "floor/ctrd"
        );
        let mut names: Vec<&String> = self.crust.latency.keys().collect();
        if let Some(c) = &self.containerd {
            names.extend(c.latency.keys().filter(|k| !self.crust.latency.contains_key(*k)));
        }
        for name in names {
            let c = self.crust.latency.get(name);
            let d = self.containerd.as_ref().and_then(|r| r.latency.get(name));
            let f = self.floor.get(name);
            let _ = writeln!(
                out,
                "{:<48} {:>9} {:>9} {:>11} {:>11} {:>7} {:>9} {:>7} {:>11}",
                name,
                ms(c.map(|l| l.p50_ms)),
                ms(c.map(|l| l.p95_ms)),
                ms(d.map(|l| l.p50_ms)),
                ms(d.map(|l| l.p95_ms)),
                ratio(c.map(|l| l.p50_ms), d.map(|l| l.p50_ms)),
                ms(f.map(|l| l.p50_ms)),
                ratio(c.map(|l| l.p50_ms), f.map(|l| l.p50_ms)),
                // The best ratio a runtime could reach whose only cost is the floor's parts.
                ratio(f.map(|l| l.p50_ms), d.map(|l| l.p50_ms)),
            );
        }
        let _ = writeln!(
            out,
            "\n{:<64} {:>10} {:>10} {:>13} {:>13} {:>7}",
            "memory (KiB)", "crust RSS", "PSS", "containerd RSS", "PSS", "PSS ratio"
        );
        let mut names: Vec<&String> = self.crust.memory.keys().collect();
        if let Some(c) = &self.containerd {
            names.extend(c.memory.keys().filter(|k| !self.crust.memory.contains_key(*k)));
        }
        for name in names {
            let c = self.crust.memory.get(name);
            let d = self.containerd.as_ref().and_then(|r| r.memory.get(name));
            let kib = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<64} {:>10} {:>10} {:>13} {:>13} {:>7}",
                name,
                kib(c.map(|m| m.rss_kib)),
                kib(c.map(|m| m.pss_kib)),
                kib(d.map(|m| m.rss_kib)),
                kib(d.map(|m| m.pss_kib)),
                ratio(c.map(|m| m.pss_kib as f64), d.map(|m| m.pss_kib as f64)),
            );
        }
        if let Some(n) = &self.crust.node {
            let d = self.containerd.as_ref().and_then(|c| c.node.as_ref());
            out.push_str(&super::node_report::table(n, d));
        }
        for (who, r) in [
            ("crust", Some(&self.crust)),
            ("containerd", self.containerd.as_ref()),
        ] {
            for e in r.map(|r| r.errors.as_slice()).unwrap_or_default() {
                let _ = writeln!(out, "error ({who}): {e}");
            }
            let node = r.and_then(|r| r.node.as_ref());
            for e in node.map(|n| n.errors.as_slice()).unwrap_or_default() {
                let _ = writeln!(out, "error ({who}, node): {e}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}
