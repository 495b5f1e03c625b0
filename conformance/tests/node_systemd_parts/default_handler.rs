//! The default handler on the node: cgroup v2 and Debian's crun installed, so with
//! `runtime.default_handler = "auto"` (the packaged default) crust chooses crun, as CRI-O does since
//! 1.31; `crustctl status` and `crictl info` say so and why, and a pod that names no RuntimeClass runs
//! its containers under crun (crun's state dir holds them, runc's does not).

use super::*;

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn crun_is_the_default_handler_on_a_cgroup_v2_node_with_crun() {
    if !on_node() {
        return;
    }
    let st = rt()
        .await
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let chosen: serde_json::Value = serde_json::from_str(
        st.info
            .get("defaultRuntimeHandler")
            .expect("defaultRuntimeHandler"),
    )
    .unwrap();
    assert_eq!(chosen["name"], "crun", "{chosen}");
    assert_eq!(
        chosen["reason"], "crun: cgroup v2 and /usr/bin/crun found",
        "{chosen}"
    );
    let out = Command::new("crustctl").arg("status").output().expect("crustctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l == "default handler: crun (crun: cgroup v2 and /usr/bin/crun found)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let imgs = images().await;
    let p = pod_with_handler("dflt", false, "").await;
    let argv = ["sleep", "86404"];
    let id = run(&p, ctr("dflt", &imgs.busybox.reference, &argv)).await;
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    let list = |rt: &str| {
        let o = Command::new(rt)
            .args(["--root", &format!("/run/crust/runtime/{rt}"), "list", "-q"])
            .output()
            .expect(rt);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        list("crun").lines().any(|l| l == id),
        "crun list: {}",
        list("crun")
    );
    assert!(
        !list("runc").lines().any(|l| l == id),
        "runc list: {}",
        list("runc")
    );
    let pid = the_pid_of(&argv).await;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("sleep") || exe.ends_with("busybox"),
        "{}",
        exe.display()
    );
    rt().await
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    assert_eq!(wait_exited(&id).await.exit_code, 137);
}
