//! Where the node puts containers: systemd scopes in kubelet's pod slice (the pause and the monitors in
//! scopes of their own) that go with the pod, and AppArmor's `crust-default` profile confining them.

use super::*;

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn containers_pause_and_monitors_are_scopes_in_the_pod_slice_until_removed() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let p = pod("scopes", false).await;
    let argv = ["sleep", "86402"];
    let id = run(&p, ctr("scoped", &imgs.busybox.reference, &argv)).await;
    let pid = the_pid_of(&argv).await;
    let (_, slice) = pod_slice(&p.uid);
    // The container and the pause in the pod's slice; the monitor in system.slice (as CRI-O's conmon),
    // outside the pod's limits and out of crustd's own unit.
    let units = [
        (format!("crust-{id}.scope"), slice.clone()),
        (format!("crust-pause-{}.scope", p.id), slice.clone()),
        (format!("crust-monitor-{id}.scope"), "/system.slice".to_string()),
    ];
    for (u, parent) in &units {
        assert_eq!(
            unit(u),
            ("active".to_string(), format!("{parent}/{u}")),
            "unit {u} (ActiveState, ControlGroup); cgroup driver {:?}",
            cgroup_driver().await
        );
    }
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        in_scope(&cg, &format!("{slice}/{}", units[0].0)),
        "the container process's cgroup: {cg}"
    );
    remove_pod(&p.id)
        .await
        .expect("StopPodSandbox + RemovePodSandbox");
    for (u, parent) in &units {
        let deadline = Instant::now() + Duration::from_secs(30);
        while unit(u).0 != "inactive" {
            assert!(
                Instant::now() < deadline,
                "{u} still {:?} after RemovePodSandbox",
                unit(u)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            !std::path::Path::new(&format!("/sys/fs/cgroup{parent}/{u}")).exists(),
            "the cgroup of {u} is gone"
        );
    }
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn apparmor_confines_containers_with_crust_default() {
    if !on_node() {
        return;
    }
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").unwrap_or_default();
    assert_eq!(enabled.trim(), "Y", "AppArmor is enabled on the node");
    let imgs = images().await;
    let p = pod("apparmor", false).await;
    let mut c = ctr(
        "confined",
        &imgs.busybox.reference,
        &["cat", "/proc/self/attr/current"],
    );
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .apparmor = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let id = run(&p, c).await;
    assert_eq!(stdout_of(&p, "confined", &id).await, "crust-default (enforce)\n");
    let loaded = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default();
    assert!(loaded.lines().any(|l| l == "crust-default (enforce)"), "{loaded}");
}
