//! The workload, the same for every runtime: pulls, pod/container cycles (sequential and 2 at a time),
//! ExecSync, ListContainers over 100 containers, and memory of the daemon and the monitors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;

use super::Samples;
use super::memory::{self, Mem, PeakSampler};

/// A runtime under measurement.
pub struct Target {
    /// `crust` or `containerd`.
    pub name: String,
    /// Its CRI socket.
    pub socket: PathBuf,
    /// The daemon's PID.
    pub daemon_pid: u32,
    /// `comm` prefix of its per-container (or per-pod) monitor process.
    pub monitor_comm: String,
    /// A string in the monitors' command lines that singles out this instance.
    pub monitor_needle: String,
    /// Where pod logs go.
    pub log_dir: PathBuf,
    /// A small image and a ~100 MB multi-layer image.
    pub small_image: String,
    pub large_image: String,
}

/// One latency row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub n: usize,
}

/// Everything measured for one runtime.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TargetResults {
    pub latency: BTreeMap<String, Latency>,
    pub memory: BTreeMap<String, Mem>,
    pub errors: Vec<String>,
    /// The node scenario (`bench::node`), when run.
    pub node: Option<super::node::NodeResults>,
}

type Rows = Arc<Mutex<BTreeMap<String, Samples>>>;

fn record(rows: &Rows, name: &str, d: Duration) {
    if let Ok(mut r) = rows.lock() {
        r.entry(name.to_string()).or_default().push(d);
    }
}

async fn client(t: &Target) -> Result<RuntimeServiceClient<Channel>> {
    Ok(RuntimeServiceClient::new(
        crate::crustd::channel(&t.socket).await?,
    ))
}

fn pod_config(t: &Target, tag: &str, i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{tag}-{i}"),
            namespace: "bench".into(),
            uid: format!("bench-{}-{tag}-{i}", t.name),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        log_directory: t.log_dir.join(format!("{tag}-{i}")).display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn container_config(t: &Target, name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: t.small_image.clone(),
            ..Default::default()
        }),
        // Exits at once on SIGTERM, so StopContainer measures the runtime, not a grace period.
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; sleep 3600 & wait".into(),
        ],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// Creates and starts one container in `pod`; returns its ID.
async fn start_container(
    rt: &mut RuntimeServiceClient<Channel>,
    t: &Target,
    pod: &str,
    cfg: &PodSandboxConfig,
    name: &str,
    rows: Option<(&Rows, &str)>,
) -> Result<String> {
    let t0 = Instant::now();
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(container_config(t, name)),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    let created = t0.elapsed();
    let t1 = Instant::now();
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .context("StartContainer")?;
    let started = t1.elapsed();
    if let Some((rows, sfx)) = rows {
        record(rows, &format!("CreateContainer{sfx}"), created);
        record(rows, &format!("StartContainer{sfx}"), started);
        record(
            rows,
            &format!("CreateContainer + StartContainer{sfx}"),
            created + started,
        );
    }
    Ok(id)
}

/// One pod lifecycle with one container, every step timed.
async fn cycle(t: &Target, tag: &str, i: usize, rows: &Rows, sfx: &str, exec: bool) -> Result<()> {
    let mut rt = client(t).await?;
    let cfg = pod_config(t, tag, i);
    let t0 = Instant::now();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    record(rows, &format!("RunPodSandbox{sfx}"), t0.elapsed());
    let id = start_container(&mut rt, t, &pod, &cfg, "c", Some((rows, sfx))).await?;
    if exec {
        let t = Instant::now();
        let r = rt
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .context("ExecSync")?;
        record(rows, "ExecSync (true)", t.elapsed());
        anyhow::ensure!(r.into_inner().exit_code == 0, "ExecSync true: non-zero exit");
        // The same command through the streaming server, as `kubectl exec` runs it: the Exec RPC, the
        // SPDY upgrade, the streams, the exit status.
        let t = Instant::now();
        let url = rt
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .context("Exec")?
            .into_inner()
            .url;
        let session =
            crate::streamclient::SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false)
                .await
                .context("Exec: SPDY session")?;
        let out = session.finish().await.context("Exec: streams")?;
        record(rows, "Exec (true) round trip over SPDY", t.elapsed());
        anyhow::ensure!(
            crate::streamclient::exit_code(&out.error)? == 0,
            "Exec true: {}",
            out.error
        );
    }
    let t1 = Instant::now();
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .context("StopContainer")?;
    record(rows, &format!("StopContainer{sfx}"), t1.elapsed());
    let t2 = Instant::now();
    rt.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .context("RemoveContainer")?;
    record(rows, &format!("RemoveContainer{sfx}"), t2.elapsed());
    record(
        rows,
        &format!("StopContainer + RemoveContainer{sfx}"),
        t1.elapsed(),
    );
    let t3 = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .context("StopPodSandbox")?;
    record(rows, &format!("StopPodSandbox{sfx}"), t3.elapsed());
    let t4 = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .context("RemovePodSandbox")?;
    record(rows, &format!("RemovePodSandbox{sfx}"), t4.elapsed());
    record(
        rows,
        &format!("StopPodSandbox + RemovePodSandbox{sfx}"),
        t3.elapsed(),
    );
    Ok(())
}

