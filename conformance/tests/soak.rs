//! `make soak` (not part of CI, not of `make test`): `SOAK_MINUTES` (default 30) of pod and container
//! churn with exec, logs and stats traffic against one crustd, which must answer every request without
//! an error. At the start and every `SOAK_REPORT_MINUTES` (default 5; a sixth of a shorter run) it
//! prints a row of crustd's resident memory, open fds, threads and alive tokio tasks (its
//! `crust_tokio_alive_tasks` metric) and its monitors' resident memory (the long-lived container's
//! monitor, and the mean and largest of all); it samples the same every 30 s, and at the end fits a
//! least-squares line through the samples after the warm-up (the first report interval) and says, per
//! figure, whether the growth over that window stays within the noise (twice the residuals' standard
//! deviation, and at least one unit of the figure). The README shows one 30-minute run's table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};

#[path = "soak_parts/sample.rs"]
mod sample;
use sample::{Sample, Series, fit, monitors, thread_names};

/// Churn loops running at once (each: a pod, a container, exec, logs, stats, teardown).
const CHURN_WORKERS: usize = 2;

/// What went wrong, and what was done.
#[derive(Default)]
struct Tally {
    errors: Mutex<Vec<String>>,
    cycles: AtomicU64,
    execs: AtomicU64,
    stats: AtomicU64,
    log_reads: AtomicU64,
}

impl Tally {
    fn error(&self, what: impl std::fmt::Display) {
        let msg = what.to_string();
        println!("soak: ERROR {msg}");
        self.errors.lock().unwrap().push(msg);
    }

    fn errors(&self) -> usize {
        self.errors.lock().unwrap().len()
    }

    /// Records `r`'s error under `what`; its value, if any.
    fn check<T>(&self, what: &str, r: Result<T, tonic::Status>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(format!("{what}: {:?}: {}", e.code(), e.message()));
                None
            }
        }
    }
}

