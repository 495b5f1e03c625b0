//! RunPodSandbox: request validation, the name reservation, then the steps — pod cgroup, netns, CNI
//! ADD, pod files and shm, pause — with the record written first (naming everything that will be made,
//! so a crash at any point can be undone) and a rollback of every step on failure.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1;

use super::files::{self, PodFiles};
use super::names::{self, Reservation};
use super::record::{IdMap, NameKey, Namespaces, NetworkRecord, PodRecord, PodState, UserNs};
use super::{Inner, netns, network, pause};
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::validate;
use crate::{Error, Result};

/// A validated RunPodSandbox request.
#[derive(Debug, Clone)]
pub struct NewPod {
    pub key: NameKey,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<v1::DnsConfig>,
    pub port_mappings: Vec<crust_cni::PortMapping>,
    pub bandwidth: Option<crust_cni::Bandwidth>,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub namespaces: Namespaces,
    pub sysctls: HashMap<String, String>,
    pub privileged: bool,
    /// The request's cgroup parent as sent ("" for none); the cgroup driver reads it.
    pub cgroup_parent: String,
    pub runtime_handler: String,
}

const NS_FIELD: &str = "config.linux.security_context.namespace_options";

/// Validates a RunPodSandbox request; every refusal names the field.
pub fn validate_run(req: v1::RunPodSandboxRequest) -> Result<NewPod> {
    let cfg = validate::present("config", &req.config)?;
    let md = validate::present("config.metadata", &cfg.metadata)?;
    validate::cni_arg("config.metadata.name", &md.name)?;
    validate::cni_arg("config.metadata.namespace", &md.namespace)?;
    validate::cni_arg("config.metadata.uid", &md.uid)?;
    if !cfg.hostname.is_empty() {
        hostname("config.hostname", &cfg.hostname)?;
    }
    if !cfg.log_directory.is_empty() && !cfg.log_directory.starts_with('/') {
        return Err(Error::invalid("config.log_directory", "must be an absolute path"));
    }
    if let Some(d) = &cfg.dns_config {
        files::validate_dns(d)?;
    }
    let port_mappings = network::port_mappings(&cfg.port_mappings)?;
    let bandwidth = network::bandwidth(&cfg.annotations)?;
    let linux = cfg.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let namespaces = Namespaces::from_cri(sc.namespace_options.as_ref());
    check_mode(&format!("{NS_FIELD}.network"), namespaces.network, &[0, 2])?;
    check_mode(&format!("{NS_FIELD}.ipc"), namespaces.ipc, &[0, 2])?;
    check_mode(&format!("{NS_FIELD}.pid"), namespaces.pid, &[0, 1, 2])?;
    if namespaces.host_network() && !cfg.hostname.is_empty() {
        // The node's network brings the node's UTS namespace: its containers would silently get the
        // node's hostname. containerd fails such a pod too (the hostname goes into the sandbox's spec,
        // and runc cannot set a hostname without a UTS namespace of its own); CRI-O instead gives
        // every pod a UTS namespace and so honours it. kubelet never sends one for a hostNetwork pod.
        return Err(Error::invalid(
            "config.hostname",
            format!(
                "{:?} cannot be set for a pod on the node's network ({NS_FIELD}.network = NODE), \
                 which shares the node's hostname",
                cfg.hostname
            ),
        ));
    }
    let mut namespaces = namespaces;
    namespaces.userns = userns(
        sc.namespace_options
            .as_ref()
            .and_then(|o| o.userns_options.as_ref()),
        &namespaces,
        sc.privileged,
    )?;
    let sysctls = sysctls(&linux.sysctls, &namespaces)?;
    if linux.cgroup_parent.contains(['\0', '\n']) {
        return Err(Error::invalid(
            "config.linux.cgroup_parent",
            "holds a NUL or newline, which no cgroup name can",
        ));
    }
    let v2 = crate::cgroups::is_v2();
    for (name, r) in [("overhead", &linux.overhead), ("resources", &linux.resources)] {
        if let Some(r) = r {
            // crust does not apply them (kubelet sizes the pod's cgroup itself), but values no kernel
            // could take are refused as UpdatePodSandboxResources refuses them.
            crate::container::resource_checks::check(r, v2, &format!("config.linux.{name}"))?;
        }
    }
    let cgroup_parent = linux.cgroup_parent.clone();
    Ok(NewPod {
        key: NameKey {
            name: md.name.clone(),
            namespace: md.namespace.clone(),
            uid: md.uid.clone(),
            attempt: md.attempt,
        },
        hostname: cfg.hostname.clone(),
        log_directory: cfg.log_directory.clone(),
        dns: cfg.dns_config.clone(),
        port_mappings,
        bandwidth,
        labels: cfg.labels.clone(),
        annotations: cfg.annotations.clone(),
        namespaces,
        sysctls,
        privileged: sc.privileged,
        cgroup_parent,
        runtime_handler: req.runtime_handler,
    })
}

