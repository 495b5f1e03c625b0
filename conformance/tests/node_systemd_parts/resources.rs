//! Resources on the node: CPU and memory stats from cgroup v2, an OOM kill reported as such, and the
//! container's private cgroup namespace.

use super::*;

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn stats_report_cpu_and_memory() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod("stats", false).await;
    let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; head -c 8000000 /dev/zero >/dev/shm/x; exec sleep 86400";
    let id = run(&p, ctr("busy", &imgs.busybox.reference, &["sh", "-c", script])).await;
    let mut c = rt().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let value = |v: &Option<UInt64Value>| v.as_ref().map_or(0, |v| v.value);
    loop {
        let cs = c
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .unwrap_or_default();
        let listed = c
            .list_container_stats(ListContainerStatsRequest::default())
            .await
            .expect("ListContainerStats")
            .into_inner()
            .stats;
        let ps = c
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await
            .expect("ListPodSandboxStats")
            .into_inner()
            .stats;
        let pod_stats = ps
            .iter()
            .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == p.id))
            .and_then(|s| s.linux.clone())
            .unwrap_or_default();
        let cpu = value(&cs.cpu.unwrap_or_default().usage_core_nano_seconds);
        let mem = value(&cs.memory.unwrap_or_default().working_set_bytes);
        let pod_cpu = value(&pod_stats.cpu.unwrap_or_default().usage_core_nano_seconds);
        let pod_mem = value(&pod_stats.memory.unwrap_or_default().working_set_bytes);
        let in_list = listed
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id));
        let in_pod = pod_stats
            .containers
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id));
        if cpu > 0 && mem >= 8_000_000 && pod_cpu > 0 && pod_mem > 0 && in_list && in_pod {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats stay empty: container cpu {cpu} ns, working set {mem} B; pod cpu {pod_cpu} ns, \
             working set {pod_mem} B; in ListContainerStats {in_list}, in the pod's stats {in_pod}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn a_container_past_its_memory_limit_is_oom_killed() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod("oom", false).await;
    let mut c = ctr(
        "hog",
        &imgs.busybox.reference,
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        ],
    );
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = run(&p, c).await;
    let st = wait_exited(&id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"), "{st:?}");
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn a_container_has_a_private_cgroup_namespace() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod("cgroupns", false).await;
    let id = run(
        &p,
        ctr("ns", &imgs.busybox.reference, &["cat", "/proc/self/cgroup"]),
    )
    .await;
    assert_eq!(stdout_of(&p, "ns", &id).await, "0::/\n");
}
