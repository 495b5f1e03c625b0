//! A container's record (`<root>/containers/<id>.json`): what was asked, how far creation got, and how
//! the container ended; plus serde mirrors of the CRI messages it keeps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri_api::v1;
use serde::{Deserialize, Serialize};

use crate::state::Dirs;
use crate::{Error, Result};

/// How far creation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Record written, resources being made; rolled back at start-up.
    Creating,
    /// Rootfs and bundle made (CREATED or later; the runtime sees it at start).
    Created,
}

/// A CRI bind mount, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
    pub recursive_read_only: bool,
    /// An image volume's image and sub-path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_sub_path: String,
    /// An image volume's image by digest, as found at create (empty in records of older crustds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_ref: String,
}

impl MountRecord {
    /// The record of `m`; `image_ref`, the digest reference of an image volume's image.
    pub fn from_cri(m: &v1::Mount, image_ref: Option<&str>) -> Self {
        MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: m.propagation,
            recursive_read_only: m.recursive_read_only,
            image: m.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            image_sub_path: m.image_sub_path.clone(),
            image_ref: image_ref.unwrap_or_default().to_string(),
        }
    }
    pub fn to_cri(&self) -> v1::Mount {
        v1::Mount {
            container_path: self.container_path.clone(),
            host_path: self.host_path.clone(),
            readonly: self.readonly,
            propagation: self.propagation,
            recursive_read_only: self.recursive_read_only,
            image: (!self.image.is_empty()).then(|| v1::ImageSpec {
                image: self.image.clone(),
                image_ref: self.image_ref.clone(),
                ..Default::default()
            }),
            image_sub_path: self.image_sub_path.clone(),
            ..Default::default()
        }
    }
}

/// CRI `LinuxContainerResources`, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourcesRecord {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<(String, u64)>,
    pub unified: HashMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

impl ResourcesRecord {
    pub fn from_cri(r: &v1::LinuxContainerResources) -> Self {
        ResourcesRecord {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            hugepage_limits: r
                .hugepage_limits
                .iter()
                .map(|h| (h.page_size.clone(), h.limit))
                .collect(),
            unified: r.unified.clone(),
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        }
    }
    /// `self` with every value `new` sets (non-zero, non-empty) replaced, as the runtime applies an
    /// update.
    pub fn merged(&self, new: &ResourcesRecord) -> ResourcesRecord {
        fn pick<T: Clone + Default + PartialEq>(old: &T, new: &T) -> T {
            if *new == T::default() {
                old.clone()
            } else {
                new.clone()
            }
        }
        ResourcesRecord {
            cpu_period: pick(&self.cpu_period, &new.cpu_period),
            cpu_quota: pick(&self.cpu_quota, &new.cpu_quota),
            cpu_shares: pick(&self.cpu_shares, &new.cpu_shares),
            memory_limit_in_bytes: pick(&self.memory_limit_in_bytes, &new.memory_limit_in_bytes),
            oom_score_adj: self.oom_score_adj,
            cpuset_cpus: pick(&self.cpuset_cpus, &new.cpuset_cpus),
            cpuset_mems: pick(&self.cpuset_mems, &new.cpuset_mems),
            hugepage_limits: pick(&self.hugepage_limits, &new.hugepage_limits),
            unified: pick(&self.unified, &new.unified),
            memory_swap_limit_in_bytes: pick(
                &self.memory_swap_limit_in_bytes,
                &new.memory_swap_limit_in_bytes,
            ),
        }
    }

    pub fn to_cri(&self) -> v1::LinuxContainerResources {
        v1::LinuxContainerResources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            memory_limit_in_bytes: self.memory_limit_in_bytes,
            oom_score_adj: self.oom_score_adj,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            hugepage_limits: self
                .hugepage_limits
                .iter()
                .map(|(p, l)| v1::HugepageLimit {
                    page_size: p.clone(),
                    limit: *l,
                })
                .collect(),
            unified: self.unified.clone(),
            memory_swap_limit_in_bytes: self.memory_swap_limit_in_bytes,
        }
    }
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The record's format (`crate::state::format`).
    #[serde(default)]
    pub format: crate::state::format::Format<{ crate::state::format::CONTAINER_RECORD }>,
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    pub step: Step,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    /// Set once the container has exited (exit file read, or the monitor found gone).
    #[serde(default)]
    pub exited: bool,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// The image as the config named it.
    pub image: String,
    #[serde(default)]
    pub image_annotations: HashMap<String, String>,
    #[serde(default)]
    pub user_specified_image: String,
    pub image_id: String,
    pub image_ref: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    #[serde(default)]
    pub log_path: String,
    #[serde(default)]
    pub resources: ResourcesRecord,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
    pub stop_signal: i32,
    #[serde(default)]
    pub runtime_handler: String,
    /// Relative cgroup path (`<pod cgroup>/<id>`).
    pub cgroup: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    /// Layer dirs (lowest first) the rootfs is made of.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// A container created from a checkpoint: the dir holding CRIU's images (`checkpoint/`), which
    /// StartContainer restores from; empty once started, and for any other container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore: String,
    /// ListContainers' entry, kept once written (all but the state is fixed from creation on).
    #[serde(skip)]
    pub listed: crate::wire::Frozen,
}

/// CRI view of a record's lifecycle state.
pub fn cri_state(r: &ContainerRecord) -> v1::ContainerState {
    if r.exited {
        v1::ContainerState::ContainerExited
    } else if r.step == Step::Creating {
        v1::ContainerState::ContainerUnknown
    } else if r.started_at != 0 {
        v1::ContainerState::ContainerRunning
    } else {
        v1::ContainerState::ContainerCreated
    }
}

