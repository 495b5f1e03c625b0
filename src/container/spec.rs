//! The OCI runtime spec of a container, built (as a pure function of its inputs) from the CRI
//! `ContainerConfig`, the pod's `PodSandboxConfig` and context, and the image config: process (command,
//! env, cwd, user), mounts and pod files, devices, security, resources, namespaces, annotations.

use std::collections::HashMap;
use std::path::Path;

use cri_api::v1;
use cri_api::v1::{NamespaceMode, SupplementalGroupsPolicy};
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

pub use super::mounts::{HostDevice, all_host_devices, host_devices};
use super::resources;
use super::security::{self, DEFAULT_MASKED, DEFAULT_READONLY};
use super::user::{self, ResolvedUser, UserRequest};
use crate::sandbox::PodContext;
use crate::{Error, Result};

/// The parts of the image config the spec uses.
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    /// The paths the image declares as volumes (`VOLUME`), as written.
    pub volumes: Vec<String>,
}

impl ImageDefaults {
    /// From an image configuration.
    pub fn from_image(c: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = c.config() else {
            return Self::default();
        };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            stop_signal: c.stop_signal().clone().unwrap_or_default(),
            volumes: c.volumes().clone().unwrap_or_default(),
        }
    }
}

/// What the spec needs from the pod: the sandbox's view of it, plus what the pod's CRI config says that
/// the sandbox does not keep.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub ctx: PodContext,
    pub hostname: String,
    pub privileged: bool,
    pub sysctls: HashMap<String, String>,
}

/// Host facts and configuration the spec depends on.
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// The host runs AppArmor (kernel and `apparmor_parser`): containers get profiles.
    pub apparmor: bool,
    /// `runtime.seccomp_profile_root`: where relative `Localhost` seccomp profiles are.
    pub seccomp_profile_root: std::path::PathBuf,
    pub cgroup_v2: bool,
    /// Capabilities crustd holds ("all" for privileged containers).
    pub all_caps: Vec<String>,
    /// `runtime.masked_paths` / `runtime.readonly_paths` overrides (empty: built-in defaults).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// `runtime.cdi_spec_dirs`.
    pub cdi_spec_dirs: Vec<std::path::PathBuf>,
    /// `image.volumes`: what the volumes images declare become.
    pub image_volumes: crate::config::ImageVolumes,
}

/// Everything the builder reads.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub config: &'a v1::ContainerConfig,
    pub image: &'a ImageDefaults,
    pub image_name: &'a str,
    pub pod: &'a PodInfo,
    pub rootfs: &'a Path,
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The CRI devices, resolved on the host.
    pub devices: Vec<HostDevice>,
    /// Every host device (used only when privileged).
    pub host_devices: Vec<HostDevice>,
    /// PID of the target container of a TARGET pid namespace.
    pub target_pid: Option<u32>,
    pub host: &'a HostInfo,
    /// Idmapped clones of CRI mounts (by index in `config.mounts`) to bind instead of their host paths.
    pub idmapped_volumes: &'a HashMap<usize, std::path::PathBuf>,
    /// The edits of the container's CDI devices, resolved on the host.
    pub cdi: &'a super::cdi::Resolved,
    /// Mounted image volumes (by index in `config.mounts`): the host path to bind.
    pub image_volumes: &'a HashMap<usize, std::path::PathBuf>,
    /// The volumes the image declares that get a directory of their own, bound read-write.
    pub declared_volumes: &'a [super::declared_volumes::Declared],
}

/// The spec plus what the status reports about it.
#[derive(Debug)]
pub struct Built {
    pub spec: Spec,
    pub user: ResolvedUser,
    pub stop_signal: i32,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Command as kubelet expects: `command` replaces the entrypoint (and drops the image Cmd), `args`
/// replace the image Cmd.
pub fn command(cfg: &v1::ContainerConfig, img: &ImageDefaults) -> Result<Vec<String>> {
    let mut out = if cfg.command.is_empty() {
        img.entrypoint.clone()
    } else {
        cfg.command.clone()
    };
    if !cfg.args.is_empty() {
        out.extend(cfg.args.iter().cloned());
    } else if cfg.command.is_empty() {
        out.extend(img.cmd.iter().cloned());
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "config.command",
            "no command given and the image has no Entrypoint or Cmd",
        ));
    }
    Ok(out)
}

fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv.split('=').next().unwrap_or("").to_string();
    match env.iter_mut().find(|e| e.split('=').next() == Some(key.as_str())) {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// Environment: `HOSTNAME`, then the image's, then the CRI envs (later ones replace by key); a default
/// `PATH` when none is set.
pub fn env(cfg: &v1::ContainerConfig, img: &ImageDefaults, hostname: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !hostname.is_empty() {
        out.push(format!("HOSTNAME={hostname}"));
    }
    for e in &img.env {
        set_env(&mut out, e.clone());
    }
    for kv in &cfg.envs {
        set_env(
            &mut out,
            format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)),
        );
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// Containers' RLIMIT_NOFILE: soft 1024, hard 524288 (containerd 2's), each no higher than crustd's
/// own hard limit, which only CAP_SYS_RESOURCE could raise.
fn nofile_rlimit() -> Value {
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes the local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    let hard = own.rlim_max.min(524_288);
    json!({"type": "RLIMIT_NOFILE", "soft": hard.min(1024), "hard": hard})
}

/// Namespaces: the pod's netns (by path; none for host network), IPC and UTS of the pause, PID per mode.
fn namespaces(inp: &SpecInput) -> Result<Vec<Value>> {
    let p = &inp.pod.ctx;
    let pod_ns = &p.namespace_options;
    let ctr_ns = inp
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_else(|| pod_ns.clone());
    let pause_ns = |kind: &str| p.pause_pid.map(|pid| format!("/proc/{pid}/ns/{kind}"));
    let ns = |t: &str, path: Option<String>| match path {
        Some(path) => json!({"type": t, "path": path}),
        None => json!({"type": t}),
    };
    // A pod with its own user namespace: joined first (runc does), the others belong to it.
    let mut out = match &p.userns_path {
        Some(u) => vec![json!({"type": "user", "path": u}), ns("mount", None)],
        None => vec![ns("mount", None)],
    };
    if let Some(n) = &p.netns_path {
        out.push(json!({"type": "network", "path": n}));
    }
    let host_ipc = pod_ns.ipc == NamespaceMode::Node as i32;
    if !host_ipc {
        out.push(ns("ipc", pause_ns("ipc")));
    }
    let host_net = p.netns_path.is_none();
    if !host_net {
        out.push(ns("uts", pause_ns("uts")));
    }
    match NamespaceMode::try_from(ctr_ns.pid) {
        Ok(NamespaceMode::Pod) => out.push(ns("pid", pause_ns("pid"))),
        Ok(NamespaceMode::Container) => out.push(ns("pid", None)),
        Ok(NamespaceMode::Node) => {}
        Ok(NamespaceMode::Target) => {
            let pid = inp.target_pid.ok_or_else(|| {
                Error::NotFound(format!(
                    "config.linux.security_context.namespace_options.target_id: container {:?} is not running",
                    ctr_ns.target_id
                ))
            })?;
            out.push(ns("pid", Some(format!("/proc/{pid}/ns/pid"))));
        }
        Err(_) => {
            return Err(Error::invalid(
                "config.linux.security_context.namespace_options.pid",
                format!("unknown mode {}", ctr_ns.pid),
            ));
        }
    }
    Ok(out)
}

fn is_net_sysctl(k: &str) -> bool {
    k.starts_with("net.")
}

fn is_ipc_sysctl(k: &str) -> bool {
    matches!(
        k,
        "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
    ) || k.starts_with("fs.mqueue.")
}

/// Builds the spec.
pub fn build(inp: &SpecInput) -> Result<Built> {
    let cfg = inp.config;
    let sc = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let privileged = sc.privileged;
    if privileged && !inp.pod.privileged {
        return Err(Error::invalid(
            "config.linux.security_context.privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    let args = command(cfg, inp.image)?;
    let env = env(cfg, inp.image, &inp.pod.hostname);
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else if !inp.image.working_dir.is_empty() {
        inp.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "config.working_dir",
            format!("{cwd:?} is not absolute"),
        ));
    }
    let user = user::resolve(
        &UserRequest {
            run_as_user: sc.run_as_user.map(|v| v.value),
            run_as_username: sc.run_as_username.clone(),
            run_as_group: sc.run_as_group.map(|v| v.value),
            supplemental_groups: sc.supplemental_groups.clone(),
            strict: sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32,
            image_user: inp.image.user.clone(),
        },
        inp.passwd,
        inp.group,
    )?;
    let stop_signal = if cfg.stop_signal != v1::Signal::RuntimeDefault as i32 {
        let name = v1::Signal::try_from(cfg.stop_signal)
            .map(|s| s.as_str_name())
            .map_err(|_| {
                Error::invalid(
                    "config.stop_signal",
                    format!("unknown signal {}", cfg.stop_signal),
                )
            })?;
        security::parse_signal(name)
            .ok_or_else(|| Error::invalid("config.stop_signal", format!("unsupported signal {name}")))?
    } else if !inp.image.stop_signal.is_empty() {
        security::parse_signal(&inp.image.stop_signal).ok_or_else(|| {
            Error::invalid(
                "image config StopSignal",
                format!("unknown signal {:?}", inp.image.stop_signal),
            )
        })?
    } else {
        libc::SIGTERM
    };

    // Security.
    let caps_cfg = sc.capabilities.clone().unwrap_or_default();
    let caps = security::capabilities(
        privileged,
        &caps_cfg.add_capabilities,
        &caps_cfg.drop_capabilities,
        &inp.host.all_caps,
    )?;
    let mut ambient = Vec::new();
    for c in &caps_cfg.add_ambient_capabilities {
        ambient.push(security::normalize_cap(
            "config.linux.security_context.capabilities.add_ambient_capabilities",
            c,
        )?);
    }
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": ambient},
        "noNewPrivileges": sc.no_new_privs,
        // Set, not inherited: crustd's own limits (a unit's LimitNOFILE=1048576) are not the
        // container's. containerd 2's default: select(2)-safe soft limit, a generous hard one.
        "rlimits": [nofile_rlimit()],
    });
    let resources_cfg = cfg
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    if resources_cfg.oom_score_adj != 0 || crate::sys::own_oom_score_adj() != 0 {
        process["oomScoreAdj"] = json!(crate::sys::clamp_oom_score_adj(resources_cfg.oom_score_adj));
    }
    let seccomp = if privileged {
        None
    } else {
        security::seccomp_profile(&sc, &caps, &inp.host.seccomp_profile_root)?
    };
    if inp.host.apparmor
        && !privileged
        && let Some(p) = super::apparmor::container_profile(&sc, &super::apparmor::loaded_profiles())?
    {
        process["apparmorProfile"] = json!(p);
    }

    let (mounts, rootfs_propagation) = super::mounts::mounts(inp, privileged, sc.readonly_rootfs)?;
    let mut ns = namespaces(inp)?;
    if !privileged {
        // A cgroup namespace of its own: the container sees its cgroup as the root (`0::/` on v2),
        // not the host's tree, as containerd and CRI-O give every non-privileged container (on v1
        // too: runc mounts each hierarchy's own cgroup there). Privileged ones keep the host's.
        ns.push(json!({"type": "cgroup"}));
    }
    let mut linux = json!({
        "namespaces": ns,
        "cgroupsPath": crate::cgroups::Cgroups::container_paths(
            &inp.pod.ctx.cgroup_parent,
            inp.pod.ctx.cgroup_slice.as_deref(),
            inp.id,
        )
        .1,
        "resources": resources::to_json(&resources_cfg, inp.host.cgroup_v2, "config.linux.resources")?,
    });
    if inp.pod.ctx.userns_path.is_some()
        && let Some(u) = &inp.pod.ctx.namespace_options.userns_options
    {
        let maps = |m: &[v1::IdMapping]| -> Vec<Value> {
            m.iter()
                .map(|m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.length}))
                .collect()
        };
        linux["uidMappings"] = json!(maps(&u.uids));
        linux["gidMappings"] = json!(maps(&u.gids));
    }
    let pick = |cri: &[String], cfgd: &[String], dflt: &[&str]| -> Vec<String> {
        if !cri.is_empty() {
            cri.to_vec()
        } else if !cfgd.is_empty() {
            cfgd.to_vec()
        } else {
            dflt.iter().map(|s| s.to_string()).collect()
        }
    };
    if !privileged {
        linux["maskedPaths"] = json!(pick(&sc.masked_paths, &inp.host.masked_paths, DEFAULT_MASKED));
        linux["readonlyPaths"] = json!(pick(
            &sc.readonly_paths,
            &inp.host.readonly_paths,
            DEFAULT_READONLY
        ));
    }
    if let Some(s) = seccomp {
        linux["seccomp"] = s;
    }
    if let Some(p) = rootfs_propagation {
        linux["rootfsPropagation"] = json!(p);
    }
    let host_net = inp.pod.ctx.netns_path.is_none();
    let host_ipc = inp.pod.ctx.namespace_options.ipc == NamespaceMode::Node as i32;
    let sysctls: HashMap<&String, &String> = inp
        .pod
        .sysctls
        .iter()
        .filter(|(k, _)| !(host_net && is_net_sysctl(k) || host_ipc && is_ipc_sysctl(k)))
        .collect();
    if !sysctls.is_empty() {
        linux["sysctl"] = json!(sysctls);
    }
    let devs: &[HostDevice] = if privileged {
        &inp.host_devices
    } else {
        &inp.devices
    };
    let mut cgroup_devs = vec![json!({"allow": false, "access": "rwm"})];
    if privileged {
        cgroup_devs.push(json!({"allow": true, "access": "rwm"}));
    }
    let mut devices = Vec::new();
    for d in devs
        .iter()
        .chain(if privileged { inp.devices.iter() } else { [].iter() })
    {
        devices.push(json!({
            "path": d.container_path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
            "fileMode": d.mode, "uid": d.uid, "gid": d.gid,
        }));
        if !privileged {
            cgroup_devs.push(json!({
                "allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
                "access": if d.permissions.is_empty() { "rwm" } else { d.permissions.as_str() },
            }));
        }
    }
    if !devices.is_empty() {
        linux["devices"] = json!(devices);
    }
    linux["resources"]["devices"] = json!(cgroup_devs);

    let mut annotations: HashMap<String, String> = cfg.annotations.clone().into_iter().collect();
    let meta = cfg.metadata.clone().unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", meta.name.as_str()),
        ("io.kubernetes.cri.sandbox-id", inp.pod.ctx.id.as_str()),
        ("io.kubernetes.cri.sandbox-name", inp.pod.ctx.name.as_str()),
        (
            "io.kubernetes.cri.sandbox-namespace",
            inp.pod.ctx.namespace.as_str(),
        ),
        ("io.kubernetes.cri.sandbox-uid", inp.pod.ctx.uid.as_str()),
        ("io.kubernetes.cri.image-name", inp.image_name),
    ] {
        annotations.insert(k.to_string(), v.to_string());
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "root": {"path": inp.rootfs, "readonly": sc.readonly_rootfs},
        "process": process,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    super::cdi::apply(&mut spec, inp.cdi)?;
    let spec: Spec = serde_json::from_value(spec)
        .map_err(|e| Error::Internal(format!("built an invalid OCI spec: {e}")))?;
    Ok(Built {
        spec,
        user,
        stop_signal,
    })
}