fn hostname(field: &str, v: &str) -> Result<()> {
    let ok = v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !v.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("{v:?} is not a valid hostname")))
    }
}

/// The pod's user namespace: NODE (or none asked) is the host's; POD takes exactly one uid and one gid
/// mapping with container id 0 mapped, as kubelet sends; CONTAINER and TARGET mean nothing for a pod.
fn userns(u: Option<&v1::UserNamespace>, ns: &Namespaces, privileged: bool) -> Result<Option<UserNs>> {
    let field = format!("{NS_FIELD}.userns_options");
    let Some(u) = u else { return Ok(None) };
    let mapping = |what: &str, maps: &[v1::IdMapping]| -> Result<IdMap> {
        let f = format!("{field}.{what}");
        let [m] = maps else {
            return Err(Error::invalid(
                f,
                format!("exactly one mapping is supported, got {}", maps.len()),
            ));
        };
        if m.container_id != 0 {
            return Err(Error::invalid(
                f,
                format!(
                    "container id 0 must be mapped, the mapping starts at {}",
                    m.container_id
                ),
            ));
        }
        if m.length == 0 || u64::from(m.host_id) + u64::from(m.length) > 1 << 32 {
            return Err(Error::invalid(
                f,
                format!("{} ids from host id {} do not fit", m.length, m.host_id),
            ));
        }
        Ok(IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
    };
    match v1::NamespaceMode::try_from(u.mode) {
        Ok(v1::NamespaceMode::Node) if u.uids.is_empty() && u.gids.is_empty() => Ok(None),
        Ok(v1::NamespaceMode::Node) => Err(Error::invalid(field, "id mappings are only taken with mode POD")),
        Ok(v1::NamespaceMode::Pod) => {
            if privileged {
                return Err(Error::invalid(
                    field,
                    "a privileged pod cannot have its own user namespace",
                ));
            }
            if ns.host_network() || ns.host_ipc() || ns.host_pid() {
                return Err(Error::invalid(
                    field,
                    "a pod with its own user namespace cannot share the host's network, IPC or PID namespace",
                ));
            }
            Ok(Some(UserNs {
                uids: mapping("uids", &u.uids)?,
                gids: mapping("gids", &u.gids)?,
            }))
        }
        _ => Err(Error::invalid(
            field,
            format!(
                "mode {} is not supported for a user namespace: POD or NODE",
                u.mode
            ),
        )),
    }
}

fn check_mode(field: &str, mode: i32, allowed: &[i32]) -> Result<()> {
    if allowed.contains(&mode) {
        return Ok(());
    }
    let name = v1::NamespaceMode::try_from(mode)
        .map(|m| m.as_str_name())
        .unwrap_or("unknown");
    Err(Error::invalid(
        field,
        format!("namespace mode {name} ({mode}) is not allowed for a pod"),
    ))
}

/// Namespaced sysctls only (`net.*` needs the pod's own netns; IPC ones its own IPC namespace).
fn sysctls(req: &HashMap<String, String>, ns: &Namespaces) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in req {
        let key = k.replace('/', ".");
        let field = format!("config.linux.sysctls[{k}]");
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if !ipc && !net {
            return Err(Error::invalid(field, "not a namespaced sysctl"));
        }
        if net && ns.host_network() {
            return Err(Error::invalid(
                field,
                "cannot set a net.* sysctl for a pod on the host network",
            ));
        }
        if ipc && ns.host_ipc() {
            return Err(Error::invalid(
                field,
                "cannot set an IPC sysctl for a pod in the host IPC namespace",
            ));
        }
        if v.contains(['\n', '\0']) {
            return Err(Error::invalid(field, "value holds a newline"));
        }
        out.insert(key, v.clone());
    }
    Ok(out)
}