fn minutes_from_env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let minutes = minutes_from_env("SOAK_MINUTES", 30.0);
    let report_every = minutes_from_env("SOAK_REPORT_MINUTES", (minutes / 6.0).min(5.0));
    let total = Duration::from_secs_f64(minutes * 60.0);
    let report = Duration::from_secs_f64(report_every * 60.0);
    let sample = (report / 10).min(Duration::from_secs(30));

    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let metrics_addr = format!("127.0.0.1:{}", harness::free_port());
    let c = Arc::new(
        Crustd::start(CrustdOptions {
            registry: Some(&reg),
            cni: true,
            extra_toml: format!("log_level = \"info\"\n[metrics]\naddress = {metrics_addr:?}\n"),
            ..Default::default()
        })
        .await,
    );
    let image = imgs.busybox.reference.clone();
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let tally = Arc::new(Tally::default());

    // The long-lived pod: a container that logs a line a second, exec'd into and measured throughout.
    let steady_pc = pod_config(&c, "steady");
    let steady_pod = run_pod(&c, &steady_pc).await.unwrap();
    let steady = create_start(
        &c,
        &steady_pod,
        &steady_pc,
        &image,
        "while true; do echo tick; sleep 1; done",
    )
    .await
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..CHURN_WORKERS {
        let (c, tally, stop, image) = (c.clone(), tally.clone(), stop.clone(), image.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                churn_cycle(&c, &tally, &image, &format!("churn-{w}-{i}")).await;
                tally.cycles.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    {
        let (c, tally, stop, steady, pc) = (
            c.clone(),
            tally.clone(),
            stop.clone(),
            steady.clone(),
            steady_pc.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                traffic(&c, &tally, &steady, &pc, i).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    println!(
        "soak: {minutes} min of churn ({CHURN_WORKERS} pod/container loops, exec/logs/stats traffic on a \
         long-lived container), a row every {report_every:.1} min; load is the host's 1-min load average"
    );
    println!(
        "{:>6} {:>10} {:>5} {:>8} {:>6} {:>9} {:>12} {:>11} {:>10} {:>7} {:>7} {:>7} {:>7} {:>5}",
        "min",
        "RSS MiB",
        "fds",
        "threads",
        "tasks",
        "monitors",
        "mon.steady",
        "mon.mean",
        "mon.max",
        "cycles",
        "execs",
        "stats",
        "errors",
        "load"
    );
    let pid = c.pid().expect("crustd runs");
    println!("soak: crustd threads at the start: {}", thread_names(pid));
    let begun = Instant::now();
    let mut samples: Vec<(f64, Sample)> = Vec::new();
    let mut next_report = begun;
    let mut next_sample = begun;
    loop {
        let now = Instant::now();
        let done = now.duration_since(begun) >= total;
        if now >= next_sample || done {
            let s = Sample::take(&c, &metrics_addr, &steady);
            let t = now.duration_since(begun).as_secs_f64() / 60.0;
            if now >= next_report || done {
                println!(
                    "{:>6.1} {:>10.1} {:>5} {:>8} {:>6} {:>9} {:>8} KiB {:>7} KiB {:>6} KiB {:>7} {:>7} {:>7} {:>7} {:>5}",
                    t,
                    s.rss_kib as f64 / 1024.0,
                    s.fds,
                    s.threads,
                    s.tasks.map_or("n/a".to_string(), |t| t.to_string()),
                    s.monitors,
                    s.monitor_steady_kib,
                    s.monitor_mean_kib,
                    s.monitor_max_kib,
                    tally.cycles.load(Ordering::Relaxed),
                    tally.execs.load(Ordering::Relaxed),
                    tally.stats.load(Ordering::Relaxed),
                    tally.errors(),
                    std::fs::read_to_string("/proc/loadavg")
                        .ok()
                        .and_then(|l| l.split_whitespace().next().map(str::to_string))
                        .unwrap_or_default()
                );
                next_report += report;
            }
            samples.push((t, s));
            next_sample += sample;
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // Which threads crustd has: beyond its main thread and the runtime's workers (one per core), the
    // runtime's blocking pool (file system work), whose threads go after 10 s idle. After the churn and
    // IDLE of quiet, what is left beyond the start's count would be a thread that never ends.
    println!(
        "soak: crustd threads at the end of the churn: {}",
        thread_names(pid)
    );
    tokio::time::sleep(IDLE).await;
    let idle = thread_names(pid);
    let (start, now) = (
        samples[0].1.threads,
        Sample::take(&c, &metrics_addr, &steady).threads,
    );
    println!(
        "soak: crustd threads after {} s idle: {idle} ({now}; {start} at the start)",
        IDLE.as_secs()
    );
    if now > start {
        tally.error(format!(
            "crustd has {now} threads after {} s idle, {start} at the start: {idle}",
            IDLE.as_secs()
        ));
    }

    println!(
        "soak: {} pod cycles, {} execs, {} stats calls, {} log reads in {:.1} min; {} errors",
        tally.cycles.load(Ordering::Relaxed),
        tally.execs.load(Ordering::Relaxed),
        tally.stats.load(Ordering::Relaxed),
        tally.log_reads.load(Ordering::Relaxed),
        begun.elapsed().as_secs_f64() / 60.0,
        tally.errors()
    );
    let warm = samples.iter().filter(|(t, _)| *t >= report_every).count();
    println!(
        "soak: slopes after the {report_every:.1} min warm-up ({warm} samples, least squares; growth = slope x window, noise = 2 x residual sd):"
    );
    let after: Vec<&(f64, Sample)> = samples.iter().filter(|(t, _)| *t >= report_every).collect();
    let series: [Series; 6] = [
        ("crustd RSS", "KiB", |s| Some(s.rss_kib as f64)),
        ("crustd fds", "", |s| Some(s.fds as f64)),
        ("crustd threads", "", |s| Some(s.threads as f64)),
        ("crustd tokio tasks", "", |s| s.tasks.map(|t| t as f64)),
        ("steady monitor RSS", "KiB", |s| Some(s.monitor_steady_kib as f64)),
        ("mean monitor RSS", "KiB", |s| Some(s.monitor_mean_kib as f64)),
    ];
    for (name, unit, f) in series {
        let pts: Vec<(f64, f64)> = after.iter().filter_map(|(t, s)| Some((*t, f(s)?))).collect();
        match fit(&pts) {
            Some((slope, sd)) => {
                let window = pts.last().unwrap().0 - pts[0].0;
                let growth = slope * window;
                let noise = (2.0 * sd).max(1.0);
                println!(
                    "  {name:<20} slope {:>+10.2} {unit}/min, growth {:>+10.1} {unit} over {window:.1} min, noise {noise:.1} {unit}: {}",
                    slope,
                    growth,
                    if growth <= noise {
                        "no growth beyond noise"
                    } else {
                        "GROWS beyond noise"
                    }
                );
            }
            None => println!("  {name:<20} too few samples after the warm-up"),
        }
    }

    // Everything goes; nothing may be left.
    tally.check("remove everything", c.remove_everything().await);
    let left = monitors(&c.state).len();
    if left != 0 {
        tally.error(format!("{left} monitors left after every pod was removed"));
    }
    let report = c.check_store();
    if report["problems"].as_array().is_some_and(|p| !p.is_empty()) {
        tally.error(format!("crustctl check: {}", report["problems"]));
    }
    let errors = tally.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "soak: {} errors: {errors:#?}", errors.len());
}

/// One pod's life: run, create and start a container, exec into it, read its log and stats, stop and
/// remove both.
async fn churn_cycle(c: &Crustd, tally: &Tally, image: &str, name: &str) {
    let pc = pod_config(c, name);
    let Some(pod) = tally.check(&format!("{name}: RunPodSandbox"), run_pod(c, &pc).await) else {
        return;
    };
    let ctr = create_start(c, &pod, &pc, image, "echo started; exec sleep 1000").await;
    if let Some(id) = tally.check(&format!("{name}: create/start"), ctr) {
        let mut rt = c.runtime().await;
        exec_check(c, tally, &id, name).await;
        let stats = rt
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await;
        if tally.check(&format!("{name}: ContainerStats"), stats).is_some() {
            tally.stats.fetch_add(1, Ordering::Relaxed);
        }
        let log = Path::new(&pc.log_directory).join("c.log");
        let seen = harness::wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|s| s.contains("started"))
        });
        tally.log_reads.fetch_add(1, Ordering::Relaxed);
        if seen.is_none() {
            tally.error(format!("{name}: the container's log never showed its first line"));
        }
        let r = rt
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await;
        tally.check(&format!("{name}: StopContainer"), r);
        let r = rt
            .remove_container(RemoveContainerRequest { container_id: id })
            .await;
        tally.check(&format!("{name}: RemoveContainer"), r);
    }
    let mut rt = c.runtime().await;
    let r = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    tally.check(&format!("{name}: StopPodSandbox"), r);
    let r = rt
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await;
    tally.check(&format!("{name}: RemovePodSandbox"), r);
    let _ = std::fs::remove_dir_all(&pc.log_directory);
}

/// Exec, logs and stats on the long-lived container; every 100th round its log is rotated as kubelet
/// does (rename, ReopenContainerLog, remove the old file).
async fn traffic(c: &Crustd, tally: &Tally, id: &str, pc: &PodSandboxConfig, i: u64) {
    exec_check(c, tally, id, "steady").await;
    let mut rt = c.runtime().await;
    let r = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await;
    let r2 = rt
        .list_container_stats(ListContainerStatsRequest::default())
        .await;
    let r3 = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await;
    let r4 = rt
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await;
    let r5 = rt.list_containers(ListContainersRequest::default()).await;
    let ok = [
        tally.check("steady: ContainerStats", r).is_some(),
        tally.check("steady: ListContainerStats", r2).is_some(),
        tally.check("steady: ListPodSandboxStats", r3).is_some(),
        tally.check("steady: ContainerStatus", r4).is_some(),
        tally.check("steady: ListContainers", r5).is_some(),
    ];
    tally
        .stats
        .fetch_add(ok.iter().filter(|o| **o).count() as u64, Ordering::Relaxed);
    let log = Path::new(&pc.log_directory).join("c.log");
    match std::fs::read_to_string(&log) {
        Ok(_) => {
            tally.log_reads.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tally.error(format!("steady: read {}: {e}", log.display())),
    }
    if i % 100 == 99 {
        let old = log.with_extension("log.1");
        if let Err(e) = std::fs::rename(&log, &old) {
            tally.error(format!("steady: rotate {}: {e}", log.display()));
        }
        let r = rt
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.into(),
            })
            .await;
        tally.check("steady: ReopenContainerLog", r);
        let _ = std::fs::remove_file(&old);
    }
}

