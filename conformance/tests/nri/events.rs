//! Pod-level events: StopPodSandbox and RemovePodSandbox tell plugins about each container they stop
//! and remove (once each, as containerd does, whether it ran, exited on its own or never started);
//! UpdatePodSandboxResources reaches plugins as UpdatePodSandbox and PostUpdatePodSandbox; a
//! pre-installed plugin is started by crustd from `plugin_path` with its socket on fd 3 and its
//! configuration; a RunPodSandbox far larger than ttrpc's 4 KiB read buffer reaches the Go plugin.

use cri_api::v1::*;

use super::{env, logged_events, plugin_dir, preinstalled, wait_log};

#[tokio::test]
async fn pod_stop_and_removal_tell_plugins_about_each_container() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("whole-pod", &[]).await;
    let running = e.run(&pod, "running").await;
    let exited = e.run_cmd(&pod, "exited", "true").await;
    let created = e.create(&pod, "created").await.unwrap();
    // The one that exits on its own is told as stopped when it exits.
    wait_log(&logger, &format!("StopContainer:    id: {exited}")).await;
    e.c.stop_and_remove_pod(&pod.0).await;
    let log = wait_log(&logger, "RemovePodSandbox").await;
    let got = logged_events(&log);
    let at = |ev: &str, c: &str| -> Vec<usize> {
        got.iter()
            .enumerate()
            .filter(|(_, g)| g.0 == ev && g.2 == c)
            .map(|(i, _)| i)
            .collect()
    };
    let stop_pod = at("StopPodSandbox", "");
    let remove_pod = at("RemovePodSandbox", "");
    assert_eq!((stop_pod.len(), remove_pod.len()), (1, 1), "{got:#?}");
    for c in [&running, &exited, &created] {
        let (stops, removes) = (at("StopContainer", c), at("RemoveContainer", c));
        assert_eq!((stops.len(), removes.len()), (1, 1), "{c}: {got:#?}");
        assert!(stops[0] < stop_pod[0], "{c} stopped after its pod: {got:#?}");
        assert!(
            stop_pod[0] < removes[0] && removes[0] < remove_pod[0],
            "{c}: {got:#?}"
        );
    }
}

#[tokio::test]
async fn pod_resource_updates_reach_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("resized", &[]).await;
    e.c.runtime()
        .await
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.0.clone(),
            overhead: None,
            resources: Some(LinuxContainerResources {
                cpu_shares: 1536,
                memory_limit_in_bytes: 300 << 20,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let log = wait_log(&logger, "PostUpdatePodSandbox").await;
    let got = logged_events(&log);
    let tail: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        tail,
        ["RunPodSandbox", "UpdatePodSandbox", "PostUpdatePodSandbox"],
        "{log}"
    );
    assert!(got.iter().all(|g| g.1 == pod.0), "{got:?}");
    // The new resources, as the plugin received them.
    assert!(log.contains("shares:") && log.contains("value: 1536"), "{log}");
    assert!(log.contains(&format!("value: {}", 300u64 << 20)), "{log}");
}

#[tokio::test]
async fn a_preinstalled_plugin_is_started_from_plugin_path() {
    let Some(dir) = plugin_dir() else { return };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("logger.log");
    // Its configuration: where to log, and an environment variable to set in every container.
    let conf = format!(
        "logFile: {}\nevents: [all]\nsetEnv: NRI_PREINSTALLED\n",
        log.display()
    );
    let (_plugins, toml) = preinstalled(&[(&dir.join("logger"), "10-logger", Some(&conf))]);
    let e = env(dir, &toml).await;
    let st =
        e.c.runtime()
            .await
            .status(StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    let nri: serde_json::Value = serde_json::from_str(&st.info["nri"]).unwrap();
    let p = &nri["plugins"][0];
    assert_eq!(
        (p["index"].as_str(), p["name"].as_str(), p["kind"].as_str()),
        (Some("10"), Some("logger"), Some("pre-installed")),
        "{nri}\n{}",
        e.c.log()
    );
    let pid = p["pid"].as_u64().expect("a pre-installed plugin's pid") as i32;
    let pod = e.pod("pre", &[]).await;
    let id = e.run(&pod, "c1").await;
    let env_line = e.sh(&id, "echo $NRI_PREINSTALLED").await;
    assert_eq!(env_line, format!("logger-pid-{pid}\n"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("PostStartContainer:    id: {id}")),
        "{text}"
    );
    // The plugin goes with crustd (it ends once its connection does).
    drop(e);
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
    };
    for _ in 0..100 {
        if !running() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!running(), "pre-installed plugin {pid} outlived crustd");
}

#[tokio::test]
async fn messages_larger_than_4_kib_reach_the_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let logger = e.plugin("logger", "10", &[]).await;
    // ~40 KiB of annotations: the RunPodSandbox event's body is many times ttrpc's 4 KiB buffer.
    let values: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("example.com/key-{i:03}"),
                format!("{i:03}-{}", "v".repeat(200)),
            )
        })
        .collect();
    let annotations: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let pod = e.pod("large", &annotations).await;
    let log = wait_log(&logger, "example.com/key-199").await;
    assert!(log.contains(&format!("199-{}", "v".repeat(200))), "{log}");
    assert!(log.contains("RunPodSandbox: pod:"), "{log}");
    // And the plugin is still connected, answering the next event.
    let id = e.run(&pod, "c1").await;
    wait_log(&logger, &format!("PostStartContainer:    id: {id}")).await;
    assert_eq!(e.connected().await, vec!["10-logger".to_string()]);
}
