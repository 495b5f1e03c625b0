//! systemd and D-Bus faults while pods are made: `systemctl daemon-reexec` (systemd leaves the bus and
//! comes back) and `systemctl restart dbus` (every bus connection, crust's too, is cut). crust's systemd
//! cgroup driver must carry on: every pod and container is made (a creation that fails does so with
//! UNAVAILABLE, which kubelet retries, and its retry succeeds), crustd is on the bus again afterwards,
//! every running container's scope is active and holds its process, and once the pods are removed no
//! `crust-*` unit is left.

use super::*;
use std::path::Path;

/// How many pods each fault is met by.
const PODS: usize = 6;

/// A creation that failed with a retriable code is tried again, at most this often.
const RETRIES: usize = 5;

/// Runs `f` until it succeeds, retrying a failure only when its code is UNAVAILABLE; the codes of the
/// failures it met are pushed to `failures`.
async fn with_retry<T, F, Fut>(what: &str, failures: &mut Vec<String>, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..RETRIES {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                eprintln!("node-dbus: {what}: {:?}: {}", e.code(), e.message());
                failures.push(format!("{what}: {:?}", e.code()));
                assert_eq!(
                    e.code(),
                    tonic::Code::Unavailable,
                    "{what} failed with a code kubelet would not retry: {e}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    panic!("{what} still fails after {RETRIES} tries: {failures:?}");
}

/// A pod (on the node's network) with a running container, made while `fault` runs: the pod id, its
/// slice, the container id and the container's argv.
struct Made {
    pod: String,
    slice: String,
    ctr: String,
    argv: Vec<String>,
}

/// Makes [`PODS`] pods each with a running container, running `fault` (a systemctl command) once the
/// first pod is made, while the others are being made. Returns what was made and the failures met.
async fn make_pods_across(tag: &str, fault: &'static [&'static str]) -> (Vec<Made>, Vec<String>) {
    let imgs = images().await;
    let driver = cgroup_driver().await;
    assert_eq!(driver, CgroupDriver::Systemd);
    let mut made = Vec::new();
    let mut failures = Vec::new();
    let mut fault_task = None;
    for i in 0..PODS {
        if i == 1 {
            fault_task = Some(tokio::task::spawn_blocking(move || {
                let out = Command::new("systemctl").args(fault).output().expect("systemctl");
                eprintln!(
                    "node-dbus: systemctl {fault:?}: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                out.status.success()
            }));
        }
        let uid = format!("{:08x}-node-{tag}-{i}", std::process::id());
        let slice = pod_slice(&uid);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("{tag}-{i}"),
                uid,
                namespace: "crust-node-test".into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: slice.0.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = with_retry(&format!("RunPodSandbox {tag}-{i}"), &mut failures, || {
            let config = config.clone();
            async move {
                rt().await
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().pod_sandbox_id)
            }
        })
        .await;
        // A number of its own per container (the tests look a container's process up by its argv, and
        // one test makes two sets of pods).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(86500);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let argv = vec!["sleep".to_string(), n.to_string()];
        let cmd: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cconfig = ctr("sleeper", &imgs.busybox.reference, &cmd);
        let ctr_id = with_retry(&format!("CreateContainer {tag}-{i}"), &mut failures, || {
            let (pod, config, cconfig) = (pod.clone(), config.clone(), cconfig.clone());
            async move {
                rt().await
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod,
                        config: Some(cconfig),
                        sandbox_config: Some(config),
                    })
                    .await
                    .map(|r| r.into_inner().container_id)
            }
        })
        .await;
        with_retry(&format!("StartContainer {tag}-{i}"), &mut failures, || {
            let id = ctr_id.clone();
            async move {
                rt().await
                    .start_container(StartContainerRequest { container_id: id })
                    .await
                    .map(drop)
            }
        })
        .await;
        made.push(Made {
            pod,
            slice: slice.1,
            ctr: ctr_id,
            argv,
        });
    }
    let ok = fault_task.unwrap().await.unwrap();
    assert!(ok, "systemctl {fault:?} failed");
    (made, failures)
}

/// Whether crustd has a connection on the system bus (`busctl list` names the process of each).
fn crustd_on_the_bus() -> bool {
    let out = Command::new("busctl")
        .args(["list", "--system", "--no-legend", "--unique"])
        .output()
        .expect("busctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("crustd"))
}

/// Every container's scope is active in its pod's slice and holds its process, and the pause's scope
/// is active; then the pods are removed and no `crust-*` unit is left.
async fn scopes_kept_and_none_leaked(made: Vec<Made>) {
    for m in &made {
        let argv: Vec<&str> = m.argv.iter().map(String::as_str).collect();
        let pid = the_pid_of(&argv).await;
        let scope = format!("crust-{}.scope", m.ctr);
        assert_eq!(
            unit(&scope),
            ("active".to_string(), format!("{}/{scope}", m.slice)),
            "the container's scope"
        );
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            in_scope(&cg, &format!("{}/{scope}", m.slice)),
            "the container's process is in its scope: {cg}"
        );
        let pause = format!("crust-pause-{}.scope", m.pod);
        assert_eq!(unit(&pause).0, "active", "{pause}");
        assert_eq!(
            status(&m.ctr).await.state,
            ContainerState::ContainerRunning as i32
        );
    }
    for m in &made {
        remove_pod(&m.pod)
            .await
            .expect("StopPodSandbox + RemovePodSandbox");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = systemctl(&["list-units", "--all", "--no-legend", "--plain", "crust-*"]);
        let left: Vec<&str> = left
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            // crust's scopes; not the node runner's own crust-node-test.service.
            .filter(|u| u.starts_with("crust-") && u.ends_with(".scope"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "crust units left after the pods were removed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for m in &made {
        assert!(
            !Path::new(&format!("/sys/fs/cgroup{}", m.slice))
                .join(format!("crust-{}.scope", m.ctr))
                .exists(),
            "the cgroup of {} is gone",
            m.ctr
        );
    }
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn dbus_pods_are_made_while_systemd_reexecutes() {
    if !on_node() {
        return;
    }
    let (made, failures) = make_pods_across("reexec", &["daemon-reexec"]).await;
    eprintln!("node-dbus: daemon-reexec: {PODS} pods made; failures on the way: {failures:?}");
    assert!(crustd_on_the_bus(), "crustd is on the system bus");
    scopes_kept_and_none_leaked(made).await;
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn dbus_pods_are_made_while_the_bus_restarts() {
    if !on_node() {
        return;
    }
    let (made, failures) = make_pods_across("busrestart", &["restart", "dbus"]).await;
    eprintln!("node-dbus: restart dbus: {PODS} pods made; failures on the way: {failures:?}");
    // One more pod after the restart: its scopes are made over a new connection.
    let (after, more) = make_pods_across("afterbus", &["is-active", "dbus"]).await;
    assert!(more.is_empty(), "creations after the bus is back fail: {more:?}");
    assert!(crustd_on_the_bus(), "crustd is on the new system bus again");
    scopes_kept_and_none_leaked(made.into_iter().chain(after).collect()).await;
}
