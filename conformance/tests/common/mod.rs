//! Shared by the tests that run real runc (tests/monitor.rs, tests/oci.rs): a busybox bundle per test
//! container under one temp dir, cleaned up on drop, and log/process helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crust::monitor::{self, MonitorSpec};
use crust::oci::Runc;

pub const RUNC: &str = "/usr/bin/runc";
static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A test container: bundle, state dir, runtime root, all under one temp dir; removed on drop (runc
/// delete --force first).
pub struct Ctr {
    pub id: String,
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub runc: Runc,
}

pub struct Opts<'a> {
    pub args: &'a [&'a str],
    pub tty: bool,
    pub memory_limit: Option<i64>,
    pub deep_state: bool,
    pub bad_rootfs: bool,
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
    pub fn new(o: Opts) -> Ctr {
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

    pub fn spec(&self, tty: bool) -> MonitorSpec {
        MonitorSpec {
            id: self.id.clone(),
            bundle: self.tmp.path().join("bundle"),
            runtime_path: RUNC.into(),
            runtime_root: self.runc.root.clone(),
            systemd_cgroup: false,
            state_dir: self.state.clone(),
            log_path: Some(self.log()),
            tty,
            stdin: false,
            stdin_once: false,
            start: false,
            pause: None,
            restore: None,
            monitor_path: harness::binary("crust-monitor"),
            announce_pid: false,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.tmp.path().join("ctr.log")
    }

    pub fn rootfs(&self) -> PathBuf {
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
pub fn log_lines(path: &Path) -> Vec<(String, String, String)> {
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

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
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

pub fn process(args: &[&str]) -> oci_spec::runtime::Process {
    let mut p = oci_spec::runtime::Process::default();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}
