//! Runtime-wide RPCs: Version, Status, RuntimeConfig, UpdateRuntimeConfig.

use std::collections::HashMap;

use cri_api::v1;

use crate::daemon::Daemon;
use crate::{Error, Result};

/// The CRI API version crust speaks.
pub const CRI_API_VERSION: &str = "v1";

/// `Version`.
pub async fn version(_d: &Daemon, _req: v1::VersionRequest) -> Result<v1::VersionResponse> {
    Ok(v1::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crust".into(),
        runtime_version: crate::version::RUNTIME_VERSION.into(),
        runtime_api_version: CRI_API_VERSION.into(),
    })
}

/// `Status`: the runtime is ready once it serves; the network is ready when a CNI config loads.
pub async fn status(d: &Daemon, req: v1::StatusRequest) -> Result<v1::StatusResponse> {
    let runtime = v1::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    let network = match d.sandboxes.network_ready() {
        Ok(()) => v1::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            ..Default::default()
        },
        Err(msg) => v1::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("Network plugin returns error: {msg}"),
        },
    };
    // Not one of the conditions kubelet requires: it says whether CheckpointContainer and restores
    // can work here, and if not why.
    let checkpoint = match crate::oci::criu::probe().await {
        Ok(_) => v1::RuntimeCondition {
            r#type: "CheckpointRestoreReady".into(),
            status: true,
            ..Default::default()
        },
        Err(why) => v1::RuntimeCondition {
            r#type: "CheckpointRestoreReady".into(),
            status: false,
            reason: "CRIUNotWorking".into(),
            message: why.clone(),
        },
    };
    let mut info = HashMap::new();
    if req.verbose {
        let cfg =
            serde_json::to_string(&d.config).map_err(|e| Error::Internal(format!("config as JSON: {e}")))?;
        info.insert("config".to_string(), cfg);
        let cidr = d.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default();
        info.insert("podCIDR".to_string(), serde_json::Value::String(cidr).to_string());
        // As containerd's `crictl info`: whether NRI is on, where, and the plugins connected.
        let nri = serde_json::json!({
            "enable": d.config.nri.enable,
            "socketPath": d.config.nri.socket_path,
            "plugins": d.nri.plugins(),
        });
        info.insert("nri".to_string(), nri.to_string());
        let rts = d.containers.runtimes();
        let default = serde_json::json!({"name": rts.default_handler(), "reason": rts.default_reason()});
        info.insert("defaultRuntimeHandler".to_string(), default.to_string());
        let userns = serde_json::json!({
            "supported": d.user_namespaces.is_ok(),
            "reason": d.user_namespaces.as_ref().err(),
        });
        info.insert("userNamespaces".to_string(), userns.to_string());
    }
    Ok(v1::StatusResponse {
        status: Some(v1::RuntimeStatus {
            conditions: vec![runtime, network, checkpoint],
        }),
        info,
        runtime_handlers: runtime_handlers(d),
        features: Some(v1::RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}

fn runtime_handlers(d: &Daemon) -> Vec<v1::RuntimeHandler> {
    let features = || {
        Some(v1::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: d.user_namespaces.is_ok(),
        })
    };
    let mut out = vec![v1::RuntimeHandler {
        name: String::new(),
        features: features(),
    }];
    out.extend(
        d.containers
            .runtimes()
            .names()
            .into_iter()
            .map(|name| v1::RuntimeHandler {
                name,
                features: features(),
            }),
    );
    out
}

/// `RuntimeConfig`: the cgroup driver.
pub async fn runtime_config(d: &Daemon, _req: v1::RuntimeConfigRequest) -> Result<v1::RuntimeConfigResponse> {
    let driver = match d.cgroups.driver() {
        crate::cgroups::Driver::Systemd => v1::CgroupDriver::Systemd,
        crate::cgroups::Driver::Cgroupfs => v1::CgroupDriver::Cgroupfs,
    };
    Ok(v1::RuntimeConfigResponse {
        linux: Some(v1::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}

/// `UpdateRuntimeConfig`: records the pod CIDR.
pub async fn update_runtime_config(
    d: &Daemon,
    req: v1::UpdateRuntimeConfigRequest,
) -> Result<v1::UpdateRuntimeConfigResponse> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    if !cidr.is_empty() {
        for part in cidr.split(',') {
            let ok = part.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
            });
            if !ok {
                return Err(Error::invalid(
                    "runtime_config.network_config.pod_cidr",
                    format!("not a CIDR: {part:?}"),
                ));
            }
        }
    }
    if let Ok(mut c) = d.pod_cidr.lock() {
        *c = cidr;
    }
    Ok(v1::UpdateRuntimeConfigResponse {})
}
