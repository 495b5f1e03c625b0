//! The node tests: run inside the booted Debian test node by `make node-test` (conformance/node), against
//! the crust *installed* there (`make install`, `systemctl enable --now crust`) on
//! `$CRUST_NODE_SOCKET` (default `/run/crust/crust.sock`), with images pushed to the registry the runner
//! started (`$CRUST_TEST_REGISTRY`, default `http://127.0.0.1:5000`, which crust mirrors as plain HTTP).
//!
//! What a real node must show: pod and container lifecycle, stats on cgroup v2, OOM kills reported,
//! a private cgroup namespace (`0::/`), containers surviving `systemctl restart crust` and
//! `systemctl stop crust`, RuntimeConfig answering SYSTEMD, containers in `crust-<id>.scope` units in
//! kubelet's pod slice (the pause and the monitors in scopes of their own) that go with the pod, and
//! AppArmor's `crust-default` confining containers. The tests of one topic each are in
//! `node_systemd_parts/` (resources, confinement, checkpoint, D-Bus, reboot); the shared helpers here.
//!
//! Ignored on a development host; inside the node the runner passes `--include-ignored` and sets
//! `CRUST_NODE_TEST=1` (without it each test returns at once, so an `--include-ignored` run elsewhere never
//! restarts a service of the host). They run one at a time (`--test-threads=1`): one restarts crust.
//! Each removes the pods it made, also when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use harness::{Registry, TestImages};
use tonic::transport::Channel;

/// Whether this is the test node (set by conformance/node/run-inside.sh).
fn on_node() -> bool {
    if std::env::var("CRUST_NODE_TEST").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!("skipped: not on the test node (CRUST_NODE_TEST=1 is set by `make node-test`)");
    false
}

fn socket() -> PathBuf {
    std::env::var_os("CRUST_NODE_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run/crust/crust.sock".into())
}

/// A client of the installed crustd; waits up to 60 s for it to answer (after a restart).
async fn rt() -> RuntimeServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ch) = harness::crustd::channel(&socket()).await {
            let mut c = RuntimeServiceClient::new(ch);
            if c.version(VersionRequest::default()).await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "crust does not answer on {}",
            socket().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The registry the runner started (`$CRUST_TEST_REGISTRY`).
fn registry() -> Registry {
    let url = std::env::var("CRUST_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    Registry::external(url.trim_start_matches("http://").trim_end_matches('/'))
}

/// PullImage of `image` by the runtime serving CRI on `socket` (crust, or the bench's containerd).
async fn pull(socket: &std::path::Path, image: &str) {
    let ch = harness::crustd::channel(socket).await.unwrap();
    cri_api::v1::image_service_client::ImageServiceClient::new(ch)
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} pulls {image} from the runner's registry: {e}",
                socket.display()
            )
        });
}

/// The standard test images, pushed once per test binary to the runner's registry and pulled by crust.
async fn images() -> TestImages {
    static PUSHED: OnceLock<TestImages> = OnceLock::new();
    let imgs = PUSHED
        .get_or_init(|| harness::images::push_standard(&registry()))
        .clone();
    pull(&socket(), &imgs.busybox.reference).await;
    imgs
}

async fn cgroup_driver() -> CgroupDriver {
    let r = rt()
        .await
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    CgroupDriver::try_from(r.linux.unwrap_or_default().cgroup_driver).unwrap_or(CgroupDriver::Cgroupfs)
}

/// The pod slice kubelet's systemd driver passes (the leaf name; systemd expands the dashes), and the
/// cgroup path that slice has.
fn pod_slice(uid: &str) -> (String, String) {
    let leaf = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
    let path = format!("/kubepods.slice/kubepods-burstable.slice/{leaf}");
    (leaf, path)
}

/// A pod made by a test; stopped and removed on drop (from a thread of its own, since drop is sync).
struct Pod {
    id: String,
    uid: String,
    config: PodSandboxConfig,
    logs: tempfile::TempDir,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let id = self.id.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(remove_pod(&id))
        })
        .join();
    }
}

async fn remove_pod(id: &str) -> Result<(), tonic::Status> {
    let mut c = rt().await;
    c.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await?;
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .map(drop)
}

