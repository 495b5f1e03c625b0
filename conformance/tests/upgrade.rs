//! On-disk formats across crust versions: records and the image index written before formats were
//! numbered (no `format` key) are read by this crustd, which adopts the containers running under them;
//! a record of a newer format stops crustd's start-up with a message naming it, rather than being
//! dropped. And the in-place upgrade itself: a container started by the last release point's crustd
//! and crust-monitor (conformance/upgrade-from.sh builds them once into /var/cache/crust-upgrade-from;
//! the test says so and skips where they are absent) keeps running under this crustd, which lists,
//! execs in, stops and removes it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};

/// Rewrites the JSON file at `p` through `f`.
fn edit(p: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn format_of(p: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v.get("format").and_then(|f| f.as_u64())
}

async fn pod_and_container(c: &Crustd, image: &str) -> (String, String) {
    c.pull(image).await;
    let logs = c.dir.path().join("logs");
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "old".into(),
            uid: "uid-old".into(),
            namespace: "crust-upgrade".into(),
            attempt: 0,
        }),
        hostname: "old".into(),
        log_directory: logs.display().to_string(),
        ..Default::default()
    };
    let pod = c.run_pod(&config).await;
    let sleeper = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        ..Default::default()
    };
    let id = c.run_container(&pod, sleeper, &config).await;
    (pod, id)
}

/// A live process's start time (field 22 of /proc/<pid>/stat; `None` once it is gone or a zombie): the
/// same PID and start time are the same process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[tokio::test]
async fn records_from_before_format_numbers_are_read_and_their_containers_adopted() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let (pod, id) = pod_and_container(&c, &imgs.busybox.reference).await;
    let before = c.container_status(&id).await;
    assert_eq!(before.state(), ContainerState::ContainerRunning);
    c.terminate();
    // What crust wrote before formats were numbered: the same files without the key.
    let files = [
        c.root.join(format!("containers/{id}.json")),
        c.root.join(format!("pods/{pod}.json")),
        c.root.join("images/index.json"),
    ];
    for f in &files {
        assert_eq!(
            format_of(f),
            Some(1),
            "{} is written with its format",
            f.display()
        );
        edit(f, |m| {
            m.remove("format");
        });
    }
    c.restart().await;
    let after = c.container_status(&id).await;
    assert_eq!(after.state(), ContainerState::ContainerRunning, "{after:?}");
    assert_eq!(after.started_at, before.started_at);
    let images = c
        .images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        images.len(),
        1,
        "the index of the older format is read: {images:?}"
    );
    // Managed: it stops and goes, and what is written again carries the format.
    let mut rt = c.runtime().await;
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert_eq!(format_of(&files[0]), Some(1));
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(format_of(&files[1]), Some(1));
}

#[tokio::test]
async fn a_record_of_a_newer_format_stops_start_up() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let (pod, _) = pod_and_container(&c, &imgs.busybox.reference).await;
    c.terminate();
    let record = c.root.join(format!("pods/{pod}.json"));
    edit(&record, |m| {
        m.insert("format".into(), 99.into());
    });
    let mut child = Command::new(harness::binary("crustd"))
        .arg("--config")
        .arg(&c.config)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = harness::wait_for(Duration::from_secs(30), || child.try_wait().unwrap());
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("crustd started with a record of a newer format");
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&record.display().to_string()) && text.contains("format 99 is newer"),
        "the refusal must name the record and why: {text}"
    );
    // Back to a format it reads: the pod is there again (nothing was dropped), and the harness cleans up.
    edit(&record, |m| {
        m.insert("format".into(), 1.into());
    });
    c.restart().await;
    let pods = c
        .runtime()
        .await
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
}

/// The last release point's binaries (conformance/upgrade-from.sh --check), when built on this machine.
fn last_release() -> Option<std::path::PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(repo.join("conformance/upgrade-from.sh"))
        .arg("--check")
        .output()
        .unwrap();
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    out.status.success().then(|| dir.into())
}

#[tokio::test]
async fn containers_started_by_the_last_release_keep_running_under_this_crustd() {
    let Some(old) = last_release() else {
        println!(
            "the last release point's binaries are not built: skipping (conformance/upgrade-from.sh builds them)"
        );
        return;
    };
    let version = |dir: &Path| {
        let out = Command::new(dir.join("crustd"))
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let old_version = version(&old);
    let new_version = version(&harness::bin_dir());
    assert!(
        !old_version.contains(crust::version::COMMIT),
        "{} is this build ({old_version})",
        old.display()
    );
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        bin_dir: Some(old.clone()),
        ..Default::default()
    })
    .await;
    let (pod, id) = pod_and_container(&c, &imgs.busybox.reference).await;
    let before = c.container_status(&id).await;
    let pid = c.container_pid(&id).await;
    let started = start_time(pid).expect("the container's process");
    let record = c.root.join(format!("containers/{id}.json"));
    println!(
        "{old_version}: container {id} runs as PID {pid}; its record has format {:?}",
        format_of(&record)
    );

    c.upgrade_to(&harness::bin_dir()).await;
    println!("upgraded to {new_version} (crustd PID {:?})", c.pid());
    assert_eq!(
        start_time(pid),
        Some(started),
        "the container's process (PID {pid}) outlives the upgrade"
    );
    let after = c.container_status(&id).await;
    assert_eq!(after.state(), ContainerState::ContainerRunning, "{after:?}");
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(c.container_pid(&id).await, pid);
    let mut rt = c.runtime().await;
    let listed = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let images = c
        .images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(images.len(), 1, "the older image index is read: {images:?}");
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "adopted".into()],
            timeout: 30,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "adopted");
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(
        harness::wait_for(Duration::from_secs(10), || start_time(pid)
            .is_none()
            .then_some(()))
        .is_some(),
        "PID {pid} is gone once stopped"
    );
    assert_eq!(
        c.container_status(&id).await.state(),
        ContainerState::ContainerExited
    );
    assert_eq!(format_of(&record), Some(1), "rewritten in this build's format");
    c.stop_and_remove_container(&id, 1).await;
    c.stop_and_remove_pod(&pod).await;
    println!("container {id} (PID {pid}) exec'd, stopped and removed by {new_version}");
}
