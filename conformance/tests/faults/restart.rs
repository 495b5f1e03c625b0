//! crustd SIGKILLed at chosen points, by a real part: during a pull (the registry proxy stalls a blob
//! half-way, the test kills), during an unpack (a large, highly compressible layer; the test kills once
//! the layer's temporary dir shows up), during RunPodSandbox (a CNI plugin chained last kills crustd at
//! ADD), during StartContainer (a runtime handler wrapping runc kills crustd at `run`, then runs the
//! container late or fails), during RemoveContainer (the wrapper kills crustd at `delete`) and during
//! StopPodSandbox (the CNI plugin kills crustd at DEL; the wrapper at a container's `delete`). After the
//! restart nothing half-made is visible, the image store checks clean, containers show what the runtime
//! did, and the same operation succeeds when repeated.
//!
//! The plugin and the wrapper fire once: the test arms them by writing `<crustd pid> <target>` to an
//! `arm` file, which they rename before killing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use harness::fault::scenario_async;
use harness::images::{self, Compression, ImageConfig, ImageSpec as TestImage, Layer, LayerBuilder};
use harness::regproxy::{Fault, RegProxy};
use harness::{Crustd, CrustdOptions, Registry};
use rand::RngCore;

use crate::cni::{chain_plugin, leases, netns_files, remove_pod, stop_pod};
use crate::{container_state, containers, create, ctr, pod_config, pods, pull, run_pod};

/// The CNI plugin, chained after bridge + host-local: on `VERB` of the pod the `arm` file names, it
/// SIGKILLs the crustd PID written there (once); otherwise it passes the previous result on.
const PLUGIN: &str = r#"#!/bin/sh
conf=$(cat)
arm="$(dirname "$0")/arm"
if [ -f "$arm" ]; then
    read pid target _ < "$arm"
    case "$CNI_COMMAND:$CNI_ARGS" in
    $target)
        mv "$arm" "$arm.fired"
        kill -9 "$pid"
        exit 1 ;;
    esac
fi
case "$CNI_COMMAND" in
ADD) printf '%s' "$conf" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
esac
"#;

/// The runtime wrapper (handler `killer`): a runtime call whose `<verb>:<arguments>` matches the
/// pattern in the `arm` file SIGKILLs the crustd PID written there first (once), then fails when the
/// file says `fail`, else goes on to runc (which then runs with crustd gone), 2 s later when it says
/// `late` (by when crustd is back).
const WRAPPER: &str = r#"#!/bin/sh
arm="$(dirname "$0")/arm"
verb=
for a in "$@"; do
    case "$a" in delete|run|create|start) [ -z "$verb" ] && verb=$a ;; esac
done
if [ -f "$arm" ]; then
    read pid target then < "$arm"
    case "$verb:$*" in
    $target)
        mv "$arm" "$arm.fired"
        kill -9 "$pid"
        [ "$then" = fail ] && exit 1
        [ "$then" = late ] && sleep 2 ;;
    esac
