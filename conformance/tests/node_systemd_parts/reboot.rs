//! The reboot scenario's two halves (conformance/node/steps/reboot.sh runs each by its exact name; the
//! runner's main run skips them): phase 1 leaves pods and containers running and writes what they are
//! to `$CRUST_NODE_REBOOT_DIR/pods.json`, the node reboots, and phase 2 checks what crust shows of them
//! after the boot and that all of it can be removed.
//!
//! After a reboot every old pod is NOTREADY and every old container EXITED: a container that was
//! running, or created and never started, with exit code 255 and reason `Unknown` (what containerd
//! reports for a container whose task is gone when it restarts: internal/cri/server/restart.go), one
//! that had exited keeps its own exit. Their netns pins and mounts are gone with the boot, their IPAM
//! leases (host-local, on disk) are released by the CNI DEL crust runs when it finds the pod's netns
//! gone (or at StopPodSandbox at the latest), their scopes and cgroups are gone, every record can be
//! removed, and a new pod runs on the same network.

use super::*;
use serde_json::{Value, json};
use std::path::Path;

fn reboot_dir() -> PathBuf {
    std::env::var_os("CRUST_NODE_REBOOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/mnt/results/reboot".into())
}

/// A pod that outlives the test (the reboot ends it): its id, config and log dir are kept.
async fn lasting_pod(name: &str, network: bool) -> (String, String, PodSandboxConfig) {
    let p = std::mem::ManuallyDrop::new(pod(name, network).await);
    (p.id.clone(), p.uid.clone(), p.config.clone())
}

async fn create(pod_id: &str, config: &PodSandboxConfig, c: ContainerConfig) -> String {
    rt().await
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(c),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id
}

async fn start(id: &str) {
    rt().await
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("StartContainer");
}

/// PodSandboxStatus with its verbose info (netnsPath, network).
async fn pod_status(id: &str) -> (PodSandboxStatus, Value) {
    let r = rt()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = r
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    (r.status.unwrap(), info)
}

/// The mountinfo lines that name `id`.
fn mounts_of(id: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(id))
        .map(str::to_string)
        .collect()
}

