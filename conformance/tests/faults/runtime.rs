//! Fault scenarios: runtime (see main.rs). The runtime handler `fault` is runc behind a wrapper script
//! that hangs (starts a child and waits for it) or fails (exits 1 with a message) on the verb written
//! to its mode file; the monitor binary is wrapped the same way for the pause, which crust starts
//! without the runtime. crustd runs with `runtime.operation_timeout_seconds = BOUND_SECS`: every
//! runtime call, and a monitor's start of a container or a pause, is bounded by it, and past it the
//! call's whole process group is killed and the request fails with DEADLINE_EXCEEDED naming the call.
//!
//! What each CRI verb asks of the runtime, and so what a fault on it reaches:
//! - CreateContainer: nothing (the bundle only): the container comes up with one `runc run --detach`
//!   at StartContainer, so a runtime whose `create` hangs or fails changes nothing;
//! - StartContainer: `run`, through the monitor;
//! - StopContainer: no `kill` (signals go to the container's init through a pidfd, see
//!   `monitor::signal_container`), then `delete` once the container has exited;
//! - RemoveContainer: `delete --force`;
//! - ExecSync: `exec`, bounded until the process runs (the command itself by the request's timeout);
//! - Exec over the streaming server (SPDY, WebSocket): the same `exec` bound, and a client that goes away
//!   while the runtime hangs ends it at once (runtime_exec.rs);
//! - UpdateContainerResources: `update`;
//! - RunPodSandbox: no runtime call (the monitor launches the pause itself): the fault is a monitor that
//!   hangs or fails when asked to launch a pause.
//!
//! Each scenario checks: the RPC's code and a message naming the verb; for a hang, that other pods
//! are created, started, listed and asked for status while the runtime hangs, and that the hung
//! process and its child are killed; that the container ends in a state kubelet can act on and is
//! removed; and that no process, monitor, mount, cgroup, runtime state or record is left. The
//! scenarios of exec are in runtime_exec.rs, those of kill, delete, update and the pause in
//! runtime_verbs.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use harness::fault::scenario_async;
use harness::{Crustd, CrustdOptions, Registry};
use tokio::task::JoinHandle;

#[path = "runtime_exec.rs"]
mod exec;
#[path = "runtime_verbs.rs"]
mod verbs;

/// `runtime.operation_timeout_seconds` in these scenarios: the bound every hung call must answer
/// within (crustd's default is 60 s, below kubelet's 2-minute runtime request timeout).
const BOUND_SECS: u64 = 6;

/// The runc wrapper: the verb is the first argument that is not a global option (`--root R`,
/// `--systemd-cgroup`, ...); the mode file says `hang VERB` or `fail VERB`.
const RUNC_WRAPPER: &str = r#"#!/bin/sh
verb=
skip=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    --root|--log|--log-format|--criu) skip=1 ;;
    -*) ;;
    *) verb=$a; break ;;
  esac
done
case "$(cat @DIR@/mode 2>/dev/null)" in
  "hang $verb")
    sleep 3607 &
    echo "$$ $!" >> @DIR@/hang.pids
    wait ;;
  "fail $verb")
    echo "injected failure of runc $verb" >&2
    exit 1 ;;
esac
exec /usr/sbin/runc "$@"
"#;

/// The monitor wrapper: with mode `hang pause` the first pause launch after it was set hangs (later
/// ones, other pods', go through); with `fail pause` every pause launch fails without a report; with
/// `hang monitor` the first launch of a monitor for a container hangs (before any monitor runs).
const MONITOR_WRAPPER: &str = r#"#!/bin/sh
case " $* " in
  *" --pause "*) what=pause ;;
  *) what=monitor ;;
esac
case "$(cat @DIR@/mode 2>/dev/null)" in
  "hang $what")
    if mkdir @DIR@/hung-once 2>/dev/null; then
      sleep 3607 &
      echo "$$ $!" >> @DIR@/hang.pids
      wait
    fi ;;
  "fail pause")
    if [ $what = pause ]; then
      echo "injected failure of the monitor" >&2
      exit 1
    fi ;;