fi
exec /usr/sbin/runc "$@"
"#;

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Arms the plugin or wrapper in `bin` to kill `c` at a call matching `pattern` (a shell pattern, one
/// word), then to do `then` (the wrapper's `fail` or `late`, or nothing).
fn arm(bin: &Path, c: &Crustd, pattern: &str, then: &str) {
    assert!(!pattern.contains(char::is_whitespace), "{pattern:?}");
    let pid = c.pid().unwrap();
    std::fs::write(bin.join("arm"), format!("{pid} {pattern} {then}\n")).unwrap();
}

/// Waits until the armed part has fired and crustd is gone.
fn wait_killed(bin: &Path, c: &Crustd) {
    let pid = c.pid().unwrap();
    let dead = harness::wait_for(Duration::from_secs(30), || {
        (bin.join("arm.fired").exists() && crate::gone(pid)).then_some(())
    });
    assert!(
        dead.is_some(),
        "the armed part did not kill crustd (arm file still there: {})",
        bin.join("arm").exists()
    );
    std::fs::remove_file(bin.join("arm.fired")).unwrap();
}

/// The image store after a killed pull, once crustd is back: no image, blob or layer, no problem, and
/// nothing left of the download or the unpack.
fn assert_store_clean(c: &Crustd) {
    crate::registry::assert_store_clean(c, 0);
    let images = c.root.join("images");
    let ingest = entries(&images.join("ingest"));
    assert!(ingest.is_empty(), "ingest after the restart: {ingest:?}");
    let tmp: Vec<PathBuf> = unpacking(&images);
    assert!(tmp.is_empty(), "unpacks left: {tmp:?}");
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Layers being unpacked (`layers/.tmp-*`).
fn unpacking(images: &Path) -> Vec<PathBuf> {
    entries(&images.join("layers"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect()
}

async fn image_listed(c: &Crustd) -> usize {
    c.images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .len()
}

/// PullImage of `image` in a task of its own (so that crustd can be killed while it runs).
async fn spawn_pull(c: &Crustd, image: &str) -> tokio::task::JoinHandle<Result<String, tonic::Status>> {
    let mut images = c.images().await;
    let image = image.to_string();
    tokio::spawn(async move {
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
    })
}

/// Pushes `repo:1` with one layer holding `data`; returns the reference and the layer.
fn push(reg: &Registry, repo: &str, data: &[u8]) -> (String, Layer) {
    let tar = LayerBuilder::new().file("data", data, 0o644).build();
    let layer = Layer::new(&tar, Compression::Gzip, false);
    drop(tar);
    let spec = TestImage::new(vec![layer.clone()], ImageConfig::default());
    (images::push_image(reg, repo, "1", &spec).reference, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_pull() {
    let reg = Registry::start();
    let proxy = RegProxy::start(&reg);
    let mut c = Crustd::start(CrustdOptions::default()).await;
    scenario_async("restart-kill-during-pull", async {
        let mut data = vec![0u8; 8 << 20];
        rand::rng().fill_bytes(&mut data);
        let (reference, layer) = push(&reg, "crust-test/killed-pull", &data);
        drop(data);
        let image = reference.replacen(&reg.host(), &proxy.host(), 1);
        let blob = format!("/blobs/{}", layer.digest);
        proxy.fault(&blob, Fault::StallAfter(layer.blob.len() as u64 / 2), None);
        let pulling = spawn_pull(&c, &image).await;
        // The chosen point: the blob's download has stalled half-way, the layer (streamed from the
        // download) half unpacked in its temporary dir.
        let images = c.root.join("images");
        let stalled = harness::wait_for(Duration::from_secs(30), || {
            (!proxy.seen_for(&blob).is_empty()
                && unpacking(&images)
                    .iter()
                    .any(|d| std::fs::metadata(d.join("data")).is_ok_and(|m| m.len() > 0)))
            .then_some(())
        });
        assert!(stalled.is_some(), "the pull never reached the stalled blob");
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.kill9();
        let r = pulling.await.unwrap();
        assert!(r.is_err(), "the pull of a killed crustd answered {r:?}");
        proxy.lift();
        c.restart().await;
        assert_eq!(image_listed(&c).await, 0, "an image listed after a killed pull");
        assert_store_clean(&c);
        pull(&c, &image).await.expect("the same pull after the restart");
        assert_eq!(image_listed(&c).await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_unpack() {
    let reg = Registry::start();
    let mut c = Crustd::start(CrustdOptions::default()).await;
    scenario_async("restart-kill-during-unpack", async {
        // 200 MB of zeros: a blob of a few hundred KB whose unpack writes for a while.
        let (reference, layer) = push(&reg, "crust-test/killed-unpack", &vec![0u8; 200 << 20]);
        assert!(layer.blob.len() < 4 << 20, "blob of {} bytes", layer.blob.len());
        let pulling = spawn_pull(&c, &reference).await;
        // The chosen point: the layer's temporary dir holds part of the file.
        let images = c.root.join("images");
        let mid = harness::wait_for(Duration::from_secs(60), || {
            unpacking(&images)
                .iter()
                .any(|d| std::fs::metadata(d.join("data")).is_ok_and(|m| m.len() > 0))
                .then_some(())
        });
        assert!(mid.is_some(), "no unpack in progress seen");
        c.kill9();
        let r = pulling.await.unwrap();
        assert!(r.is_err(), "the pull of a killed crustd answered {r:?}");
        c.restart().await;
        assert_eq!(image_listed(&c).await, 0, "an image listed after a killed unpack");
        assert_store_clean(&c);
        pull(&c, &reference)
            .await
            .expect("the same pull after the restart");
        assert_eq!(image_listed(&c).await, 1);
        let r = c.check_store();
        assert_eq!(r["problems"], serde_json::json!([]), "{r}");
    })
    .await;
}

/// A crustd with the test network, the killing CNI plugin chained last and the `killer` runtime
/// handler; `bin` holds both scripts and the `arm` file.
async fn cni_env(bin: &Path) -> Crustd {
    executable(&bin.join("crust-killer"), PLUGIN);
    executable(&bin.join("runc-killer"), WRAPPER);
    let c = Crustd::start(CrustdOptions {
        cni: true,
        extra_toml: format!(
            "[cni]\nbin_dirs = [{:?}, \"/usr/lib/cni\", \"/opt/cni/bin\"]\n\n[runtime.handlers.killer]\npath = {:?}\n",
            bin.display().to_string(),
            bin.join("runc-killer").display().to_string()
        ),
        ..Default::default()
    })
    .await;
    chain_plugin(&c, "crust-killer");
    c
}

/// Nothing of any pod is left: none listed, no record, no state dir, no netns, no IP lease, no pod
/// cgroup under the test's cgroup parent in any hierarchy.
async fn assert_pods_gone(c: &Crustd) {
    let listed: Vec<String> = pods(c).await.into_iter().map(|p| p.id).collect();
    assert!(listed.is_empty(), "pods listed: {listed:?}");
    for d in [c.root.join("pods"), c.state.join("pods")] {
        assert!(
            entries(&d).is_empty(),
            "left in {}: {:?}",
            d.display(),
            entries(&d)
        );
    }
    assert!(netns_files(c).is_empty(), "netns left: {:?}", netns_files(c));
    assert!(leases(c).is_empty(), "IP leases left: {:?}", leases(c));
    let cgroups: Vec<PathBuf> = entries(Path::new("/sys/fs/cgroup"))
        .iter()
        .flat_map(|h| entries(&h.join(&c.cgroup_parent)))
        .filter(|p| p.is_dir())
        .collect();
    assert!(cgroups.is_empty(), "pod cgroups left: {cgroups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_create() {
    let bin = tempfile::tempdir().unwrap();
    let mut c = cni_env(bin.path()).await;
    scenario_async("restart-kill-during-create", async {
        let logs = tempfile::tempdir().unwrap();
        let pc = pod_config("killed-add", logs.path());
        arm(bin.path(), &c, "ADD:*K8S_POD_NAME=killed-add*", "");
        let r = run_pod(&c, &pc).await;
        assert!(r.is_err(), "RunPodSandbox of a killed crustd answered {r:?}");
        wait_killed(bin.path(), &c);
        // Killed half-way: the netns and the IP lease were made.
        assert_eq!((netns_files(&c).len(), leases(&c).len()), (1, 1));
        c.restart().await;
        // The half-made pod is rolled back at start-up: nothing of it is visible or left.
        assert_pods_gone(&c).await;
        let id = run_pod(&c, &pc)
            .await
            .expect("the same RunPodSandbox after the restart");
        assert_eq!(leases(&c).len(), 1);
        stop_pod(&c, &id).await.unwrap();
        remove_pod(&c, &id).await.unwrap();
        assert_pods_gone(&c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_teardown() {
    let bin = tempfile::tempdir().unwrap();
    let mut c = cni_env(bin.path()).await;
    scenario_async("restart-kill-during-teardown", async {
        let logs = tempfile::tempdir().unwrap();
        let id = run_pod(&c, &pod_config("killed-del", logs.path())).await.unwrap();
        arm(bin.path(), &c, "DEL:*K8S_POD_NAME=killed-del*", "");
        let r = stop_pod(&c, &id).await;
        assert!(r.is_err(), "StopPodSandbox of a killed crustd answered {r:?}");
        wait_killed(bin.path(), &c);
        // Killed before the network was torn down (the killing plugin runs first on DEL).
        assert_eq!((netns_files(&c).len(), leases(&c).len()), (1, 1));
        c.restart().await;
        stop_pod(&c, &id).await.expect("StopPodSandbox after the restart");
        remove_pod(&c, &id)
            .await
            .expect("RemovePodSandbox after the restart");
        assert_pods_gone(&c).await;
    })
    .await;
}

/// Nothing of any container is left: none listed, no record, no state or writable-layer dir, no runc
/// state; and no mount of container `id`.
async fn assert_containers_gone(c: &Crustd, id: &str) {
    let listed: Vec<String> = containers(c).await.into_iter().map(|c| c.id).collect();
    assert!(listed.is_empty(), "containers listed: {listed:?}");
    for d in [
        c.root.join("containers"),
        c.state.join("containers"),
        c.state.join("runtime/killer"),
    ] {
        assert!(
            entries(&d).is_empty(),
            "left in {}: {:?}",
            d.display(),
            entries(&d)
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(id)).collect();
    assert!(left.is_empty(), "mounts of the container left: {left:?}");
}

/// Pulls busybox and runs pod `name` (logs under `logs`) with the `killer` runtime handler: the image, the pod's config,
/// the pod.
async fn killer_pod(
    c: &Crustd,
    reg: &Registry,
    name: &str,
    logs: &Path,
) -> (String, PodSandboxConfig, String) {
    let tar = LayerBuilder::new().busybox_base().build();
    let spec = TestImage::new(
        vec![Layer::new(&tar, Compression::Gzip, false)],
        ImageConfig::default(),
    );
    let image = images::push_image(reg, &format!("crust-test/{name}"), "1", &spec).reference;
    pull(c, &image).await.unwrap();
    let pc = pod_config(name, logs);
    let pod = c
        .runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: "killer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    (image, pc, pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_remove() {
    let reg = Registry::start();
    let bin = tempfile::tempdir().unwrap();
    let mut c = cni_env(bin.path()).await;
    scenario_async("restart-kill-during-remove", async {
        let logs = tempfile::tempdir().unwrap();
        let (image, pc, pod) = killer_pod(&c, &reg, "killed-rm", logs.path()).await;
        // Running: RemoveContainer kills it, then asks the runtime to delete it.
        let id = create(&c, &pod, &pc, ctr("victim", &image, &["sleep", "3600"]))
            .await
            .unwrap();
        crate::start(&c, &id).await.unwrap();
        arm(bin.path(), &c, &format!("delete:*{id}"), "fail");
        let r = crate::remove(&c, &id).await;
        assert!(r.is_err(), "RemoveContainer of a killed crustd answered {r:?}");
        wait_killed(bin.path(), &c);
        let runc_state = c.state.join("runtime/killer").join(&id);
        assert!(
            runc_state.exists(),
            "killed before the runtime's delete, yet its state is gone"
        );
        c.restart().await;
        crate::remove(&c, &id)
            .await
            .expect("RemoveContainer after the restart");
        crate::remove(&c, &id)
            .await
            .expect("RemoveContainer again (idempotent)");
        assert_containers_gone(&c, &id).await;
        stop_pod(&c, &pod).await.unwrap();
        remove_pod(&c, &pod).await.unwrap();
        assert_pods_gone(&c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_start() {
    killed_during_start_then("restart-kill-during-start", "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_failed_start() {
    killed_during_start_then("restart-kill-during-failed-start", "fail").await;
}

/// StartContainer killed as the runtime is asked to run the container; the runtime then goes on
/// (`then` = `late`: the container starts after crustd is back, which must notice) or fails (`fail`).
/// After the restart the container shows what happened (RUNNING, or not running), it is stopped and
/// removed leaving nothing, and the same container is created and started again.
async fn killed_during_start_then(name: &str, then: &str) {
    let reg = Registry::start();
    let bin = tempfile::tempdir().unwrap();
    let mut c = cni_env(bin.path()).await;
    scenario_async(name, async {
        let logs = tempfile::tempdir().unwrap();
        let (image, pc, pod) = killer_pod(&c, &reg, "killed-start", logs.path()).await;
        let config = ctr("started", &image, &["sleep", "3600"]);
        let id = create(&c, &pod, &pc, config.clone()).await.unwrap();
        arm(bin.path(), &c, &format!("run:*{id}*"), then);
        let r = crate::start(&c, &id).await;
        assert!(r.is_err(), "StartContainer of a killed crustd answered {r:?}");
        wait_killed(bin.path(), &c);
        c.restart().await;
        if then == "late" {
            let mut state = ContainerState::ContainerUnknown;
            for _ in 0..300 {
                state = container_state(&c, &id).await.0;
                if state == ContainerState::ContainerRunning {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(
                state,
                ContainerState::ContainerRunning,
                "a container the runtime ran after crustd's restart, 30 s on"
            );
        } else {
            let (state, _) = container_state(&c, &id).await;
            assert_ne!(
                state,
                ContainerState::ContainerRunning,
                "a container whose runtime failed to run it"
            );
            let ps = std::process::Command::new("/usr/sbin/runc")
                .arg("--root")
                .arg(c.state.join("runtime/killer"))
                .args(["list", "-q"])
                .output()
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&ps.stdout).contains(&id),
                "runc still knows the container whose run failed"
            );
        }
        c.runtime()
            .await
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .expect("StopContainer after the restart");
        crate::remove(&c, &id)
            .await
            .expect("RemoveContainer after the restart");
        assert_containers_gone(&c, &id).await;
        // The same container again.
        let again = create(&c, &pod, &pc, config)
            .await
            .expect("the same CreateContainer");
        crate::start(&c, &again).await.expect("the same StartContainer");
        crate::remove(&c, &again).await.unwrap();
        stop_pod(&c, &pod).await.unwrap();
        remove_pod(&c, &pod).await.unwrap();
        assert_pods_gone(&c).await;
    })
    .await;
}

/// StopPodSandbox of a pod with a running container, killed as the runtime deletes the stopped
/// container: StopPodSandbox and RemovePodSandbox after the restart leave nothing of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_pod_stop() {
    let reg = Registry::start();
    let bin = tempfile::tempdir().unwrap();
    let mut c = cni_env(bin.path()).await;
    scenario_async("restart-kill-during-pod-stop", async {
        let logs = tempfile::tempdir().unwrap();
        let (image, pc, pod) = killer_pod(&c, &reg, "killed-stop", logs.path()).await;
        let id = create(&c, &pod, &pc, ctr("inside", &image, &["sleep", "3600"]))
            .await
            .unwrap();
        crate::start(&c, &id).await.unwrap();
        arm(bin.path(), &c, &format!("delete:*{id}"), "fail");
        let r = stop_pod(&c, &pod).await;
        assert!(r.is_err(), "StopPodSandbox of a killed crustd answered {r:?}");
        wait_killed(bin.path(), &c);
        c.restart().await;
        stop_pod(&c, &pod)
            .await
            .expect("StopPodSandbox after the restart");
        remove_pod(&c, &pod)
            .await
            .expect("RemovePodSandbox after the restart");
        assert_containers_gone(&c, &id).await;
        assert_pods_gone(&c).await;
    })
    .await;
}
