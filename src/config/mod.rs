//! crustd's configuration: the types (every key with a default), so that `crustd config` can print the
//! effective configuration, generated from these types. Loading and validation live in `load`.

mod load;
pub mod reference;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use load::{ConfigError, Overrides, load};

/// The whole configuration (`/etc/crust/crust.toml` plus `/etc/crust/crust.d/*.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: images, records, writable layers.
    pub root: PathBuf,
    /// Runtime data (tmpfs, gone at reboot): socket, netns pins, bundles, monitor files.
    pub state: PathBuf,
    /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter directive).
    pub log_level: String,
    pub api: ApiConfig,
    pub runtime: RuntimeConfig,
    pub image: ImageConfig,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub stream: StreamConfig,
    pub metrics: MetricsConfig,
    pub nri: NriConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/crust".into(),
            state: "/run/crust".into(),
            log_level: "info".into(),
            api: ApiConfig::default(),
            runtime: RuntimeConfig::default(),
            image: ImageConfig::default(),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            stream: StreamConfig::default(),
            metrics: MetricsConfig::default(),
            nri: NriConfig::default(),
        }
    }
}

/// The gRPC socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket that serves CRI v1.
    pub socket: PathBuf,
    /// File mode of the socket, in octal.
    pub socket_mode: String,
    /// The admin socket `crustctl` uses for what CRI cannot express (import, export, tag, the
    /// configuration in effect): line-delimited JSON, mode 0600; empty means `<state>/admin.sock`.
    pub admin_socket: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: "/run/crust/crust.sock".into(),
            socket_mode: "0660".into(),
            admin_socket: PathBuf::new(),
        }
    }
}

/// OCI runtimes, the monitor and the pause, cgroups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Handler used when a request names none (RuntimeClass ""). `auto`: crun where the host has
    /// the unified cgroup hierarchy (v2) and a crun that runs (`handlers.crun.path`, else `crun` in
    /// `PATH`; a `crun` handler is then added when none is configured), runc otherwise (crun refuses
    /// cgroups v1 and the hybrid layout). `crustctl status` says which was chosen and why.
    pub default_handler: String,
    /// RuntimeClass handler name → OCI runtime.
    pub handlers: BTreeMap<String, RuntimeHandler>,
    /// The per-container monitor binary; empty means `crust-monitor` beside `crustd`.
    pub monitor_path: PathBuf,
    /// Keep one monitor started ahead of need, waiting for its arguments on a pipe, so that
    /// StartContainer and RunPodSandbox do not wait for a monitor's exec and start-up. Off: each
    /// monitor is started when needed with its arguments on its command line (for a `monitor_path`
    /// that is a wrapper reading them). A `monitor_path` whose standbys end at once (an older
    /// crust-monitor) turns it off after three in a row, with a warning. Read at start.
    pub monitor_standby: bool,
    /// The built-in pause binary; empty means `crust-pause` beside `crustd`.
    pub pause_path: PathBuf,
    /// Who manages cgroups: `systemd` (pods in slices, containers and crust's processes in
    /// scopes; as kubelet's `cgroupDriver: systemd`), `cgroupfs` (crust writes the tree itself),
    /// or `auto`: systemd when PID 1 is systemd. kubelet's driver must be the same (RuntimeConfig
    /// tells kubelet ≥ 1.31 which).
    pub cgroup_driver: String,
    /// Parent for pods whose config names none; each gets its own cgroup below it. A relative
    /// cgroup path with cgroupfs, a slice name with systemd (each pod then gets
    /// `<stem>-pod<id>.slice`, which crust stops with the pod). Empty: `crust` or `crust.slice`.
    pub cgroup_parent: String,
    /// Seconds to wait for a container to stop after SIGKILL before giving up.
    pub kill_timeout_seconds: u64,
    /// Seconds one call of the OCI runtime may take (`run` at StartContainer, `delete`, `update`,
    /// `state`, and an exec until its process runs), and a monitor's start of a container or a pause.
    /// Past it the runtime (or monitor) is killed with every process it started, and the request
    /// fails with DEADLINE_EXCEEDED naming the call. Keep it below kubelet's runtime request timeout
    /// (2 minutes), so that kubelet hears why.
    pub operation_timeout_seconds: u64,
    /// Largest stdout (and stderr) an ExecSync returns, in bytes.
    pub exec_sync_max_output: u64,
    /// Override the default masked paths (empty: the built-in list).
    pub masked_paths: Vec<String>,
    /// Override the default read-only paths (empty: the built-in list).
    pub readonly_paths: Vec<String>,
    /// Seconds between two measurements of a running container's writable layer (its bytes and
    /// inodes, for ContainerStats and the `container_fs_usage_bytes` metric): a background task walks
    /// each running container's layer at most this often, and the stats RPCs answer from that.
    pub writable_layer_refresh_seconds: u64,
    /// Seccomp profiles for `Localhost` references that are relative paths (kubelet's absolute
    /// paths are read where they point).
    pub seccomp_profile_root: PathBuf,
    /// Directories of CDI device specs (JSON or YAML), for `cdi_devices` and the `cdi.k8s.io/*`
    /// annotations; a device declared in a later directory overrides an earlier one.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut handlers = BTreeMap::new();
        handlers.insert("runc".to_string(), RuntimeHandler::default());
        RuntimeConfig {
            default_handler: crate::oci::default::AUTO.into(),
            handlers,
            monitor_path: PathBuf::new(),
            monitor_standby: true,
            pause_path: PathBuf::new(),
            cgroup_driver: "auto".into(),
            cgroup_parent: String::new(),
            kill_timeout_seconds: 10,
            operation_timeout_seconds: 60,
            exec_sync_max_output: 16 * 1024 * 1024,
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            writable_layer_refresh_seconds: 10,
            seccomp_profile_root: "/var/lib/crust/seccomp".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

/// One OCI runtime (runc-compatible command line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The runtime binary (runc or crun); a bare name is looked up in `PATH`. Also read as
    /// `runtime_path`, CRI-O's name for it.
    #[serde(alias = "runtime_path")]
    pub path: PathBuf,
    /// The runtime's own state dir (`--root`); empty means `<state>/runtime/<handler>`.
    pub root: PathBuf,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            path: "/usr/sbin/runc".into(),
            root: PathBuf::new(),
        }
    }
}

