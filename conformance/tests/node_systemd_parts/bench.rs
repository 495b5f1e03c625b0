//! Not checks but measurements, for the `node-bench:` rows of `make node-test`: CreateContainer +
//! StartContainer of a `sleep` container on this node with runc and with crun (crust's handlers), and
//! with containerd (Debian's 1.6, its CRI plugin and runc v2 shim; started by the harness as `make
//! bench` starts it on the host) when the node has it: each in a pod of its own on the node's network,
//! alternating, 10 times each after a first round that warms the layers and the binaries up. Prints
//! `node-bench: <runtime> CreateContainer+StartContainer p50 <ms> p90 <ms> n <n>` lines and the ratios.

use super::*;

const ROUNDS: usize = 11;

/// p50 and p90 of `t` (sorted here).
fn quantiles(t: &mut [f64]) -> (f64, f64) {
    t.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn print_row(name: &str, t: &mut [f64]) -> f64 {
    let (p50, p90) = quantiles(t);
    println!(
        "node-bench: {name} CreateContainer+StartContainer p50 {p50:.1} ms p90 {p90:.1} ms n {}",
        t.len()
    );
    p50
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

/// containerd started for the comparison, with a pod on the node's network and the busybox image.
struct Peer {
    c: RuntimeServiceClient<Channel>,
    pod: String,
    config: PodSandboxConfig,
    // Dropped last: stops containerd and ends the shims it started.
    daemon: harness::bench::containerd::Containerd,
}

async fn containerd_peer(image: &str) -> Option<Peer> {
    if !harness::bench::containerd::installed() {
        println!("node-bench: containerd is not installed on this node: no comparison");
        return None;
    }
    let daemon = harness::bench::containerd::Containerd::start(&registry())
        .await
        .expect("containerd starts");
    pull(&daemon.socket, image).await;
    let mut c = RuntimeServiceClient::new(harness::crustd::channel(&daemon.socket).await.unwrap());
    let uid = format!("{:08x}-node-lat-containerd", std::process::id());
    // In containerd's own cgroup parent (its cgroupfs driver).
    let config = pod_config(
        "lat-containerd",
        &uid,
        false,
        String::new(),
        &daemon.dir.path().join("logs"),
    );
    let pod = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("containerd's RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    Some(Peer {
        c,
        pod,
        config,
        daemon,
    })
}

impl Peer {
    /// Stops and removes containerd's pods (its shims go with them), then containerd.
    async fn finish(self) {
        self.daemon
            .remove_all_pods()
            .await
            .expect("containerd's pods removed");
    }
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
    let mut peer = containerd_peer(&image).await;
    // runc, crun, containerd.
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut c = rt().await;
    for round in 0..ROUNDS {
        let name = format!("lat-{round}");
        for (i, p) in pods.iter().enumerate() {
            let (ms, id) =
                create_start(&mut c, &p.id, &p.config, ctr(&name, &image, &["sleep", "600"])).await;
            if round > 0 {
                times[i].push(ms);
            }
            stop_remove(&mut c, id).await;
        }
        if let Some(peer) = peer.as_mut() {
            let (ms, id) = create_start(
                &mut peer.c,
                &peer.pod,
                &peer.config,
                ctr(&name, &image, &["sleep", "600"]),
            )
            .await;
            if round > 0 {
                times[2].push(ms);
            }
            stop_remove(&mut peer.c, id).await;
        }
    }
    if let Some(peer) = peer {
        peer.finish().await;
    }
    let [runc, crun, containerd] = &mut times;
    let runc = print_row("runc", runc);
    let crun = print_row("crun", crun);
    println!("node-bench: crun/runc {:.2}", crun / runc);
    if !containerd.is_empty() {
        let theirs = print_row("containerd", containerd);
        println!(
            "node-bench: crun/containerd {:.2} (goal <= 0.25), runc/containerd {:.2}",
            crun / theirs,
            runc / theirs
        );
    }
}
