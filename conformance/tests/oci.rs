//! The runc `OciRuntime` and the pause against real runc (root only): exec_sync (output, exit code, cap,
//! timeout kill), update, pause/resume, kill, delete, error kinds; the static `crust-pause` as an
//! unprivileged PID 1 that reaps orphans and exits 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Ctr, Opts, is_root, process};
use crust::monitor;
use crust::oci::OciRuntime;

#[tokio::test]
async fn runc_exec_update_pause_kill() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        args: &["sh", "-c", "while true; do sleep 0.1; done"],
        ..Default::default()
    });
    monitor::spawn(&c.spec(false)).await.unwrap();
    c.runc.start(&c.id).await.unwrap();
    assert_eq!(c.runc.state(&c.id).await.unwrap().status, "running");

    assert!(
        monitor::wait_exit(&c.state, Duration::from_millis(100))
            .await
            .is_none()
    );
    assert!(monitor::is_alive(&c.state));
    // A second create of the same ID is refused and leaves the first container alone.
    let again = monitor::spawn(&c.spec(false)).await.unwrap_err();
    assert!(matches!(again, crust::Error::AlreadyExists(_)), "{again}");
    assert!(monitor::is_alive(&c.state));
    assert_eq!(c.runc.state(&c.id).await.unwrap().status, "running");

    let out = c
        .runc
        .exec_sync(
            &c.id,
            &process(&["sh", "-c", "echo out; echo err >&2; exit 5"]),
            Duration::ZERO,
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            out.stdout.as_slice(),
            out.stderr.as_slice(),
            out.exit_code,
            out.timed_out
        ),
        (&b"out\n"[..], &b"err\n"[..], 5, false)
    );
    let big = c
        .runc
        .exec_sync(
            &c.id,
            &process(&["head", "-c", "100000", "/dev/zero"]),
            Duration::from_secs(30),
            1000,
        )
        .await
        .unwrap();
    assert_eq!((big.stdout.len(), big.exit_code), (1000, 0));
    let slow = c
        .runc
        .exec_sync(
            &c.id,
            &process(&["sleep", "31"]),
            Duration::from_millis(300),
            1000,
        )
        .await
        .unwrap();
    assert!(slow.timed_out);
    assert_eq!(slow.exit_code, 137);
    let ps = c
        .runc
        .exec_sync(&c.id, &process(&["ps"]), Duration::ZERO, 1 << 20)
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.contains("sleep 31"),
        "the timed-out process still runs:\n{ps}"
    );
    let bad = c
        .runc
        .exec_sync(&c.id, &process(&["/no/such/binary"]), Duration::ZERO, 1000)
        .await;
    match bad {
        Ok(o) => assert_ne!(o.exit_code, 0, "{o:?}"),
        Err(e) => assert!(e.to_string().contains("no/such/binary"), "{e}"),
    }

    let res = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(48i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    c.runc.update(&c.id, &res).await.unwrap();
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{}/memory.limit_in_bytes", c.id)).unwrap();
    assert_eq!(limit.trim(), (48u64 << 20).to_string());

    c.runc.pause(&c.id).await.unwrap();
    assert_eq!(c.runc.state(&c.id).await.unwrap().status, "paused");
    c.runc.resume(&c.id).await.unwrap();
    assert_eq!(c.runc.state(&c.id).await.unwrap().status, "running");

    c.runc.kill(&c.id, libc::SIGKILL, false).await.unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!((exit.exit_code, exit.signal), (137, 9));
    for _ in 0..600 {
        if c.runc.state(&c.id).await.is_ok_and(|s| s.status == "stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        c.runc.kill(&c.id, libc::SIGTERM, false).await,
        Err(crust::Error::FailedPrecondition(_))
    ));
    c.runc.delete(&c.id, false).await.unwrap();
    c.runc.delete(&c.id, true).await.unwrap();
    assert!(matches!(
        c.runc.state(&c.id).await,
        Err(crust::Error::NotFound(_))
    ));
    assert!(matches!(
        c.runc.start(&c.id).await,
        Err(crust::Error::NotFound(_))
    ));
}

/// The static pause: `$CRUST_PAUSE_BINARY`, else where the build command in src/pause/Cargo.toml puts it.
fn pause_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRUST_PAUSE_BINARY") {
        return Some(p.into());
    }
    let p = harness::target_dir().join("static/x86_64-unknown-linux-gnu/tiny/crust-pause");
    p.exists().then_some(p)
}

#[tokio::test]
async fn pause_reaps_zombies_runs_unprivileged_and_exits_0_on_sigterm() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(pause) = pause_binary() else {
        eprintln!("skipped: build crust-pause first (see src/pause/Cargo.toml)");
        return;
    };
    let c = Ctr::new(Opts {
        args: &["/pause"],
        ..Default::default()
    });
    // The busybox root plus what prepare_rootfs adds (so the test can exec a shell next to it).
    crust::oci::pause::prepare_rootfs(&c.rootfs(), &pause).unwrap();
    let cfg_path = c.tmp.path().join("bundle/config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["user"] =
        serde_json::json!({ "uid": crust::oci::pause::PAUSE_UID, "gid": crust::oci::pause::PAUSE_GID });
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let m = monitor::spawn(&c.spec(false)).await.unwrap();
    c.runc.start(&c.id).await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.container_pid)).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("65535"), "{uid}");
    // An orphan that exits in the pod's PID namespace is re-parented to the pause, which must reap it.
    let run = |args: &'static [&'static str]| {
        let c = &c;
        async move {
            c.runc
                .exec_sync(&c.id, &process(args), Duration::from_secs(30), 1 << 16)
                .await
                .unwrap()
        }
    };
    let o = run(&["sh", "-c", "sleep 0.2 & exit 0"]).await;
    assert_eq!(o.exit_code, 0);
    let mut zombies = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ps = run(&["ps", "-o", "pid,ppid,stat,comm"]).await;
        let text = String::from_utf8_lossy(&ps.stdout).to_string();
        assert!(text.contains("pause"), "{text}");
        let z: Vec<&str> = text
            .lines()
            .filter(|l| l.split_whitespace().nth(2).is_some_and(|s| s.starts_with('Z')))
            .collect();
        if z.is_empty() && !text.contains("sleep") {
            zombies.clear();
            break;
        }
        zombies = text;
    }
    assert!(zombies.is_empty(), "orphans not reaped:\n{zombies}");
    c.runc.kill(&c.id, libc::SIGTERM, false).await.unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!((exit.exit_code, exit.signal), (0, 0));
}
