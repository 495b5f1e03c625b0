//! RunPodSandbox's request validation: every field checked and named, the pod's namespaces, user
//! namespace, hostname and sysctls settled into a [`NewPod`] before anything is made (`run`).

use std::collections::HashMap;

use cri_api::v1;

use super::record::{IdMap, NameKey, Namespaces, UserNs};
use super::{files, network};
use crate::validate;
use crate::{Error, Result};

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

pub(super) const NS_FIELD: &str = "config.linux.security_context.namespace_options";

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
}