/// ExecSync `echo soak` in `id`, which must answer `soak` and exit 0.
async fn exec_check(c: &Crustd, tally: &Tally, id: &str, name: &str) {
    let r = c
        .runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["echo".into(), "soak".into()],
            timeout: 30,
        })
        .await;
    if let Some(out) = tally.check(&format!("{name}: ExecSync"), r) {
        let out = out.into_inner();
        if out.exit_code != 0 || out.stdout != b"soak\n" {
            tally.error(format!(
                "{name}: ExecSync answered exit {} with {:?}",
                out.exit_code,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        tally.execs.fetch_add(1, Ordering::Relaxed);
    }
}

fn pod_config(c: &Crustd, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-soak".into(),
            attempt: 0,
        }),
        log_directory: c.dir.path().join("logs").join(name).display().to_string(),
        ..Default::default()
    }
}

async fn run_pod(c: &Crustd, pc: &PodSandboxConfig) -> Result<String, tonic::Status> {
    c.runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// Creates and starts container `c` running `sh -c script` in `pod`.
async fn create_start(
    c: &Crustd,
    pod: &str,
    pc: &PodSandboxConfig,
    image: &str,
    script: &str,
) -> Result<String, tonic::Status> {
    let mut rt = c.runtime().await;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), script.into()],
                log_path: "c.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(pc.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    Ok(id)
}

/// How long crustd is left idle after the churn before its threads are counted again: longer than
/// the 10 s an idle thread of tokio's blocking pool lives.
const IDLE: Duration = Duration::from_secs(15);
