//! Pod sandboxes end to end: real crustd, runc, the crust pause, and the CNI plugins in /usr/lib/cni.
//! Traffic stays on loopback and inside the pods' own network namespaces (entered from the test on a
//! thread of its own).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions};

fn meta(name: &str) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "crust-test".into(),
        attempt: 0,
    }
}

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(meta(name)),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        ..Default::default()
    }
}

fn with_ns(mut c: PodSandboxConfig, ns: NamespaceOption) -> PodSandboxConfig {
    c.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn run(c: &Crustd, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    c.runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(c: &Crustd, id: &str, verbose: bool) -> PodSandboxStatusResponse {
    c.runtime()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose })
        .await
        .unwrap()
        .into_inner()
}

async fn stop(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime().await.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.map(drop)
}

async fn remove(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime().await.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.map(drop)
}

async fn list(c: &Crustd, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    c.runtime().await.list_pod_sandbox(ListPodSandboxRequest { filter }).await.unwrap().into_inner().items
}

fn netns_path(c: &Crustd, id: &str) -> PathBuf {
    c.state.join("netns").join(id)
}

/// Runs `f` on a fresh thread that joined the network namespace pinned at `ns`.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// The pause's pid from the verbose status.
async fn pause_pid(c: &Crustd, id: &str) -> u32 {
    let info = status(c, id, true).await.info;
    let v: serde_json::Value = serde_json::from_str(info.get("info").expect("info key")).unwrap();
    v["pid"].as_u64().expect("pid") as u32
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// IP leases host-local holds for the test network.
fn leases(c: &Crustd) -> Vec<String> {
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
fn pod_cgroups(c: &Crustd) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(rd) = std::fs::read_dir(h.path().join(&c.cgroup_parent)) {
            out.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    out
}

/// Processes (other than crustd) whose command line mentions this crustd's state dir: monitors, pauses.
fn processes_of(c: &Crustd) -> Vec<String> {
    let me = std::process::id();
    let state = c.state.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me || Some(pid) == c.pid() || !alive(pid) {
            continue;
        }
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
        if cmd.contains(&state) {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Asserts the pod left nothing: no netns pin, lease, cgroup, pod files or process.
fn assert_clean(c: &Crustd, id: &str) {
    assert!(!netns_path(c, id).exists(), "netns pin left at {}", netns_path(c, id).display());
    assert_eq!(leases(c), Vec::<String>::new(), "IP leases left");
    assert_eq!(pod_cgroups(c), Vec::<PathBuf>::new(), "cgroups left");
    assert!(!c.state.join("pods").join(id).exists(), "pod files left");
    assert_eq!(processes_of(c), Vec::<String>::new(), "processes left");
}

async fn start_crustd() -> Crustd {
    Crustd::start(CrustdOptions { cni: true, ..Default::default() }).await
}

#[tokio::test]
async fn pods_get_ips_in_the_subnet_and_reach_each_other_over_tcp() {
    let c = start_crustd().await;
    let a = run(&c, pod("pod-a")).await.unwrap();
    let b = run(&c, pod("pod-b")).await.unwrap();
    let sa = status(&c, &a, false).await.status.unwrap();
    assert_eq!(sa.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(sa.labels.get("app").map(String::as_str), Some("pod-a"));
    assert_eq!(sa.annotations.get("note").map(String::as_str), Some("kept"));
    assert!(sa.created_at > 0);
    let ip_a: IpAddr = sa.network.unwrap().ip.parse().unwrap();
    let ip_b: IpAddr = status(&c, &b, false).await.status.unwrap().network.unwrap().ip.parse().unwrap();
    let prefix = format!("10.234.{}.", c.network.as_ref().unwrap().index);
    assert!(ip_a.to_string().starts_with(&prefix) && ip_b.to_string().starts_with(&prefix), "{ip_a} {ip_b}");
    assert_ne!(ip_a, ip_b);
    assert_eq!(leases(&c).len(), 2);

    // A listener inside pod A's netns; a client inside pod B's netns connects to A's IP.
    let listener = in_netns(&netns_path(&c, &a), || TcpListener::bind("0.0.0.0:8080").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong!").unwrap();
        (peer.ip(), buf)
    });
    let reply = in_netns(&netns_path(&c, &b), move || {
        let mut s = TcpStream::connect_timeout(&(ip_a, 8080).into(), Duration::from_secs(10)).unwrap();
        s.write_all(b"ping!").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let (peer, got) = server.join().unwrap();
    assert_eq!(&got, b"ping!");
    assert_eq!(&reply, b"pong!");
    assert_eq!(peer, ip_b, "the connection came from pod B's address");

    for id in [&a, &b] {
        stop(&c, id).await.unwrap();
        remove(&c, id).await.unwrap();
        assert!(!netns_path(&c, id).exists());
    }
    assert_clean(&c, &a);
}

#[tokio::test]
async fn host_port_on_loopback_reaches_the_pod() {
    let c = start_crustd().await;
    let host_port = harness::free_port();
    let mut cfg = pod("web");
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8081,
        host_port: host_port as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let id = run(&c, cfg).await.unwrap();
    let listener = in_netns(&netns_path(&c, &id), || TcpListener::bind("0.0.0.0:8081").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello from the pod").unwrap();
    });
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], host_port).into(), Duration::from_secs(10))
        .expect("connect to the host port");
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    server.join().unwrap();
    assert_eq!(got, "hello from the pod");
    stop(&c, &id).await.unwrap();
    // After stop the mapping is gone: portmap's DEL removed its chain.
    let nat = std::process::Command::new("iptables").args(["-t", "nat", "-S"]).output().unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(!nat.contains(&format!("--dport {host_port} ")), "DNAT rule left:\n{nat}");
    remove(&c, &id).await.unwrap();
}

#[tokio::test]
async fn host_network_pod_has_the_host_interfaces() {
    let c = start_crustd().await;
    let id = run(&c, with_ns(pod("hostnet"), NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }))
        .await
        .unwrap();
    assert!(!netns_path(&c, &id).exists(), "a host-network pod has no netns pin");
    let st = status(&c, &id, false).await.status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.linux.unwrap().namespaces.unwrap().options.unwrap().network, NamespaceMode::Node as i32);
    let pid = pause_pid(&c, &id).await;
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
            .collect();
        v.sort();
        v
    };
    let host = names("/proc/self/net/dev");
    assert!(host.len() > 1, "{host:?}");
    assert_eq!(names(&format!("/proc/{pid}/net/dev")), host);
    assert!(leases(&c).is_empty(), "no CNI for a host-network pod");
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
}