impl Daemon {
    /// RunPodSandbox: makes the pod (or waits for an in-flight identical request) and returns its ID.
    pub async fn run_pod_sandbox(&self, p: NewPod) -> Result<String> {
        let inner = self.sandboxes.inner.clone();
        // An unknown handler, or one whose binary is missing, and a parent the cgroup driver cannot
        // take are refused before anything is reserved.
        inner.runtimes.get_usable(&p.runtime_handler)?;
        inner.cgroups.pod_cgroup(&p.cgroup_parent, &"0".repeat(64))?;
        if p.namespaces.userns.is_some()
            && let Err(why) = &self.user_namespaces
        {
            return Err(Error::FailedPrecondition(format!(
                "{NS_FIELD}.userns_options: pods cannot have user namespaces on this node: {why}"
            )));
        }
        match inner.names.reserve(&p.key)? {
            Reservation::Wait(rx) => names::wait(rx).await,
            Reservation::Mine(ticket) => {
                let pod_cidr = self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // In a task of its own: a caller that goes away does not stop the creation half-way.
                let task = tokio::spawn(async move {
                    let r = inner.create(p, pod_cidr).await;
                    ticket.complete(&r);
                    r
                });
                let id = task
                    .await
                    .map_err(|e| Error::Internal(format!("RunPodSandbox task failed: {e}")))??;
                if let Ok(rec) = self.sandboxes.get(&id) {
                    self.nri.pod_event(crate::nri::Event::RUN_POD_SANDBOX, &rec).await;
                }
                Ok(id)
            }
        }
    }
}

impl Inner {
    async fn create(self: Arc<Self>, p: NewPod, pod_cidr: String) -> Result<String> {
        let id = crate::state::new_id();
        let _guard = self.locks.lock(&id).await;
        let ns = p.namespaces.clone();
        let network = if ns.host_network() {
            None
        } else {
            let net = network::default_network(&self.cni_conf_dir).ctx("RunPodSandbox: network")?;
            Some(NetworkRecord {
                name: net.name.clone(),
                config: net.raw.clone(),
                result: None,
                port_mappings: p.port_mappings.clone(),
                ip_ranges: network::ip_ranges(&pod_cidr),
                bandwidth: p.bandwidth.clone(),
            })
        };
        let pod_cgroup = self.cgroups.pod_cgroup(&p.cgroup_parent, &id)?;
        let files_dir = PodRecord::files_dir(&self.dirs, &id);
        // Everything that will be made is named in the record before any of it is made; undoing a thing
        // not made yet is a no-op, so one write covers every step.
        let mut rec = PodRecord {
            format: Default::default(),
            id: id.clone(),
            name: p.key.name.clone(),
            namespace: p.key.namespace.clone(),
            uid: p.key.uid.clone(),
            attempt: p.key.attempt,
            state: PodState::Creating,
            step: "record".into(),
            created_at: crate::state::now_nanos(),
            labels: p.labels.clone(),
            annotations: p.annotations.clone(),
            hostname: effective_hostname(&p),
            log_directory: p.log_directory.clone(),
            runtime_handler: p.runtime_handler.clone(),
            namespaces: ns.clone(),
            cgroup: Some(pod_cgroup.path.clone()),
            slice: pod_cgroup.slice.clone(),
            slice_owned: pod_cgroup.owned,
            netns: (!ns.host_network()).then(|| self.netns_path(&id)),
            userns: ns.userns.is_some().then(|| self.userns_path(&id)),
            network,
            ips: Vec::new(),
            shm: (!ns.host_ipc()).then(|| PodFiles::in_dir(&files_dir).shm),
            pause_started: true,
            pause_pid: 0,
            resources: None,
            privileged: Some(p.privileged),
            sysctls: p.sysctls.clone(),
            listed: Default::default(),
        };
        if let Err(e) = self.save(&rec) {
            self.pods.write().remove(&id);
            let _ = PodRecord::delete(&self.dirs, &id);
            return Err(e.context("RunPodSandbox: write the pod record"));
        }
        match self.create_steps(&mut rec, &p).await {
            Ok(()) => Ok(id),
            Err(e) => {
                let step = rec.step.clone();
                tracing::warn!(pod = %id, step = %step, error = %e, "RunPodSandbox failed; rolling back");
                if let Err(u) = self.destroy(&mut rec).await {
                    tracing::error!(pod = %id, error = %u, "rollback of a failed RunPodSandbox was incomplete");
                }
                // Name the step unless the error already does.
                if e.to_string().contains(&step) {
                    Err(e.context(format!("RunPodSandbox {}", p.key)))
                } else {
                    Err(e.context(format!("RunPodSandbox {}: {step}", p.key)))
                }
            }
        }
    }

