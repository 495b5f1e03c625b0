//! Containers end to end: real crustd, runc, crust-monitor, images pulled from the harness registry.
//! Logs, exit codes and reasons (OOM included), stop signals, ExecSync, users and groups, read-only
//! rootfs and mounts, masked paths, env, and containers outliving a killed crustd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::Code;

struct Env {
    c: Crustd,
    imgs: TestImages,
    // Dropped last: crustd's clean-up does not need it, but the pulls did.
    _reg: Registry,
}

async fn env() -> Env {
    env_with("").await
}

/// A crustd with `extra_toml` as a configuration drop-in.
async fn env_with(extra_toml: &str) -> Env {
    env_with_environment(extra_toml, Vec::new()).await
}

/// A crustd with `extra_toml` as a configuration drop-in and `environment` added to its own.
async fn env_with_environment(extra_toml: &str, environment: Vec<(String, String)>) -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml: extra_toml.to_string(),
        env: environment,
        ..Default::default()
    })
    .await;
    for r in [&imgs.busybox.reference, &imgs.configured.reference] {
        pull(&c, r).await;
    }
    Env { c, imgs, _reg: reg }
}

/// PullImage of `image`, expected to succeed.
async fn pull(c: &Crustd, image: &str) {
    c.pull(image).await;
}

fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
    log_dir: PathBuf,
}

async fn pod(e: &Env, name: &str) -> Pod {
    let log_dir = e.c.dir.path().join("logs").join(name);
    let config = pod_config(name, &log_dir);
    let id = e.c.run_pod(&config).await;
    Pod { id, config, log_dir }
}

fn ctr(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri_api::v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("name".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

fn sc(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

async fn create(e: &Env, p: &Pod, config: ContainerConfig) -> Result<String, tonic::Status> {
    e.c.runtime()
        .await
        .create_container(CreateContainerRequest {
            pod_sandbox_id: p.id.clone(),
            config: Some(config),
            sandbox_config: Some(p.config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn start(e: &Env, id: &str) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

async fn run(e: &Env, p: &Pod, config: ContainerConfig) -> String {
    let id = create(e, p, config).await.unwrap();
    start(e, &id).await.unwrap();
    id
}

async fn status(e: &Env, id: &str) -> ContainerStatus {
    e.c.container_status(id).await
}

async fn stop(e: &Env, id: &str, timeout: i64) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .map(drop)
}

async fn remove(e: &Env, id: &str) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

async fn exec(e: &Env, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse, tonic::Status> {
    e.c.runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// The verbose ContainerStatus `info` object (pid, cgroup, runtime spec).
async fn container_info(e: &Env, id: &str) -> serde_json::Value {
    e.c.container_info(id).await
}

/// Every container crustd lists.
async fn containers(e: &Env) -> Vec<Container> {
    e.c.runtime()
        .await
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// What is left in crustd's `<state>/containers`.
fn state_left(e: &Env) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(e.c.state.join("containers"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect()
}

/// StopPodSandbox then RemovePodSandbox, both expected to succeed.
async fn stop_and_remove_pod(e: &Env, id: &str) {
    e.c.stop_and_remove_pod(id).await;
}

/// Waits (up to 60 s) for the container to exit; returns its status.
async fn wait_exited(e: &Env, id: &str) -> ContainerStatus {
    match e.c.wait_exited(id, Duration::from_secs(60)).await {
        Some(s) => s,
        None => panic!(
            "container {id} did not exit: {:?}\n{}",
            status(e, id).await,
            e.c.log()
        ),
    }
}

/// The log file's lines as (stream, tag, text).
fn log_lines(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let _ts = it.next().unwrap();
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The full stdout text of a log (P pieces joined, F ends a line).
fn stdout_text(path: &str) -> String {
    let mut s = String::new();
    for (stream, tag, text) in log_lines(path) {
        if stream == "stdout" {
            s.push_str(&text);
            if tag == "F" {
                s.push('\n');
            }
        }
    }
    s
}

async fn wait_for_log(path: &str, needle: &str) {
    for _ in 0..600 {
        if stdout_text(path).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{needle:?} never appeared in {path}: {:?}",
        std::fs::read_to_string(path)
    );
}

mod api;
mod cdi;
mod cgroupns;
mod checkpoint;
mod declared_volumes;
mod exec;
mod foreign;
mod hardening;
mod image_user;
mod image_volume;
mod lifecycle;
mod seccomp;
mod security;
mod standby;
mod stats;
mod userns;