#[tokio::test]
async fn dns_config_lands_in_resolv_conf_and_hostname_file() {
    let c = start_crustd().await;
    let mut cfg = pod("dns");
    cfg.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["crust-test.svc.cluster.local".into(), "cluster.local".into()],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let id = run(&c, cfg).await.unwrap();
    let dir = c.state.join("pods").join(&id);
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10\n"), "{resolv}");
    assert!(resolv.contains("search crust-test.svc.cluster.local cluster.local\n"), "{resolv}");
    assert!(resolv.contains("options ndots:5 timeout:2\n"), "{resolv}");
    assert_eq!(std::fs::read_to_string(dir.join("hostname")).unwrap(), "dns\n");
    // The pod's /dev/shm is a tmpfs of its own.
    let st = nix::sys::statfs::statfs(&dir.join("shm")).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn failed_cni_add_leaves_nothing_behind() {
    let c = start_crustd().await;
    // A network (first in name order, so the default) whose second plugin fails after the bridge
    // plugin has made the veth and host-local has leased an address.
    let bin = tempfile::tempdir().unwrap();
    let failer = bin.path().join("crust-test-failer");
    std::fs::write(
        &failer,
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"crust test failure\",\"details\":\"on purpose\"}'; exit 1; fi\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.cni_conf_dir.join("10-crust-test.conflist")).unwrap()).unwrap();
    let mut failing = orig.clone();
    failing["plugins"].as_array_mut().unwrap().push(serde_json::json!({"type": "crust-test-failer"}));
    std::fs::write(c.cni_conf_dir.join("05-failing.conflist"), failing.to_string()).unwrap();
    // crustd looks plugins up in its configured bin dirs: restart it with the test's dir added.
    let mut c = c;
    std::fs::create_dir_all(c.dir.path().join("crust.d")).unwrap();
    std::fs::write(
        c.dir.path().join("crust.d/60-bin.toml"),
        format!("[cni]\nbin_dirs = [\"/usr/lib/cni\", {:?}]\n", bin.path()),
    )
    .unwrap();
    c.restart().await;

    let err = run(&c, pod("doomed")).await.unwrap_err();
    let msg = err.message();
    assert!(msg.contains("crust test failure: on purpose"), "plugin message not surfaced: {msg}");
    assert!(msg.contains("CNI ADD"), "step not named: {msg}");
    assert!(list(&c, None).await.is_empty(), "a record was left");
    assert_eq!(std::fs::read_dir(c.state.join("netns")).unwrap().count(), 0, "netns pin left");
    assert!(std::fs::read_dir(c.root.join("pods")).unwrap().next().is_none(), "pod record left");
    assert_eq!(std::fs::read_dir(c.state.join("pods")).unwrap().count(), 0, "pod files left");
    assert_clean(&c, "none");
    // The name is free again: the same pod can be made once the network works.
    std::fs::remove_file(c.cni_conf_dir.join("05-failing.conflist")).unwrap();
    let id = run(&c, pod("doomed")).await.unwrap();
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}

#[tokio::test]
async fn stop_and_remove_are_idempotent_and_names_are_unique() {
    let c = start_crustd().await;
    let id = run(&c, pod("twice")).await.unwrap();
    // The same name again names the existing pod.
    let e = run(&c, pod("twice")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(e.message().contains(&id), "{}", e.message());
    // Filters: ID prefix, state, labels.
    assert_eq!(list(&c, Some(PodSandboxFilter { id: id[..12].into(), ..Default::default() })).await.len(), 1);
    let ready = Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 });
    assert_eq!(list(&c, Some(PodSandboxFilter { state: ready, ..Default::default() })).await.len(), 1);
    let sel: HashMap<String, String> = [("app".to_string(), "other".to_string())].into();
    assert!(list(&c, Some(PodSandboxFilter { label_selector: sel, ..Default::default() })).await.is_empty());
    // Stats: the pause is one process in the pod cgroup.
    let stats = c
        .runtime()
        .await
        .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = stats.linux.unwrap();
    assert_eq!(linux.process.unwrap().process_count.unwrap().value, 1);
    assert!(linux.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(linux.network.unwrap().interfaces.iter().any(|i| i.name == "eth0"));

    let pid = pause_pid(&c, &id).await;
    assert!(alive(pid));
    stop(&c, &id).await.unwrap();
    assert!(!alive(pid), "pause still runs after stop");
    stop(&c, &id).await.unwrap();
    let st = status(&c, &id, false).await.status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    remove(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    stop(&c, &id).await.unwrap();
    let e = c
        .runtime()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_clean(&c, &id);
}

#[tokio::test]
async fn identical_requests_in_flight_get_the_same_pod() {
    let c = start_crustd().await;
    let (r1, r2) = tokio::join!(run(&c, pod("retry")), run(&c, pod("retry")));
    let (a, b) = (r1.unwrap(), r2.unwrap());
    assert_eq!(a, b);
    assert_eq!(list(&c, None).await.len(), 1);
    stop(&c, &a).await.unwrap();
    remove(&c, &a).await.unwrap();
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let c = start_crustd().await;
    let mut m = pod("x");
    m.metadata.as_mut().unwrap().namespace = String::new();
    let e = run(&c, m).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("config.metadata.namespace"), "{}", e.message());
    let mut m = pod("x");
    m.metadata.as_mut().unwrap().name = "n".repeat(64);
    let e = run(&c, m).await.unwrap_err();
    assert!(e.message().contains("config.metadata.name"), "{}", e.message());
    let e = c
        .runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(pod("x")), runtime_handler: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("runtime_handler"), "{}", e.message());
    assert!(list(&c, None).await.is_empty());
}

#[tokio::test]
async fn pod_survives_crustd_sigkill_and_cleans_up_after_restart() {
    let mut c = start_crustd().await;
    let id = run(&c, pod("survivor")).await.unwrap();
    let ip = status(&c, &id, false).await.status.unwrap().network.unwrap().ip;
    let pid = pause_pid(&c, &id).await;
    c.kill9();
    assert!(alive(pid), "the pause died with crustd");
    c.restart().await;
    let pods = list(&c, None).await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status(&c, &id, false).await.status.unwrap().network.unwrap().ip, ip);
    assert_eq!(leases(&c), vec![ip]);
    stop(&c, &id).await.unwrap();
    assert!(!alive(pid));
    assert!(leases(&c).is_empty(), "CNI DEL after restart did not release the lease");
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}