    async fn create_steps(self: &Arc<Self>, rec: &mut PodRecord, p: &NewPod) -> Result<()> {
        let runtime = self.runtimes.get(&rec.runtime_handler)?;
        let t0 = std::time::Instant::now();
        let timing = |step: &str| {
            tracing::debug!(pod = %p.key, step, ms = t0.elapsed().as_secs_f64() * 1e3, "RunPodSandbox step done");
        };
        rec.step = "create the pod cgroup".into();
        if let Some(cg) = rec.pod_cgroup() {
            self.cgroups.create_pod(&cg)?;
        }
        match (rec.netns.clone(), rec.userns.clone(), rec.namespaces.userns) {
            (Some(net), Some(user), Some(maps)) => {
                rec.step = "create the user and network namespaces".into();
                netns::create_in_userns(&net, &user, maps).await?;
            }
            (Some(path), _, _) => {
                rec.step = "create the network namespace".into();
                netns::create(&path).await?;
            }
            _ => {}
        }
        timing(&rec.step);
        // The pause only needs the netns to exist, not its interfaces: CNI ADD and the pause start run
        // side by side (unless a sysctl names an interface CNI has yet to make).
        let snapshot = rec.clone();
        let add = async {
            match snapshot.network.as_ref() {
                Some(net) => {
                    let r = network::add(&self.cni, &snapshot, net).await;
                    timing("CNI ADD");
                    r.map(Some)
                }
                None => Ok(None),
            }
        };
        let start_pause = self.start_pause(&snapshot, p, &runtime);
        let (added, started) = if needs_interfaces(&p.sysctls) {
            let added = add.await;
            let started = if added.is_ok() { start_pause.await } else { Ok(0) };
            (added, started)
        } else {
            tokio::join!(add, start_pause)
        };
        timing("pause started");
        let mut failed = None;
        match added {
            Ok(Some(result)) => {
                rec.ips = network::pod_ips(&result);
                if let Some(n) = rec.network.as_mut() {
                    n.result = Some(result.raw);
                }
            }
            Ok(None) => {}
            Err(e) => {
                rec.step = format!(
                    "CNI ADD of network {:?}",
                    rec.network.as_ref().map(|n| n.name.as_str()).unwrap_or("")
                );
                failed = Some(e);
            }
        }
        match started {
            Ok(pid) => rec.pause_pid = pid,
            Err(e) if failed.is_none() => {
                rec.step = "start the pause container".into();
                failed = Some(e);
            }
            Err(e) => tracing::warn!(pod = %rec.id, error = %e, "pause start failed too"),
        }
        if let Some(e) = failed {
            // Keep what was made (the CNI result, for DEL's prevResult) on disk before the rollback.
            let _ = self.save(rec);
            return Err(e);
        }
        rec.state = PodState::Ready;
        rec.step = "ready".into();
        self.save(rec)?;
        self.watch_pause(&rec.id);
        Ok(())
    }

    /// Pod files, the shm mount, then the pause; returns the pause's pid.
    async fn start_pause(
        &self,
        rec: &PodRecord,
        p: &NewPod,
        runtime: &Arc<dyn crate::oci::OciRuntime>,
    ) -> Result<u32> {
        let pod_files = PodFiles::in_dir(&PodRecord::files_dir(&self.dirs, &rec.id));
        files::write(
            &pod_files,
            &rec.hostname,
            p.dns.as_ref(),
            rec.namespaces.host_network(),
        )
        .ctx("write the pod files")?;
        let dir = PodRecord::files_dir(&self.dirs, &rec.id);
        crate::state::set_mode(&dir, crate::state::private_dir_mode(rec.userns.is_some()))
            .ctx(format!("chmod {}", dir.display()))?;
        if let Some(shm) = &rec.shm {
            files::mount_shm(shm).ctx("mount the pod /dev/shm")?;
        }
        self.pause_prepared
            .get_or_try_init(|| async {
                crate::oci::pause::prepare_rootfs(&self.pause_rootfs, &self.pause_binary)
            })
            .await
            .ctx("prepare the pause root")?;
        let params = pause::PauseParams {
            rec,
            rootfs: &self.pause_rootfs,
            sysctls: &p.sysctls,
        };
        let m = pause::start(
            runtime,
            self.monitor_binary.clone(),
            &self.pause_dir(&rec.id),
            &params,
        )
        .await
        .ctx("start the pause container")?;
        // systemd: the pause into its scope in the pod's slice, its monitor into one of its own,
        // both before any container of the pod starts (the rollback stops them).
        if let Some(cg) = rec.pod_cgroup() {
            self.cgroups
                .place_pause(&cg, &rec.id, m.pid, m.container_pid)
                .await
                .ctx("place the pause and its monitor in systemd scopes")?;
        }
        Ok(m.container_pid)
    }
}

