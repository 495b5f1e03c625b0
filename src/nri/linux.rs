//! The Linux part of an NRI container adjustment: devices (with their cgroup rule), resources,
//! the OOM score, sysctls, namespaces, the seccomp policy, I/O priority, the scheduler, network
//! devices and RDT, applied to the OCI spec as containerd's NRI spec generator applies them.
//!
//! What the node or its runtime cannot honour is refused naming the plugin rather than written into
//! a spec the runtime would silently ignore: I/O priority and scheduler need a runtime that knows
//! runtime-spec 1.1, network devices one whose `features` says it injects them, RDT a mounted
//! resctrl. `cgroupsPath` is refused: crust finds a container's cgroup from its pod and ID.

use nri_api::nri as api;
use serde_json::{Value, json};

use super::adjust::{Host, Owners, arr, bad, obj, removal};
use crate::Result;

/// Namespace types the OCI runtime spec knows.
const NAMESPACES: &[&str] = &["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];

/// Applies the Linux part of one plugin's adjustment to `spec`.
pub fn apply(
    spec: &mut Value,
    l: &api::LinuxContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
    host: &Host,
) -> Result<()> {
    for d in &l.devices {
        if let Some(path) = removal(&d.path) {
            owners.clear(&format!("device {path:?}"));
            arr(&mut spec["linux"], "devices").retain(|x| x["path"] != path);
            continue;
        }
        if !d.path.starts_with("/dev/") {
            return Err(bad(
                plugin,
                "linux.devices",
                format!("device path {:?} is not under /dev", d.path),
            ));
        }
        if !matches!(d.type_.as_str(), "c" | "b" | "u" | "p") {
            return Err(bad(
                plugin,
                "linux.devices",
                format!("device {:?} has type {:?} (c, b, u or p)", d.path, d.type_),
            ));
        }
        owners.claim(format!("device {:?}", d.path), plugin)?;
        let mut j = json!({"path": d.path, "type": d.type_, "major": d.major, "minor": d.minor});
        if let Some(m) = d.file_mode.as_ref() {
            j["fileMode"] = json!(m.value);
        }
        if let Some(u) = d.uid.as_ref() {
            j["uid"] = json!(u.value);
        }
        if let Some(g) = d.gid.as_ref() {
            j["gid"] = json!(g.value);
        }
        let devices = arr(&mut spec["linux"], "devices");
        devices.retain(|x| x["path"] != d.path.as_str());
        devices.push(j);
        // As containerd: an injected device is also allowed in the device cgroup.
        let res = obj(&mut spec["linux"], "resources");
        let rules = res.entry("devices").or_insert_with(|| json!([]));
        if let Some(rules) = rules.as_array_mut() {
            rules.push(
                json!({"allow": true, "type": d.type_, "major": d.major, "minor": d.minor, "access": "rwm"}),
            );
        }
    }
    if let Some(r) = l.resources.as_ref() {
        super::adjust::resources(&mut spec["linux"], r, plugin, owners)?;
    }
    if !l.cgroups_path.is_empty() {
        // containerd writes it into the spec; crust cannot: its stats, OOM watch, cgroup.kill on
        // stop and the pod's cleanup all find a container's cgroup from its pod and ID, so a
        // container moved elsewhere would escape them.
        return Err(bad(
            plugin,
            "linux.cgroups_path",
            format!(
                "cgroups path {:?}: crust places each container in its pod's cgroup and finds it \
                 there (stats, OOM, stop, pod cleanup), so it does not move containers elsewhere",
                l.cgroups_path
            ),
        ));
    }
    if let Some(o) = l.oom_score_adj.as_ref() {
        if !(-1000..=1000).contains(&o.value) {
            return Err(bad(
                plugin,
                "linux.oom_score_adj",
                format!("{} is outside -1000..1000", o.value),
            ));
        }
        owners.claim("oom score adjustment".into(), plugin)?;
        obj(spec, "process").insert("oomScoreAdj".into(), json!(o.value));
    }
    for (k, v) in &l.sysctl {
        owners.claim(format!("sysctl {k:?}"), plugin)?;
        obj(&mut spec["linux"], "sysctl").insert(k.clone(), json!(v));
    }
    namespaces(spec, &l.namespaces, plugin, owners)?;
    if let Some(p) = l.seccomp_policy.as_ref() {
        owners.claim("seccomp policy".into(), plugin)?;
        spec["linux"]["seccomp"] = seccomp(p);
    }
    let features = || crate::oci::features::features(&host.runtime);
    let too_old = |what: &str, f: &crate::oci::features::Features| {
        format!(
            "{what} needs an OCI runtime that knows runtime-spec 1.1; {} knows {} (it would ignore it)",
            host.runtime.display(),
            f.oci_max_text
        )
    };
    if let Some(p) = l.io_priority.as_ref() {
        let f = features();
        if !f.knows_spec(1, 1) {
            return Err(bad(plugin, "linux.io_priority", too_old("I/O priority", &f)));
        }
        owners.claim("I/O priority".into(), plugin)?;
        obj(spec, "process").insert("ioPriority".into(), io_priority(p));
    }
    if let Some(s) = l.scheduler.as_ref() {
        // As NRI: policy SCHED_NONE means no change.
        if s.policy.enum_value_or_default() != api::LinuxSchedulerPolicy::SCHED_NONE {
            let f = features();
            if !f.knows_spec(1, 1) {
                return Err(bad(plugin, "linux.scheduler", too_old("a scheduler policy", &f)));
            }
            owners.claim("scheduler".into(), plugin)?;
            obj(spec, "process").insert("scheduler".into(), scheduler(s));
        }
    }
    net_devices(spec, l, plugin, owners, host)?;
    if let Some(r) = l.rdt.as_ref() {
        rdt(spec, r, plugin, owners)?;
    }
    Ok(())
}

/// Namespaces added, replaced (by type) or removed (`-type`). containerd applies these as they come,
/// and so does crust: a plugin may even take the container out of its pod's network namespace, or
/// put it into another's. Plugins are node-trusted code; only malformed entries are refused.
fn namespaces(
    spec: &mut Value,
    list: &[api::LinuxNamespace],
    plugin: &str,
    owners: &mut Owners,
) -> Result<()> {
    for n in list {
        let (kind, remove) = match removal(&n.type_) {
            Some(k) => (k, true),
            None => (n.type_.as_str(), false),
        };
        if !NAMESPACES.contains(&kind) {
            return Err(bad(
                plugin,
                "linux.namespaces",
                format!("unknown namespace type {:?}", n.type_),
            ));
        }
        if !remove && !n.path.is_empty() && !n.path.starts_with('/') {
            return Err(bad(
                plugin,
                "linux.namespaces",
                format!("{kind} namespace path {:?} is not absolute", n.path),
            ));
        }
        let list = arr(&mut spec["linux"], "namespaces");
        list.retain(|x| x["type"] != kind);
        if remove {
            owners.clear(&format!("namespace {kind}"));
        } else {
            owners.claim(format!("namespace {kind}"), plugin)?;
            let mut j = json!({"type": kind});
            if !n.path.is_empty() {
                j["path"] = json!(n.path);
            }
            list.push(j);
        }
    }
    Ok(())
}

/// A seccomp policy replacing the container's (as containerd replaces it). The runtime checks the
/// actions, architectures and operators when it loads it.
fn seccomp(p: &api::LinuxSeccomp) -> Value {
    let mut j = json!({"defaultAction": p.default_action});
    if let Some(e) = p.default_errno.as_ref() {
        j["defaultErrnoRet"] = json!(e.value);
    }
    if !p.architectures.is_empty() {
        j["architectures"] = json!(p.architectures);
    }
    if !p.flags.is_empty() {
        j["flags"] = json!(p.flags);
    }
    if !p.listener_path.is_empty() {
        j["listenerPath"] = json!(p.listener_path);
    }
    if !p.listener_metadata.is_empty() {
        j["listenerMetadata"] = json!(p.listener_metadata);
    }
    let syscalls: Vec<Value> = p
        .syscalls
        .iter()
        .map(|s| {
            let mut c = json!({"names": s.names, "action": s.action});
            if let Some(e) = s.errno_ret.as_ref() {
                c["errnoRet"] = json!(e.value);
            }
            if !s.args.is_empty() {
                c["args"] = s
                    .args
                    .iter()
                    .map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
                    .collect();
            }
            c
        })
        .collect();
    if !syscalls.is_empty() {
        j["syscalls"] = json!(syscalls);
    }
    j
}

/// `process.ioPriority` (runtime-spec 1.1).
fn io_priority(p: &api::LinuxIOPriority) -> Value {
    let class = match p.class.enum_value_or_default() {
        api::IOPrioClass::IOPRIO_CLASS_RT => "IOPRIO_CLASS_RT",
        api::IOPrioClass::IOPRIO_CLASS_BE => "IOPRIO_CLASS_BE",
        api::IOPrioClass::IOPRIO_CLASS_IDLE => "IOPRIO_CLASS_IDLE",
        api::IOPrioClass::IOPRIO_CLASS_NONE => "IOPRIO_CLASS_NONE",
    };
    json!({"class": class, "priority": p.priority})
}

/// `process.scheduler` (runtime-spec 1.1), names as the spec spells them.
fn scheduler(s: &api::LinuxScheduler) -> Value {
    // The generated enums' Debug output is the proto's value name, which is the OCI spelling.
    let policy = format!("{:?}", s.policy.enum_value_or_default());
    let flags: Vec<String> = s
        .flags
        .iter()
        .map(|f| format!("{:?}", f.enum_value_or_default()))
        .collect();
    let mut j = json!({"policy": policy, "nice": s.nice, "priority": s.priority});
    if !flags.is_empty() {
        j["flags"] = json!(flags);
    }
    if s.runtime != 0 || s.deadline != 0 || s.period != 0 {
        j["runtime"] = json!(s.runtime);
        j["deadline"] = json!(s.deadline);
        j["period"] = json!(s.period);
    }
    j
}

/// `linux.netDevices` (runtime-spec 1.2): host interfaces moved into the container's network
/// namespace, keyed by host name (`-name` removes). Refused where the runtime does not inject them.
fn net_devices(
    spec: &mut Value,
    l: &api::LinuxContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
    host: &Host,
) -> Result<()> {
    let mut keys: Vec<&String> = l.net_devices.keys().collect();
    keys.sort();
    for k in keys {
        if let Some(name) = removal(k) {
            owners.clear(&format!("network device {name:?}"));
            obj(&mut spec["linux"], "netDevices").remove(name);
            continue;
        }
        let f = crate::oci::features::features(&host.runtime);
        if !f.net_devices {
            return Err(bad(
                plugin,
                "linux.net_devices",
                format!(
                    "network device {k:?}: the OCI runtime {} does not inject network devices \
                     (its features do not list linux.netDevices; runc 1.3 does)",
                    host.runtime.display()
                ),
            ));
        }
        owners.claim(format!("network device {k:?}"), plugin)?;
        let mut j = json!({});
        if !l.net_devices[k].name.is_empty() {
            j["name"] = json!(l.net_devices[k].name);
        }
        obj(&mut spec["linux"], "netDevices").insert(k.clone(), j);
    }
    Ok(())
}

/// `linux.intelRdt`: the CLOS, schemata and monitoring a plugin sets (`remove` drops the object),
/// refused on a node without a mounted resctrl filesystem, where the runtime would fail anyway.
fn rdt(spec: &mut Value, r: &api::LinuxRdt, plugin: &str, owners: &mut Owners) -> Result<()> {
    if r.remove {
        owners.clear("RDT");
        if let Some(l) = spec["linux"].as_object_mut() {
            l.remove("intelRdt");
        }
        return Ok(());
    }
    if r.clos_id.is_none() && r.schemata.is_none() && r.enable_monitoring.is_none() {
        return Ok(());
    }
    if !resctrl_mounted() {
        return Err(bad(
            plugin,
            "linux.rdt",
            "RDT (Intel RDT / AMD QoS) is not available on this node: no resctrl filesystem is mounted",
        ));
    }
    owners.claim("RDT".into(), plugin)?;
    let o = obj(&mut spec["linux"], "intelRdt");
    if let Some(c) = r.clos_id.as_ref() {
        o.insert("closID".into(), json!(c.value));
    }
    if let Some(s) = r.schemata.as_ref() {
        o.insert("schemata".into(), json!(s.value));
    }
    if let Some(m) = r.enable_monitoring.as_ref() {
        o.insert("enableMonitoring".into(), json!(m.value));
    }
    Ok(())
}

/// Whether a resctrl filesystem is mounted (RDT classes and settings need it).
pub fn resctrl_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("resctrl")))
}
