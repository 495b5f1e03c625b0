//! The node scenario: a full node's worth of pods (110 by default, kubelet's `maxPods`) with 3 `sleep`
//! containers each, then kubelet's polling for a while — ListPodSandbox + ListContainers every second
//! and PodSandboxStatus of every pod every second (the generic PLEG), ListContainerStats +
//! ListPodSandboxStats every 10 s (the stats provider) — with each polled RPC's p50/p99, the daemon's
//! CPU time over the loop and its memory at the end, the same for the monitors (containerd: its shims);
//! then a burst (30 pods, each RunPodSandbox + CreateContainer + StartContainer, all at once) and a cold
//! node (the daemon restarted under the running pods: time to the first answered list, and until every
//! pod and container is listed and reported as before).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;

use super::Samples;
use super::memory::{self, Mem};
use super::suite::Target;

/// The scenario's size.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct NodeOptions {
    pub pods: usize,
    pub containers_per_pod: usize,
    /// Length of the polling loop.
    pub seconds: u64,
    /// Pods started at once in the burst.
    pub burst: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            pods: 110,
            containers_per_pod: 3,
            seconds: 60,
            burst: 30,
        }
    }
}

/// p50/p99 of one polled RPC.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Polled {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub n: usize,
}

/// What the node scenario measured for one runtime.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NodeResults {
    pub options: Option<NodeOptions>,
    /// Polled RPCs, by name.
    pub polled: BTreeMap<String, Polled>,
    /// CPU time (user + sys) over the polling loop, ms: the daemon, the monitors (shims).
    pub daemon_cpu_ms: Option<f64>,
    pub monitors_cpu_ms: Option<f64>,
    /// At the end of the loop.
    pub daemon_mem: Option<Mem>,
    /// Summed over every monitor (shim) process.
    pub monitors_mem: Option<Mem>,
    pub monitor_processes: usize,
    /// Setting up the node (pods created 4 at a time), ms: context, not a goal.
    pub setup_ms: Option<f64>,
    /// The burst: all pods running, ms.
    pub burst_ms: Option<f64>,
    /// The cold node: from the new daemon process to the first answered ListPodSandbox, and to every
    /// pod and container listed and reported as before, ms.
    pub cold_first_list_ms: Option<f64>,
    pub cold_all_right_ms: Option<f64>,
    /// The daemon's own CPU per call of each polled RPC, sent back to back, µs.
    pub cpu_per_call_us: BTreeMap<String, f64>,
    pub errors: Vec<String>,
}

/// CPU time (utime + stime) of a process in ms, from `/proc/<pid>/stat`.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (u, s): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((u + s) as f64 * 1000.0 / hz)
}

/// CPU time a process's threads have run, ns (`/proc/<pid>/task/*/schedstat`: finer than the clock
/// ticks of `stat`, as one call costs tens of µs).
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// The daemon's CPU per call of each polled RPC, `n` calls back to back (PodSandboxStatus over every
/// pod in turn), µs.
async fn cpu_per_call(
    rt: &RuntimeServiceClient<Channel>,
    pid: u32,
    pods: &[String],
    n: usize,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for name in ["ListPodSandbox", "ListContainers", "PodSandboxStatus"] {
        let mut rt = rt.clone();
        let c0 = cpu_ns(pid).context("daemon CPU")?;
        for i in 0..n {
            match name {
                "ListPodSandbox" => drop(rt.list_pod_sandbox(ListPodSandboxRequest::default()).await?),
                "ListContainers" => drop(rt.list_containers(ListContainersRequest::default()).await?),
                _ => drop(
                    rt.pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: pods[i % pods.len().max(1)].clone(),
                        verbose: false,
                    })
                    .await?,
                ),
            }
        }
        let c1 = cpu_ns(pid).context("daemon CPU")?;
        out.insert(name.to_string(), c1.saturating_sub(c0) as f64 / n as f64 / 1000.0);
    }
    Ok(out)
}

/// Summed CPU ms of a set of processes (by PID; gone ones count 0).
fn cpu_of(pids: &[u32]) -> BTreeMap<u32, f64> {
    pids.iter().filter_map(|p| Some((*p, cpu_ms(*p)?))).collect()
}

type Rows = Arc<Mutex<BTreeMap<String, Samples>>>;

fn record(rows: &Rows, name: &str, d: Duration) {
    if let Ok(mut r) = rows.lock() {
        r.entry(name.to_string()).or_default().push(d);
    }
}

/// The cgroup every pod of the scenario goes under, as kubelet gives each pod a parent of its own
/// (containerd's pod stats need one); removed at the end.
fn cgroup_top(t: &Target) -> String {
    format!("crust-bench-node-{}-{}", std::process::id(), t.name)
}

