//! The monitor against real runc (root only): create through `monitor::spawn`, start with runc, CRI
//! log lines, exit file, OOM, reopen, tty resize, failed creates leaving nothing behind, and monitors
//! surviving the death of the process that spawned them. Containers run busybox from the host's
//! busybox-static. `memory_of_20_monitors` (ignored by default) measures RSS/PSS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crust::monitor::{self, MonitorSpec};
use crust::oci::{OciRuntime, Runc};

const RUNC: &str = "/usr/bin/runc";
static SEQ: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A test container: bundle, state dir, runtime root, all under one temp dir; removed on drop (runc
/// delete --force first).
struct Ctr {
    id: String,
    tmp: tempfile::TempDir,
    state: PathBuf,
    runc: Runc,
}

struct Opts<'a> {
    args: &'a [&'a str],
    tty: bool,
    memory_limit: Option<i64>,
    deep_state: bool,
    bad_rootfs: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            args: &["true"],
            tty: false,
            memory_limit: None,
            deep_state: false,
            bad_rootfs: false,
        }
    }
}

impl Ctr {
    fn new(o: Opts) -> Ctr {
        let id = format!(
            "crust-mon-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in [
            "sh", "head", "tr", "sleep", "dd", "stty", "cat", "echo", "true", "ps",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let out = std::process::Command::new(RUNC)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = o.tty.into();
        cfg["process"]["args"] = o.args.iter().map(|s| s.to_string()).collect::<Vec<_>>().into();
        cfg["root"]["readonly"] = false.into();
        if o.bad_rootfs {
            cfg["root"]["path"] = "no-such-rootfs".into();
        }
        cfg["linux"]["cgroupsPath"] = format!("/{id}").into();
        if let Some(limit) = o.memory_limit {
            cfg["linux"]["resources"]["memory"] = serde_json::json!({ "limit": limit, "swap": limit });
        }
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let state = if o.deep_state {
            tmp.path()
                .join("a-rather-long-directory-name-to-push-socket-paths-past-108-bytes")
                .join("and-then-some-more-of-it")
                .join(&id)
        } else {
            tmp.path().join("state").join(&id)
        };
        let runc = Runc::new(RUNC.into(), tmp.path().join("runc-root"));
        Ctr { id, tmp, state, runc }
    }

    fn spec(&self, tty: bool) -> MonitorSpec {
        MonitorSpec {
            id: self.id.clone(),
            bundle: self.tmp.path().join("bundle"),
            runtime_path: RUNC.into(),
            runtime_root: self.runc.root.clone(),
            state_dir: self.state.clone(),
            log_path: Some(self.log()),
            tty,
            stdin: false,
            stdin_once: false,
            monitor_path: env!("CARGO_BIN_EXE_crust-monitor").into(),
        }
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join("ctr.log")
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("bundle/rootfs")
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = std::process::Command::new(RUNC)
            .arg("--root")
            .arg(&self.runc.root)
            .args(["delete", "--force", &self.id])
            .output();
        if let Some(pid) = monitor::monitor_pid(&self.state)
            && monitor::is_alive(&self.state)
        {
            // SAFETY: kill of the monitor this test started (pid and start time checked).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// `(stream, tag, text)` of each CRI log line; the timestamp must parse as RFC 3339.
fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                "bad timestamp in {l:?}"
            );
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&c).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

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

fn process(args: &[&str]) -> oci_spec::runtime::Process {
    let mut p = oci_spec::runtime::Process::default();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}

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

/// The static pause (built with the command in src/pause/Cargo.toml's doc), if built.
fn pause_binary() -> Option<PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/static/x86_64-unknown-linux-gnu/tiny/crust-pause");
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
