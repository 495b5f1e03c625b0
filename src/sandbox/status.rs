//! PodSandboxStatus and ListPodSandbox, served from memory.

use std::collections::HashMap;

use cri_api::v1;

use super::record::PodRecord;
use super::{Inner, Sandboxes, pause};

/// ListPodSandbox's filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Full ID or prefix.
    pub id: String,
    pub state: Option<v1::PodSandboxState>,
    pub labels: HashMap<String, String>,
}

impl Inner {
    fn cri_state(&self, rec: &PodRecord) -> v1::PodSandboxState {
        if self.is_ready(rec) {
            v1::PodSandboxState::SandboxReady
        } else {
            v1::PodSandboxState::SandboxNotready
        }
    }
}

fn metadata(rec: &PodRecord) -> v1::PodSandboxMetadata {
    v1::PodSandboxMetadata {
        name: rec.name.clone(),
        uid: rec.uid.clone(),
        namespace: rec.namespace.clone(),
        attempt: rec.attempt,
    }
}

/// Whether every selector label is on the pod with the same value.
pub fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Sandboxes {
    /// PodSandboxStatus (and, when `verbose`, the `info` map with the pause pid and runtime spec).
    pub fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> crate::Result<(v1::PodSandboxStatus, HashMap<String, String>)> {
        let inner = &self.inner;
        if !verbose {
            // Every pod's status is asked for every second: built under the lock, no record copied.
            return inner.with_pod(id, |rec| (status_of(inner, rec), HashMap::new()));
        }
        let rec = inner.get(id)?;
        let status = status_of(inner, &rec);
        let mut info = HashMap::new();
        let ctx = inner.context(&rec);
        let v = serde_json::json!({
            "pid": rec.pause_pid,
            "state": rec.state,
            "step": rec.step,
            "netnsPath": ctx.netns_path,
            "cgroupParent": ctx.cgroup_parent,
            "runtimeHandler": rec.runtime_handler,
            "runtimeSpec": pause::read_spec(&inner.pause_dir(&rec.id)),
            "cniResult": rec.network.as_ref().and_then(|n| n.result.clone()),
            "network": rec.network.as_ref().map(|n| n.name.clone()),
            "resources": rec.resources,
        });
        info.insert("info".to_string(), v.to_string());
        Ok((status, info))
    }

    /// ListPodSandbox, built under the lock without copying the records.
    pub fn list(&self, f: &ListFilter) -> Vec<v1::PodSandbox> {
        let inner = &self.inner;
        let mut out: Vec<v1::PodSandbox> = inner.with_pods(|pods| {
            pods.values()
                .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
                .filter(|r| labels_match(&f.labels, &r.labels))
                .filter_map(|r| {
                    let state = inner.cri_state(r);
                    if f.state.is_some_and(|s| s != state) {
                        return None;
                    }
                    Some(v1::PodSandbox {
                        id: r.id.clone(),
                        metadata: Some(metadata(r)),
                        state: state as i32,
                        created_at: r.created_at,
                        labels: r.labels.clone(),
                        annotations: r.annotations.clone(),
                        runtime_handler: r.runtime_handler.clone(),
                    })
                })
                .collect()
        });
        out.sort_unstable_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }
}

/// A pod's CRI status (without the verbose info).
fn status_of(inner: &Inner, rec: &PodRecord) -> v1::PodSandboxStatus {
    let mut ips = rec.ips.iter();
    let network = v1::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
    };
    v1::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(metadata(rec)),
        state: inner.cri_state(rec) as i32,
        created_at: rec.created_at,
        network: Some(network),
        linux: Some(v1::LinuxPodSandboxStatus {
            namespaces: Some(v1::Namespace {
                options: Some(rec.namespaces.to_cri()),
            }),
        }),
        labels: rec.labels.clone(),
        annotations: rec.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector() {
        let labels: HashMap<_, _> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        assert!(labels_match(&HashMap::new(), &labels));
        assert!(labels_match(
            &[("app".to_string(), "web".to_string())].into(),
            &labels
        ));
        assert!(!labels_match(
            &[("app".to_string(), "db".to_string())].into(),
            &labels
        ));
        assert!(!labels_match(
            &[("x".to_string(), "web".to_string())].into(),
            &labels
        ));
    }
}
