//! CNI plugins that hang or fail: a shell-script plugin (`crust-fault`) chained after the test network's
//! bridge and host-local IPAM, which misbehaves only for the pods whose names ask for it, so that other
//! pods are created beside a hung one. crust never runs CHECK (neither do containerd and CRI-O), so a
//! plugin failing it must not matter.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cri_api::v1::*;
use harness::fault::scenario_async;
use harness::{Crustd, CrustdOptions};
use tonic::Code;

use crate::{pod_config, pods, run_pod};

/// The plugin: ADD of a `hang-add*` pod hangs in a child (`sleep 7777`, which must die with it), DEL
/// of a `fail-del*` pod fails, CHECK always fails; otherwise it passes the previous result on.
const PLUGIN: &str = r#"#!/bin/sh
conf=$(cat)
case "$CNI_COMMAND:$CNI_ARGS" in
ADD:*K8S_POD_NAME=hang-add*) sleep 7777 & wait; exit 0 ;;
DEL:*K8S_POD_NAME=fail-del*) echo '{"cniVersion":"1.0.0","code":11,"msg":"injected DEL failure"}'; exit 1 ;;
CHECK:*) echo '{"cniVersion":"1.0.0","code":11,"msg":"injected CHECK failure"}'; exit 1 ;;
ADD:*) printf '%s' "$conf" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
esac
"#;

/// The plugin's timeout for these scenarios.
const TIMEOUT_SECS: u64 = 4;

struct Env {
    c: Crustd,
    _bin: tempfile::TempDir,
}

async fn env() -> Env {
    let bin = tempfile::tempdir().unwrap();
    let plugin = bin.path().join("crust-fault");
    std::fs::write(&plugin, PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let c = Crustd::start(CrustdOptions {
        cni: true,
        extra_toml: format!(
            "[cni]\nplugin_timeout_seconds = {TIMEOUT_SECS}\nbin_dirs = [{:?}, \"/usr/lib/cni\", \"/opt/cni/bin\"]\n",
            bin.path().display().to_string()
        ),
        ..Default::default()
    })
    .await;
    chain_plugin(&c, "crust-fault");
    Env { c, _bin: bin }
}

/// Chains plugin `kind` last in the test network's list (after bridge + host-local); crustd reads the
/// conf dir at each RunPodSandbox.
pub(crate) fn chain_plugin(c: &Crustd, kind: &str) {
    let list = c.cni_conf_dir.join("10-crust-test.conflist");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
    v["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": kind}));
    std::fs::write(&list, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// The IP leases host-local holds for the test network.
pub(crate) fn leases(c: &Crustd) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(nets) = std::fs::read_dir(c.dir.path().join("ipam")) else {
        return out;
    };
    for net in nets.flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push(name);
            }
        }
    }
    out
}

pub(crate) fn netns_files(c: &Crustd) -> Vec<PathBuf> {
    std::fs::read_dir(c.state.join("netns"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// PIDs of processes whose command line is `sleep 7777`.
fn hung_sleeps() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x007777\x00") {
            out.push(pid);
        }
    }
    out
}

pub(crate) async fn stop_pod(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(drop)
}

pub(crate) async fn remove_pod(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(drop)
}

async fn pod_ready(c: &Crustd, id: &str) -> PodSandboxState {
    c.runtime()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .state()
}

#[tokio::test]
async fn add_hangs() {
    let e = env().await;
    let c = &e.c;
    scenario_async("cni-add-hangs", async {
        let logs = tempfile::tempdir().unwrap();
        let hung = pod_config("hang-add", logs.path());
        let other = pod_config("beside", logs.path());
        let t0 = Instant::now();
        let hang = run_pod(c, &hung);
        let beside = async {
            // Started once the hung ADD is under way.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r = run_pod(c, &other).await;
            (r, t0.elapsed())
        };
        let (hang, (beside, beside_at)) = tokio::join!(hang, beside);
        let took = t0.elapsed();
        let beside = beside.expect("a pod created while another's ADD hangs");
        assert!(
            beside_at < Duration::from_secs(TIMEOUT_SECS),
            "the other pod waited for the hung ADD: ready after {beside_at:?}"
        );
        let s = hang.expect_err("RunPodSandbox whose ADD hangs");
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        assert!(
            s.message().contains("crust-fault") && s.message().contains("ADD"),
            "the message must name the plugin and the verb: {}",
            s.message()
        );
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 10),
            "RunPodSandbox answered after {took:?} with a {TIMEOUT_SECS} s plugin timeout"
        );
        // Rolled back completely: only the other pod is listed, has a netns and an IP lease; the
        // plugin's child is gone.
        let listed: Vec<String> = pods(c).await.into_iter().map(|p| p.id).collect();
        assert_eq!(listed, vec![beside.clone()], "pods after the rollback");
        assert_eq!(netns_files(c).len(), 1, "netns files: {:?}", netns_files(c));
        assert_eq!(
            leases(c).len(),
            1,
            "IP leases after the rollback: {:?}",
            leases(c)
        );
        let left = harness::wait_for(Duration::from_secs(5), || hung_sleeps().is_empty().then_some(()));
        assert!(
            left.is_some(),
            "the hung plugin's child still runs: {:?}",
            hung_sleeps()
        );
        // The same pod can be made once the plugin behaves (here: under another name).
        remove_pod(c, &beside).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn del_fails() {
    let e = env().await;
    let c = &e.c;
    scenario_async("cni-del-fails", async {
        let logs = tempfile::tempdir().unwrap();
        let id = run_pod(c, &pod_config("fail-del", logs.path())).await.unwrap();
        assert_eq!(leases(c).len(), 1);
        for attempt in 1..=2 {
            let s = stop_pod(c, &id)
                .await
                .expect_err("StopPodSandbox whose DEL fails");
            assert!(
                s.message().contains("DEL") && s.message().contains("injected DEL failure"),
                "attempt {attempt}: the message must name the verb and carry the plugin's: {s:?}"
            );
            assert_eq!(pod_ready(c, &id).await, PodSandboxState::SandboxNotready);
        }
        // RemovePodSandbox tries DEL once more, then gives the network up, saying so, and removes the pod.
        remove_pod(c, &id)
            .await
            .expect("RemovePodSandbox of a pod whose DEL always fails");
        assert!(pods(c).await.is_empty(), "the pod is still listed");
        assert!(netns_files(c).is_empty(), "netns left: {:?}", netns_files(c));
        assert!(
            c.log().contains("giving up the pod's network teardown"),
            "crustd must log what it gave up"
        );
        remove_pod(c, &id)
            .await
            .expect("RemovePodSandbox again (idempotent)");
    })
    .await;
}

#[tokio::test]
async fn check_fails() {
    let e = env().await;
    let c = &e.c;
    scenario_async("cni-check-fails", async {
        let logs = tempfile::tempdir().unwrap();
        let id = run_pod(c, &pod_config("checked", logs.path())).await.unwrap();
        for _ in 0..3 {
            assert_eq!(pod_ready(c, &id).await, PodSandboxState::SandboxReady);
        }
        stop_pod(c, &id).await.unwrap();
        remove_pod(c, &id).await.unwrap();
        assert!(leases(c).is_empty(), "leases after removal: {:?}", leases(c));
    })
    .await;
}