async fn pull(t: &Target, image: &str) -> Result<Duration> {
    let mut im =
        cri_api::v1::image_service_client::ImageServiceClient::new(crate::crustd::channel(&t.socket).await?);
    let spec = ImageSpec {
        image: image.into(),
        ..Default::default()
    };
    let _ = im
        .remove_image(RemoveImageRequest {
            image: Some(spec.clone()),
        })
        .await;
    let t0 = Instant::now();
    im.pull_image(PullImageRequest {
        image: Some(spec),
        auth: None,
        sandbox_config: None,
    })
    .await
    .with_context(|| format!("PullImage {image}"))?;
    Ok(t0.elapsed())
}

/// Only pulls the small image (what the node scenario needs), for a quick run.
pub async fn pull_only(t: &Target) -> TargetResults {
    let mut res = TargetResults::default();
    if let Err(e) = pull(t, &t.small_image).await {
        res.errors.push(format!("{e:#}"));
    }
    res
}

/// Runs the whole workload against `t`.
pub async fn run(t: &Target, cycles: usize) -> TargetResults {
    let mut res = TargetResults::default();
    let rows: Rows = Arc::default();
    if let Some(m) = memory::of(t.daemon_pid) {
        res.memory.insert("daemon idle".into(), m);
    }

    // Pulls: the large one with the daemon's peak memory.
    match pull(t, &t.small_image).await {
        Ok(d) => record(&rows, "PullImage small (busybox, 1 layer)", d),
        Err(e) => res.errors.push(format!("{e:#}")),
    }
    let sampler = PeakSampler::start(t.daemon_pid);
    match pull(t, &t.large_image).await {
        Ok(d) => record(&rows, "PullImage ~100 MB (4 layers)", d),
        Err(e) => res.errors.push(format!("{e:#}")),
    }
    res.memory
        .insert("daemon peak during ~100 MB pull".into(), sampler.finish());
    // The small image must be present for the cycles.
    if let Err(e) = pull(t, &t.small_image).await {
        res.errors.push(format!("{e:#}"));
    }

    // Sequential cycles.
    let sampler = PeakSampler::start(t.daemon_pid);
    for i in 0..cycles {
        if let Err(e) = cycle(t, "seq", i, &rows, "", true).await {
            res.errors.push(format!("cycle {i}: {e:#}"));
            break;
        }
    }
    // Two at a time.
    let mut tasks = Vec::new();
    for w in 0..2 {
        let rows = rows.clone();
        let t = Target {
            name: t.name.clone(),
            socket: t.socket.clone(),
            daemon_pid: t.daemon_pid,
            monitor_comm: t.monitor_comm.clone(),
            monitor_needle: t.monitor_needle.clone(),
            log_dir: t.log_dir.clone(),
            small_image: t.small_image.clone(),
            large_image: t.large_image.clone(),
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..cycles.div_ceil(2) {
                cycle(&t, &format!("par{w}"), i, &rows, " (2 at a time)", false).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => res.errors.push(format!("parallel: {e:#}")),
            Err(e) => res.errors.push(format!("parallel task: {e}")),
        }
    }
    res.memory
        .insert("daemon peak during cycles".into(), sampler.finish());

    // 20 pods with 5 running containers each: monitor memory and ListContainers over 100 containers.
    if let Err(e) = crowd(t, &rows, &mut res).await {
        res.errors.push(format!("100 containers: {e:#}"));
    }

    if let Ok(r) = rows.lock() {
        for (name, s) in r.iter() {
            if let (Some(p50), Some(p95)) = (s.p50(), s.p95()) {
                res.latency.insert(
                    name.clone(),
                    Latency {
                        p50_ms: p50,
                        p95_ms: p95,
                        n: s.0.len(),
                    },
                );
            }
        }
    }
    res
}

async fn crowd(t: &Target, rows: &Rows, res: &mut TargetResults) -> Result<()> {
    let mut rt = client(t).await?;
    let mut pods = Vec::new();
    let result = async {
        for p in 0..20 {
            let mut cfg = pod_config(t, "crowd", p);
            // A cgroup parent per pod, as kubelet gives it: containerd's pod stats need one.
            cfg.linux = Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod-{p}", crowd_cgroup(t)),
                ..Default::default()
            });
            let pod = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .context("RunPodSandbox")?
                .into_inner()
                .pod_sandbox_id;
            pods.push(pod.clone());
            start_container(&mut rt, t, &pod, &cfg, "c0", None).await?;
        }
        // One container per pod so far: the per-container monitor and the per-pod overhead.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let monitors = memory::find(&t.monitor_comm, &t.monitor_needle);
        if let Some(m) = memory::mean(&monitors) {
            res.memory.insert(
                format!(
                    "monitor, mean per process ({} processes, 20 pods x 1 container)",
                    monitors.len()
                ),
                m,
            );
            let total: Vec<Mem> = monitors.iter().filter_map(|p| memory::of(*p)).collect();
            res.memory.insert(
                "monitors per pod (all of a pod's monitors, 20 pods)".into(),
                Mem {
                    rss_kib: total.iter().map(|m| m.rss_kib).sum::<u64>() / 20,
                    pss_kib: total.iter().map(|m| m.pss_kib).sum::<u64>() / 20,
                },
            );
        }
        for (p, pod) in pods.iter().enumerate() {
            let cfg = pod_config(t, "crowd", p);
            for c in 1..5 {
                start_container(&mut rt, t, pod, &cfg, &format!("c{c}"), None).await?;
            }
        }
        if let Some(m) = memory::of(t.daemon_pid) {
            res.memory.insert("daemon with 20 pods, 100 containers".into(), m);
        }
        for _ in 0..50 {
            let t0 = Instant::now();
            let n = rt
                .list_containers(ListContainersRequest::default())
                .await
                .context("ListContainers")?
                .into_inner()
                .containers
                .len();
            record(rows, "ListContainers (100 containers)", t0.elapsed());
            anyhow::ensure!(n >= 100, "ListContainers returned {n} containers");
        }
        // Stats as kubelet polls them: the writable layers come from crust's background-refreshed
        // cache, not a walk of each layer per call.
        for _ in 0..20 {
            let t0 = Instant::now();
            let n = rt
                .list_container_stats(ListContainerStatsRequest::default())
                .await
                .context("ListContainerStats")?
                .into_inner()
                .stats
                .len();
            record(rows, "ListContainerStats (100 containers)", t0.elapsed());
            anyhow::ensure!(n >= 100, "ListContainerStats returned {n} containers");
            let t0 = Instant::now();
            rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                .await
                .context("ListPodSandboxStats")?;
            record(
                rows,
                "ListPodSandboxStats (20 pods, 100 containers)",
                t0.elapsed(),
            );
        }
        anyhow::Ok(())
    }
    .await;
    for pod in pods {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
            .await;
    }
    crate::crustd::remove_cgroup_everywhere(&crowd_cgroup(t));
    result
}

/// The cgroup the crowd's pods go under; removed after them.
fn crowd_cgroup(t: &Target) -> String {
    format!("crust-bench-crowd-{}-{}", std::process::id(), t.name)
}