/// Image pulls and the image store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// A pull that receives no bytes for this many seconds fails.
    pub stall_timeout_seconds: u64,
    /// Seconds a registry may take over a manifest, index or token request: its headers, then its
    /// body, each within this (blobs are bounded by `stall_timeout_seconds` instead).
    pub request_timeout_seconds: u64,
    /// Tries of one registry request in a row that bring no new byte, after transient failures (a
    /// connection refused, reset or cut short, a stall, HTTP 408/429/500/502/503/504); 1: no retry.
    /// A cut blob resumes from where it stopped.
    pub retry_attempts: u32,
    /// Longest total wait between those tries (a registry's `Retry-After` included; one asking more
    /// fails the pull at once).
    pub retry_max_wait_seconds: u64,
    /// Largest uncompressed size of one layer: its tar stream, and the content of its files counted
    /// at their full size (holes of sparse files included). A larger layer fails the pull.
    pub max_layer_unpacked_bytes: u64,
    /// Most tar entries (files, directories, links, whiteouts, ...) one layer may have.
    pub max_layer_entries: u64,
    /// Images matching these patterns (`name`, `name:tag`, `prefix*`) are reported pinned.
    pub pinned_images: Vec<String>,
    /// A pause image to pull and pin at start (empty: crust's built-in pause needs none).
    pub pause_image: String,
    /// Platform wanted from multi-platform images, `os/arch[/variant]`; empty means this host's.
    pub platform: String,
    /// What a container gets for each `VOLUME` its image's config declares (CRI-O's `image_volumes`).
    pub volumes: ImageVolumes,
    /// A signature trust policy, `containers-policy.json(5)` as CRI-O and Podman read it (absolute
    /// path): what an image needs before a pull stores it, per registry, namespace, repository or
    /// image (`insecureAcceptAnything`, `reject`, `sigstoreSigned` with cosign public keys). Read at
    /// each pull; a pull it refuses fails with FAILED_PRECONDITION. Empty: every image is accepted.
    pub signature_policy: PathBuf,
    /// A directory of per-namespace policies (absolute path): a pull for a pod in namespace `ns` uses
    /// `<dir>/ns.json` when it exists, else `signature_policy` (CRI-O's `signature_policy_dir`).
    pub signature_policy_dir: PathBuf,
}