fn pod_config(t: &Target, tag: &str, i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("node-{tag}-{i}"),
            namespace: "bench-node".into(),
            uid: format!("node-{}-{tag}-{i}", t.name),
            attempt: 0,
        }),
        hostname: format!("node-{i}"),
        log_directory: t.log_dir.join(format!("node-{tag}-{i}")).display().to_string(),
        labels: [("app".to_string(), format!("node-{tag}"))].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}/pod-{tag}-{i}", cgroup_top(t)),
            ..Default::default()
        }),
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
        command: vec!["sleep".into(), "86400".into()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// One pod with its containers, all started; returns the pod ID.
async fn make_pod(
    mut rt: RuntimeServiceClient<Channel>,
    t: &Target,
    tag: &str,
    i: usize,
    containers: usize,
) -> Result<String> {
    let cfg = pod_config(t, tag, i);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    for c in 0..containers {
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(t, &format!("c{c}"))),
                sandbox_config: Some(cfg.clone()),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest { container_id: id })
            .await
            .context("StartContainer")?;
    }
    Ok(pod)
}

/// Runs `n` jobs, `width` at a time.
async fn in_parallel<F, Fut, T>(n: usize, width: usize, f: F) -> Vec<Result<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    use futures::StreamExt;
    futures::stream::iter((0..n).map(f))
        .buffer_unordered(width.max(1))
        .collect()
        .await
}

async fn remove_pods(rt: &RuntimeServiceClient<Channel>, pods: &[String]) {
    in_parallel(pods.len(), 4, |i| {
        let mut rt = rt.clone();
        let id = pods[i].clone();
        async move {
            let _ = rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            let _ = rt
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await;
            Ok(())
        }
    })
    .await;
}

/// [`poll`] on a thread of its own with a single-threaded runtime and a connection of its own, so
/// the client adds as little as it can to what is measured: no hops between the bench's worker
/// threads (the two daemons are measured with the same client either way).
async fn poll_on_own_thread(socket: &std::path::Path, secs: u64, n_pods: usize, rows: &Rows) -> Result<()> {
    let (socket, rows) = (socket.to_path_buf(), rows.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("poller runtime")
            .and_then(|rt| {
                rt.block_on(async {
                    let ch = crate::crustd::channel(&socket).await.context("connect")?;
                    poll(RuntimeServiceClient::new(ch), secs, n_pods, &rows).await
                })
            });
        let _ = tx.send(r);
    });
    rx.await.context("poller thread")?
}

/// kubelet's polling over `secs`: relist and every pod's status each second (one connection), the
/// stats every 10 s (another, as kubelet's stats provider runs apart from the PLEG).
async fn poll(rt: RuntimeServiceClient<Channel>, secs: u64, n_pods: usize, rows: &Rows) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(secs);
    let stats = {
        let mut rt = rt.clone();
        let rows = rows.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    return anyhow::Ok(());
                }
                let t0 = Instant::now();
                rt.list_container_stats(ListContainerStatsRequest::default())
                    .await
                    .context("ListContainerStats")?;
                record(&rows, "ListContainerStats", t0.elapsed());
                let t0 = Instant::now();
                rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                    .await
                    .context("ListPodSandboxStats")?;
                record(&rows, "ListPodSandboxStats", t0.elapsed());
            }
        })
    };
    let mut rt = rt;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        // The transport's floor: the smallest RPC, for reading the others against.
        let t0 = Instant::now();
        rt.version(VersionRequest::default()).await.context("Version")?;
        record(rows, "Version (transport floor, not a goal)", t0.elapsed());
        let t0 = Instant::now();
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .context("ListPodSandbox")?
            .into_inner()
            .items;
        record(rows, "ListPodSandbox", t0.elapsed());
        anyhow::ensure!(pods.len() >= n_pods, "ListPodSandbox: {} pods", pods.len());
        let t0 = Instant::now();
        rt.list_containers(ListContainersRequest::default())
            .await
            .context("ListContainers")?;
        record(rows, "ListContainers", t0.elapsed());
        for p in pods {
            let t0 = Instant::now();
            rt.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.id,
                verbose: false,
            })
            .await
            .context("PodSandboxStatus")?;
            record(rows, "PodSandboxStatus", t0.elapsed());
        }
    }
    stats.await.context("stats task")?
}

/// Whether the daemon reports exactly `pods` (all ready) with `containers` (all running), each pod's
/// status ready with its containers running.
async fn all_right(
    rt: &mut RuntimeServiceClient<Channel>,
    pods: &BTreeSet<String>,
    containers: &BTreeSet<String>,
    per_pod: usize,
) -> Result<bool> {
    let listed = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let ok_pods: BTreeSet<String> = listed
        .into_iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .map(|p| p.id)
        .collect();
    if &ok_pods != pods {
        return Ok(false);
    }
    let running: BTreeSet<String> = rt
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .map(|c| c.id)
        .collect();
    if &running != containers {
        return Ok(false);
    }
    for p in pods {
        let s = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.clone(),
                verbose: false,
            })
            .await?
            .into_inner();
        if s.status.map(|s| s.state) != Some(PodSandboxState::SandboxReady as i32) {
            return Ok(false);
        }
        // containerd 1.6 leaves containers_statuses empty: only what is there is checked.
        let statuses = &s.containers_statuses;
        if !statuses.is_empty()
            && (statuses.len() != per_pod
                || statuses
                    .iter()
                    .any(|c| c.state != ContainerState::ContainerRunning as i32))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs the scenario against `t`; `respawn` stops the daemon and starts it again without waiting,