/// The pod's hostname: the host's with the host network, else the requested one or the pod name.
fn effective_hostname(p: &NewPod) -> String {
    if p.namespaces.host_network() {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    if p.hostname.is_empty() {
        // A pod name may be longer than the 64 bytes a hostname can hold: cut it at a character.
        let mut end = p.key.name.len().min(63);
        while !p.key.name.is_char_boundary(end) {
            end -= 1;
        }
        p.key.name[..end].to_string()
    } else {
        p.hostname.clone()
    }
}

/// Whether a sysctl names a network interface other than `all`, `default` or `lo` (such as
/// `net.ipv4.conf.eth0.forwarding`): then CNI must make the interface before the pause applies it.
fn needs_interfaces(sysctls: &HashMap<String, String>) -> bool {
    sysctls.keys().any(|k| {
        let parts: Vec<&str> = k.split('.').collect();
        parts.len() > 4
            && parts[0] == "net"
            && matches!(parts[2], "conf" | "neigh")
            && !matches!(parts[3], "all" | "default" | "lo")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> v1::RunPodSandboxRequest {
        v1::RunPodSandboxRequest {
            config: Some(v1::PodSandboxConfig {
                metadata: Some(v1::PodSandboxMetadata {
                    name: "web-0".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    /// A pod's Linux config with the network namespace mode `mode`.
    fn network(mode: i32) -> v1::LinuxPodSandboxConfig {
        v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: mode,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(r: Result<NewPod>) -> String {
        match r.unwrap_err() {
            Error::InvalidArgument { field, .. } => field,
            e => panic!("not InvalidArgument: {e}"),
        }
    }

    #[test]
    fn validation_names_fields() {
        validate_run(req()).unwrap();
        let mut r = req();
        r.config = None;
        assert_eq!(field_of(validate_run(r)), "config");
        for (f, set) in [
            (
                "config.metadata.name",
                Box::new(|m: &mut v1::PodSandboxMetadata| m.name = "a;IP=10.0.0.2".into())
                    as Box<dyn Fn(&mut _)>,
            ),
            (
                "config.metadata.name",
                Box::new(|m: &mut v1::PodSandboxMetadata| m.name.clear()),
            ),
            (
                "config.metadata.namespace",
                Box::new(|m: &mut v1::PodSandboxMetadata| m.namespace.clear()),
            ),
            (
                "config.metadata.uid",
                Box::new(|m: &mut v1::PodSandboxMetadata| m.uid.clear()),
            ),
        ] {
            let mut r = req();
            set(r.config.as_mut().unwrap().metadata.as_mut().unwrap());
            assert_eq!(field_of(validate_run(r)), f);
        }
        let mut r = req();
        let linux = v1::LinuxPodSandboxConfig {
            sysctls: [("kernel.hostname".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        r.config.as_mut().unwrap().linux = Some(linux);
        assert_eq!(field_of(validate_run(r)), "config.linux.sysctls[kernel.hostname]");
        let mut r = req();
        r.config.as_mut().unwrap().linux = Some(v1::LinuxPodSandboxConfig {
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            ..network(2)
        });
        assert_eq!(
            field_of(validate_run(r)),
            "config.linux.sysctls[net.ipv4.ip_forward]"
        );
        let mut r = req();
        r.config.as_mut().unwrap().linux = Some(network(3));
        assert_eq!(field_of(validate_run(r)), format!("{NS_FIELD}.network"));
        let mut r = req();
        r.config.as_mut().unwrap().hostname = "bad host".into();
        assert_eq!(field_of(validate_run(r)), "config.hostname");
        // The node's network: its hostname too, none of the pod's own.
        let mut r = req();
        r.config.as_mut().unwrap().linux = Some(network(2));
        validate_run(r.clone()).unwrap();
        r.config.as_mut().unwrap().hostname = "web-0".into();
        assert_eq!(field_of(validate_run(r)), "config.hostname");
    }

    #[test]
    fn interface_sysctls_wait_for_cni() {
        let m = |k: &str| [(k.to_string(), "1".to_string())].into();
        assert!(needs_interfaces(&m("net.ipv4.conf.eth0.forwarding")));
        assert!(!needs_interfaces(&m("net.ipv4.conf.all.forwarding")));
        assert!(!needs_interfaces(&m("net.ipv4.ip_unprivileged_port_start")));
        assert!(!needs_interfaces(&m("kernel.msgmax")));
    }
}
