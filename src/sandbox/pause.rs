//! The pod's infra container: crust's built-in `crust-pause`, run from a shared read-only root under a
//! monitor like any container. Its OCI spec holds the pod's IPC and UTS namespaces (and PID when
//! shared), joins the pinned netns, sits in the pod cgroup, and applies the pod's sysctls.

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

/// The pause's cgroup: `<pod cgroup>/pause` (containers use their 64-hex IDs, so no clash), absolute
/// for the runtime.
pub fn cgroup_path(pod_cgroup: &str) -> String {
    format!("/{pod_cgroup}/pause")
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
        "cgroupsPath": cgroup_path(rec.cgroup.as_deref().unwrap_or_default()),
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

/// Writes the bundle, starts the pause under a monitor and starts it; returns its pid. On failure
/// nothing runs (the monitor leaves nothing behind; a started-but-failed pause is stopped here).
pub async fn start(
    rt: &Arc<dyn OciRuntime>,
    monitor_path: PathBuf,
    dir: &Path,
    params: &PauseParams<'_>,
) -> Result<u32> {
    let id = &params.rec.id;
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let spec = spec(params)?;
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
        state_dir: dir.to_path_buf(),
        log_path: None,
        tty: false,
        stdin: false,
        stdin_once: false,
        monitor_path,
    })
    .await?;
    if let Err(e) = rt.start(id).await {
        let _ = stop(rt, dir, id).await;
        return Err(e);
    }
    Ok(m.container_pid)
}

/// Kills the pause (SIGKILL: it holds nothing to flush), waits for its monitor to see it exit, and
/// deletes it from the runtime. Idempotent.
pub async fn stop(rt: &Arc<dyn OciRuntime>, dir: &Path, id: &str) -> Result<()> {
    if monitor::is_alive(dir) && monitor::read_exit(dir).is_none() {
        match rt.kill(id, libc::SIGKILL, false).await {
            Ok(()) | Err(Error::NotFound(_)) | Err(Error::FailedPrecondition(_)) => {}
            Err(e) => return Err(e.context("kill pause")),
        }
        if monitor::wait_exit(dir, Duration::from_secs(10)).await.is_none() && monitor::is_alive(dir) {
            return Err(Error::DeadlineExceeded(format!(
                "pause of pod {id} did not exit within 10s of SIGKILL"
            )));
        }
    }
    rt.delete(id, true).await.ctx("delete pause")
}

/// Whether the pause has exited (its monitor wrote the exit file or is gone).
pub fn exited(dir: &Path) -> bool {
    monitor::read_exit(dir).is_some() || !monitor::is_alive(dir)
}

/// The pause's runtime spec as written (for verbose status).
pub fn read_spec(dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()
}
