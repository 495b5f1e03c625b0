//! Full filesystems: crustd's root (image store, records, writable layers), its state dir and a pod's log
//! directory, each in turn a small tmpfs of its own that the test fills with a ballast file. Every
//! request that needs the full filesystem answers `RESOURCE_EXHAUSTED` naming its mount, leaves nothing
//! half-written (no partial blob, layer, record or rootfs: `crustctl check` clean), and succeeds once the
//! ballast is gone, without a restart. A container whose log filesystem is full keeps running: its lines
//! are dropped and counted, and logging resumes when space returns.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cri_api::v1::*;

use crate::{container_state, containers, create, ctr, pod_config, pods, pull, remove, run_pod, start};
use harness::fault::scenario_async;
use harness::images::{self, Compression, ImageConfig, Layer, LayerBuilder};
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::Code;

/// A tmpfs of `size` bytes mounted on a temporary directory; unmounted (lazily) and removed on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(size: u64) -> SmallFs {
        let dir = tempfile::Builder::new().prefix("crust-full-").tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "crust-full",
            ])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", dir.path().display());
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ballast(&self) -> PathBuf {
        self.path().join("ballast")
    }

    fn available(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.path()).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the filesystem until `left` bytes stay free (0: full).
    fn fill_leaving(&self, left: u64) {
        self.free();
        let f = std::fs::File::create(self.ballast()).unwrap();
        let want = self.available().saturating_sub(left);
        if want > 0 {
            nix::fcntl::fallocate(f.as_fd(), nix::fcntl::FallocateFlags::empty(), 0, want as i64).unwrap();
        }
        if left == 0 {
            // What fallocate's page rounding left: take it with writes until ENOSPC.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(self.ballast())
                .unwrap();
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.ballast());
    }

    /// Every file below `sub`, relative, for "nothing half-written stays".
    fn files_under(&self, sub: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.path().join(sub), Path::new(""), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), &r, out);
        }
        out.push(r.display().to_string());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The registry, its images, and a crustd whose `key` (`root` or `state`) is on `fs` (declared before
/// the crustd, so dropped after it).
struct Env {
    c: Crustd,
    imgs: TestImages,
    reg: Registry,
}

async fn env_on(fs: &SmallFs, key: &str) -> Env {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let dir = fs.path().join(key);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml: format!("{key} = {:?}\n", dir.display().to_string()),
        ..Default::default()
    })
    .await;
    // The harness sweeps (and removes) what crustd leaves under its root and state: point it here.
    if key == "root" {
        c.root = dir;
    } else {
        c.state = dir;
    }
    Env { c, imgs, reg }
}

