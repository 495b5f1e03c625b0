//! The monitor against real runc (root only): create through `monitor::spawn`, start with runc, CRI
//! log lines, exit file, OOM, reopen, tty resize, failed creates leaving nothing behind, and monitors
//! surviving the death of the process that spawned them. Containers run busybox from the host's
//! busybox-static. `memory_of_20_monitors` (ignored by default) measures RSS/PSS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Ctr, Opts, is_root, log_lines, processes_mentioning, wait_until};
use crust::monitor::{self, MonitorSpec};
use crust::oci::OciRuntime;

#[tokio::test]
async fn logs_exit_code_and_partial_lines() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let script = "echo hi; echo oops >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; printf tail; exit 3";
    let c = Ctr::new(Opts {
        args: &["sh", "-c", script],
        ..Default::default()
    });
    let m = monitor::spawn(&c.spec(false)).await.unwrap();
    assert!(m.pid > 0 && m.container_pid > 0);
    assert!(monitor::is_alive(&c.state));
    let st = c.runc.state(&c.id).await.unwrap();
    assert_eq!((st.status.as_str(), st.pid), ("created", m.container_pid));
    assert!(monitor::read_exit(&c.state).is_none());
    c.runc.start(&c.id).await.unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (3, 0, false));
    assert!(exit.finished_at_ns >= exit.created_at_ns && exit.created_at_ns > 0);
    wait_until("the monitor to exit", || !monitor::is_alive(&c.state));
    assert!(!c.state.join("ctl.sock").exists());

    let lines = log_lines(&c.log());
    let stdout: Vec<_> = lines.iter().filter(|l| l.0 == "stdout").collect();
    let stderr: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").collect();
    assert_eq!(stderr, vec![&("stderr".into(), "F".into(), "oops".into())]);
    assert_eq!(stdout[0], &("stdout".into(), "F".into(), "hi".into()));
    // 20000 x's: one full 16 KiB P piece, then the F rest.
    assert_eq!((stdout[1].1.as_str(), stdout[1].2.len()), ("P", 16 * 1024));
    assert_eq!(
        (stdout[2].1.as_str(), stdout[2].2.len()),
        ("F", 20000 - 16 * 1024)
    );
    assert!(stdout[1].2.bytes().chain(stdout[2].2.bytes()).all(|b| b == b'x'));
    // Unterminated at EOF: P.
    assert_eq!(stdout[3], &("stdout".into(), "P".into(), "tail".into()));
    assert_eq!(stdout.len(), 4, "{stdout:?}");
    c.runc.delete(&c.id, false).await.unwrap();
    c.runc.delete(&c.id, false).await.unwrap();
}

#[tokio::test]
async fn failed_create_reports_runc_error_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        bad_rootfs: true,
        ..Default::default()
    });
    let err = monitor::spawn(&c.spec(false)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-rootfs"),
        "runc's own error text expected: {msg}"
    );
    for f in [
        "monitor.pid",
        "ctl.sock",
        "container.pid",
        "exit",
        "runtime-create.log",
    ] {
        assert!(!c.state.join(f).exists(), "{f} left behind");
    }
    assert!(matches!(
        c.runc.state(&c.id).await,
        Err(crust::Error::NotFound(_))
    ));
    let left = processes_mentioning(c.state.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `start`: one `runtime run --detach`; the monitor reports a running container, and a process that
/// cannot be executed fails the spawn with the runtime's words and leaves nothing behind.
#[tokio::test]
async fn start_mode_runs_at_once_and_fails_cleanly() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        args: &["sh", "-c", "echo started; exit 4"],
        ..Default::default()
    });
    let mut spec = c.spec(false);
    spec.start = true;
    let m = monitor::spawn(&spec).await.unwrap();
    assert!(m.container_pid > 0);
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file without a separate start");
    assert_eq!(exit.exit_code, 4);
    let lines = log_lines(&c.log());
    assert_eq!(lines, vec![("stdout".into(), "F".into(), "started".into())]);
    c.runc.delete(&c.id, true).await.unwrap();

    let bad = Ctr::new(Opts {
        args: &["/no-such-program"],
        ..Default::default()
    });
    let mut spec = bad.spec(false);
    spec.start = true;
    let msg = monitor::spawn(&spec).await.unwrap_err().to_string();
    assert!(
        msg.contains("runtime run failed") && msg.contains("no-such-program"),
        "{msg}"
    );
    assert!(matches!(
        bad.runc.state(&bad.id).await,
        Err(crust::Error::NotFound(_))
    ));
    for f in ["monitor.pid", "ctl.sock", "container.pid", "exit"] {
        assert!(!bad.state.join(f).exists(), "{f} left behind");
    }
    let left = processes_mentioning(bad.state.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `spawn_announcing`: the monitor's pid arrives while the runtime still runs (crustd places the
/// monitor in its systemd scope meanwhile), and it is the pid of the monitor the spawn returns.
#[tokio::test]
async fn the_monitor_announces_its_pid_before_the_runtime_returns() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        args: &["sleep", "60"],
        ..Default::default()
    });
    let mut spec = c.spec(false);
    spec.start = true;
    // A runtime that takes a second before it starts: the announcement must come before it.
    let slow = c.tmp.path().join("slow-runc");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nsleep 1\nexec {} \"$@\"\n",
            spec.runtime_path.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    spec.runtime_path = slow;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (spawned, announced) = tokio::join!(
        async {
            let m = monitor::spawn_announcing(&spec, tx).await;
            (m, std::time::Instant::now())
        },
        async {
            let pid = rx.await;
            (
                pid,
                std::time::Instant::now(),
                c.state.join("container.pid").exists(),
            )
        }
    );
    let (m, returned_at) = spawned;
    let m = m.unwrap();
    let (pid, announced_at, container_pid_written) = announced;
    assert_eq!(pid.ok(), Some(m.pid));
    assert!(
        announced_at + Duration::from_millis(500) < returned_at,
        "the pid came {:?} before the spawn returned",
        returned_at - announced_at
    );
    assert!(
        !container_pid_written,
        "the pid came after the runtime had written the container's pid"
    );
    monitor::signal_container(&c.state, libc::SIGKILL).unwrap();
    monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    c.runc.delete(&c.id, true).await.unwrap();
}

