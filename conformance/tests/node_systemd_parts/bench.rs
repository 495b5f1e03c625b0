//! Not checks but measurements, for the `node-bench:` rows of `make node-test`: CreateContainer +
//! StartContainer of a `sleep` container on this node with runc and with crun (the installed service's
//! handlers, systemd cgroup driver), with crun under a crustd of the test's own with the cgroupfs
//! driver, and with containerd (Debian's 1.6, its CRI plugin and runc v2 shim; started by the harness
//! as `make bench` starts it on the host) when the node has it, once with each cgroup driver: each in a
//! pod of its own on the node's network, alternating, 10 times each after a first round that warms the
//! layers and the binaries up. Prints `node-bench: <runtime> CreateContainer+StartContainer p50 <ms>
//! p90 <ms> n <n>` lines, each split into its CreateContainer and StartContainer, and the ratios of
//! like to like (crust's systemd driver against containerd's, cgroupfs against cgroupfs); and the
//! floor under crust's start with each runtime: the runtime's own `run --detach` (with
//! `--systemd-cgroup`, as crust runs it; crun's also with a cgroupfs path) of the bundle crust created
//! for the same container, timed alone.

use super::*;

const ROUNDS: usize = 11;

/// The cgroup (under the root) of the floors run with the cgroupfs driver; removed at the end.
const FLOOR_CGROUP: &str = "crust-bench-floor";

