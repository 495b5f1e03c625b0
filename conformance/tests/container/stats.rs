//! crustd's Prometheus endpoint (`[metrics] address`), and the stats kubelet reads without cAdvisor
//! (ListPodSandboxStats with its containers, ListMetricDescriptors, ListPodSandboxMetrics), checked
//! against the cgroup files of a container that holds memory and spins a CPU.

use super::*;

/// `env()` with `[metrics]` on a free loopback port; returns it and the address.
async fn env_with_metrics() -> (Env, String) {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let addr = format!("127.0.0.1:{}", harness::free_port());
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml: format!("[metrics]\naddress = {addr:?}\n"),
        ..Default::default()
    })
    .await;
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(cri_api::v1::ImageSpec {
                image: imgs.busybox.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    (Env { c, imgs, _reg: reg }, addr)
}

/// The value of the first sample line starting with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn metrics_endpoint_counts_requests_pulls_and_states() {
    let (e, addr) = env_with_metrics().await;
    let mut rt = e.c.runtime().await;
    for _ in 0..3 {
        rt.version(VersionRequest::default()).await.unwrap();
    }
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let p = pod(&e, "metrics").await;
    let bb = e.imgs.busybox.reference.clone();
    let _id = run(&e, &p, ctr("sleeper", &bb, &["sleep", "600"])).await;

    let resp = harness::http::request(&addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        resp.headers
    );
    let text = String::from_utf8(resp.body).unwrap();
    let version = "crust_grpc_requests_total{method=\"/runtime.v1.RuntimeService/Version\",code=\"OK\"}";
    // The harness itself asks Version while waiting for crustd: at least our three.
    assert!(sample(&text, version).unwrap_or(0.0) >= 3.0, "{text}");
    let notfound =
        "crust_grpc_requests_total{method=\"/runtime.v1.RuntimeService/ContainerStatus\",code=\"NotFound\"}";
    assert_eq!(sample(&text, notfound), Some(1.0), "{text}");
    assert!(
        sample(
            &text,
            "crust_grpc_request_duration_seconds_count{method=\"/runtime.v1.ImageService/PullImage\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "crust_image_pulls_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "crust_image_pull_bytes_total").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "crust_containers{state=\"running\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "crust_pods{state=\"ready\"}"), Some(1.0), "{text}");
    assert!(
        sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 1e6,
        "{text}"
    );
    assert!(sample(&text, "process_open_fds").unwrap_or(0.0) > 0.0, "{text}");
    assert!(
        sample(&text, "process_start_time_seconds").unwrap_or(0.0) > 1e9,
        "{text}"
    );
    assert!(text.contains("process_cpu_seconds_total "), "{text}");
    assert_eq!(
        harness::http::request(&addr, "GET", "/other", &[], b"")
            .unwrap()
            .status,
        404
    );
    stop_and_remove_pod(&e, &p.id).await;
}

fn cgroup_file(controller: &str, rel: &str, file: &str) -> String {
    let rel = rel.trim_start_matches('/');
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let p = if v2 {
        PathBuf::from("/sys/fs/cgroup").join(rel).join(file)
    } else {
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(file)
    };
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (usage, inactive_file) of a container's memory cgroup, now.
fn cgroup_memory(rel: &str) -> (u64, u64) {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (usage_file, inactive_key) = if v2 {
        ("memory.current", "inactive_file ")
    } else {
        ("memory.usage_in_bytes", "total_inactive_file ")
    };
    let usage = cgroup_file("memory", rel, usage_file).trim().parse().unwrap();
    let inactive = cgroup_file("memory", rel, "memory.stat")
        .lines()
        .find_map(|l| l.strip_prefix(inactive_key)?.trim().parse().ok())
        .unwrap_or(0);
    (usage, inactive)
}

/// The cgroup's cumulative CPU time, ns.
fn cgroup_cpu_ns(rel: &str) -> u64 {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let usec: u64 = cgroup_file("cpu", rel, "cpu.stat")
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .unwrap();
        usec * 1000
    } else {
        cgroup_file("cpuacct", rel, "cpuacct.usage")
            .trim()
            .parse()
            .unwrap()
    }
}

fn metric<'a>(ms: &'a [Metric], name: &str) -> &'a Metric {
    ms.iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} missing from {ms:?}"))
}

