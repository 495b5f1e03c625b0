//! The first round: every event in order, the device injector and ulimit adjuster changing the
//! container, a late plugin synchronized, a stuck or crashed plugin, bad and conflicting adjustments,
//! and `crustctl status`.

use std::process::Command;
use std::time::Duration;

use cri_api::v1::*;
use tonic::Code;

use super::{env, logged_events, plugin_dir, wait_log};

#[tokio::test]
async fn logger_sees_every_event_in_order() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("logged", &[]).await;
    let id = e.run(&pod, "c1").await;
    let mut rt = e.c.runtime().await;
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    e.c.stop_and_remove_pod(&pod.0).await;
    let log = wait_log(&logger, "RemovePodSandbox").await;
    let got = logged_events(&log);
    let p = pod.0.as_str();
    let c = id.as_str();
    let want: Vec<(String, String, String)> = [
        ("RunPodSandbox", ""),
        ("CreateContainer", c),
        ("PostCreateContainer", c),
        ("StartContainer", c),
        ("PostStartContainer", c),
        ("StopContainer", c),
        ("RemoveContainer", c),
        ("StopPodSandbox", ""),
        ("RemovePodSandbox", ""),
    ]
    .iter()
    .map(|(ev, ctr)| (ev.to_string(), p.to_string(), ctr.to_string()))
    .collect();
    assert_eq!(got, want, "logger output:\n{log}");
    // The container is shown with its pod and its name.
    assert!(
        log.contains(&format!("CreateContainer:    pod_sandbox_id: {p}")),
        "{log}"
    );
    assert!(log.contains("CreateContainer:    name: c1"), "{log}");
}

#[tokio::test]
async fn device_injector_and_ulimit_adjuster_change_the_container() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _dev = e.plugin("device-injector", "10", &[]).await;
    let _ulimit = e.plugin("ulimit-adjuster", "20", &[]).await;
    let devices = "- path: /dev/nri-null\n  type: c\n  major: 1\n  minor: 3\n  file_mode: 0666\n";
    let ulimits =
        "- type: nofile\n  hard: 4096\n  soft: 1024\n- type: RLIMIT_NPROC\n  hard: 900\n  soft: 800\n";
    let pod = e
        .pod(
            "adjusted",
            &[
                ("devices.noderesource.dev/container.c1", devices),
                ("ulimits.noderesource.dev/container.c1", ulimits),
            ],
        )
        .await;
    let id = e
        .run_cmd(
            &pod,
            "c1",
            "ulimit -a > /tmp/l; ulimit -Ha >> /tmp/l; mv /tmp/l /tmp/limits; sleep 1000",
        )
        .await;
    let out = e
        .sh(
            &id,
            "stat -c '%F %t,%T %a' /dev/nri-null; echo x > /dev/nri-null && echo wrote",
        )
        .await;
    assert_eq!(out, "character special file 1,3 666\nwrote\n");
    // The container's own process is asked: runc 1.1 applies an exec's rlimits from outside, after
    // the exec'd process may already have run, so an exec's `ulimit` can race.
    let all = e
        .sh(
            &id,
            "while [ ! -s /tmp/limits ]; do sleep 0.1; done; cat /tmp/limits",
        )
        .await;
    println!("ulimit -a inside the container:\n{all}");
    let line = |flag: &str, nth: usize| -> String {
        all.lines()
            .filter(|l| l.ends_with(&format!("({flag})")) || l.contains(&format!("({flag}) ")))
            .nth(nth)
            .and_then(|l| l.split_whitespace().last().map(String::from))
            .unwrap_or_default()
    };
    // Soft (`ulimit -a`) then hard (`ulimit -Ha`).
    assert_eq!(
        (line("-n", 0), line("-n", 1)),
        ("1024".into(), "4096".into()),
        "{all}"
    );
    assert_eq!(
        (line("-u", 0), line("-u", 1)),
        ("800".into(), "900".into()),
        "{all}"
    );
    // A container the annotations do not name is left alone.
    let other = e.run(&pod, "c2").await;
    let out = e
        .sh(
            &other,
            "test -e /dev/nri-null && echo present; grep processes /proc/1/limits",
        )
        .await;
    assert!(!out.contains("present") && !out.contains(" 800 "), "{out}");
}

