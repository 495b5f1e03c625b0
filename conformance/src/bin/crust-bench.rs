//! `crust-bench` (`make bench`): see `harness::bench`. Usage:
//! `crust-bench [--cycles N] [--json FILE] [--no-containerd] [--node-pods N] [--node-seconds S]
//! [--node-burst N] [--no-node | --node-only] [--no-critest | --critest-only]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use harness::bench::{containerd, critest, floor, node, report::Report, suite};
use harness::images::{self, Compression, ImageConfig, ImageSpec, Layer, LayerBuilder};
use harness::{Crustd, CrustdOptions, Registry};

struct Args {
    cycles: usize,
    json: std::path::PathBuf,
    containerd: bool,
    node: Option<node::NodeOptions>,
    /// Only the node scenario (a quick run).
    node_only: bool,
    /// critest's benchmark (when critest is on PATH): not at all, or nothing else.
    critest: bool,
    critest_only: bool,
}

const USAGE: &str = "usage: crust-bench [--cycles N] [--json FILE] [--no-containerd] [--node-pods N] \
[--node-seconds S] [--node-burst N] [--no-node | --node-only] [--no-critest | --critest-only]";

fn args() -> Args {
    let mut a = Args {
        cycles: 100,
        json: "conformance/results/bench.json".into(),
        containerd: true,
        node: Some(node::NodeOptions::default()),
        node_only: false,
        critest: true,
        critest_only: false,
    };
    let mut it = std::env::args().skip(1);
    let mut n = node::NodeOptions::default();
    let num = |v: Option<String>, what: &str| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what} N; {USAGE}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cycles" => a.cycles = num(it.next(), "--cycles"),
            "--json" => a.json = it.next().expect("--json FILE").into(),
            "--no-containerd" => a.containerd = false,
            "--node-pods" => n.pods = num(it.next(), "--node-pods"),
            "--node-seconds" => n.seconds = num(it.next(), "--node-seconds") as u64,
            "--node-burst" => n.burst = num(it.next(), "--node-burst"),
            "--no-node" => a.node = None,
            "--node-only" => a.node_only = true,
            "--no-critest" => a.critest = false,
            "--critest-only" => a.critest_only = true,
            other => panic!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if a.node.is_some() && !a.critest_only {
        a.node = Some(n);
    } else {
        a.node = None;
    }
    a
}

/// Cheap incompressible bytes (xorshift), so the big image is really ~100 MB on the wire.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn push_images(reg: &Registry) -> (String, String) {
    let std = images::push_standard(reg);
    let mut layers = vec![Layer::new(
        &LayerBuilder::new().busybox_base().build(),
        Compression::Gzip,
        false,
    )];
    for i in 0..4u64 {
        let tar = LayerBuilder::new()
            .dir("data", 0o755)
            .file(
                &format!("data/blob{i}"),
                &noise(24 << 20, 0x9E37_79B9_7F4A_7C15 ^ (i + 1)),
                0o644,
            )
            .build();
        layers.push(Layer::new(&tar, Compression::Gzip, false));
    }
    let big = images::push_image(
        reg,
        "crust-test/big",
        "1",
        &ImageSpec::new(
            layers,
            ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
        ),
    );
    // containerd's pause: crust's own static pause as an image.
    if let Some(p) = harness::pause_binary() {
        let bin = std::fs::read(p).expect("pause binary");
        let l = Layer::new(
            &LayerBuilder::new().file("pause", &bin, 0o755).build(),
            Compression::Gzip,
            false,
        );
        images::push_image(
            reg,
            "pause",
            "3.9",
            &ImageSpec::new(
                vec![l],
                ImageConfig {
                    entrypoint: vec!["/pause".into()],
                    ..Default::default()
                },
            ),
        );
    }
    (std.busybox.reference, big.reference)
}

/// The request counts and latency sums crustd's `/metrics` gave for the RPCs the bench drives most.
fn metrics_note(addr: &str, text: &str) -> String {
    let mut out = format!("crustd /metrics (http://{addr}/metrics) after the cycles:");
    for m in [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "ListContainers",
        "PodSandboxStatus",
        "ListContainerStats",
    ] {
        let method = format!("method=\"/runtime.v1.RuntimeService/{m}\"");
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&method))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or("-")
                .to_string()
        };
        out.push_str(&format!(
            " {m} count {} sum {} s;",
            value("crust_grpc_request_duration_seconds_count"),
            value("crust_grpc_request_duration_seconds_sum")
        ));
    }
    out
}