#[tokio::test]
async fn oom_kill_is_detected() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        args: &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        memory_limit: Some(16 << 20),
        ..Default::default()
    });
    monitor::spawn(&c.spec(false)).await.unwrap();
    c.runc.start(&c.id).await.unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (137, 9, true),
        "{exit:?}"
    );
}

#[tokio::test]
async fn reopen_log_and_tty_resize_over_deep_state_dir() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let script = "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; stty size; echo after";
    let c = Ctr::new(Opts {
        args: &["sh", "-c", script],
        tty: true,
        deep_state: true,
        ..Default::default()
    });
    assert!(c.state.join("ctl.sock").as_os_str().len() > 108);
    monitor::spawn(&c.spec(true)).await.unwrap();
    c.runc.start(&c.id).await.unwrap();
    wait_until("'before' in the log", || {
        log_lines(&c.log()).iter().any(|l| l.2.contains("before"))
    });
    let rotated = c.tmp.path().join("ctr.log.1");
    std::fs::rename(c.log(), &rotated).unwrap();
    monitor::reopen_log(&c.state).await.unwrap();
    assert!(c.log().exists());
    monitor::resize(&c.state, 123, 45).await.unwrap();
    std::fs::write(c.rootfs().join("tmp/go"), b"").unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!(exit.exit_code, 0);
    let old = log_lines(&rotated);
    let new = log_lines(&c.log());
    assert!(old.iter().any(|l| l.2.trim_end() == "before"), "{old:?}");
    assert!(!old.iter().any(|l| l.2.contains("after")), "{old:?}");
    assert!(new.iter().all(|l| l.0 == "stdout"), "{new:?}");
    let texts: Vec<&str> = new.iter().map(|l| l.2.trim_end_matches('\r')).collect();
    assert_eq!(texts, vec!["45 123", "after"], "{new:?}");
    // A gone monitor answers with FailedPrecondition.
    wait_until("the monitor to exit", || !monitor::is_alive(&c.state));
    assert!(matches!(
        monitor::reopen_log(&c.state).await,
        Err(crust::Error::FailedPrecondition(_))
    ));
}