#[tokio::test]
async fn pod_stats_and_metrics_match_the_cgroup() {
    let e = env().await;
    let p = pod(&e, "statspod").await;
    let bb = e.imgs.busybox.reference.clone();
    // About 32 MiB of anonymous memory held in a shell variable, then a busy loop.
    let hog = run(
        &e,
        &p,
        ctr(
            "hog",
            &bb,
            &[
                "sh",
                "-c",
                "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo ready; while :; do :; done",
            ],
        ),
    )
    .await;
    let cgroup = container_info(&e, &hog).await["cgroup"]
        .as_str()
        .unwrap()
        .to_string();
    // Until the memory is held.
    harness::wait_for(Duration::from_secs(30), || {
        let (usage, inactive) = cgroup_memory(&cgroup);
        (usage - inactive > 32 << 20).then_some(())
    })
    .expect("the container never held 32 MiB");
    let mut rt = e.c.runtime().await;

    // ListPodSandboxStats: the pod with its container; two calls give nanocores.
    let list = || async {
        e.c.runtime()
            .await
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                filter: Some(PodSandboxStatsFilter {
                    id: p.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
    };
    let _ = list().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = list().await;
    assert_eq!(stats.len(), 1, "{stats:?}");
    let linux = stats[0].linux.clone().unwrap();
    let pod_cpu = linux.cpu.unwrap();
    assert!(
        pod_cpu.usage_nano_cores.unwrap().value > 100_000_000,
        "{pod_cpu:?}"
    );
    assert!(linux.process.unwrap().process_count.unwrap().value >= 2);
    assert_eq!(linux.containers.len(), 1, "{:?}", linux.containers);
    let cs = &linux.containers[0];
    assert_eq!(cs.attributes.as_ref().unwrap().id, hog);
    // A busy loop: most of a core (the host has two), at least a tenth of one however loaded.
    let nc = cs.cpu.as_ref().unwrap().usage_nano_cores.unwrap().value;
    assert!(nc > 100_000_000, "usage_nano_cores {nc}");
    let ws = cs.memory.as_ref().unwrap().working_set_bytes.unwrap().value;
    let (usage, inactive) = cgroup_memory(&cgroup);
    let now_ws = usage - inactive;
    assert!(ws >= 32 << 20, "working set {ws}");
    assert!(
        ws.abs_diff(now_ws) < 8 << 20,
        "working set {ws} vs the cgroup's {now_ws}"
    );
    let wl = cs.writable_layer.as_ref().unwrap();
    assert!(wl.inodes_used.unwrap().value > 0 || wl.used_bytes.is_some());
    // No PSI on a v1 host; on v2 the container has it.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(cs.cpu.as_ref().unwrap().psi.is_some(), v2);
    assert_eq!(cs.io.is_some(), v2);

    // PodSandboxStats answers the same shape.
    let one = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(one.linux.unwrap().containers.len(), 1);

    // ListMetricDescriptors and ListPodSandboxMetrics.
    let descs = rt
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let ws_desc = descs
        .iter()
        .find(|d| d.name == "container_memory_working_set_bytes")
        .unwrap();
    assert_eq!(
        ws_desc.label_keys,
        ["container", "id", "image", "name", "namespace", "pod"]
    );
    let pm = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let mine = pm.iter().find(|m| m.pod_sandbox_id == p.id).unwrap();
    for m in mine
        .metrics
        .iter()
        .chain(mine.container_metrics.iter().flat_map(|c| c.metrics.iter()))
    {
        let d = descs.iter().find(|d| d.name == m.name).unwrap();
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{m:?}");
    }
    let rx = metric(&mine.metrics, "container_network_receive_bytes_total");
    assert_eq!(rx.label_values[6], "eth0");
    let cm = &mine.container_metrics[0].metrics;
    let ws_m = metric(cm, "container_memory_working_set_bytes");
    assert_eq!(
        ws_m.label_values[..],
        [
            "hog".to_string(),
            format!("/{}", cgroup.trim_start_matches('/')),
            bb.clone(),
            hog.clone(),
            "crust-test".to_string(),
            "statspod".to_string()
        ]
    );
    let (usage, inactive) = cgroup_memory(&cgroup);
    let v = ws_m.value.unwrap().value;
    assert!(
        v.abs_diff(usage - inactive) < 8 << 20,
        "metric {v} vs cgroup {}",
        usage - inactive
    );
    assert!(metric(cm, "container_memory_usage_bytes").value.unwrap().value >= v);
    // Whole seconds (the CRI's values are integers), as the cgroup counts them.
    let cpu_s = metric(cm, "container_cpu_usage_seconds_total")
        .value
        .unwrap()
        .value;
    let cg_s = cgroup_cpu_ns(&cgroup) / 1_000_000_000;
    assert!(
        cpu_s <= cg_s && cg_s - cpu_s <= 1,
        "metric {cpu_s} s vs cgroup {cg_s} s"
    );
    assert!(metric(cm, "container_processes").value.unwrap().value >= 1);
    assert!(metric(cm, "container_start_time_seconds").value.unwrap().value > 1_000_000_000);
    assert_eq!(metric(cm, "container_oom_events_total").value.unwrap().value, 0);
    metric(cm, "container_fs_usage_bytes");
    stop_and_remove_pod(&e, &p.id).await;
}