esac
exec @MONITOR@ "$@"
"#;

/// A crustd with the `fault` handler and the wrapped monitor, and busybox pulled.
struct Env {
    // Dropped in this order: crustd before the registry and the wrappers' dir.
    c: Crustd,
    work: tempfile::TempDir,
    _reg: Registry,
    image: String,
}

impl Env {
    async fn new() -> Env {
        let reg = Registry::start();
        let imgs = harness::images::push_standard(&reg);
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().display().to_string();
        let runc = work.path().join("fault-runc");
        let monitor = work.path().join("fault-monitor");
        executable(&runc, &RUNC_WRAPPER.replace("@DIR@", &dir));
        executable(
            &monitor,
            &MONITOR_WRAPPER.replace("@DIR@", &dir).replace(
                "@MONITOR@",
                &harness::bin_dir().join("crust-monitor").display().to_string(),
            ),
        );
        let c = Crustd::start(CrustdOptions {
            registry: Some(&reg),
            cni: true,
            extra_toml: format!(
                // No standby monitor: the wrapper decides what to inject from the arguments it is
                // started with, which a standby gets only later, on its stdin.
                "[runtime]\noperation_timeout_seconds = {BOUND_SECS}\nmonitor_path = {monitor:?}\n\
                 monitor_standby = false\n\n[runtime.handlers.fault]\npath = {runc:?}\n"
            ),
            ..Default::default()
        })
        .await;
        let image = imgs.busybox.reference.clone();
        crate::pull(&c, &image).await.unwrap();
        Env {
            c,
            work,
            _reg: reg,
            image,
        }
    }

    /// Arms the wrappers: `hang VERB`, `fail VERB` (`pause` for the monitor's pause launch).
    fn set(&self, mode: &str) {
        let _ = std::fs::remove_file(self.work.path().join("hang.pids"));
        let _ = std::fs::remove_dir(self.work.path().join("hung-once"));
        std::fs::write(self.work.path().join("mode"), mode).unwrap();
    }

    /// Disarms them: the runtime works again.
    fn clear(&self) {
        let _ = std::fs::remove_file(self.work.path().join("mode"));
    }

