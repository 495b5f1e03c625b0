//! The fault-injection suite (`make faults`): the faults a production node sees, each injected into a
//! real part, each scenario printing `fault <name>: held|FAILED <what was seen>` (see `harness::fault`).
//! - `disk`: full filesystems under root, state and the pod log directory;
//! - `registry`: a registry that resets, stalls, fails or lies, behind a proxy the test controls;
//! - `runtime`: an OCI runtime handler that hangs or fails on a chosen verb;
//! - `cni`: CNI plugins that hang or fail on ADD, DEL or CHECK;
//! - `restart`: crustd killed at chosen points of a pull, an unpack, a create, a start, a remove and a
//!   teardown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cni;
mod disk;
mod registry;
mod restart;
mod runtime;

use std::path::Path;

use cri_api::v1::*;
use harness::Crustd;

// CRI requests the scenarios share.

pub async fn pull(c: &Crustd, image: &str) -> Result<String, tonic::Status> {
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-faults".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

pub async fn run_pod(c: &Crustd, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
    c.runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

pub fn ctr(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
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

pub async fn create(
    c: &Crustd,
    pod: &str,
    pc: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    c.runtime()
        .await
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

pub async fn start(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

pub async fn remove(c: &Crustd, id: &str) -> Result<(), tonic::Status> {
    c.runtime()
        .await
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

pub async fn containers(c: &Crustd) -> Vec<Container> {
    c.runtime()
        .await
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

pub async fn pods(c: &Crustd) -> Vec<PodSandbox> {
    c.runtime()
        .await
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

pub async fn container_state(c: &Crustd, id: &str) -> (ContainerState, serde_json::Value) {
    let r = c
        .runtime()
        .await
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info = r
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    (r.status.unwrap().state(), info)
}

/// Whether `pid` is gone (or a zombie, which runs nothing).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_ascii_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}