/// The handling of the volumes an image's config declares (`VOLUME` in a Dockerfile).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageVolumes {
    /// A writable directory of the container's own, filled with the image's content at that path
    /// and mounted there, also under a read-only root filesystem (containerd's behaviour).
    #[default]
    Copy,
    /// The path is made a directory in the container's root filesystem, owned by the container's
    /// user when created; nothing is mounted (CRI-O's default, `mkdir`).
    Mkdir,
    /// Declared volumes are ignored (containerd's `ignore_image_defined_volumes`).
    Ignore,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_concurrent_downloads: 3,
            stall_timeout_seconds: 60,
            request_timeout_seconds: 60,
            retry_attempts: 5,
            retry_max_wait_seconds: 60,
            max_layer_unpacked_bytes: 32 << 30,
            max_layer_entries: 4 << 20,
            pinned_images: Vec::new(),
            pause_image: String::new(),
            platform: String::new(),
            volumes: ImageVolumes::Copy,
            signature_policy: PathBuf::new(),
            signature_policy_dir: PathBuf::new(),
        }
    }
}

/// Registries, in the shape containerd users know.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`) → its mirrors.
    pub mirrors: BTreeMap<String, Mirror>,
    /// Registry host (or mirror host) → auth and TLS.
    pub configs: BTreeMap<String, HostConfig>,
    /// A containerd-style `certs.d` directory: `<config_path>/<host>/hosts.toml` (or `_default/`)
    /// configures a registry host's endpoints and TLS, read at each pull and preferred over `mirrors`.
    /// Empty: not used.
    pub config_path: PathBuf,
}

/// Mirrors of one registry host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Mirror {
    /// Endpoints tried in order, e.g. `http://127.0.0.1:5000` (http:// means plain HTTP).
    pub endpoint: Vec<String>,
    /// Try the registry host itself after its mirrors. Off for air-gapped nodes.
    pub fallback_to_upstream: bool,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            endpoint: Vec::new(),
            fallback_to_upstream: true,
        }
    }
}

/// Auth and TLS for one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Credentials for this host.
    pub auth: AuthConfig,
    /// TLS towards this host.
    pub tls: TlsConfig,
    /// Talk plain HTTP to this host even without an `http://` endpoint.
    pub insecure: bool,
}

/// Credentials for one host (used when the request carries none).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// User name, with `password`.
    pub username: String,
    /// Password (or a token the registry takes as one), with `username`.
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the registry's token endpoint.
    pub identitytoken: String,
}

/// TLS settings for one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra CA bundle (PEM).
    pub ca_file: PathBuf,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: PathBuf,
    /// The client certificate's key (PEM).
    pub key_file: PathBuf,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
}

/// CNI networking.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Network configurations (`.conf`, `.conflist`, `.json`); the first in name order is the default.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked up, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Seconds one plugin invocation may take.
    pub plugin_timeout_seconds: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            plugin_timeout_seconds: 60,
        }
    }
}