/// p50 and p90 of `t` (sorted here).
fn quantiles(t: &mut [f64]) -> (f64, f64) {
    t.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

/// CreateContainer and StartContainer times of one runtime, in ms.
#[derive(Default)]
struct Times {
    create: Vec<f64>,
    start: Vec<f64>,
}

impl Times {
    fn push(&mut self, (create, start): (f64, f64)) {
        self.create.push(create);
        self.start.push(start);
    }

    /// Prints the runtime's rows; the p50 of CreateContainer + StartContainer.
    fn print(&self, name: &str) -> f64 {
        let mut both: Vec<f64> = self.create.iter().zip(&self.start).map(|(c, s)| c + s).collect();
        let (p50, p90) = quantiles(&mut both);
        let (c50, c90) = quantiles(&mut self.create.clone());
        let (s50, s90) = quantiles(&mut self.start.clone());
        println!(
            "node-bench: {name} CreateContainer+StartContainer p50 {p50:.1} ms p90 {p90:.1} ms n {} \
             (CreateContainer p50 {c50:.1} p90 {c90:.1}, StartContainer p50 {s50:.1} p90 {s90:.1})",
            both.len()
        );
        p50
    }
}

/// The floor under crust's StartContainer with `runtime`: its `run --detach` of the bundle crust
/// created for container `id` (the same spec, rootfs and pod namespaces), in a scope of its own and
/// a state root of its own, timed alone; then the runtime deletes it. In ms.
fn runtime_run_alone(runtime: &str, systemd: bool, id: &str, round: usize) -> f64 {
    let bundle = PathBuf::from("/run/crust/containers").join(id);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("crust's config.json"))
            .expect("config.json is JSON");
    let root = spec["root"]["path"].as_str().expect("root.path").to_string();
    if !root.starts_with('/') {
        spec["root"]["path"] = bundle.join(&root).display().to_string().into();
    }
    let floor_id = format!("floor-{runtime}-{systemd}-{round}");
    let path = spec["linux"]["cgroupsPath"]
        .as_str()
        .expect("cgroupsPath")
        .to_string();
    let slice = path.split(':').next().unwrap_or_default().to_string();
    spec["linux"]["cgroupsPath"] = if systemd {
        format!("{slice}:crust:{floor_id}")
    } else {
        format!("/{FLOOR_CGROUP}/{floor_id}")
    }
    .into();
    let dir = tempfile::Builder::new().prefix("crust-floor-").tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
    let state = dir.path().join("state");
    // The container inherits the runtime's stdio: a file, not a pipe that would stay open.
    let errors = dir.path().join("stderr");
    let run = |args: &[&str]| {
        let status = Command::new(runtime)
            .arg("--root")
            .arg(&state)
            .args(systemd.then_some("--systemd-cgroup"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .status()
            .expect("the runtime runs");
        assert!(
            status.success(),
            "{runtime} {args:?}: {status}: {}",
            std::fs::read_to_string(&errors).unwrap_or_default()
        );
    };
    let t0 = Instant::now();
    run(&[
        "run",
        "--detach",
        "--bundle",
        &dir.path().display().to_string(),
        &floor_id,
    ]);
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    run(&["delete", "--force", &floor_id]);
    ms
}

async fn stop_remove(c: &mut RuntimeServiceClient<Channel>, id: String) {
    c.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    c.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer");
}

/// What a peer runs on: containerd, or a crustd of the test's own.
enum Daemon {
    Containerd(harness::bench::containerd::Containerd),
    Crustd(harness::crustd::Crustd),
}

/// A runtime started for the comparison, with a pod on the node's network and the busybox image.
struct Peer {
    name: &'static str,
    c: RuntimeServiceClient<Channel>,
    pod: String,
    config: PodSandboxConfig,
    // Dropped last: stops the daemon (containerd ends the shims it started).
    daemon: Daemon,
}

impl Peer {
    /// A pod of `daemon` (serving `socket`) in `parent`, the image pulled.
    async fn new(
        name: &'static str,
        daemon: Daemon,
        socket: &std::path::Path,
        parent: impl FnOnce(&str) -> String,
        handler: &'static str,
        image: &str,
        logs: &std::path::Path,
    ) -> Peer {
        pull(socket, image).await;
        let mut c = RuntimeServiceClient::new(harness::crustd::channel(socket).await.unwrap());
        let uid = format!("{:08x}-node-lat-{name}", std::process::id());
        let config = pod_config(&format!("lat-{name}"), &uid, false, parent(&uid), logs);
        let pod = c
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}'s RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;
        Peer {
            name,
            c,
            pod,
            config,
            daemon,
        }
    }

    /// Stops and removes the peer's pods (containerd's shims go with them), then the daemon; the
    /// slice systemd made for a pod of containerd's systemd driver is stopped too.
    async fn finish(self) {
        match self.daemon {
            Daemon::Containerd(d) => {
                d.remove_all_pods().await.expect("containerd's pods removed");
            }
            Daemon::Crustd(d) => {
                d.remove_everything().await.expect("crustd's pods removed");
            }
        }
        let parent = self.config.linux.map(|l| l.cgroup_parent).unwrap_or_default();
        if parent.ends_with(".slice") {
            let _ = Command::new("systemctl").args(["stop", &parent]).status();
        }
    }
}

/// containerd (runc through its v2 shim), with runc's systemd cgroup driver when `systemd` (its pod
/// in a slice, as kubelet's systemd driver names it) or the cgroupfs one (its pod in containerd's own
/// parent, `k8s.io`).
async fn containerd_peer(systemd: bool, image: &str) -> Option<Peer> {
    if !harness::bench::containerd::installed() {
        println!("node-bench: containerd is not installed on this node: no comparison");
        return None;
    }
    let daemon = harness::bench::containerd::Containerd::start_with(&registry(), systemd)
        .await
        .expect("containerd starts");
    let (socket, logs) = (daemon.socket.clone(), daemon.dir.path().join("logs"));
    let (name, parent): (_, fn(&str) -> String) = if systemd {
        ("containerd-systemd", |uid| pod_slice(uid).0)
    } else {
        ("containerd-cgroupfs", |_| String::new())
    };
    Some(
        Peer::new(
            name,
            Daemon::Containerd(daemon),
            &socket,
            parent,
            "",
            image,
            &logs,
        )
        .await,
    )
}

/// A crustd of this test's own (this build's binaries) with the cgroupfs driver, for the row beside
/// containerd's with its cgroupfs driver: the same crun, no systemd unit made per container.
async fn crust_cgroupfs_peer(image: &str) -> Peer {
    let daemon = harness::crustd::Crustd::start(harness::crustd::CrustdOptions {
        registry: Some(&registry()),
        cgroupfs: true,
        // As the installed service logs (the harness's default is debug).
        extra_toml: "log_level = \"info\"\n".into(),
        ..Default::default()
    })
    .await;
    let (socket, logs) = (daemon.socket.clone(), daemon.dir.path().join("logs"));
    Peer::new(
        "crun-cgroupfs",
        Daemon::Crustd(daemon),
        &socket,
        |_| String::new(),
        "crun",
        image,
        &logs,
    )
    .await
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn start_latency_of_runc_crun_and_containerd() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let image = imgs.busybox.reference.clone();
    let pods = [
        pod_with_handler("lat-runc", false, "runc").await,
        pod_with_handler("lat-crun", false, "crun").await,
    ];
    // crust's crun with the cgroupfs driver, then containerd with each driver.
    let mut peers = vec![crust_cgroupfs_peer(&image).await];
    peers.extend(containerd_peer(false, &image).await);
    peers.extend(containerd_peer(true, &image).await);
    // runc, crun (the installed service: the systemd driver), then the peers in order.
    let names: Vec<&str> = ["runc", "crun"]
        .into_iter()
        .chain(peers.iter().map(|p| p.name))
        .collect();
    let mut times: Vec<Times> = names.iter().map(|_| Times::default()).collect();
    // runc's and crun's own run --detach of crust's bundle; crun's with the cgroupfs driver.
    let mut floors: [Vec<f64>; 3] = Default::default();
    let mut c = rt().await;
    for round in 0..ROUNDS {
        let name = format!("lat-{round}");
        for (i, p) in pods.iter().enumerate() {
            let (ms, id) =
                create_then_start(&mut c, &p.id, &p.config, ctr(&name, &image, &["sleep", "600"])).await;
            if round > 0 {
                times[i].push(ms);
            }
            stop_remove(&mut c, id).await;
            let floor = format!("floor-{round}");
            let id = create(&mut c, &p.id, &p.config, ctr(&floor, &image, &["sleep", "600"])).await;
            let ms = runtime_run_alone(["runc", "crun"][i], true, &id, round);
            if round > 0 {
                floors[i].push(ms);
            }
            if i == 1 {
                let ms = runtime_run_alone("crun", false, &id, round);
                if round > 0 {
                    floors[2].push(ms);
                }
            }
            c.remove_container(RemoveContainerRequest { container_id: id })
                .await
                .expect("RemoveContainer");
        }
        for (i, peer) in peers.iter_mut().enumerate() {
            let (ms, id) = create_then_start(
                &mut peer.c,
                &peer.pod,
                &peer.config,
                ctr(&name, &image, &["sleep", "600"]),
            )
            .await;
            if round > 0 {
                times[2 + i].push(ms);
            }
            stop_remove(&mut peer.c, id).await;
        }
    }
    for peer in peers {
        peer.finish().await;
    }
    let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{FLOOR_CGROUP}"));
    let p50: Vec<(&str, f64)> = names.iter().zip(&times).map(|(n, t)| (*n, t.print(n))).collect();
    let of = |name: &str| p50.iter().find(|(n, _)| *n == name).map(|(_, ms)| *ms);
    let mut floor_p50s = Vec::new();
    for (name, t) in [
        "runc --systemd-cgroup",
        "crun --systemd-cgroup",
        "crun (cgroupfs)",
    ]
    .iter()
    .zip(floors.iter_mut())
    {
        let (p50, p90) = quantiles(t);
        println!(
            "node-bench: floor: {name} run --detach of crust's bundle alone p50 {p50:.1} ms p90 {p90:.1} ms n {}",
            t.len()
        );
        floor_p50s.push((*name, p50));
    }
    let (runc, crun) = (p50[0].1, p50[1].1);
    println!("node-bench: crun/runc {:.2}", crun / runc);
    // Like for like: each driver against containerd's with the same driver.
    for (ours, theirs, what) in [
        ("crun", "containerd-systemd", "systemd driver"),
        ("crun-cgroupfs", "containerd-cgroupfs", "cgroupfs driver"),
    ] {
        if let (Some(a), Some(b)) = (of(ours), of(theirs)) {
            println!(
                "node-bench: {ours}/{theirs} {:.2} (goal <= 0.25; both with the {what}), runc/{theirs} {:.2}",
                a / b,
                runc / b
            );
        }
    }
    if let Some(theirs) = of("containerd-systemd") {
        // A runtime whose only cost were that run alone would show this ratio: the best reachable.
        for (name, p50) in floor_p50s {
            println!(
                "node-bench: floor/containerd-systemd: {name} {:.2} (the runtime's run alone against containerd's create + start)",
                p50 / theirs
            );
        }
    }
}