#[tokio::main]
async fn main() {
    let a = args();
    let date = chrono_like_now();
    eprintln!("bench: starting a registry and pushing images");
    let reg = Registry::start();
    let (small, large) = push_images(&reg);
    let mut notes = Vec::new();
    let critest = if a.critest && !a.node_only {
        critest::find()
    } else {
        None
    };
    match &critest {
        // critest's default container image (and the rest of its stand-ins) from the bench's registry.
        Some(_) => drop(harness::standins::push_all(
            &reg,
            harness::pause_binary().as_deref(),
        )),
        None if a.critest && !a.node_only => {
            notes.push("critest is not on PATH: its benchmark was not run".into())
        }
        None => {}
    }
    let a = Args {
        critest: critest.is_some(),
        ..a
    };
    let critest_bin = critest.unwrap_or_default();

    eprintln!("bench: crust ({} cycles)", a.cycles);
    // crustd serves its Prometheus metrics during the run; what they counted is shown at the end.
    let metrics_addr = format!("127.0.0.1:{}", harness::free_port());
    let crust = {
        let mut d = Crustd::start(CrustdOptions {
            registry: Some(&reg),
            cni: true,
            extra_toml: format!("log_level = \"warn\"\n[metrics]\naddress = \"{metrics_addr}\"\n"),
            ..Default::default()
        })
        .await;
        let t = suite::Target {
            name: "crust".into(),
            socket: d.socket.clone(),
            daemon_pid: d.pid().expect("crustd pid"),
            monitor_comm: "crust-monitor".into(),
            monitor_needle: d.state.display().to_string(),
            log_dir: d.dir.path().join("logs"),
            small_image: small.clone(),
            large_image: large.clone(),
        };
        let mut res = run_suite(&t, &a, &critest_bin, &d.dir.path().join("critest")).await;
        // Before the node scenario, whose cold-node row restarts crustd (and so its counters).
        match harness::http::request(&metrics_addr, "GET", "/metrics", &[], b"") {
            Ok(r) => notes.push(metrics_note(&metrics_addr, &String::from_utf8_lossy(&r.body))),
            Err(e) => notes.push(format!("crustd's /metrics at {metrics_addr} did not answer: {e}")),
        }
        if let Some(o) = a.node {
            eprintln!("bench: crust, node scenario ({} pods, {} s)", o.pods, o.seconds);
            let mut respawn = || Ok(d.respawn_nowait());
            res.node = Some(node::run(&t, o, &mut respawn).await);
        }
        res
    };

    let containerd = if a.containerd && containerd::installed() {
        eprintln!("bench: containerd ({} cycles)", a.cycles);
        match containerd::Containerd::start(&reg).await {
            Ok(mut c) => {
                let t = suite::Target {
                    name: "containerd".into(),
                    socket: c.socket.clone(),
                    daemon_pid: c.pid(),
                    monitor_comm: "containerd-shim".into(),
                    monitor_needle: c.socket.display().to_string(),
                    log_dir: c.dir.path().join("logs"),
                    small_image: small.clone(),
                    large_image: large.clone(),
                };
                let mut res = run_suite(&t, &a, &critest_bin, &c.dir.path().join("critest")).await;
                if let Some(o) = a.node {
                    eprintln!(
                        "bench: containerd, node scenario ({} pods, {} s)",
                        o.pods, o.seconds
                    );
                    let mut respawn = || c.respawn_nowait();
                    res.node = Some(node::run(&t, o, &mut respawn).await);
                }
                // Its pods outlive it: remove them through its CRI before it is stopped (on drop).
                match c.remove_all_pods().await {
                    Ok(0) => {}
                    Ok(n) => eprintln!("bench: removed {n} pods containerd still had"),
                    Err(e) => notes.push(format!("containerd's pods not all removed: {e:#}")),
                }
                Some(res)
            }
            Err(e) => {
                notes.push(format!("containerd not measured: {e:#}"));
                None
            }
        }
    } else {
        notes.push(
            "containerd not installed (apt-get install containerd) or --no-containerd: crust only".into(),
        );
        None
    };

    eprintln!("bench: floor");
    let mut floor = match harness::pause_binary() {
        _ if a.node_only => Default::default(),
        Some(p) => floor::measure(a.cycles.min(50), &p).unwrap_or_else(|e| {
            notes.push(format!("floor not measured: {e:#}"));
            Default::default()
        }),
        None => {
            notes.push("floor not measured: the static pause is not built (make pause)".into());
            Default::default()
        }
    };

    // critest's create + start of one container is the same work as the cycles' (one `runc run`).
    if let Some(l) = floor.get(floor::CONTAINER).cloned() {
        floor.insert(format!("critest: {}", floor::CONTAINER), l);
    }
    let report = Report {
        date,
        cycles: a.cycles,
        crust,
        containerd,
        floor,
        notes,
    };
    let table = report.table();
    print!("{table}");
    if let Some(dir) = a.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut f = std::fs::File::create(&a.json).expect("json file");
    f.write_all(&serde_json::to_vec_pretty(&report).expect("json"))
        .expect("write json");
    eprintln!("bench: results written to {}", a.json.display());
}

/// The workload of `suite` (nothing but the pulls the node needs with `--node-only`), then critest's
/// benchmark (alone and 2 at a time) when it is run.
async fn run_suite(
    t: &suite::Target,
    a: &Args,
    critest_bin: &std::path::Path,
    dir: &std::path::Path,
) -> suite::TargetResults {
    let mut res = if a.node_only || a.critest_only {
        suite::pull_only(t).await
    } else {
        suite::run(t, a.cycles).await
    };
    if a.critest {
        eprintln!("bench: {}: critest --benchmark ({} containers)", t.name, a.cycles);
        for parallel in [1, 2] {
            let (bin, socket, dir) = (
                critest_bin.to_path_buf(),
                t.socket.clone(),
                dir.join(format!("p{parallel}")),
            );
            let cycles = a.cycles;
            match tokio::task::spawn_blocking(move || critest::run(&bin, &socket, &dir, cycles, parallel))
                .await
            {
                Ok(Ok(rows)) => res.latency.extend(rows),
                Ok(Err(e)) => res.errors.push(format!("{e:#}")),
                Err(e) => res.errors.push(format!("critest task: {e}")),
            }
        }
    }
    res
}

/// UTC date and time, `YYYY-MM-DD HH:MM UTC`, without a date crate.
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