/// Runs a pod the way kubelet does on this node: the cgroup parent in the form of the driver crust
/// reports (a slice under systemd, a path under cgroupfs); on the pod network when `network`, else the
/// node's.
async fn pod(name: &str, network: bool) -> Pod {
    pod_with_handler(name, network, "").await
}

/// [`pod`] with a runtime handler (RuntimeClass): "" is the default (crun on this node, see
/// node_systemd_parts/default_handler.rs), "runc" and "crun" by name.
async fn pod_with_handler(name: &str, network: bool, handler: &str) -> Pod {
    let uid = format!("{:08x}-node-{name}", std::process::id());
    let parent = match cgroup_driver().await {
        CgroupDriver::Systemd => pod_slice(&uid).0,
        CgroupDriver::Cgroupfs => format!("kubepods/burstable/pod{uid}"),
    };
    let logs = tempfile::Builder::new()
        .prefix("crust-node-logs-")
        .tempdir()
        .unwrap();
    let config = pod_config(name, &uid, network, parent, logs.path());
    let id = rt()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    Pod {
        id,
        uid,
        config,
        logs,
    }
}

/// A pod's config as kubelet writes it: in `parent` (none: the runtime's default), logs in `logs`, on
/// the pod network when `network`, else the node's.
fn pod_config(
    name: &str,
    uid: &str,
    network: bool,
    parent: String,
    logs: &std::path::Path,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "crust-node-test".into(),
            attempt: 0,
        }),
        // As kubelet: a pod on the node's network shares the node's hostname and is given none.
        hostname: if network { name.into() } else { String::new() },
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: parent,
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if network {
                        NamespaceMode::Pod
                    } else {
                        NamespaceMode::Node
                    } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ctr(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

async fn run(p: &Pod, config: ContainerConfig) -> String {
    create_then_start(&mut rt().await, &p.id, &p.config, config)
        .await
        .1
}

/// Creates and starts `config` in `pod` through `c` (crust, or another runtime's CRI); the times the
/// CreateContainer and the StartContainer took in ms, and the container's ID.
async fn create_then_start(
    c: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    sandbox: &PodSandboxConfig,
    config: ContainerConfig,
) -> ((f64, f64), String) {
    let t0 = Instant::now();
    let id = create(c, pod, sandbox, config).await;
    let created = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    ((created, t1.elapsed().as_secs_f64() * 1000.0), id)
}

/// Creates `config` in `pod` through `c`; the container's ID.
async fn create(
    c: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    sandbox: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    c.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(sandbox.clone()),
    })
    .await
    .expect("CreateContainer")
    .into_inner()
    .container_id
}

async fn status(id: &str) -> ContainerStatus {
    rt().await
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .unwrap()
}