    /// The hung wrappers' and their children's pids so far.
    fn hung_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.work.path().join("hang.pids"))
            .unwrap_or_default()
            .split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Waits until a wrapper hangs (`n` hangs so far).
    async fn wait_hung(&self, n: usize, what: &str) {
        let hung = poll(30, || (self.hung_pids().len() >= 2 * n).then_some(())).await;
        assert!(hung.is_some(), "the wrapper never hung on {what}");
    }

    /// Asserts that every hung wrapper and its child are gone (within 10 s of the call's answer).
    async fn assert_hung_gone(&self, what: &str) {
        let pids = self.hung_pids();
        assert!(!pids.is_empty(), "the wrapper did not hang on {what}");
        let gone = poll(10, || pids.iter().all(|&p| crate::gone(p)).then_some(())).await;
        assert!(
            gone.is_some(),
            "the hung runtime (wrapper, child) {pids:?} still runs after {what} answered"
        );
    }

    /// Runs pod `name` with runtime handler `handler`.
    async fn pod(&self, name: &str, handler: &str) -> (String, PodSandboxConfig) {
        let pc = crate::pod_config(name, &self.c.dir.path().join("logs").join(name));
        let id = self
            .c
            .runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        (id, pc)
    }

    /// A pod of the `fault` handler and a `sleep 1000` container created in it (not started).
    async fn pod_and_container(&self, name: &str) -> (String, PodSandboxConfig, String) {
        let (pod, pc) = self.pod(name, "fault").await;
        let id = crate::create(
            &self.c,
            &pod,
            &pc,
            crate::ctr("c", &self.image, &["sleep", "1000"]),
        )
        .await
        .unwrap();
        (pod, pc, id)
    }

    /// While `hung` (a call stuck in the runtime) is pending: another pod of the default handler is
    /// run, a container created and started in it, pods and containers listed and their status read
    /// (the stuck container's too, when given); then `hung` must still be pending (else the others
    /// waited for it, or took longer than the bound), and the other pod is removed.
    async fn others_proceed<T>(&self, hung: &JoinHandle<T>, stuck: Option<&str>) {
        let name = format!("other-{}", rand_suffix());
        let (pod, pc) = self.pod(&name, "").await;
        let id = crate::create(
            &self.c,
            &pod,
            &pc,
            crate::ctr("o", &self.image, &["sleep", "1000"]),
        )
        .await
        .unwrap();
        crate::start(&self.c, &id).await.unwrap();
        let mut rt = self.c.runtime().await;
        let listed = crate::pods(&self.c).await;
        assert!(listed.iter().any(|p| p.id == pod), "the other pod is not listed");
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap();
        let (st, _) = crate::container_state(&self.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning, "the other container");
        crate::containers(&self.c).await;
        if let Some(stuck) = stuck {
            crate::container_state(&self.c, stuck).await;
        }
        assert!(
            !hung.is_finished(),
            "the hung call answered before the other pod's calls were done: they waited for it, or \
             took longer than the {BOUND_SECS} s bound"
        );
        rt.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        crate::remove(&self.c, &id).await.unwrap();
        self.remove_pod(&pod).await;
    }

    async fn remove_pod(&self, pod: &str) {
        let mut rt = self.c.runtime().await;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap();
    }

    /// Stops (SIGKILL) and removes container `id`, then its pod, and checks that nothing of either is
    /// left.
    async fn remove_all(&self, pod: &str, id: &str) {
        let mut rt = self.c.runtime().await;
        rt.stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout: 0,
        })
        .await
        .unwrap();
        crate::remove(&self.c, id).await.unwrap();
        self.remove_pod(pod).await;
        self.assert_nothing_left(&[pod, id]).await;
    }

    /// Nothing of `ids` (pods, containers) is left: not listed, no process naming them (a monitor, a
    /// runtime), no mount, no cgroup, no state dir or record, nothing in the `fault` runtime's root, and
    /// `crustctl check` finds the store clean.
    async fn assert_nothing_left(&self, ids: &[&str]) {
        let c = &self.c;
        let pods: Vec<String> = crate::pods(c).await.into_iter().map(|p| p.id).collect();
        let ctrs: Vec<String> = crate::containers(c).await.into_iter().map(|c| c.id).collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for id in ids {
            assert!(
                !pods.contains(&id.to_string()) && !ctrs.contains(&id.to_string()),
                "{id} is still listed"
            );
            let procs = processes_naming(id);
            assert!(procs.is_empty(), "processes naming {id} left: {procs:?}");
            let left: Vec<&str> = mounts.lines().filter(|l| l.contains(id)).collect();
            assert!(left.is_empty(), "mounts of {id} left: {left:?}");
            assert!(
                !harness::crustd::cgroup_exists(&c.pod_cgroup(id)),
                "cgroup {} left",
                c.pod_cgroup(id)
            );
            for d in [
                c.state.join("containers").join(id),
                c.state.join("pods").join(id),
                c.root.join("containers").join(id),
                c.root.join("pods").join(id),
            ] {
                assert!(!d.exists(), "{} left", d.display());
            }
        }
        let rt_root = entries(&c.state.join("runtime").join("fault"));
        assert!(
            rt_root.is_empty(),
            "left in the fault runtime's root: {rt_root:?}"
        );
        let report = c.check_store();
        assert!(
            report["problems"].as_array().is_none_or(|p| p.is_empty()),
            "crustctl check: {report}"
        );
    }
}

