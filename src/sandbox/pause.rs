//! The pod's infra process: crust's built-in `crust-pause`, run from a shared read-only root under a
//! monitor like any container, but started by the monitor's own launcher (`monitor::PauseLaunch`), not
//! the OCI runtime: it holds the pod's IPC and UTS namespaces (and PID when shared), joins the pinned
//! netns, sits in `<pod cgroup>/pause`, and applies the pod's sysctls. The OCI spec written beside it
//! says the same in the runtime's terms (verbose status shows it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::record::PodRecord;
use crate::error::ResultExt;
use crate::oci::OciRuntime;
use crate::oci::pause::{PAUSE_COMMAND, PAUSE_GID, PAUSE_UID};
use crate::{Error, Result, monitor};

/// The oom_score_adj Kubernetes gives the pause (clamped to crustd's own).
const PAUSE_OOM_SCORE_ADJ: i64 = -998;

/// Everything the pause spec needs.
pub struct PauseParams<'a> {
    pub rec: &'a PodRecord,
    pub rootfs: &'a Path,
    pub sysctls: &'a HashMap<String, String>,
}

/// The pause's cgroup path (relative) and its spec's `cgroupsPath`: `<pod cgroup>/pause` with cgroupfs
/// (containers use their 64-hex IDs, so no clash), `crust-pause-<pod id>.scope` in the pod's slice with
/// systemd.
fn cgroup_paths(rec: &PodRecord) -> (String, String) {
    let pod = rec.pod_cgroup().unwrap_or_default();
    crate::cgroups::Cgroups::pause_paths(&pod, &rec.id)
}

/// Makes the pause cgroup (no device access) and says what the monitor's launcher is to do for the
/// pause: the same as [`spec`], in its terms.
fn launch(p: &PauseParams<'_>) -> Result<monitor::PauseLaunch> {
    let rec = p.rec;
    let ns = &rec.namespaces;
    let (cgroup, _) = cgroup_paths(rec);
    // With systemd, crustd moves the pause into its scope once it runs (`Cgroups::place_pause`).
    let systemd = rec.slice.is_some();
    if !systemd {
        crate::cgroups::create(&cgroup).ctx("create the pause cgroup")?;
        // No device access (v1: the devices controller; v2 has none without a BPF program, and the
        // root holds no device nodes; systemd's scope gets DevicePolicy=strict).
        let deny = Path::new(crate::cgroups::CGROUP_ROOT)
            .join("devices")
            .join(&cgroup)
            .join("devices.deny");
        if deny.exists() {
            std::fs::write(&deny, "a").ctx(format!("write {}", deny.display()))?;
        }
    }
    let mut sysctls: Vec<(String, String)> = p.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    sysctls.sort();
    Ok(monitor::PauseLaunch {
        rootfs: p.rootfs.to_path_buf(),
        netns: if ns.host_network() {
            None
        } else {
            Some(
                rec.netns
                    .clone()
                    .ok_or_else(|| Error::Internal("pod has no netns path".into()))?,
            )
        },
        new_pid: !ns.host_pid(),
        new_ipc: !ns.host_ipc(),
        new_uts: !ns.host_network(),
        hostname: (!ns.host_network() && !rec.hostname.is_empty()).then(|| rec.hostname.clone()),
        sysctls,
        cgroup_procs: if systemd {
            Vec::new()
        } else {
            crate::cgroups::procs_files(&cgroup)?
        },
        userns: rec.userns.clone(),
        // In the pod's user namespace the pause user must be mapped; else it is that namespace's root
        // (an unprivileged host uid all the same), still without capabilities.
        uid: match ns.userns {
            Some(u) if !u.uids.maps(PAUSE_UID) => 0,
            _ => PAUSE_UID,
        },
        gid: match ns.userns {
            Some(u) if !u.gids.maps(PAUSE_GID) => 0,
            _ => PAUSE_GID,
        },
        oom_score_adj: Some(crate::sys::clamp_oom_score_adj(PAUSE_OOM_SCORE_ADJ)),
    })
}