async fn wait_exited(id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(id).await;
        if st.state == ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The container's stdout lines (CRI log format: `<time> stdout F <text>`) once it has exited.
async fn stdout_of(p: &Pod, name: &str, id: &str) -> String {
    wait_exited(id).await;
    let raw = std::fs::read_to_string(p.logs.path().join(format!("{name}.log"))).unwrap_or_default();
    raw.lines()
        .filter_map(|l| l.split_once(" stdout F "))
        .map(|(_, t)| format!("{t}\n"))
        .collect()
}

/// PIDs of the processes whose command line is exactly `argv`.
fn pids_of(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| [a.as_bytes(), b"\0"].concat()).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Waits for exactly one process with command line `argv` and returns its PID.
async fn the_pid_of(argv: &[&str]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let [pid] = pids_of(argv)[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "no single process {argv:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a process's `/proc/<pid>/cgroup` puts it in the cgroup `scope` (a path under the v2 root):
/// the scope itself (runc), or its `container` child, where crun with the systemd cgroup driver runs
/// the container's processes (on cgroup v2 a cgroup that enables controllers for its children may hold
/// no process itself).
fn in_scope(cgroup_file: &str, scope: &str) -> bool {
    [format!("0::{scope}\n"), format!("0::{scope}/container\n")].contains(&cgroup_file.to_string())
}

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl").args(args).output().expect("systemctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() || args[0] == "show" || args[0] == "is-active",
        "systemctl {args:?}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A unit's properties (`systemctl show -p …`).
fn unit(name: &str) -> (String, String) {
    let out = systemctl(&["show", "-p", "ActiveState,ControlGroup", name]);
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    (get("ActiveState"), get("ControlGroup"))
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn runtime_config_reports_the_systemd_driver() {
    if !on_node() {
        return;
    }
    assert_eq!(
        cgroup_driver().await,
        CgroupDriver::Systemd,
        "PID 1 is systemd: crust's default driver (auto) must be systemd, as kubelet's is"
    );
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn pod_and_container_lifecycle_on_the_pod_network() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod("lifecycle", true).await;
    let id = run(&p, ctr("sleeper", &imgs.busybox.reference, &["sleep", "86400"])).await;
    let st = status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    let mut c = rt().await;
    let out = c
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo hi; cat /sys/class/net/eth0/operstate".into(),
            ],
            timeout: 60,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "hi\nup\n"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = c
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: p.id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    assert!(!ps.network.unwrap_or_default().ip.is_empty(), "the pod has an IP");
    c.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .expect("StopContainer");
    assert_eq!(status(&id).await.state, ContainerState::ContainerExited as i32);
    c.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    remove_pod(&p.id)
        .await
        .expect("StopPodSandbox + RemovePodSandbox");
    let left = c
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.iter().all(|s| s.id != p.id), "the pod is gone");
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn containers_outlive_restart_and_stop_of_the_service() {
    if !on_node() {
        return;
    }
    /// Starts crust again whatever happens, so that the tests after this one find it.
    struct StartAgain;
    impl Drop for StartAgain {
        fn drop(&mut self) {
            let _ = Command::new("systemctl").args(["start", "crust"]).status();
        }
    }
    let imgs = images().await;
    let p = pod("restart", false).await;
    let argv = ["sleep", "86401"];
    let id = run(&p, ctr("survivor", &imgs.busybox.reference, &argv)).await;
    let pid = the_pid_of(&argv).await;
    let _again = StartAgain;
    let before = systemctl(&["show", "-p", "MainPID", "--value", "crust"]);

    systemctl(&["restart", "crust"]);
    let after = systemctl(&["show", "-p", "MainPID", "--value", "crust"]);
    assert_ne!(before, after, "crustd is a new process");
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    assert_eq!(pids_of(&argv), vec![pid], "the same container process runs");

    systemctl(&["stop", "crust"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pids_of(&argv),
        vec![pid],
        "`systemctl stop crust` left the container running"
    );
    systemctl(&["start", "crust"]);
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    assert_eq!(systemctl(&["is-active", "crust"]).trim(), "active");
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn crun_runs_containers_as_a_second_handler() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod_with_handler("crun", false, "crun").await;
    let argv = ["sleep", "86403"];
    let id = run(&p, ctr("crun", &imgs.busybox.reference, &argv)).await;
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    let pid = the_pid_of(&argv).await;
    let cmdline = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // The container's monitor ran crun, not runc.
    let monitor = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| cmdline(*p).contains("crust-monitor") && cmdline(*p).contains(&id))
        .expect("the container's monitor");
    assert!(
        cmdline(monitor)
            .split('\0')
            .any(|a| a.ends_with("/crun") || a == "crun"),
        "the monitor runs crun: {:?}",
        cmdline(monitor)
    );
    if cgroup_driver().await == CgroupDriver::Systemd {
        let (_, slice) = pod_slice(&p.uid);
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cg.starts_with(&format!("0::{slice}/crust-{id}.scope")),
            "crun put the container in its scope: {cg}"
        );
    }
    let short = run(
        &p,
        ctr("crun-ns", &imgs.busybox.reference, &["cat", "/proc/self/cgroup"]),
    )
    .await;
    assert_eq!(stdout_of(&p, "crun-ns", &short).await, "0::/\n");
    let mut c = rt().await;
    c.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    assert_eq!(wait_exited(&id).await.exit_code, 137);
}

#[path = "node_systemd_parts/bench.rs"]
mod bench;
#[path = "node_systemd_parts/checkpoint.rs"]
mod checkpoint;
#[path = "node_systemd_parts/confinement.rs"]
mod confinement;
#[path = "node_systemd_parts/dbus.rs"]
mod dbus;
#[path = "node_systemd_parts/default_handler.rs"]
mod default_handler;
#[path = "node_systemd_parts/reboot.rs"]
mod reboot;
#[path = "node_systemd_parts/resources.rs"]
mod resources;
#[path = "node_systemd_parts/userns.rs"]
mod userns;
