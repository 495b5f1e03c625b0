//! `crust-bench` (`make bench`): see `harness::bench`. Usage:
//! `crust-bench [--cycles N] [--json FILE] [--no-containerd]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use harness::bench::{containerd, floor, report::Report, suite};
use harness::images::{self, Compression, ImageConfig, ImageSpec, Layer, LayerBuilder};
use harness::{Crustd, CrustdOptions, Registry};

struct Args {
    cycles: usize,
    json: std::path::PathBuf,
    containerd: bool,
}

fn args() -> Args {
    let mut a = Args {
        cycles: 100,
        json: "conformance/results/bench.json".into(),
        containerd: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cycles" => a.cycles = it.next().and_then(|v| v.parse().ok()).expect("--cycles N"),
            "--json" => a.json = it.next().expect("--json FILE").into(),
            "--no-containerd" => a.containerd = false,
            other => panic!(
                "unknown argument {other:?}; usage: crust-bench [--cycles N] [--json FILE] [--no-containerd]"
            ),
        }
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

#[tokio::main]
async fn main() {
    let a = args();
    let date = chrono_like_now();
    eprintln!("bench: starting a registry and pushing images");
    let reg = Registry::start();
    let (small, large) = push_images(&reg);
    let mut notes = Vec::new();

    eprintln!("bench: crust ({} cycles)", a.cycles);
    let crust = {
        let d = Crustd::start(CrustdOptions {
            registry: Some(&reg),
            cni: true,
            extra_toml: "log_level = \"warn\"\n".into(),
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
        suite::run(&t, a.cycles).await
    };

    let containerd = if a.containerd && containerd::installed() {
        eprintln!("bench: containerd ({} cycles)", a.cycles);
        match containerd::Containerd::start(&reg).await {
            Ok(c) => {
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
                Some(suite::run(&t, a.cycles).await)
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
    let floor = match harness::pause_binary() {
        Some(p) => floor::measure(a.cycles.min(50), &p).unwrap_or_else(|e| {
            notes.push(format!("floor not measured: {e:#}"));
            Default::default()
        }),
        None => {
            notes.push("floor not measured: the static pause is not built (make pause)".into());
            Default::default()
        }
    };

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

/// UTC date and time, `YYYY-MM-DD HH:MM UTC`, without a date crate.
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
