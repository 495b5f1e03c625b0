//! Pod sandboxes end to end: real crustd, runc, the crust pause, and the CNI plugins in /usr/lib/cni.
//! Traffic stays on loopback and inside the pods' own network namespaces (entered from the test on a
//! thread of its own).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions};

#[path = "sandbox/names.rs"]
mod names;
#[path = "sandbox/network.rs"]
mod network;
#[path = "sandbox/reaper.rs"]
mod reaper;
#[path = "sandbox/support.rs"]
mod support;
use support::*;

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
    let orig: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.cni_conf_dir.join("10-crust-test.conflist")).unwrap(),
    )
    .unwrap();
    let mut failing = orig.clone();
    failing["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "crust-test-failer"}));
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
    assert!(
        msg.contains("crust test failure: on purpose"),
        "plugin message not surfaced: {msg}"
    );
    assert!(msg.contains("CNI ADD"), "step not named: {msg}");
    assert_eq!(
        std::fs::read_dir(c.state.join("netns")).unwrap().count(),
        0,
        "netns pin left"
    );
    assert_refused_left_nothing(&c).await;
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
    assert_eq!(
        list(
            &c,
            Some(PodSandboxFilter {
                id: id[..12].into(),
                ..Default::default()
            })
        )
        .await
        .len(),
        1
    );
    let ready = Some(PodSandboxStateValue {
        state: PodSandboxState::SandboxReady as i32,
    });
    assert_eq!(
        list(
            &c,
            Some(PodSandboxFilter {
                state: ready,
                ..Default::default()
            })
        )
        .await
        .len(),
        1
    );
    let sel: HashMap<String, String> = [("app".to_string(), "other".to_string())].into();
    assert!(
        list(
            &c,
            Some(PodSandboxFilter {
                label_selector: sel,
                ..Default::default()
            })
        )
        .await
        .is_empty()
    );
    // Stats: the pause is one process in the pod cgroup.
    let stats = c
        .runtime()
        .await
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = stats.linux.unwrap();
    assert_eq!(linux.process.unwrap().process_count.unwrap().value, 1);
    assert!(linux.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(linux.network.unwrap().interfaces.iter().any(|i| i.name == "eth0"));

    let all = c
        .runtime()
        .await
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attributes.as_ref().unwrap().id, id);

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
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
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
    assert!(
        e.message().contains("config.metadata.namespace"),
        "{}",
        e.message()
    );
    let mut m = pod("x");
    m.metadata.as_mut().unwrap().name = String::new();
    let e = run(&c, m).await.unwrap_err();
    assert!(e.message().contains("config.metadata.name"), "{}", e.message());
    let e = c
        .runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod("x")),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("runtime_handler"), "{}", e.message());
    assert!(list(&c, None).await.is_empty());
    // The two lists (served from responses encoded by the core) refuse a state no enum has.
    let mut rt = c.runtime().await;
    let e = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue { state: 7 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("filter.state.state"), "{}", e.message());
    let e = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue { state: -1 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("filter.state.state"), "{}", e.message());
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
    assert_eq!(
        status(&c, &id, false).await.status.unwrap().network.unwrap().ip,
        ip
    );
    assert_eq!(leases(&c), vec![ip]);
    stop(&c, &id).await.unwrap();
    assert!(!alive(pid));
    assert!(
        leases(&c).is_empty(),
        "CNI DEL after restart did not release the lease"
    );
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}

#[tokio::test]
async fn pause_is_unprivileged_in_the_pod_cgroup_holding_the_pod_namespaces() {
    let c = start_crustd().await;
    let mut cfg = pod("infra");
    cfg.linux = Some(LinuxPodSandboxConfig {
        sysctls: [
            ("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string()),
            ("kernel.msgmax".to_string(), "16384".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    let id = run(&c, cfg).await.unwrap();
    let pid = pause_pid(&c, &id).await;
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65535"),
        "{uid_line}"
    );
    // No capabilities at all (bounding set included), no_new_privs, and the read-only pause root.
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        let line = proc_status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let nspid = proc_status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "the pause is not PID 1 of the pod: {nspid}"
    );
    let nnp = proc_status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .unwrap();
    assert!(nnp.ends_with('1'), "{nnp}");
    let root = format!("/proc/{pid}/root");
    let mut top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["dev", "etc", "pause", "proc", "sys"], "the pause's root");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_mount = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/")).unwrap();
    assert!(
        root_mount
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{root_mount}"
    );
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // v1: the memory hierarchy's line; v2: the only one, `0::`.
    let mem = cgroups
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap();
    assert!(mem.ends_with(&format!(":/{}", c.pause_cgroup(&id))), "{mem}");
    // Own IPC, UTS and PID namespaces; the pinned netns.
    for ns in ["ipc", "uts", "pid"] {
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "{ns} namespace shared with the host"
        );
    }
    let pinned = std::fs::metadata(netns_path(&c, &id)).unwrap();
    let pause_net = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        pinned.ino(),
        pause_net.ino(),
        "the pause is not in the pinned netns"
    );
    // Sysctls applied in the pod's namespaces, not on the host.
    assert_eq!(sysctl_in(pid, "net", "net.ipv4.ip_unprivileged_port_start"), "0");
    assert_eq!(sysctl_in(pid, "ipc", "kernel.msgmax"), "16384");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/msgmax").unwrap().trim(),
        "16384"
    );
    // Verbose status carries the runtime spec.
    let info = status(&c, &id, true).await.info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    assert_eq!(v["runtimeSpec"]["process"]["args"][0], "/pause");
    assert_eq!(v["runtimeSpec"]["hostname"], "infra");
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}

