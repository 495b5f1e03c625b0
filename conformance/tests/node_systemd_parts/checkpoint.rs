//! Checkpoint and restore on the node (Debian 12's kernel 6.1, where Debian's CRIU works): a container
//! counting in a loop is checkpointed and keeps counting; restored into a new pod (the archive's path
//! as the image, as CRI-O takes it) it goes on from the checkpointed count, not from 1, with the file
//! it wrote before the checkpoint. On a kernel where `criu check` fails, the test asserts the
//! FailedPrecondition with CRIU's reason instead, and says so. The pods name runc: Debian's crun (the
//! node's default handler) is built without CRIU and answers `unknown command checkpoint`.

use std::io::Read;

use super::*;

/// The counts the container printed so far (its CRI log's stdout lines that are numbers).
fn counts(p: &Pod, name: &str) -> Vec<u64> {
    let raw = std::fs::read_to_string(p.logs.path().join(format!("{name}.log"))).unwrap_or_default();
    raw.lines()
        .filter_map(|l| l.split_once(" stdout F ")?.1.trim().parse().ok())
        .collect()
}

/// Waits until the container has printed a count above `above`; returns its counts.
async fn wait_count(p: &Pod, name: &str, above: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = counts(p, name);
        if c.last().is_some_and(|&n| n > above) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{name} printed no count above {above}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A restored container's counts: its log starts with the checkpointed container's (as containerd
/// restores it), 1 and on, and the restored process goes on from there: never a gap or a new 1.
/// Returns the first count the restored process printed (the first above the checkpointed log's last).
fn continued(c: &[u64], logged_before: u64) -> u64 {
    assert_eq!(c.first(), Some(&1), "the checkpointed log comes first: {c:?}");
    assert!(
        c.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == w[0]),
        "one count after another, never from 1 again: {c:?}"
    );
    *c.iter()
        .find(|&&n| n > logged_before)
        .expect("a count after the checkpoint")
}

/// The archive's entry names, and the content of `file` inside its `rootfs-diff.tar`.
fn archive_contents(path: &std::path::Path, file: &str) -> (Vec<String>, Option<String>) {
    let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
    let (mut names, mut content) = (Vec::new(), None);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "rootfs-diff.tar" {
            let mut diff = tar::Archive::new(&mut e);
            for d in diff.entries().unwrap() {
                let mut d = d.unwrap();
                if d.path().unwrap().display().to_string() == file {
                    let mut s = String::new();
                    d.read_to_string(&mut s).unwrap();
                    content = Some(s);
                }
            }
        }
        names.push(name);
    }
    (names, content)
}