/// The host-local lease file of `ip` on CNI network `net`.
fn lease(net: &str, ip: &str) -> String {
    format!("/var/lib/cni/networks/{net}/{ip}")
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test (steps/reboot.sh)"]
async fn reboot_phase_1_pods_before_the_reboot() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let img = imgs.busybox.reference.as_str();
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    // Two pods on the CNI bridge, one on the node's network; running, exited and never-started
    // containers among them.
    for (name, network, ctrs) in [
        ("rb-net1", true, &[("run", "running"), ("done", "exited")][..]),
        ("rb-net2", true, &[("run", "running")][..]),
        ("rb-host", false, &[("run", "running"), ("idle", "created")][..]),
    ] {
        let (id, uid, config) = lasting_pod(name, network).await;
        for (cname, want) in ctrs {
            let cmd: &[&str] = match *want {
                "exited" => &["sh", "-c", "exit 3"],
                _ => &["sleep", "86400"],
            };
            let cid = create(&id, &config, ctr(cname, img, cmd)).await;
            if *want != "created" {
                start(&cid).await;
            }
            let st = if *want == "exited" {
                wait_exited(&cid).await
            } else {
                status(&cid).await
            };
            let state = match *want {
                "running" => ContainerState::ContainerRunning,
                "exited" => ContainerState::ContainerExited,
                _ => ContainerState::ContainerCreated,
            };
            assert_eq!(st.state, state as i32, "{name}/{cname}: {st:?}");
            containers.push(json!({
                "id": cid, "pod": id, "name": cname, "was": want,
                "exit_code": st.exit_code, "reason": st.reason, "finished_at": st.finished_at,
                "mounts": mounts_of(&cid),
            }));
        }
        let (ps, info) = pod_status(&id).await;
        assert_eq!(ps.state, PodSandboxState::SandboxReady as i32, "{name}");
        let ip = ps.network.unwrap_or_default().ip;
        let net = info["network"].as_str().unwrap_or("").to_string();
        let netns = info["netnsPath"].as_str().unwrap_or("").to_string();
        if network {
            assert!(
                !ip.is_empty() && !net.is_empty(),
                "{name} has an IP on a CNI network: {info}"
            );
            assert!(
                Path::new(&lease(&net, &ip)).exists(),
                "{name}'s host-local lease {}",
                lease(&net, &ip)
            );
            assert!(Path::new(&netns).exists(), "{name}'s netns pin {netns}");
        }
        pods.push(json!({
            "id": id, "uid": uid, "name": name, "network": network, "ip": ip, "cni": net,
            "netns": netns, "slice": pod_slice(&uid).1, "mounts": mounts_of(&id),
        }));
    }
    for c in &containers {
        let (id, was) = (c["id"].as_str().unwrap(), c["was"].as_str().unwrap());
        let pod = pods.iter().find(|p| p["id"] == c["pod"]).unwrap();
        if was == "running" {
            let scope = format!("crust-{id}.scope");
            let (state, cg) = unit(&scope);
            assert_eq!(
                (state.as_str(), cg.as_str()),
                (
                    "active",
                    format!("{}/{scope}", pod["slice"].as_str().unwrap()).as_str()
                )
            );
            assert!(
                !c["mounts"].as_array().unwrap().is_empty(),
                "the rootfs of {id} is mounted"
            );
        }
    }
    let record = json!({ "pods": pods, "containers": containers });
    eprintln!("node-reboot: before the reboot: {record:#}");
    std::fs::create_dir_all(reboot_dir()).unwrap();
    std::fs::write(reboot_dir().join("pods.json"), record.to_string()).unwrap();
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test (steps/reboot.sh)"]
async fn reboot_phase_2_after_the_reboot() {
    if !on_node() {
        return;
    }
    let text = std::fs::read_to_string(reboot_dir().join("pods.json")).expect("phase 1's pods.json");
    let before: Value = serde_json::from_str(&text).unwrap();
    let (pods, containers) = (
        before["pods"].as_array().unwrap(),
        before["containers"].as_array().unwrap(),
    );
    let mut c = rt().await;
    let units = systemctl(&["list-units", "--all", "--no-legend", "--plain", "crust-*"]);

    // What crust shows of the old pods and containers, before anything is asked of them.
    for p in pods {
        let id = p["id"].as_str().unwrap();
        let (ps, info) = pod_status(id).await;
        eprintln!(
            "node-reboot: pod {} {id}: state {:?}, ip {:?}, info state {} step {}",
            p["name"],
            PodSandboxState::try_from(ps.state),
            ps.network.as_ref().map(|n| n.ip.clone()),
            info["state"],
            info["step"]
        );
        assert_eq!(ps.state, PodSandboxState::SandboxNotready as i32, "old pod {id}");
        let netns = p["netns"].as_str().unwrap();
        assert!(
            netns.is_empty() || !Path::new(netns).exists(),
            "the netns pin {netns} is gone"
        );
        assert!(
            mounts_of(id).is_empty(),
            "mounts of pod {id}: {:?}",
            mounts_of(id)
        );
        assert!(!units.contains(id), "a unit of pod {id} after the boot: {units}");
        assert!(
            !Path::new(&format!(
                "/sys/fs/cgroup{}/crust-pause-{id}.scope",
                p["slice"].as_str().unwrap()
            ))
            .exists(),
            "the pause's cgroup of {id}"
        );
    }
    for k in containers {
        let id = k["id"].as_str().unwrap();
        let st = status(id).await;
        eprintln!(
            "node-reboot: container {} ({} before) {id}: state {:?}, exit code {}, reason {:?}, message {:?}",
            k["name"],
            k["was"],
            ContainerState::try_from(st.state),
            st.exit_code,
            st.reason,
            st.message
        );
        assert_eq!(
            st.state,
            ContainerState::ContainerExited as i32,
            "old container {id}: {st:?}"
        );
        if k["was"] == "exited" {
            assert_eq!(
                (st.exit_code as i64, json!(st.reason), st.finished_at),
                (
                    k["exit_code"].as_i64().unwrap(),
                    k["reason"].clone(),
                    k["finished_at"].as_i64().unwrap()
                ),
                "an exited container keeps its exit"
            );
        } else if (st.exit_code, st.reason.as_str()) != (255, "Unknown") {
            // The shutdown's SIGTERM reached a running container while its monitor still ran: the
            // monitor recorded that exit (143, "killed by signal 15"), which is what happened.
            assert!(
                k["was"] == "running" && st.exit_code != 0 && st.reason == "Error" && !st.message.is_empty(),
                "a running container's exit as its monitor saw it: {st:?}"
            );
            assert!(st.finished_at > 0, "{st:?}");
        } else {
            // containerd's code and reason for a container whose task is gone (restart.go).
            assert!(st.finished_at > 0, "{st:?}");
        }
        assert!(
            mounts_of(id).is_empty(),
            "mounts of container {id}: {:?}",
            mounts_of(id)
        );
        assert!(
            !units.contains(id),
            "a unit of container {id} after the boot: {units}"
        );
    }

    // Leases: released by the CNI DEL at recovery or, at the latest, by StopPodSandbox.
    let leases = |when: &str| {
        for p in pods.iter().filter(|p| p["network"] == true) {
            let l = lease(p["cni"].as_str().unwrap(), p["ip"].as_str().unwrap());
            eprintln!(
                "node-reboot: {when}: lease {l} exists: {}",
                Path::new(&l).exists()
            );
        }
    };
    leases("after the boot");
    for p in pods {
        let id = p["id"].as_str().unwrap();
        c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox of old pod {id}: {e}"));
    }
    for p in pods.iter().filter(|p| p["network"] == true) {
        let l = lease(p["cni"].as_str().unwrap(), p["ip"].as_str().unwrap());
        assert!(
            !Path::new(&l).exists(),
            "the lease {l} is released after StopPodSandbox"
        );
    }

    // Every old record can be removed: the containers one by one, then the pods.
    for k in containers {
        let id = k["id"].as_str().unwrap();
        c.remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer of old container {id}: {e}"));
    }
    for p in pods {
        let id = p["id"].as_str().unwrap();
        c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox of old pod {id}: {e}"));
    }
    let listed_pods = c
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let listed_ctrs = c
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    for p in pods {
        let id = p["id"].as_str().unwrap();
        assert!(
            listed_pods.iter().all(|s| s.id != id),
            "old pod {id} still listed"
        );
        assert!(
            !Path::new(&format!("/var/lib/crust/pods/{id}.json")).exists(),
            "record of pod {id}"
        );
        assert!(
            !Path::new(&format!("/run/crust/pods/{id}")).exists(),
            "state dir of pod {id}"
        );
    }
    for k in containers {
        let id = k["id"].as_str().unwrap();
        assert!(
            listed_ctrs.iter().all(|s| s.id != id),
            "old container {id} still listed"
        );
        for path in [
            format!("/var/lib/crust/containers/{id}.json"),
            format!("/var/lib/crust/containers/{id}"),
            format!("/run/crust/containers/{id}"),
        ] {
            assert!(!Path::new(&path).exists(), "{path} is left after RemoveContainer");
        }
    }

    // A new pod on the same network runs.
    let p = pod("rb-new", true).await;
    let busybox = rt_image().await;
    let id = run(&p, ctr("sleeper", &busybox, &["sleep", "86400"])).await;
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    let (ps, _) = pod_status(&p.id).await;
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    assert!(
        !ps.network.unwrap_or_default().ip.is_empty(),
        "the new pod has an IP"
    );
    let out = c
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["cat".into(), "/sys/class/net/eth0/operstate".into()],
            timeout: 60,
        })
        .await
        .expect("ExecSync in the new pod")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "up\n");
    remove_pod(&p.id).await.expect("remove the new pod");
}

/// The busybox test image crust pulled before the reboot (its store outlives it; the registry the
/// runner started then is gone).
async fn rt_image() -> String {
    let ch = harness::crustd::channel(&socket()).await.unwrap();
    let imgs = cri_api::v1::image_service_client::ImageServiceClient::new(ch)
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    imgs.iter()
        .flat_map(|i| i.repo_tags.iter())
        .find(|t| t.contains("busybox"))
        .cloned()
        .expect("the busybox test image is still in crust's store after the reboot")
}
