//! Containers end to end: real crustd, runc, crust-monitor, images pulled from the harness registry.
//! Logs, exit codes and reasons (OOM included), stop signals, ExecSync, users and groups, read-only
//! rootfs and mounts, masked paths, env, and containers outliving a killed crustd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::Code;

struct Env {
    c: Crustd,
    imgs: TestImages,
    // Dropped last: crustd's clean-up does not need it, but the pulls did.
    _reg: Registry,
}

async fn env() -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    for r in [&imgs.busybox.reference, &imgs.configured.reference] {
        c.images()
            .await
            .pull_image(PullImageRequest {
                image: Some(cri_api::v1::ImageSpec {
                    image: r.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    Env { c, imgs, _reg: reg }
}

fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
    log_dir: PathBuf,
}

async fn pod(e: &Env, name: &str) -> Pod {
    let log_dir = e.c.dir.path().join("logs").join(name);
    let config = pod_config(name, &log_dir);
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
    Pod { id, config, log_dir }
}

fn ctr(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri_api::v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("name".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

fn sc(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

async fn create(e: &Env, p: &Pod, config: ContainerConfig) -> Result<String, tonic::Status> {
    e.c.runtime()
        .await
        .create_container(CreateContainerRequest {
            pod_sandbox_id: p.id.clone(),
            config: Some(config),
            sandbox_config: Some(p.config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn start(e: &Env, id: &str) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

async fn run(e: &Env, p: &Pod, config: ContainerConfig) -> String {
    let id = create(e, p, config).await.unwrap();
    start(e, &id).await.unwrap();
    id
}

async fn status(e: &Env, id: &str) -> ContainerStatus {
    e.c.runtime()
        .await
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

async fn stop(e: &Env, id: &str, timeout: i64) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .map(drop)
}

async fn remove(e: &Env, id: &str) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

async fn exec(e: &Env, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse, tonic::Status> {
    e.c.runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// Waits (up to 60 s) for the container to exit; returns its status.
async fn wait_exited(e: &Env, id: &str) -> ContainerStatus {
    for _ in 0..1200 {
        let s = status(e, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "container {id} did not exit: {:?}\n{}",
        status(e, id).await,
        e.c.log()
    );
}

/// The log file's lines as (stream, tag, text).
fn log_lines(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let _ts = it.next().unwrap();
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The full stdout text of a log (P pieces joined, F ends a line).
fn stdout_text(path: &str) -> String {
    let mut s = String::new();
    for (stream, tag, text) in log_lines(path) {
        if stream == "stdout" {
            s.push_str(&text);
            if tag == "F" {
                s.push('\n');
            }
        }
    }
    s
}

async fn wait_for_log(path: &str, needle: &str) {
    for _ in 0..600 {
        if stdout_text(path).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{needle:?} never appeared in {path}: {:?}",
        std::fs::read_to_string(path)
    );
}

#[tokio::test]
async fn log_file_is_in_cri_format_with_partial_lines() {
    let e = env().await;
    let p = pod(&e, "logs").await;
    let id = run(
        &e,
        &p,
        ctr(
            "logger",
            &e.imgs.busybox.reference,
            &[
                "sh",
                "-c",
                "echo hello; echo oops >&2; head -c 50000 /dev/zero | tr '\\0' a; echo",
            ],
        ),
    )
    .await;
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"), "{st:?}");
    let log = p.log_dir.join("logger/0.log").display().to_string();
    assert_eq!(st.log_path, log);
    let lines = log_lines(&log);
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );
    let partial = lines.iter().filter(|(s, t, _)| s == "stdout" && t == "P").count();
    assert!(partial >= 1, "a 50000-byte line must be split into P pieces");
    assert!(stdout_text(&log).contains(&format!("\n{}\n", "a".repeat(50000))));
    let raw = std::fs::read_to_string(&log).unwrap();
    let ts = raw.lines().next().unwrap().split(' ').next().unwrap();
    assert!(
        ts.contains('T') && (ts.ends_with('Z') || ts.contains('+')),
        "RFC 3339 timestamp: {ts}"
    );
}

#[tokio::test]
async fn exit_code_reason_and_oom_kill() {
    let e = env().await;
    let p = pod(&e, "exits").await;
    let id = run(
        &e,
        &p,
        ctr("three", &e.imgs.busybox.reference, &["sh", "-c", "exit 3"]),
    )
    .await;
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at && st.created_at > 0);

    let mut c = ctr(
        "hog",
        &e.imgs.busybox.reference,
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        ],
    );
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"), "{st:?}");
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        16 << 20
    );
}

#[tokio::test]
async fn stop_signal_comes_before_sigkill_and_stop_remove_are_idempotent() {
    let e = env().await;
    let p = pod(&e, "stops").await;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done";
    let id = run(
        &e,
        &p,
        ctr("term", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    let log = p.log_dir.join("term/0.log").display().to_string();
    wait_for_log(&log, "ready").await;
    stop(&e, &id, 30).await.unwrap();
    let st = status(&e, &id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 7, "the TERM trap ran, no SIGKILL: {st:?}");
    assert!(stdout_text(&log).contains("got-term"));

    // The image's StopSignal (SIGUSR1 in the configured image) is the one sent.
    let script = "trap 'exit 8' USR1; echo ready; while true; do sleep 0.1; done";
    let mut c = ctr("usr1", &e.imgs.configured.reference, &["/bin/sh", "-c", script]);
    sc(&mut c).run_as_user = Some(Int64Value { value: 0 });
    let id2 = run(&e, &p, c).await;
    wait_for_log(&p.log_dir.join("usr1/0.log").display().to_string(), "ready").await;
    stop(&e, &id2, 30).await.unwrap();
    assert_eq!(status(&e, &id2).await.exit_code, 8);

    // A process ignoring its stop signal is SIGKILLed when the grace period ends.
    let id3 = run(
        &e,
        &p,
        ctr(
            "stubborn",
            &e.imgs.busybox.reference,
            &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
        ),
    )
    .await;
    stop(&e, &id3, 1).await.unwrap();
    assert_eq!(status(&e, &id3).await.exit_code, 137);

    stop(&e, &id, 30).await.unwrap();
    remove(&e, &id).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop(&e, &id, 0).await.unwrap();
    stop(&e, "0123456789abcdef", 0).await.unwrap();
    let err =
        e.c.runtime()
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!e.c.state.join("containers").join(&id).exists());
    assert!(!e.c.root.join("containers").join(&id).exists());
    assert!(!e.c.root.join("containers").join(format!("{id}.json")).exists());
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    let e = env().await;
    let p = pod(&e, "execs").await;
    let id = run(
        &e,
        &p,
        ctr("sleeper", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let r = exec(&e, &id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 0)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 5)
    );

    let err = exec(&e, &id, &["sleep", "37"], 1).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let ps = exec(&e, &id, &["ps", "-o", "args"], 10).await.unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        ps.contains("sleep 1000") && !ps.contains("sleep 37"),
        "the timed-out process was killed:\n{ps}"
    );
    let err = exec(&e, &id, &[], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{err:?}");
    stop(&e, &id, 0).await.unwrap();
    let err = exec(&e, &id, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // The killed exec left nothing that holds the pod's pid namespace: the pod stops.
    remove(&e, &id).await.unwrap();
    e.c.runtime()
        .await
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap();
}

fn id_output(s: &str) -> (u32, u32, HashSet<u32>) {
    let num = |key: &str| -> u32 {
        let rest = &s[s.find(key).unwrap_or_else(|| panic!("{key} in {s:?}")) + key.len()..];
        rest.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let groups = s
        .split("groups=")
        .nth(1)
        .map(|g| {
            g.trim()
                .split(',')
                .map(|x| {
                    x.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                        .parse()
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    (num("uid="), num("gid="), groups)
}

async fn id_of(
    e: &Env,
    p: &Pod,
    name: &str,
    f: impl FnOnce(&mut LinuxContainerSecurityContext),
) -> (u32, u32, HashSet<u32>) {
    let mut c = ctr(name, &e.imgs.busybox.reference, &["id"]);
    f(sc(&mut c));
    let id = run(e, p, c).await;
    let st = wait_exited(e, &id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let out = stdout_text(&p.log_dir.join(format!("{name}/0.log")).display().to_string());
    let r = id_output(&out);
    let user = st.user.unwrap().linux.unwrap();
    assert_eq!(
        (user.uid as u32, user.gid as u32),
        (r.0, r.1),
        "status.user matches the process"
    );
    r
}

#[tokio::test]
async fn users_and_supplemental_groups() {
    let e = env().await;
    let p = pod(&e, "users").await;
    let set = |v: &[u32]| v.iter().copied().collect::<HashSet<u32>>();
    // run_as_user: primary group from /etc/passwd, groups from /etc/group (Merge), plus supplemental.
    let r = id_of(&e, &p, "uid", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.supplemental_groups = vec![3000];
    })
    .await;
    assert_eq!(r, (1000, 1000, set(&[1000, 2000, 10, 3000])));
    let r = id_of(&e, &p, "username", |s| s.run_as_username = "crust".into()).await;
    assert_eq!(r, (1000, 1000, set(&[1000, 2000, 10])));
    let r = id_of(&e, &p, "strict", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.run_as_group = Some(Int64Value { value: 3000 });
        s.supplemental_groups = vec![4000];
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    })
    .await;
    assert_eq!(r, (1000, 3000, set(&[3000, 4000])));
    let r = id_of(&e, &p, "root", |_| {}).await;
    assert_eq!((r.0, r.1), (0, 0));

    let mut c = ctr("ghost", &e.imgs.busybox.reference, &["id"]);
    sc(&mut c).run_as_username = "ghost".into();
    let err = create(&e, &p, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("run_as_username"), "{err:?}");
}

#[tokio::test]
async fn readonly_rootfs_mounts_masked_paths_and_env() {
    let e = env().await;
    let p = pod(&e, "fs").await;
    let ro = e.c.dir.path().join("ro-src");
    let rw = e.c.dir.path().join("rw-src");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("f"), "host file").unwrap();
    let script = "touch /x 2>/dev/null && echo rootfs=rw || echo rootfs=ro; \
                  touch /ro/x 2>/dev/null && echo ro=rw || echo ro=ro; \
                  cat /ro/f; echo; \
                  touch /rw/x && echo rw=rw; \
                  echo timer_list=$( (wc -c < /proc/timer_list) 2>&1 ); \
                  echo firmware=$(ls /sys/firmware | wc -l); \
                  echo ifs=$(touch /proc/sys/kernel/domainname 2>/dev/null && echo rw || echo ro)";
    let mut c = ctr("ro", &e.imgs.busybox.reference, &["sh", "-c", script]);
    sc(&mut c).readonly_rootfs = true;
    c.mounts = vec![
        Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        Mount {
            container_path: "/rw".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
    ];
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("ro/0.log").display().to_string());
    assert_eq!(st.exit_code, 0, "{st:?}\n{out}");
    for want in [
        "rootfs=ro",
        "ro=ro",
        "host file",
        "rw=rw",
        "timer_list=0",
        "firmware=0",
        "ifs=ro",
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} missing in:\n{out}");
    }
    assert!(rw.join("x").exists() && !ro.join("x").exists());
    assert_eq!(st.mounts.len(), 2);
    assert!(st.mounts.iter().any(|m| m.container_path == "/ro" && m.readonly));

    // Env: the image's, then the CRI's; entrypoint, working dir and user from the image; args replace Cmd.
    let mut c = ctr("env", &e.imgs.configured.reference, &[]);
    c.args = vec!["echo \"$GREETING $EXTRA $PWD $(id -u)\"".into()];
    c.envs = vec![KeyValue {
        key: "EXTRA".into(),
        value: b"more".to_vec(),
    }];
    let id = run(&e, &p, c).await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("env/0.log").display().to_string());
    assert_eq!(out, "hello more /home/crust 1000\n");
    let mut c = ctr("override", &e.imgs.configured.reference, &[]);
    c.envs = vec![KeyValue {
        key: "GREETING".into(),
        value: b"bonjour".to_vec(),
    }];
    let id = run(&e, &p, c).await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("override/0.log").display().to_string());
    assert_eq!(out, "bonjour from /home/crust as 1000\n");
}

#[tokio::test]
async fn containers_outlive_crustd() {
    let mut e = env().await;
    let p = pod(&e, "survive").await;
    let trig = e.c.dir.path().join("trigger");
    std::fs::create_dir_all(&trig).unwrap();
    let long = run(&e, &p, ctr("long", &e.imgs.busybox.reference, &["sleep", "1000"])).await;
    let mut c = ctr(
        "later",
        &e.imgs.busybox.reference,
        &["sh", "-c", "while [ ! -e /trig/go ]; do sleep 0.1; done; exit 4"],
    );
    c.mounts = vec![Mount {
        container_path: "/trig".into(),
        host_path: trig.display().to_string(),
        ..Default::default()
    }];
    let later = run(&e, &p, c).await;
    let pid_of = |e: &Env, id: &str| {
        std::fs::read_to_string(e.c.state.join("containers").join(id).join("container.pid")).unwrap()
    };
    let long_pid: i32 = pid_of(&e, &long).trim().parse().unwrap();
    let orphan = run(
        &e,
        &p,
        ctr("orphan", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let orphan_pid: i32 = pid_of(&e, &orphan).trim().parse().unwrap();
    let monitor_pid: i32 =
        std::fs::read_to_string(e.c.state.join("containers").join(&orphan).join("monitor.pid"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();

    e.c.kill9();
    // A monitor that dies with crustd down leaves no exit file: its container's end is unknown.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::fs::write(trig.join("go"), "").unwrap();
    let exit_file = e.c.state.join("containers").join(&later).join("exit");
    assert!(
        harness::wait_for(Duration::from_secs(30), || exit_file.exists().then_some(())).is_some(),
        "the monitor wrote the exit file while crustd was down"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(long_pid), None).is_ok(),
        "the container still runs"
    );
    e.c.restart().await;

    let st = status(&e, &long).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    let r = exec(&e, &long, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(r.stdout, b"alive\n");
    let st = status(&e, &later).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 4, "Error"),
        "{st:?}"
    );

    let st = status(&e, &orphan).await;
    assert_eq!(
        (st.state, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, "Unknown"),
        "{st:?}"
    );
    remove(&e, &orphan).await.unwrap();
    assert!(
        harness::wait_for(Duration::from_secs(10), || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan_pid), None)
                .is_err()
                .then_some(())
        })
        .is_some(),
        "removal killed the container its monitor left behind"
    );

    // A SIGTERM of crustd leaves containers running too.
    e.c.restart().await;
    assert_eq!(
        status(&e, &long).await.state,
        ContainerState::ContainerRunning as i32
    );
    stop(&e, &long, 0).await.unwrap();
    assert_eq!(status(&e, &long).await.exit_code, 137);
    remove(&e, &long).await.unwrap();
    remove(&e, &later).await.unwrap();
}

#[tokio::test]
async fn validation_lists_updates_stats_and_reopen() {
    let e = env().await;
    let p = pod(&e, "misc").await;
    let bb = e.imgs.busybox.reference.clone();

    let mut bad = p.config.clone();
    bad.metadata.as_mut().unwrap().name = "other".into();
    let ghost = Pod {
        id: "nonexistent".into(),
        config: bad,
        log_dir: p.log_dir.clone(),
    };
    assert_eq!(
        create(&e, &ghost, ctr("x", &bb, &["true"]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let err = create(&e, &p, ctr("", &bb, &["true"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config.metadata.name"), "{err:?}");
    let err = create(&e, &p, ctr("x", "127.0.0.1:1/not/pulled:1", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A create the runtime refuses leaves nothing behind, and its name can be used again.
    let err = create(&e, &p, ctr("bad", &bb, &["/no/such/binary"]))
        .await
        .unwrap_err();
    assert!(err.message().contains("/no/such/binary"), "{err:?}");
    for dir in [e.c.root.join("containers"), e.c.state.join("containers")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|x| x.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&e.c.state.join("containers").display().to_string()),
        "{mounts}"
    );
    let bad = create(&e, &p, ctr("bad", &bb, &["true"])).await.unwrap();
    remove(&e, &bad).await.unwrap();

    // Two creates of one name at once (a kubelet retry): one container; the retry gets its ID (or, when
    // the first had finished already, AlreadyExists).
    let (a, b) = tokio::join!(
        create(&e, &p, ctr("twin", &bb, &["true"])),
        create(&e, &p, ctr("twin", &bb, &["true"]))
    );
    let twin = match (a, b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            a
        }
        (Ok(x), Err(err)) | (Err(err), Ok(x)) => {
            assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
            x
        }
        (Err(a), Err(b)) => panic!("{a:?} {b:?}"),
    };
    remove(&e, &twin).await.unwrap();

    let id = create(&e, &p, ctr("web", &bb, &["sleep", "1000"])).await.unwrap();
    assert_eq!(
        status(&e, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    let err = create(&e, &p, ctr("web", &bb, &["sleep", "1000"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("web"), "{err:?}");
    start(&e, &id).await.unwrap();
    assert_eq!(start(&e, &id).await.unwrap_err().code(), Code::FailedPrecondition);
    let other = run(&e, &p, ctr("batch", &bb, &["true"])).await;
    wait_exited(&e, &other).await;

    let list = |f: ContainerFilter| {
        let c = &e.c;
        async move {
            let mut ids: Vec<String> = c
                .runtime()
                .await
                .list_containers(ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![id.clone(), other.clone()];
    both.sort();
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: p.id.clone(),
            ..Default::default()
        })
        .await,
        both
    );
    assert_eq!(
        list(ContainerFilter {
            id: id[..12].into(),
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    let running = Some(ContainerStateValue {
        state: ContainerState::ContainerRunning as i32,
    });
    assert_eq!(
        list(ContainerFilter {
            state: running,
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    let sel = [("name".to_string(), "batch".to_string())].into();
    assert_eq!(
        list(ContainerFilter {
            label_selector: sel,
            ..Default::default()
        })
        .await,
        vec![other.clone()]
    );

    let mut rt = e.c.runtime().await;
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let res = status(&e, &id).await.resources.unwrap().linux.unwrap();
    assert_eq!((res.memory_limit_in_bytes, res.cpu_shares), (64 << 20, 512));
    let cg = format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        p_cgroup(&e, &id).await
    );
    if Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(
            std::fs::read_to_string(&cg).unwrap().trim(),
            (64u64 << 20).to_string()
        );
    }

    exec(&e, &id, &["sh", "-c", "head -c 100000 /dev/zero > /tmp/blob"], 10)
        .await
        .unwrap();
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let wl = stats.writable_layer.unwrap();
    assert!(
        wl.used_bytes.unwrap().value >= 100000 && wl.inodes_used.unwrap().value >= 2,
        "{wl:?}"
    );
    let all = rt
        .list_container_stats(ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(all.iter().any(|s| s.attributes.as_ref().unwrap().id == id));

    let log = p.log_dir.join("web/0.log");
    std::fs::rename(&log, p.log_dir.join("web/0.log.1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(log.exists(), "reopen made a new log file");

    let v = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    assert!(info["pid"].as_u64().unwrap() > 0);
    assert_eq!(info["runtimeSpec"]["process"]["args"][0], "sleep");
}

async fn p_cgroup(e: &Env, id: &str) -> String {
    let v =
        e.c.runtime()
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    let cg = info["cgroup"].as_str().unwrap().to_string();
    cg.rsplit_once('/').unwrap().0.to_string()
}

#[tokio::test]
async fn security_context_reaches_the_process() {
    let e = env().await;
    let p = pod(&e, "sec").await;
    let script = "grep -E '^(Seccomp|NoNewPrivs|CapBnd|CapEff):' /proc/self/status; \
                  chown 1 /tmp 2>/dev/null && echo chown=yes || echo chown=no";
    let mut c = ctr("locked", &e.imgs.busybox.reference, &["sh", "-c", script]);
    {
        let s = sc(&mut c);
        s.no_new_privs = true;
        s.seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        s.capabilities = Some(Capability {
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
    }
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("locked/0.log").display().to_string());
    assert_eq!(st.exit_code, 0, "{st:?}\n{out}");
    let norm: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "Seccomp: 2",
        "NoNewPrivs: 1",
        "CapBnd: 0000000000000400",
        "CapEff: 0000000000000400",
        "chown=no",
    ] {
        assert!(norm.iter().any(|l| l == want), "{want:?} missing in {norm:?}");
    }

    // The default: containerd's capability set, no seccomp filter unless asked for.
    let id = run(
        &e,
        &p,
        ctr("default", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("default/0.log").display().to_string());
    let norm: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in ["Seccomp: 0", "CapBnd: 00000000a80425fb", "chown=yes"] {
        assert!(norm.iter().any(|l| l == want), "{want:?} missing in {norm:?}");
    }
}

#[tokio::test]
async fn pod_stop_and_remove_take_the_containers_along() {
    let e = env().await;
    let p = pod(&e, "along").await;
    let id = run(
        &e,
        &p,
        ctr("inside", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let mut rt = e.c.runtime().await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: p.id.clone(),
    })
    .await
    .unwrap();
    let st = status(&e, &id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{st:?}"
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: p.id.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!e.c.root.join("containers").join(format!("{id}.json")).exists());
}