/// Builds the pause's OCI runtime spec.
pub fn spec(p: &PauseParams<'_>) -> Result<oci_spec::runtime::Spec> {
    let rec = p.rec;
    let ns = &rec.namespaces;
    let mut namespaces = vec![json!({"type": "mount"})];
    if !ns.host_pid() {
        namespaces.push(json!({"type": "pid"}));
    }
    if !ns.host_ipc() {
        namespaces.push(json!({"type": "ipc"}));
    }
    if !ns.host_network() {
        // Kubernetes ties the UTS namespace to the network: host network means host hostname.
        namespaces.push(json!({"type": "uts"}));
        let netns = rec
            .netns
            .as_ref()
            .ok_or_else(|| Error::Internal("pod has no netns path".into()))?;
        namespaces.push(json!({"type": "network", "path": netns}));
    }
    let caps: Vec<&str> = Vec::new();
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup_paths(rec).1,
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
        "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });
    if !p.sysctls.is_empty() {
        linux["sysctl"] = json!(p.sysctls);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": PAUSE_UID, "gid": PAUSE_GID},
            "args": [PAUSE_COMMAND],
            "env": ["PATH=/"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps},
            "noNewPrivileges": true,
            "oomScoreAdj": crate::sys::clamp_oom_score_adj(PAUSE_OOM_SCORE_ADJ),
        },
        "root": {"path": p.rootfs, "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": rec.id,
            "io.kubernetes.cri.sandbox-name": rec.name,
            "io.kubernetes.cri.sandbox-namespace": rec.namespace,
            "io.kubernetes.cri.sandbox-uid": rec.uid,
        },
        "linux": linux,
    });
    if !ns.host_network() && !rec.hostname.is_empty() {
        spec["hostname"] = json!(rec.hostname);
    }
    serde_json::from_value(spec).map_err(|e| Error::Internal(format!("build pause spec: {e}")))
}

/// Writes the bundle (for status) and starts the pause under a monitor; returns the monitor's and the
/// pause's pids. On failure nothing runs: the monitor leaves nothing behind (the pause cgroup goes
/// with the pod's).
pub async fn start(
    rt: &Arc<dyn OciRuntime>,
    monitor_path: PathBuf,
    dir: &Path,
    params: &PauseParams<'_>,
) -> Result<monitor::Monitor> {
    let id = &params.rec.id;
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let spec = spec(params)?;
    let launch = launch(params)?;
    let cfg = dir.join("config.json");
    let data =
        serde_json::to_vec_pretty(&spec).map_err(|e| Error::Internal(format!("encode pause spec: {e}")))?;
    // The bundle lives in the pod's state dir (tmpfs, gone with the host, whose reboot ends the pause
    // too): a sync would protect nothing; the rename keeps readers from seeing half a file.
    crate::state::atomic_write_with(&cfg, &data, crate::state::Durability::Volatile)
        .ctx(format!("write {}", cfg.display()))?;
    let m = monitor::spawn(&monitor::MonitorSpec {
        id: id.clone(),
        bundle: dir.to_path_buf(),
        runtime_path: rt.path().to_path_buf(),
        runtime_root: rt.root().to_path_buf(),
        systemd_cgroup: rt.systemd_cgroup(),
        state_dir: dir.to_path_buf(),
        log_path: None,
        tty: false,
        stdin: false,
        stdin_once: false,
        start: true,
        pause: Some(launch),
        restore: None,
        monitor_path,
        announce_pid: false,
    })
    .await?;
    Ok(m)
}

/// Kills the pause (SIGKILL: it holds nothing to flush) and waits for its monitor to see it exit; a
/// pause whose monitor is gone is killed through its cgroup; one started through the runtime (by an
/// older crustd) is deleted from it. Idempotent.
pub async fn stop(rt: &Arc<dyn OciRuntime>, dir: &Path, rec: &PodRecord) -> Result<()> {
    let id = &rec.id;
    if monitor::is_alive(dir) && monitor::read_exit(dir).is_none() {
        monitor::signal_container(dir, libc::SIGKILL).ctx("kill pause")?;
        if monitor::wait_exit(dir, Duration::from_secs(10)).await.is_none() && monitor::is_alive(dir) {
            return Err(Error::DeadlineExceeded(format!(
                "pause of pod {id} did not exit within 10s of SIGKILL"
            )));
        }
    }
    if rec.cgroup.is_some() {
        crate::cgroups::kill_listed(&cgroup_paths(rec).0);
    }
    if rt.knows(id) {
        rt.delete(id, true).await.ctx("delete pause")?;
    }
    Ok(())
}

/// Whether the pause has exited (its monitor wrote the exit file or is gone).
pub fn exited(dir: &Path) -> bool {
    monitor::read_exit(dir).is_some() || !monitor::is_alive(dir)
}

/// The pause's runtime spec as written (for verbose status).
pub fn read_spec(dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()
}