/// Polls `f` every 50 ms for up to `secs` seconds.
async fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Live processes whose command line mentions `id`.
fn processes_naming(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(id)
            && !crate::gone(pid)
        {
            out.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    out
}

/// `r` failed with `code` and a message holding every one of `words`.
fn assert_error<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: tonic::Code, words: &[&str]) {
    let e = match r {
        Ok(v) => panic!("succeeded ({v:?}); expected {code:?} naming {words:?}"),
        Err(e) => e,
    };
    assert_eq!(e.code(), code, "{e:?}");
    for w in words {
        assert!(e.message().contains(w), "the message does not name {w:?}: {e:?}");
    }
}

/// The answer of a hung call, which must come (well) within ten times the bound: a call still
/// pending then fails the scenario instead of holding the suite up.
async fn answer<T>(call: JoinHandle<T>) -> T {
    bounded(call).await.unwrap()
}

/// `f`'s output, which must come within ten times the bound (see [`answer`]).
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10 * BOUND_SECS), f).await {
        Ok(r) => r,
        Err(_) => panic!(
            "the hung call did not answer within {} s (the bound is {BOUND_SECS} s)",
            10 * BOUND_SECS
        ),
    }
}

/// A call whose client's deadline (shorter than the bound) passed while the runtime hung.
fn assert_abandoned<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let err = r.expect_err("the call succeeded despite the hang");
    assert!(
        matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "a call abandoned by its client: {err:?}"
    );
}

/// The bound's mention in a DEADLINE_EXCEEDED message.
const BOUND_KEY: &str = "runtime.operation_timeout_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create() {
    let e = Env::new().await;
    for (name, mode) in [
        ("runtime-hang-create", "hang create"),
        ("runtime-fail-create", "fail create"),
    ] {
        scenario_async(name, async {
            e.set(mode);
            let (pod, _pc, id) = e.pod_and_container(name).await;
            crate::start(&e.c, &id).await.unwrap();
            let (st, _) = crate::container_state(&e.c, &id).await;
            assert_eq!(st, ContainerState::ContainerRunning);
            assert!(
                e.hung_pids().is_empty(),
                "CreateContainer or StartContainer called `runtime create`"
            );
            e.remove_all(&pod, &id).await;
            e.clear();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start() {
    let e = Env::new().await;
    scenario_async("runtime-hang-start", async {
        e.set("hang run");
        let (pod, _pc, id) = e.pod_and_container("hang-start").await;
        let mut rt = e.c.runtime().await;
        let cid = id.clone();
        let call = tokio::spawn(async move {
            rt.start_container(StartContainerRequest { container_id: cid })
                .await
        });
        e.wait_hung(1, "run").await;
        e.others_proceed(&call, Some(&id)).await;
        assert_error(
            answer(call).await,
            tonic::Code::DeadlineExceeded,
            &["runtime run", BOUND_KEY],
        );
        e.assert_hung_gone("StartContainer").await;
        // kubelet sees a container that failed to start, which it removes and creates again.
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerExited);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
    // kubelet's own deadline passes first: the abandoned start is cleaned up all the same; also with
    // a wrapper around the monitor that hangs before any monitor runs, when the start's clean-up finds
    // nothing in the container's state dir (the wrapper must go all the same).
    for (name, mode) in [
        ("runtime-hang-start-abandoned", "hang run"),
        ("runtime-hang-monitor-start-abandoned", "hang monitor"),
    ] {
        scenario_async(name, async {
            e.set(mode);
            let (pod, _pc, id) = e.pod_and_container(name).await;
            let mut req = tonic::Request::new(StartContainerRequest {
                container_id: id.clone(),
            });
            req.set_timeout(Duration::from_secs(2));
            assert_abandoned(e.c.runtime().await.start_container(req).await);
            e.assert_hung_gone("the abandoned StartContainer").await;
            e.clear();
            e.remove_all(&pod, &id).await;
        })
        .await;
    }
    scenario_async("runtime-fail-start", async {
        e.set("fail run");
        let (pod, _pc, id) = e.pod_and_container("fail-start").await;
        assert_error(
            crate::start(&e.c, &id).await,
            tonic::Code::Internal,
            &["runtime run", "injected failure of runc run"],
        );
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerExited);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
}