impl ContainerRecord {
    /// `<root>/containers/<id>.json`.
    pub fn path(dirs: &Dirs, id: &str) -> PathBuf {
        dirs.container_records().join(format!("{id}.json"))
    }

    /// Writes the record atomically, durable against power loss (file and directory synced).
    pub fn save(&self, dirs: &Dirs) -> Result<()> {
        self.save_with(dirs, crate::state::Durability::Full)
    }

    /// Writes the record atomically with the syncs `durability` asks for.
    pub fn save_with(&self, dirs: &Dirs, durability: crate::state::Durability) -> Result<()> {
        let p = Self::path(dirs, &self.id);
        crate::state::write_json_with(&p, self, durability)
            .map_err(|e| Error::io(format!("write container record {}", p.display()), e))
    }

    /// Deletes the record (idempotent).
    pub fn delete(dirs: &Dirs, id: &str) -> Result<()> {
        let p = Self::path(dirs, id);
        crate::state::remove_file_idempotent(&p)
            .map_err(|e| Error::io(format!("remove container record {}", p.display()), e))
    }

    /// Records how the container ended.
    pub fn set_exit(&mut self, st: &crate::monitor::ExitStatus) {
        self.exited = true;
        self.exit_code = st.exit_code;
        self.finished_at = if st.finished_at_ns != 0 {
            st.finished_at_ns
        } else {
            crate::state::now_nanos()
        };
        if st.oom_killed {
            self.reason = "OOMKilled".into();
            self.message = format!(
                "killed by the OOM killer (memory limit {} bytes)",
                self.resources.memory_limit_in_bytes
            );
        } else if st.exit_code == 0 {
            self.reason = "Completed".into();
            self.message = String::new();
        } else {
            self.reason = "Error".into();
            self.message = if st.signal != 0 {
                format!("killed by signal {}", st.signal)
            } else {
                format!("exited with code {}", st.exit_code)
            };
        }
    }

    /// Marks a container whose start failed exited, as containerd does: code 128, reason `StartError`,
    /// the runtime's words as the message.
    pub fn set_start_error(&mut self, why: &str) {
        self.exited = true;
        self.exit_code = 128;
        self.finished_at = crate::state::now_nanos();
        self.reason = "StartError".into();
        self.message = why.to_string();
    }

    /// Marks the container exited with an unknown status (its monitor is gone without an exit file).
    pub fn set_unknown_exit(&mut self, why: &str) {
        self.exited = true;
        self.exit_code = 255;
        self.finished_at = crate::state::now_nanos();
        self.reason = "Unknown".into();
        self.message = why.to_string();
    }
}

/// `log_path` inside `log_directory`, as the CRI defines it: an absolute `log_path` is still taken
/// relative to the pod's log directory (as containerd joins them), so a container's log never lands
/// elsewhere; `None` without a `log_path` or a log directory (nowhere sensible to write). `..` is refused
/// at validation.
pub(super) fn log_path(log_dir: &str, log_path: &str) -> Option<PathBuf> {
    if log_path.is_empty() {
        return None;
    }
    if !Path::new(log_dir).is_absolute() {
        tracing::warn!(
            log_path,
            "the pod has no log_directory; the container's output is discarded"
        );
        return None;
    }
    Some(Path::new(log_dir).join(log_path.trim_start_matches('/')))
}

#[cfg(test)]
#[test]
fn log_paths() {
    assert_eq!(
        log_path("/var/log/pods/x", "c/0.log"),
        Some(PathBuf::from("/var/log/pods/x/c/0.log"))
    );
    assert_eq!(log_path("", "c/0.log"), None);
    assert_eq!(log_path("/var/log", ""), None);
    assert_eq!(log_path("", "/tmp/c.log"), None);
    assert_eq!(
        log_path("/var/log/pods/x", "/etc/cron.d/evil"),
        Some(PathBuf::from("/var/log/pods/x/etc/cron.d/evil"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::ExitStatus;

    fn rec() -> ContainerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "abc", "pod_id": "p", "name": "c", "attempt": 0, "step": "created", "created_at": 1,
            "image": "busybox", "image_id": "sha256:x", "image_ref": "sha256:x", "uid": 0, "gid": 0,
            "stop_signal": 15, "cgroup": "crust/p/abc",
        }))
        .unwrap()
    }

    #[test]
    fn exit_reasons_and_states() {
        let mut r = rec();
        assert_eq!(cri_state(&r), v1::ContainerState::ContainerCreated);
        r.started_at = 2;
        assert_eq!(cri_state(&r), v1::ContainerState::ContainerRunning);
        let st = |code, signal, oom| ExitStatus {
            exit_code: code,
            signal,
            oom_killed: oom,
            finished_at_ns: 3,
            ..Default::default()
        };
        r.set_exit(&st(0, 0, false));
        assert_eq!(
            (cri_state(&r), r.reason.as_str(), r.finished_at),
            (v1::ContainerState::ContainerExited, "Completed", 3)
        );
        r.set_exit(&st(3, 0, false));
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("Error", "exited with code 3")
        );
        r.set_exit(&st(137, 9, true));
        assert_eq!((r.exit_code, r.reason.as_str()), (137, "OOMKilled"));
        r.set_unknown_exit("gone");
        assert_eq!((r.exit_code, r.reason.as_str()), (255, "Unknown"));
    }

    #[test]
    fn resources_update_keeps_unset_values() {
        let old = ResourcesRecord {
            memory_limit_in_bytes: 100,
            cpu_shares: 2,
            ..Default::default()
        };
        let new = ResourcesRecord {
            cpu_shares: 512,
            ..Default::default()
        };
        let m = old.merged(&new);
        assert_eq!((m.memory_limit_in_bytes, m.cpu_shares), (100, 512));
        assert_eq!(ResourcesRecord::from_cri(&m.to_cri()), m);
    }
}
