//! cri-tools' own benchmark (`critest --benchmark`), when critest is on PATH: its container lifecycle
//! spec ("benchmark about basic operations on Container": a pod, then CreateContainer, StartContainer,
//! ContainerStatus (its "StatusContainer"), StopContainer, RemoveContainer of its default busybox
//! container, timed by critest) against each runtime of the run, with the same sample count and
//! parallelism. critest writes every
//! sample to `container_benchmark_data.json`; its medians become rows `critest: ...` of the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::Samples;
use super::suite::Latency;

/// The spec run (ginkgo focus).
const FOCUS: &str = "benchmark about basic operations on Container";

/// The operations critest times, in the order of its `operationsDurationsNs`.
const OPERATIONS: [&str; 5] = [
    "CreateContainer",
    "StartContainer",
    "StatusContainer",
    "StopContainer",
    "RemoveContainer",
];

/// critest from PATH, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("critest"))
        .find(|p| p.is_file())
}

/// critest's results file.
#[derive(serde::Deserialize)]
struct ResultsSet {
    #[serde(rename = "operationsNames")]
    names: Vec<String>,
    datapoints: Vec<Datapoint>,
}

#[derive(serde::Deserialize)]
struct Datapoint {
    #[serde(rename = "operationsDurationsNs")]
    durations: Vec<i64>,
}

/// Runs critest's container benchmark against the CRI socket `socket` (`n` samples, `parallel` at a
/// time), its files in `dir`; returns rows by name (`critest: CreateContainer + StartContainer`, ...;
/// with " (2 at a time)" and so on when parallel).
pub fn run(
    critest: &Path,
    socket: &Path,
    dir: &Path,
    n: usize,
    parallel: usize,
) -> Result<BTreeMap<String, Latency>> {
    std::fs::create_dir_all(dir)?;
    let params = dir.join("params.yaml");
    std::fs::write(
        &params,
        format!(
            "containersNumber: {n}\ncontainersNumberParallel: {parallel}\ncontainerBenchmarkTimeoutSeconds: 120\n"
        ),
    )?;
    let endpoint = format!("unix://{}", socket.display());
    let log = std::fs::File::create(dir.join("critest.log"))?;
    let status = Command::new(critest)
        .arg("--benchmark")
        .args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint])
        .arg(format!("--benchmarking-params-file={}", params.display()))
        .arg(format!("--benchmarking-output-dir={}", dir.display()))
        .arg(format!("--ginkgo.focus={FOCUS}"))
        .arg("--ginkgo.no-color")
        // critest reads no crictl.yaml here; it talks to the socket directly, without a proxy.
        .current_dir(dir)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("run critest")?;
    let data = dir.join("container_benchmark_data.json");
    if !status.success() || !data.exists() {
        // The runtime's directory (and this log) goes with the run: its end is told here.
        let text = std::fs::read_to_string(dir.join("critest.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "critest --benchmark failed ({status}); its log ends:\n{}",
            tail.join("\n")
        );
    }
    let set: ResultsSet = serde_json::from_slice(&std::fs::read(&data)?).context("read critest's results")?;
    anyhow::ensure!(
        set.names == OPERATIONS,
        "critest's operations are {:?}, not the ones this bench knows",
        set.names
    );
    let sfx = if parallel > 1 {
        format!(" ({parallel} at a time)")
    } else {
        String::new()
    };
    let mut rows: BTreeMap<String, Samples> = BTreeMap::new();
    let ms = |ns: i64| std::time::Duration::from_nanos(ns.max(0) as u64);
    for p in &set.datapoints {
        for (name, ns) in OPERATIONS.iter().zip(&p.durations) {
            rows.entry(format!("critest: {name}{sfx}"))
                .or_default()
                .push(ms(*ns));
        }
        if let [create, start, ..] = p.durations[..] {
            rows.entry(format!("critest: CreateContainer + StartContainer{sfx}"))
                .or_default()
                .push(ms(create + start));
        }
    }
    Ok(rows
        .into_iter()
        .filter_map(|(k, s)| {
            Some((
                k,
                Latency {
                    p50_ms: s.p50()?,
                    p95_ms: s.p95()?,
                    n: s.0.len(),
                },
            ))
        })
        .collect())
}