fn counter(image: &str) -> ContainerConfig {
    let script = "echo written-before > /marker; i=0; while true; do i=$((i+1)); echo $i > /count; echo $i; sleep 0.2; done";
    let mut c = ctr("counter", image, &["sh", "-c", script]);
    // As kubelet gives a container without shareProcessNamespace: a PID namespace of its own.
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Pod as i32,
                pid: NamespaceMode::Container as i32,
                ipc: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn exec_out(id: &str, cmd: &[&str]) -> String {
    let r = rt()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn checkpoint_keeps_counting_and_restore_continues_the_count() {
    if !on_node() {
        return;
    }
    let imgs = images().await;
    let src = pod_with_handler("ckpt-src", true, "runc").await;
    let id = run(&src, counter(&imgs.busybox.reference)).await;
    wait_count(&src, "counter", 5).await;
    let dir = tempfile::Builder::new().prefix("crust-ckpt-").tempdir().unwrap();
    let archive = dir.path().join("counter.tar");
    let req = CheckpointContainerRequest {
        container_id: id.clone(),
        location: archive.display().to_string(),
        timeout: 0,
    };
    let criu = Command::new("criu").arg("check").output().expect("criu");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !criu.status.success() {
        let why = String::from_utf8_lossy(&criu.stderr).into_owned();
        println!(
            "CRIU cannot work on kernel {}: asserting the FailedPrecondition instead of a checkpoint ({})",
            kernel.trim(),
            why.trim()
        );
        let err = rt().await.checkpoint_container(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("criu"), "{}", err.message());
        assert!(!archive.exists());
        return;
    }

    rt().await
        .checkpoint_container(req)
        .await
        .expect("CheckpointContainer");
    let (names, count) = archive_contents(&archive, "count");
    for want in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "dump.log",
        "stats-dump",
        "container.log",
        "checkpoint/inventory.img",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let at_checkpoint: u64 = count.expect("/count in rootfs-diff.tar").trim().parse().unwrap();
    let size = std::fs::metadata(&archive).unwrap().len();
    println!("checkpoint written: {size} bytes, count at the checkpoint {at_checkpoint}");

    // The original keeps running and counting.
    let after = wait_count(&src, "counter", at_checkpoint + 5).await;
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    println!("the original counts on: {}", after.last().unwrap());

    // Restored into a new pod: the archive's path as the image.
    let dst = pod_with_handler("ckpt-dst", true, "runc").await;
    let mut cfg = counter(&archive.display().to_string());
    cfg.command.clear();
    let restored = run(&dst, cfg).await;
    let first = continued(
        &wait_count(&dst, "counter", at_checkpoint + 1).await,
        at_checkpoint - 1,
    );
    println!("restored: first count {first} (checkpointed at {at_checkpoint}), after the checkpointed log");
    assert!(
        first >= at_checkpoint && first <= at_checkpoint + 2,
        "the restored container printed {first} first; it was checkpointed at {at_checkpoint}"
    );
    let later = wait_count(&dst, "counter", first + 3).await;
    assert_eq!(exec_out(&restored, &["cat", "/marker"]).await, "written-before");
    let now: u64 = exec_out(&restored, &["cat", "/count"]).await.parse().unwrap();
    assert!(now > at_checkpoint, "{now}");
    println!(
        "the restored container counts on: {} (its /count {now}); /marker written before the checkpoint is there",
        later.last().unwrap()
    );
    // Both run side by side, each its own process.
    assert_eq!(status(&id).await.state, ContainerState::ContainerRunning as i32);
    assert_eq!(
        status(&restored).await.state,
        ContainerState::ContainerRunning as i32
    );
    // The archive as an image (CRI-O's checkpoint annotation), restored into a third pod.
    let crustctl = ["/usr/local/bin/crustctl", "/usr/bin/crustctl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("crustctl");
    let name = "localhost/counter-checkpoint:1";
    let out = Command::new(crustctl)
        .args(["images", "import-checkpoint"])
        .arg(&archive)
        .arg(name)
        .output()
        .expect("crustctl");
    assert!(out.status.success(), "{out:?}");
    let third = pod_with_handler("ckpt-img", true, "runc").await;
    let mut cfg = counter(name);
    cfg.command.clear();
    let from_image = run(&third, cfg).await;
    let first_img = continued(
        &wait_count(&third, "counter", at_checkpoint + 1).await,
        at_checkpoint - 1,
    );
    println!("restored from the image {name}: first count {first_img} (checkpointed at {at_checkpoint})");
    assert!(
        first_img >= at_checkpoint && first_img <= at_checkpoint + 2,
        "{first_img} vs {at_checkpoint}"
    );
    assert_eq!(exec_out(&from_image, &["cat", "/marker"]).await, "written-before");
}

/// A handler whose runtime has no checkpoint command (Debian's crun is built without CRIU) is refused
/// with FailedPrecondition naming the handler, before CRIU or the runtime is asked to dump anything.
#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn a_runtime_without_criu_support_refuses_checkpoint_with_its_reason() {
    if !on_node() {
        return;
    }
    let crun_can = Command::new("crun")
        .args(["checkpoint", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    let criu_ok = Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success());
    if crun_can || !criu_ok {
        println!(
            "crun checkpoints here ({crun_can}) or CRIU cannot work ({}): nothing to refuse",
            !criu_ok
        );
        return;
    }
    let imgs = images().await;
    let p = pod_with_handler("ckpt-crun", true, "crun").await;
    let id = run(&p, counter(&imgs.busybox.reference)).await;
    wait_count(&p, "counter", 1).await;
    let dir = tempfile::Builder::new().prefix("crust-ckpt-").tempdir().unwrap();
    let archive = dir.path().join("crun.tar");
    let err = rt()
        .await
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            location: archive.display().to_string(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    println!("checkpoint under crun: {:?} {}", err.code(), err.message());
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("\"crun\"") && err.message().contains("cannot checkpoint"),
        "{}",
        err.message()
    );
    assert!(!archive.exists());
    assert_eq!(
        status(&id).await.state,
        ContainerState::ContainerRunning as i32,
        "it runs on"
    );
}