/// returning the new PID.
pub async fn run(t: &Target, o: NodeOptions, respawn: &mut dyn FnMut() -> Result<u32>) -> NodeResults {
    let mut res = NodeResults {
        options: Some(o),
        ..Default::default()
    };
    let rt = match crate::crustd::channel(&t.socket).await {
        Ok(ch) => RuntimeServiceClient::new(ch),
        Err(e) => {
            res.errors.push(format!("connect: {e}"));
            return res;
        }
    };
    let mut pods = Vec::new();
    if let Err(e) = measure(t, o, respawn, &rt, &mut pods, &mut res).await {
        res.errors.push(format!("{e:#}"));
    }
    // The daemon may have been respawned: a new connection for the clean-up.
    if let Ok(ch) = crate::crustd::channel(&t.socket).await {
        remove_pods(&RuntimeServiceClient::new(ch), &pods).await;
    }
    crate::crustd::remove_cgroup_everywhere(&cgroup_top(t));
    res
}

async fn measure(
    t: &Target,
    o: NodeOptions,
    respawn: &mut dyn FnMut() -> Result<u32>,
    rt: &RuntimeServiceClient<Channel>,
    pods: &mut Vec<String>,
    res: &mut NodeResults,
) -> Result<()> {
    let t0 = Instant::now();
    let made = in_parallel(o.pods, 4, |i| {
        make_pod(rt.clone(), t, "n", i, o.containers_per_pod)
    })
    .await;
    let mut first_err = None;
    for r in made {
        match r {
            Ok(p) => pods.push(p),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e.context("setting up the node"));
    }
    res.setup_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The polling loop, with CPU before and after.
    let monitors = memory::find(&t.monitor_comm, &t.monitor_needle);
    let (d0, m0) = (cpu_ms(t.daemon_pid), cpu_of(&monitors));
    let rows: Rows = Arc::default();
    poll_on_own_thread(&t.socket, o.seconds, o.pods, &rows).await?;
    let (d1, m1) = (cpu_ms(t.daemon_pid), cpu_of(&monitors));
    res.daemon_cpu_ms = d0.zip(d1).map(|(a, b)| b - a);
    res.monitors_cpu_ms = Some(m1.iter().map(|(p, c)| c - m0.get(p).copied().unwrap_or(*c)).sum());
    res.daemon_mem = memory::of(t.daemon_pid);
    let mems: Vec<Mem> = monitors.iter().filter_map(|p| memory::of(*p)).collect();
    res.monitor_processes = mems.len();
    res.monitors_mem = Some(Mem {
        rss_kib: mems.iter().map(|m| m.rss_kib).sum(),
        pss_kib: mems.iter().map(|m| m.pss_kib).sum(),
    });
    if let Ok(r) = rows.lock() {
        for (name, s) in r.iter() {
            if let (Some(p50), Some(p99)) = (s.p50(), s.quantile(0.99)) {
                res.polled.insert(
                    name.clone(),
                    Polled {
                        p50_ms: p50,
                        p99_ms: p99,
                        n: s.0.len(),
                    },
                );
            }
        }
    }

    match cpu_per_call(rt, t.daemon_pid, pods, 500).await {
        Ok(m) => res.cpu_per_call_us = m,
        Err(e) => res.errors.push(format!("CPU per call: {e:#}")),
    }

    // The burst: every pod with one container, all at once.
    let t0 = Instant::now();
    let burst = in_parallel(o.burst, o.burst, |i| make_pod(rt.clone(), t, "burst", i, 1)).await;
    let elapsed = t0.elapsed();
    let mut burst_pods = Vec::new();
    let mut burst_err = None;
    for r in burst {
        match r {
            Ok(p) => burst_pods.push(p),
            Err(e) => burst_err = burst_err.or(Some(e)),
        }
    }
    remove_pods(rt, &burst_pods).await;
    match burst_err {
        None => res.burst_ms = Some(elapsed.as_secs_f64() * 1000.0),
        Some(e) => res.errors.push(format!("burst: {e:#}")),
    }

    // The cold node.
    let mut rt = rt.clone();
    let want_pods: BTreeSet<String> = pods.iter().cloned().collect();
    let want_containers: BTreeSet<String> = rt
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| want_pods.contains(&c.pod_sandbox_id))
        .map(|c| c.id)
        .collect();
    anyhow::ensure!(
        want_containers.len() == o.pods * o.containers_per_pod,
        "{} containers before the restart",
        want_containers.len()
    );
    respawn().context("restarting the daemon")?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    let mut rt = loop {
        anyhow::ensure!(Instant::now() < deadline, "no answer within 120 s of the restart");
        if let Ok(ch) = crate::crustd::channel(&t.socket).await {
            let mut c = RuntimeServiceClient::new(ch);
            if c.list_pod_sandbox(ListPodSandboxRequest::default()).await.is_ok() {
                res.cold_first_list_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "statuses not right within 120 s of the restart"
        );
        if all_right(&mut rt, &want_pods, &want_containers, o.containers_per_pod)
            .await
            .unwrap_or(false)
        {
            res.cold_all_right_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
