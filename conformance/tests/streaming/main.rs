//! Streaming end to end: Exec, Attach and PortForward URLs from crustd, driven by the test's own
//! SPDY/3.1 and WebSocket client (`harness::streamclient`), and by kubectl (a real Go client) when it is
//! on PATH, against real containers (runc, busybox). `exec`: exec over SPDY and WebSocket, tty, resize,
//! flow control, clients going away, malformed frames, leaks; `attach_pf`: attach and port-forward;
//! `kubectl`; `tls`; `abuse`: limits, idle timeout, stalled attach clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod attach_pf;
mod exec;
mod kubectl;
mod tls;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};

pub struct Env {
    pub c: Crustd,
    pub imgs: TestImages,
    _reg: Registry,
}

pub async fn env() -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    c.pull(&imgs.busybox.reference).await;
    Env { c, imgs, _reg: reg }
}

pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

pub async fn pod(e: &Env, name: &str) -> Pod {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: e.c.dir.path().join("logs").join(name).display().to_string(),
        ..Default::default()
    };
    let id = e.c.run_pod(&config).await;
    Pod { id, config }
}

pub async fn container(e: &Env, p: &Pod, name: &str, command: &[&str], stdin: bool, tty: bool) -> String {
    container_once(e, p, name, command, stdin, tty, false).await
}

pub async fn container_once(
    e: &Env,
    p: &Pod,
    name: &str,
    command: &[&str],
    stdin: bool,
    tty: bool,
    stdin_once: bool,
) -> String {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: e.imgs.busybox.reference.clone(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        stdin,
        stdin_once,
        tty,
        ..Default::default()
    };
    e.c.run_container(&p.id, config, &p.config).await
}

pub async fn exec_url(
    e: &Env,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> String {
    e.c.runtime()
        .await
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout,
            stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

pub async fn exec_sync(e: &Env, id: &str, cmd: &[&str]) -> ExecSyncResponse {
    e.c.runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner()
}

pub const SHELL_ERR_EXIT: &[&str] = &["sh", "-c", "echo out; echo err >&2; exit 3"];

pub async fn attach_url(e: &Env, id: &str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> String {
    e.c.runtime()
        .await
        .attach(AttachRequest {
            container_id: id.into(),
            stdin,
            tty,
            stdout,
            stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

pub async fn state_of(e: &Env, id: &str) -> i32 {
    e.c.container_status(id).await.state
}