#[tokio::test]
async fn a_late_plugin_is_shown_what_runs() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let pod = e.pod("early", &[]).await;
    let id = e.run(&pod, "c1").await;
    let logger = e.plugin("logger", "10", &[]).await;
    wait_log(&logger, "Synchronize: containers:").await;
    let log = wait_log(&logger, &format!("Synchronize:      id: {id}")).await;
    let sync: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("msg=\"Synchronize: ").nth(1))
        .collect();
    let text = sync.join("\n");
    assert!(text.contains(&format!("id: {}", pod.0)), "{log}");
    assert!(text.contains(&format!("id: {id}")), "{log}");
    // Running (CONTAINER_RUNNING is 3), with its process.
    assert!(text.contains("state: 3") && text.contains("args:"), "{log}");
    // It sees what comes after, too.
    let c2 = e.run(&pod, "c2").await;
    wait_log(&logger, &format!("PostStartContainer:    id: {c2}")).await;
}

#[tokio::test]
async fn a_plugin_past_the_timeout_is_dropped_and_pods_go_on() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "[nri]\nplugin_request_timeout = \"1s\"\n").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let _ulimit = e.plugin("ulimit-adjuster", "20", &[]).await;
    // The logger stops answering (SIGSTOP): the next event waits one timeout, drops it, goes on.
    unsafe {
        libc::kill(logger.pid(), libc::SIGSTOP);
    }
    let pod = e.pod("goes-on", &[]).await;
    let id = e.run(&pod, "c1").await;
    assert_eq!(e.sh(&id, "echo up").await, "up\n");
    let connected = e.connected().await;
    assert_eq!(connected, vec!["20-ulimit-adjuster".to_string()], "{}", e.c.log());
    assert!(e.c.log().contains("disconnecting it"), "{}", e.c.log());
    // A second pod does not wait for the dropped plugin at all.
    let pod2 = e.pod("goes-on-2", &[]).await;
    e.run(&pod2, "c1").await;
}

#[tokio::test]
async fn a_crashed_plugin_fails_nothing() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let mut logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("survives", &[]).await;
    let id = e.run(&pod, "c1").await;
    logger.child.kill().unwrap();
    logger.child.wait().unwrap();
    for _ in 0..100 {
        if e.connected().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.connected().await.is_empty());
    assert_eq!(e.sh(&id, "echo still").await, "still\n");
    let c2 = e.run(&pod, "c2").await;
    assert_eq!(e.sh(&c2, "echo new").await, "new\n");
}

#[tokio::test]
async fn bad_and_conflicting_adjustments_fail_the_creation_naming_the_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _a = e.plugin("device-injector", "10", &[]).await;
    // A device of a type that does not exist: InvalidArgument naming the plugin.
    let bad = "- path: /dev/nri-bad\n  type: x\n  major: 1\n  minor: 3\n";
    let pod = e
        .pod("bad", &[("devices.noderesource.dev/container.c1", bad)])
        .await;
    let err = e.create(&pod, "c1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("10-device-injector"), "{err:?}");
    // Nothing of the failed container is left: the same name can be created once the pod is fixed.
    assert!(
        e.c.runtime()
            .await
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
    // Two plugins injecting the same device: refused, naming both.
    let _b = e.plugin("device-injector", "20", &[]).await;
    let dev = "- path: /dev/nri-null\n  type: c\n  major: 1\n  minor: 3\n";
    let pod2 = e
        .pod("conflict", &[("devices.noderesource.dev/container.c1", dev)])
        .await;
    let err = e.create(&pod2, "c1").await.unwrap_err();
    assert!(
        err.message().contains("10-device-injector") && err.message().contains("20-device-injector"),
        "{err:?}"
    );
    assert!(err.message().contains("/dev/nri-null"), "{err:?}");
}

/// `crustctl status` lists the connected plugins.
#[tokio::test]
async fn crustctl_status_lists_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _l = e.plugin("logger", "10", &[]).await;
    let out = Command::new(harness::binary("crustctl"))
        .args(["--config", e.c.config.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("NRI plugins connected: 1") && text.contains("10-logger  external"),
        "{text}"
    );
}