#[tokio::test]
async fn attach_streams_stdio_and_closes_stdin_once() {
    use tokio::io::AsyncWriteExt;
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let script = "read line; echo got:$line; echo e >&2; cat; echo done";
    let c = Ctr::new(Opts {
        args: &["sh", "-c", script],
        ..Default::default()
    });
    let mut spec = c.spec(false);
    spec.stdin = true;
    spec.stdin_once = true;
    monitor::spawn(&spec).await.unwrap();
    let mut s = monitor::attach(&c.state).await.unwrap();
    c.runc.start(&c.id).await.unwrap();
    s.write_all(&monitor::ctl::frame(monitor::ctl::STDIN, b"hello\nwor"))
        .await
        .unwrap();
    s.write_all(&monitor::ctl::frame(monitor::ctl::STDIN, b"ld\n"))
        .await
        .unwrap();
    s.write_all(&monitor::ctl::frame(monitor::ctl::STDIN, b""))
        .await
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_all = async {
        while let Some((stream, data)) = monitor::read_frame(&mut s).await.unwrap() {
            match stream {
                monitor::ctl::STDOUT => out.extend_from_slice(&data),
                monitor::ctl::STDERR => err.extend_from_slice(&data),
                other => panic!("unexpected stream {other}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the attach stream to end");
    assert_eq!(String::from_utf8_lossy(&out), "got:hello\nworld\ndone\n");
    assert_eq!(String::from_utf8_lossy(&err), "e\n");
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!(exit.exit_code, 0);
    let lines = log_lines(&c.log());
    let of = |stream: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.0 == stream)
            .map(|l| l.2.clone())
            .collect()
    };
    assert_eq!(of("stdout"), vec!["got:hello", "world", "done"]);
    assert_eq!(of("stderr"), vec!["e"]);
}

/// Not a test on its own: run by `monitor_outlives_its_spawner` in a child process playing crustd (a
/// child subreaper that spawns a monitor, reports, and waits to be killed).
#[tokio::test]
#[ignore]
async fn fake_crustd() {
    let Ok(spec) = std::env::var("CRUST_TEST_FAKE_CRUSTD") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let s = |k: &str| PathBuf::from(v[k].as_str().unwrap());
    let spec = MonitorSpec {
        id: v["id"].as_str().unwrap().into(),
        bundle: s("bundle"),
        runtime_path: s("runtime_path"),
        runtime_root: s("runtime_root"),
        state_dir: s("state_dir"),
        log_path: Some(s("log_path")),
        monitor_path: s("monitor_path"),
        ..Default::default()
    };
    crust::sys::set_child_subreaper().unwrap();
    let m = monitor::spawn(&spec).await.unwrap();
    println!("spawned {} {}", m.pid, m.container_pid);
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test]
async fn monitor_outlives_its_spawner() {
    use std::io::BufRead;
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let c = Ctr::new(Opts {
        args: &[
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo survived; exit 7",
        ],
        ..Default::default()
    });
    let spec = c.spec(false);
    let j = serde_json::json!({
        "id": spec.id, "bundle": spec.bundle, "runtime_path": spec.runtime_path,
        "runtime_root": spec.runtime_root, "state_dir": spec.state_dir, "log_path": spec.log_path,
        "monitor_path": spec.monitor_path,
    });
    let mut fake = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "fake_crustd",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRUST_TEST_FAKE_CRUSTD", j.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut r = std::io::BufReader::new(fake.stdout.take().unwrap());
    // libtest prints "test fake_crustd ... " before the test's own output on the same line.
    while r.read_line(&mut line).unwrap() > 0 && !line.contains("spawned ") {
        line.clear();
    }
    let report = line.split("spawned ").nth(1).expect("the fake crustd's report");
    let mut it = report.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let (mpid, cpid) = (it.next().unwrap(), it.next().unwrap());
    assert_eq!(monitor::monitor_pid(&c.state), Some(mpid));
    // The monitor is not in the spawner's session or process group.
    let sid = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_eq!(sid(mpid), mpid.to_string(), "the monitor leads its own session");
    // SAFETY: SIGKILL of the child this test started.
    unsafe { libc::kill(fake.id() as i32, libc::SIGKILL) };
    fake.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(monitor::is_alive(&c.state), "the monitor died with its spawner");
    assert_eq!(c.runc.state(&c.id).await.unwrap().pid, cpid);
    c.runc.start(&c.id).await.unwrap();
    std::fs::write(c.rootfs().join("tmp/go"), b"").unwrap();
    let exit = monitor::wait_exit(&c.state, Duration::from_secs(30))
        .await
        .expect("exit file");
    assert_eq!(exit.exit_code, 7);
    assert!(log_lines(&c.log()).iter().any(|l| l.2 == "survived"));
}

/// RSS and PSS of 20 monitors with running containers (`cargo test --test monitor -- --ignored
/// --nocapture memory_of_20_monitors`).
#[tokio::test]
#[ignore]
async fn memory_of_20_monitors() {
    assert!(is_root(), "needs root");
    let mut ctrs = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..20 {
        let c = Ctr::new(Opts {
            args: &[
                "sh",
                "-c",
                "while [ ! -e /tmp/go ]; do sleep 0.2; echo tick; done",
            ],
            ..Default::default()
        });
        let m = monitor::spawn(&c.spec(false)).await.unwrap();
        c.runc.start(&c.id).await.unwrap();
        pids.push(m.pid);
        ctrs.push(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (mut rss, mut pss, mut max_rss, mut max_pss) = (0u64, 0u64, 0u64, 0u64);
    for pid in &pids {
        let t = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let kb = |k: &str| -> u64 {
            t.lines()
                .find(|l| l.starts_with(k))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        };
        rss += kb("Rss:");
        pss += kb("Pss:");
        max_rss = max_rss.max(kb("Rss:"));
        max_pss = max_pss.max(kb("Pss:"));
    }
    println!(
        "monitors: avg RSS {} KiB (max {max_rss}), avg PSS {} KiB (max {max_pss})",
        rss / 20,
        pss / 20
    );
    for c in &ctrs {
        std::fs::write(c.rootfs().join("tmp/go"), b"").unwrap();
    }
    for c in &ctrs {
        assert!(
            monitor::wait_exit(&c.state, Duration::from_secs(30))
                .await
                .is_some()
        );
    }
    assert!(max_rss < 2048, "RSS {max_rss} KiB");
    assert!(max_pss < 1024, "PSS {max_pss} KiB");
}
