//! The cgroup namespace: a non-privileged container has its own, so it sees its cgroup as the root
//! (`0::/` on a v2 host, `/` for every hierarchy on a v1 one); a privileged one keeps the host's and
//! sees its cgroup's real path. On both kinds of host, with either cgroup driver.

use super::*;

/// `/proc/self/cgroup` of a container run with `privileged` in a pod made with it.
async fn own_cgroups(e: &Env, name: &str, privileged: bool) -> String {
    let log_dir = e.c.dir.path().join("logs").join(name);
    let mut config = pod_config(name, &log_dir);
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id =
        e.c.runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
    let p = Pod { id, config, log_dir };
    let mut c = ctr("cg", &e.imgs.busybox.reference, &["cat", "/proc/self/cgroup"]);
    sc(&mut c).privileged = privileged;
    let cid = run(e, &p, c).await;
    let st = wait_exited(e, &cid).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let out = stdout_text(&p.log_dir.join("cg/0.log").display().to_string());
    stop_and_remove_pod(e, &p.id).await;
    out
}

#[tokio::test]
async fn a_non_privileged_container_has_its_own_cgroup_namespace() {
    let e = env().await;
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let own = own_cgroups(&e, "cgns-own", false).await;
    let lines: Vec<&str> = own.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "{own:?}");
    if v2 {
        assert_eq!(lines, ["0::/"], "{own}");
    }
    for l in &lines {
        let path = l.splitn(3, ':').nth(2).unwrap_or_default();
        assert_eq!(
            path, "/",
            "every hierarchy shows the container's cgroup as its root: {own}"
        );
    }

    let host = own_cgroups(&e, "cgns-host", true).await;
    let paths: Vec<&str> = host.lines().filter_map(|l| l.splitn(3, ':').nth(2)).collect();
    assert!(
        paths.iter().any(|p| p.contains(e.c.cgroup_parent.as_str())),
        "a privileged container sees the host's tree: {host}"
    );
}