/// `crustctl check` on `c`'s store: its output, and whether it found the store clean.
fn check(c: &Crustd) -> (bool, String) {
    let out = Command::new(harness::binary("crustctl"))
        .arg("--config")
        .arg(&c.config)
        .arg("check")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_check_clean(c: &Crustd) {
    let (ok, out) = check(c);
    assert!(ok, "crustctl check after the fault: {out}");
}

/// The refusal of a full filesystem: `RESOURCE_EXHAUSTED`, naming the mount.
fn assert_full(r: Result<impl std::fmt::Debug, tonic::Status>, fs: &SmallFs, what: &str) {
    match r {
        Ok(v) => panic!("{what} succeeded on a full filesystem: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), Code::ResourceExhausted, "{what}: {s:?}");
            let mount = fs.path().display().to_string();
            assert!(
                s.message().contains(&format!("mounted at {mount} is full")),
                "{what}: the message must name the full mount {mount}: {}",
                s.message()
            );
        }
    }
}

/// Files in crustd's netns dir (pinned network namespaces) under its state.
fn netns_files(c: &Crustd) -> Vec<String> {
    let mut out = Vec::new();
    walk(&c.state.join("netns"), Path::new(""), &mut out);
    out
}

#[tokio::test]
async fn root_full() {
    let fs = SmallFs::new(64 << 20);
    let e = env_on(&fs, "root").await;
    let c = &e.c;
    let busybox = e.imgs.busybox.reference.clone();

    scenario_async("disk-root-pull", async {
        fs.fill_leaving(0);
        assert_full(pull(c, &busybox).await, &fs, "PullImage with root full");
        let leftovers: Vec<String> = fs
            .files_under("root/images")
            .into_iter()
            .filter(|f| f.starts_with("blobs/sha256/") || f.starts_with("layers/") || f.contains("ingest/"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "half-written store entries after a failed pull: {leftovers:?}"
        );
        assert_check_clean(c);
        fs.free();
        pull(c, &busybox).await.expect("the same pull once space is back");
    })
    .await;

    scenario_async("disk-root-unpack", async {
        // An image whose blob fits but whose layer does not: 16 MiB of zeros, a few KiB compressed.
        let big = LayerBuilder::new()
            .busybox_base()
            .file("zeros", &vec![0u8; 16 << 20], 0o644)
            .build();
        let spec = images::ImageSpec::new(
            vec![Layer::new(&big, Compression::Gzip, false)],
            ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
        );
        let zeros = images::push_image(&e.reg, "faults/zeros", "1", &spec);
        fs.fill_leaving(4 << 20);
        assert_full(
            pull(c, &zeros.reference).await,
            &fs,
            "PullImage whose layer does not fit",
        );
        assert_check_clean(c);
        let layers_before = fs.files_under("root/images/layers").len();
        fs.free();
        pull(c, &zeros.reference)
            .await
            .expect("the layer unpacks once space is back");
        assert!(fs.files_under("root/images/layers").len() > layers_before);
    })
    .await;

    let log_dir = tempfile::tempdir().unwrap();
    let pc = pod_config("full-root", log_dir.path());
    let pod = scenario_async("disk-root-run-pod", async {
        fs.fill_leaving(0);
        assert_full(run_pod(c, &pc).await, &fs, "RunPodSandbox with root full");
        assert!(pods(c).await.is_empty(), "a refused pod is listed");
        assert!(
            netns_files(c).is_empty(),
            "a refused pod left its netns: {:?}",
            netns_files(c)
        );
        fs.free();
        run_pod(c, &pc).await.expect("RunPodSandbox once space is back")
    })
    .await;

    let id = scenario_async("disk-root-create-container", async {
        let cfg = ctr("sleeper", &busybox, &["sleep", "3600"]);
        fs.fill_leaving(0);
        assert_full(
            create(c, &pod, &pc, cfg.clone()).await,
            &fs,
            "CreateContainer with root full",
        );
        assert!(containers(c).await.is_empty(), "a refused container is listed");
        let left = fs.files_under("root/containers");
        assert!(left.is_empty(), "a refused container left {left:?}");
        fs.free();
        create(c, &pod, &pc, cfg)
            .await
            .expect("CreateContainer once space is back")
    })
    .await;

    scenario_async("disk-root-record-update", async {
        fs.fill_leaving(0);
        assert_full(
            start(c, &id).await,
            &fs,
            "StartContainer (a record update) with root full",
        );
        // As in containerd: a start that cannot be recorded is undone, and the container shown as
        // having failed to start, with nothing left running; kubelet makes a new one.
        let (state, info) = container_state(c, &id).await;
        assert_eq!(
            state,
            ContainerState::ContainerExited,
            "a start that could not be recorded"
        );
        let pid = info["pid"].as_u64().unwrap_or(0);
        assert!(
            pid == 0 || !Path::new(&format!("/proc/{pid}")).exists(),
            "the container of an undone start still runs (pid {pid})"
        );
        fs.free();
        remove(c, &id).await.expect("RemoveContainer of the failed start");
        let id = create(c, &pod, &pc, ctr("sleeper", &busybox, &["sleep", "3600"]))
            .await
            .expect("CreateContainer once space is back");
        start(c, &id).await.expect("StartContainer once space is back");
        let (state, _) = container_state(c, &id).await;
        assert_eq!(state, ContainerState::ContainerRunning);
        assert_check_clean(c);
    })
    .await;
    drop(e);
}

#[tokio::test]
async fn state_full() {
    let fs = SmallFs::new(16 << 20);
    let e = env_on(&fs, "state").await;
    let c = &e.c;
    let busybox = e.imgs.busybox.reference.clone();
    pull(c, &busybox).await.unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let pc = pod_config("full-state", log_dir.path());

    let pod = scenario_async("disk-state-run-pod", async {
        fs.fill_leaving(0);
        assert_full(run_pod(c, &pc).await, &fs, "RunPodSandbox with state full");
        assert!(pods(c).await.is_empty(), "a refused pod is listed");
        fs.free();
        run_pod(c, &pc).await.expect("RunPodSandbox once space is back")
    })
    .await;

    scenario_async("disk-state-create-container", async {
        let cfg = ctr("sleeper", &busybox, &["sleep", "3600"]);
        fs.fill_leaving(0);
        assert_full(
            create(c, &pod, &pc, cfg.clone()).await,
            &fs,
            "CreateContainer with state full",
        );
        assert!(containers(c).await.is_empty(), "a refused container is listed");
        fs.free();
        let id = create(c, &pod, &pc, cfg)
            .await
            .expect("CreateContainer once space is back");
        start(c, &id).await.unwrap();
        assert_check_clean(c);
    })
    .await;
    drop(e);
}

#[tokio::test]
async fn log_full() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    pull(&c, &imgs.busybox.reference).await.unwrap();
    let fs = SmallFs::new(1 << 20);
    scenario_async("disk-log-full", async {
        let pc = pod_config("full-log", fs.path());
        let pod = run_pod(&c, &pc).await.unwrap();
        // A numbered line every 10 ms.
        let cfg = ctr(
            "talker",
            &imgs.busybox.reference,
            &["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; usleep 10000; done"],
        );
        let id = create(&c, &pod, &pc, cfg).await.unwrap();
        start(&c, &id).await.unwrap();
        let log = fs.path().join("talker.log");
        let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        harness::wait_for(Duration::from_secs(10), || (size() > 0).then_some(())).expect("the container logs");

        fs.fill_leaving(0);
        // The log's last page may still take a few lines; then they are dropped, and counted.
        let dropped = || async { container_state(&c, &id).await.1["logLinesDropped"].as_u64().unwrap_or(0) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while dropped().await == 0 {
            assert!(std::time::Instant::now() < deadline, "no log line was counted as dropped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (size_full, dropped_then) = (size(), dropped().await);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (state, info) = container_state(&c, &id).await;
        let dropped_now = info["logLinesDropped"].as_u64().unwrap_or(0);
        let pid = info["pid"].as_u64().unwrap_or(0);
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let proc_state = st.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("?").to_string();
        assert!(
            state == ContainerState::ContainerRunning
                && dropped_now > dropped_then
                && size() == size_full
                && proc_state != "D",
            "with the log's filesystem full the container must keep running unblocked and its lines be counted \
             as dropped: state {state:?}, process state {proc_state}, dropped {dropped_then} then {dropped_now}, \
             log grew {} bytes",
            size() - size_full
        );
        fs.free();
        let resumed = harness::wait_for(Duration::from_secs(10), || (size() > size_full).then_some(()));
        assert!(resumed.is_some(), "logging did not resume once space was back");
        // Every line in the log is whole: the drops cut nothing in half.
        let text = std::fs::read_to_string(&log).unwrap();
        for l in text.lines() {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                parts.len() == 4 && parts[1] == "stdout" && parts[2] == "F" && parts[3].starts_with("line "),
                "a broken log line after the filesystem filled: {l:?}"
            );
        }
    })
    .await;
    drop(c);
    drop(fs);
}
