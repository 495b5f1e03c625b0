//! CNI: load network configurations, invoke plugins, parse results.
//!
//! `load_dir` reads a configuration directory (the first file in name order is the default network);
//! `Cni::add` / `del` / `check` run a network's plugin list with the CNI environment, `prevResult`
//! chaining and `runtimeConfig` capabilities, each plugin under a timeout. Spec versions 0.1.0 through
//! 1.1.0 are accepted; results are parsed into `CniResult`.

mod config;
mod exec;
mod result;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use config::{Loaded, NetworkConfig, load_dir};
pub use exec::{Command, Spawner, find_plugin, set_spawner};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};

/// The spec versions crust accepts in network configurations.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A CNI failure; the message names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A network configuration is invalid.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// No binary for a plugin type.
    #[error("plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    /// The plugin failed; `msg` is its own message.
    #[error("plugin {plugin}: {msg}")]
    Plugin {
        plugin: String,
        code: Option<u32>,
        msg: String,
    },
    /// The plugin took too long and was killed.
    #[error("plugin {plugin} timed out after {secs}s and was killed")]
    Timeout { plugin: String, secs: f64 },
    /// A plugin printed a result crust cannot read.
    #[error("bad result: {0}")]
    Result(String),
}

/// A port mapping for the `portMappings` capability (portmap plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `bandwidth` capability (bandwidth plugin), in bits per second and bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// One range of the `ipRanges` capability (host-local IPAM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_start: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range_end: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

/// What a plugin invocation is about: the container, its netns, and runtime arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (a path).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability name → value; passed in `runtimeConfig` to plugins that declare the capability.
    pub capabilities: Map<String, Value>,
}

impl RuntimeConf {
    /// The usual Kubernetes runtime configuration: `eth0`, the `K8S_POD_*` args and `IgnoreUnknown=1`.
    pub fn for_pod(container_id: &str, netns: PathBuf, namespace: &str, name: &str, uid: &str) -> Self {
        RuntimeConf {
            container_id: container_id.to_string(),
            netns,
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), namespace.into()),
                ("K8S_POD_NAME".into(), name.into()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.into()),
                ("K8S_POD_UID".into(), uid.into()),
            ],
            capabilities: Map::new(),
        }
    }

    /// Sets the `portMappings` capability (skipped when empty).
    pub fn with_port_mappings(mut self, ports: &[PortMapping]) -> Self {
        if !ports.is_empty() {
            self.capabilities.insert(
                "portMappings".into(),
                serde_json::to_value(ports).unwrap_or_default(),
            );
        }
        self
    }

    /// Sets the `bandwidth` capability.
    pub fn with_bandwidth(mut self, bw: &Bandwidth) -> Self {
        self.capabilities
            .insert("bandwidth".into(), serde_json::to_value(bw).unwrap_or_default());
        self
    }

    /// Sets the `ipRanges` capability (a list of range sets).
    pub fn with_ip_ranges(mut self, ranges: &[Vec<IpRange>]) -> Self {
        if !ranges.is_empty() {
            self.capabilities.insert(
                "ipRanges".into(),
                serde_json::to_value(ranges).unwrap_or_default(),
            );
        }
        self
    }

    /// The `CNI_ARGS` value: `K=V;K=V`.
    pub fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Compares dotted versions numerically: is `v` at least `min`?
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(v) >= parse(min)
}

/// Runs plugins from `bin_dirs` with a per-plugin timeout.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Plugin directories, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// How long one plugin may run.
    pub timeout: Duration,
}

impl Cni {
    /// A runner.
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Cni { bin_dirs, timeout }
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The configuration one plugin gets: its own object plus the list's name and version,
    /// `prevResult`, and the `runtimeConfig` entries for the capabilities it declares.
    pub fn plugin_conf(
        net: &NetworkConfig,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(net.name.clone()));
        conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        let mut runtime = Map::new();
        if let Some(Value::Object(caps)) = plugin.get("capabilities") {
            for (name, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = rt.capabilities.get(name)
                {
                    runtime.insert(name.clone(), v.clone());
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    async fn invoke(
        &self,
        command: Command,
        net: &NetworkConfig,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Result<Option<Value>, CniError> {
        let ty = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let bin = find_plugin(&self.bin_dirs, ty)?;
        let conf = Self::plugin_conf(net, plugin, prev, rt);
        exec::run(&bin, ty, command, &conf, rt, &self.cni_path(), self.timeout).await
    }

    /// ADD: runs the plugins in order, each getting the previous one's result. Returns the last result.
    pub async fn add(&self, net: &NetworkConfig, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let ty = plugin
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let out = self.invoke(Command::Add, net, plugin, prev.as_ref(), rt).await?;
            match out {
                Some(v) => {
                    // Validate each result as it comes, naming the plugin that printed it.
                    CniResult::parse(v.clone()).map_err(|e| CniError::Plugin {
                        plugin: ty,
                        code: None,
                        msg: e.to_string(),
                    })?;
                    prev = Some(v);
                }
                None if prev.is_some() => {}
                None => {
                    return Err(CniError::Plugin {
                        plugin: ty,
                        code: None,
                        msg: "ADD printed no result".into(),
                    });
                }
            }
        }
        let last = prev.ok_or_else(|| CniError::Config("network has no plugins".into()))?;
        CniResult::parse(last)
    }

    /// DEL: runs the plugins in reverse order with the cached ADD result as `prevResult` (0.4.0 and
    /// later). Every plugin is tried; the first failure is returned.
    pub async fn del(
        &self,
        net: &NetworkConfig,
        rt: &RuntimeConf,
        cached: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev = cached.filter(|_| version_at_least(&net.cni_version, "0.4.0"));
        let mut first_err = None;
        for plugin in net.plugins.iter().rev() {
            if let Err(e) = self.invoke(Command::Del, net, plugin, prev, rt).await {
                tracing::warn!(network = %net.name, error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK: runs the plugins in order with the cached ADD result (0.4.0 and later; skipped for
    /// older versions or when the list says `disableCheck`).
    pub async fn check(&self, net: &NetworkConfig, rt: &RuntimeConf, cached: &Value) -> Result<(), CniError> {
        if net.disable_check || !version_at_least(&net.cni_version, "0.4.0") {
            return Ok(());
        }
        for plugin in &net.plugins {
            self.invoke(Command::Check, net, plugin, Some(cached), rt).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