#[tokio::test]
async fn failed_pause_start_rolls_back_the_network_too() {
    let c = Crustd::start(CrustdOptions {
        cni: true,
        extra_toml: "[runtime]\npause_path = \"/nonexistent/crust-pause\"\n".into(),
        ..Default::default()
    })
    .await;
    let e = run(&c, pod("nopause")).await.unwrap_err();
    assert!(e.message().contains("pause"), "{}", e.message());
    assert!(
        e.message().contains("/nonexistent/crust-pause"),
        "{}",
        e.message()
    );
    assert!(list(&c, None).await.is_empty());
    assert_eq!(
        std::fs::read_dir(c.state.join("netns")).unwrap().count(),
        0,
        "netns pin left"
    );
    assert_clean(&c, "none");
}

#[tokio::test]
async fn a_pod_left_half_made_by_a_crash_is_rolled_back_at_start_up() {
    let mut c = start_crustd().await;
    let id = run(&c, pod("halfmade")).await.unwrap();
    let pid = pause_pid(&c, &id).await;
    c.kill9();
    // Make the record say creation never finished, as after a crash mid-way.
    let path = c.root.join("pods").join(format!("{id}.json"));
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec["state"] = "creating".into();
    std::fs::write(&path, rec.to_string()).unwrap();
    c.restart().await;
    assert!(
        list(&c, None).await.is_empty(),
        "the half-made pod is still listed"
    );
    assert!(!path.exists(), "record left");
    assert!(!alive(pid), "pause left running");
    assert_clean(&c, &id);
}

#[tokio::test]
async fn a_pod_whose_pause_died_while_crustd_was_down_is_not_ready_and_its_lease_is_freed() {
    let mut c = start_crustd().await;
    let id = run(&c, pod("orphan")).await.unwrap();
    let pid = pause_pid(&c, &id).await;
    c.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(harness::wait_for(Duration::from_secs(10), || (!alive(pid)).then_some(())).is_some());
    c.restart().await;
    let pods = list(&c, None).await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodSandboxState::SandboxNotready as i32);
    assert!(leases(&c).is_empty(), "recovery did not run CNI DEL");
    assert!(!netns_path(&c, &id).exists());
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}

#[tokio::test]
async fn a_pod_whose_pause_dies_turns_not_ready() {
    let c = start_crustd().await;
    let id = run(&c, pod("fragile")).await.unwrap();
    let notready = Some(PodSandboxStateValue {
        state: PodSandboxState::SandboxNotready as i32,
    });
    let by_state = |state| PodSandboxFilter {
        state,
        ..Default::default()
    };
    // Listed and asked twice first: crustd keeps these responses while nothing changes (but for the
    // status' timestamp), and the pause's death changes no record, only the set of pauses it watches.
    let mut stamps = Vec::new();
    for _ in 0..2 {
        let all = list(&c, None).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, PodSandboxState::SandboxReady as i32);
        assert!(list(&c, Some(by_state(notready))).await.is_empty());
        let st = status(&c, &id, false).await;
        assert_eq!(st.status.unwrap().state, PodSandboxState::SandboxReady as i32);
        stamps.push(st.timestamp);
    }
    assert!(
        stamps[1] > stamps[0],
        "each status has its own timestamp: {stamps:?}"
    );
    let pid = pause_pid(&c, &id).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut state = PodSandboxState::SandboxReady as i32;
    for _ in 0..200 {
        state = status(&c, &id, false).await.status.unwrap().state;
        if state == PodSandboxState::SandboxNotready as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(list(&c, Some(by_state(notready))).await.len(), 1);
    assert_eq!(
        list(&c, None).await[0].state,
        PodSandboxState::SandboxNotready as i32
    );
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert_clean(&c, &id);
}
