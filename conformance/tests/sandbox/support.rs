//! Helpers of the sandbox tests: pod configs, RPC shorthands, entering a pod's netns, and the checks
//! that a pod left nothing behind (netns pin, IP lease, cgroup, pod files, process).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions};

pub fn meta(name: &str) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "crust-test".into(),
        attempt: 0,
    }
}

pub fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(meta(name)),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        ..Default::default()
    }
}

pub fn with_ns(mut c: PodSandboxConfig, ns: NamespaceOption) -> PodSandboxConfig {
    c.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

pub async fn run(c: &Crustd, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    c.runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

pub async fn status(c: &Crustd, id: &str, verbose: bool) -> PodSandboxStatusResponse {
    c.runtime()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn stop(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(drop)
}

pub async fn remove(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(drop)
}

pub async fn list(c: &Crustd, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    c.runtime()
        .await
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .items
}

pub fn netns_path(c: &Crustd, id: &str) -> PathBuf {
    c.state.join("netns").join(id)
}

/// Runs `f` on a fresh thread that joined the network namespace pinned at `ns`.
pub fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// The pause's pid from the verbose status.
pub async fn pause_pid(c: &Crustd, id: &str) -> u32 {
    let info = status(c, id, true).await.info;
    let v: serde_json::Value = serde_json::from_str(info.get("info").expect("info key")).unwrap();
    v["pid"].as_u64().expect("pid") as u32
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// IP leases host-local holds for the test network.
pub fn leases(c: &Crustd) -> Vec<String> {
    let net = c.network.as_ref().unwrap();
    let dir = net.ipam_dir.join(&net.name);
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Cgroups below this crustd's cgroup parent, in any hierarchy.
pub fn pod_cgroups(c: &Crustd) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(rd) = std::fs::read_dir(h.path().join(&c.cgroup_parent)) {
            out.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Processes (other than crustd) whose command line mentions this crustd's state dir (monitors) or
/// that sit in a cgroup below its cgroup parent (pauses, containers).
pub fn processes_of(c: &Crustd) -> Vec<String> {
    let me = std::process::id();
    let state = c.state.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || Some(pid) == c.pid() || !alive(pid) {
            continue;
        }
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .replace('\0', " ");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let in_parent = cgroups
            .lines()
            .any(|l| l.contains(&format!(":/{}/", c.cgroup_parent)));
        if cmd.contains(&state) || in_parent {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Asserts the pod left nothing: no netns pin, lease, cgroup, pod files or process.
pub fn assert_clean(c: &Crustd, id: &str) {
    assert!(
        !netns_path(c, id).exists(),
        "netns pin left at {}",
        netns_path(c, id).display()
    );
    assert_eq!(leases(c), Vec::<String>::new(), "IP leases left");
    assert_eq!(pod_cgroups(c), Vec::<PathBuf>::new(), "cgroups left");
    assert!(!c.state.join("pods").join(id).exists(), "pod files left");
    assert_eq!(processes_of(c), Vec::<String>::new(), "processes left");
}

/// Asserts a refused RunPodSandbox left nothing: no record, listed or on disk, no pod files, nothing
/// [`assert_clean`] looks for.
pub async fn assert_refused_left_nothing(c: &Crustd) {
    assert!(list(c, None).await.is_empty(), "a record was left");
    assert!(
        std::fs::read_dir(c.root.join("pods")).unwrap().next().is_none(),
        "pod record left"
    );
    assert_eq!(
        std::fs::read_dir(c.state.join("pods")).unwrap().count(),
        0,
        "pod files left"
    );
    assert_clean(c, "none");
}

pub async fn start_crustd() -> Crustd {
    Crustd::start(CrustdOptions {
        cni: true,
        ..Default::default()
    })
    .await
}

/// Reads a /proc/sys file from a thread that joined `pid`'s namespace of kind `ns` (`net`, `ipc`).
pub fn sysctl_in(pid: u32, ns: &str, key: &str) -> String {
    let file = std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).unwrap();
    let flag = if ns == "net" {
        nix::sched::CloneFlags::CLONE_NEWNET
    } else {
        nix::sched::CloneFlags::CLONE_NEWIPC
    };
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::thread::spawn(move || {
        nix::sched::setns(file, flag).unwrap();
        std::fs::read_to_string(path).unwrap().trim().to_string()
    })
    .join()
    .unwrap()
}