/// The streaming server (Exec, Attach, PortForward).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Listen address.
    pub address: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Serve TLS with this certificate (PEM) and `tls_key_file` when both are set.
    pub tls_cert_file: PathBuf,
    /// The key of `tls_cert_file` (PEM).
    pub tls_key_file: PathBuf,
    /// Seconds a streaming URL stays valid.
    pub token_timeout_seconds: u64,
    /// Seconds a streaming connection may see no traffic either way before it is closed (kubelet's
    /// and containerd's default: 4 h); 0 never closes it.
    pub idle_timeout_seconds: u64,
    /// Exec, attach and port-forward sessions served at once; more are refused (HTTP 429).
    pub max_sessions: usize,
    /// Sessions at once on one container (port-forward: one pod); more are refused (HTTP 429).
    pub max_sessions_per_container: usize,
    /// SPDY streams a client may have open at once on one connection; more are reset
    /// (RST_STREAM REFUSED_STREAM).
    pub max_streams_per_connection: usize,
    /// Port-forward connections (SPDY stream pairs, WebSocket ports) at once on one connection; more
    /// are refused with a message on their error stream (WebSocket: HTTP 429).
    pub max_port_forwards_per_connection: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            address: "127.0.0.1".into(),
            port: 0,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            token_timeout_seconds: 60,
            idle_timeout_seconds: 4 * 3600,
            max_sessions: 256,
            max_sessions_per_container: 32,
            max_streams_per_connection: 256,
            max_port_forwards_per_connection: 64,
        }
    }
}

/// crustd's own Prometheus metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` serving `/metrics` over HTTP (e.g. `127.0.0.1:9090`); empty turns the metrics off.
    pub address: String,
}

/// The Node Resource Interface: plugins that see and adjust pods and containers (as containerd 2.x,
/// on by default; with no plugin connected nothing changes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NriConfig {
    /// Whether NRI is on: the socket is served and pre-installed plugins are started.
    pub enable: bool,
    /// The unix socket external plugins connect to; its directory is created if missing.
    pub socket_path: PathBuf,
    /// Pre-installed plugins, started by crustd: executables named `<index>-<name>` (two digits).
    pub plugin_path: PathBuf,
    /// Configuration handed to a pre-installed plugin: `<index>-<name>.conf` or `<name>.conf` here.
    pub plugin_config_path: PathBuf,
    /// How long a plugin may take to register after it connects (e.g. `5s`, `500ms`).
    pub plugin_registration_timeout: String,
    /// How long a plugin may take to answer one request; one that does not is disconnected and the
    /// request goes on without it (e.g. `2s`).
    pub plugin_request_timeout: String,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            enable: true,
            socket_path: "/var/run/nri/nri.sock".into(),
            plugin_path: "/opt/nri/plugins".into(),
            plugin_config_path: "/etc/nri/conf.d".into(),
            plugin_registration_timeout: "5s".into(),
            plugin_request_timeout: "2s".into(),
        }
    }
}

/// A duration written as a number with a unit: `ms`, `s` or `m` (`1500ms`, `2s`, `1m`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(std::time::Duration::from_millis(n)),
        "s" => Some(std::time::Duration::from_secs(n)),
        "m" => Some(std::time::Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

impl Config {
    /// The socket's mode bits.
    pub fn socket_mode(&self) -> u32 {
        u32::from_str_radix(self.api.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o660)
    }

    /// Path of a sibling binary of the running crustd (or `configured` when set).
    pub fn helper_binary(configured: &std::path::Path, name: &str) -> PathBuf {
        if !configured.as_os_str().is_empty() {
            return configured.to_path_buf();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(name)))
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// The cgroup driver `runtime.cgroup_driver` means on this host (`auto` resolved); a value
    /// `load` would refuse counts as cgroupfs.
    pub fn cgroup_driver(&self) -> crate::cgroups::Driver {
        crate::cgroups::driver::resolve(
            &self.runtime.cgroup_driver,
            crate::cgroups::driver::systemd_booted(),
        )
        .unwrap_or(crate::cgroups::Driver::Cgroupfs)
    }

    /// The monitor binary.
    pub fn monitor_binary(&self) -> PathBuf {
        Self::helper_binary(&self.runtime.monitor_path, "crust-monitor")
    }

    /// The admin socket (`api.admin_socket`, else `<state>/admin.sock`).
    pub fn admin_socket(&self) -> PathBuf {
        if self.api.admin_socket.as_os_str().is_empty() {
            self.state.join("admin.sock")
        } else {
            self.api.admin_socket.clone()
        }
    }

    /// The pause binary.
    pub fn pause_binary(&self) -> PathBuf {
        Self::helper_binary(&self.runtime.pause_path, "crust-pause")
    }
}
