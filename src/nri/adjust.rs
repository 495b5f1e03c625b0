//! NRI container adjustments applied to the OCI spec (as JSON) before the runtime sees it, one
//! plugin's reply at a time, so that each plugin is shown the container as the earlier ones left it.
//! Every field a plugin sets is claimed for it: a second plugin setting the same field is a conflict
//! and fails the creation naming both (NRI's rule); a plugin may change what it set itself. An
//! adjustment crust cannot apply, or a malformed one, fails with InvalidArgument naming the plugin.
//! The Linux part (devices, namespaces, seccomp, scheduling, network devices, RDT) is in `linux`.

use std::collections::HashMap;
use std::path::PathBuf;

use nri_api::nri as api;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// Who set what, for one container.
#[derive(Default)]
pub struct Owners(HashMap<String, String>);

impl Owners {
    /// Claims `field` for `plugin`.
    pub fn claim(&mut self, field: String, plugin: &str) -> Result<()> {
        match self.0.get(&field) {
            Some(other) if other != plugin => Err(Error::FailedPrecondition(format!(
                "NRI: plugins {other:?} and {plugin:?} both tried to set {field}"
            ))),
            _ => {
                self.0.insert(field, plugin.to_string());
                Ok(())
            }
        }
    }

    pub(super) fn clear(&mut self, field: &str) {
        self.0.remove(field);
    }
}

pub(super) fn bad(plugin: &str, field: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(
        format!("nri.{field}"),
        format!("NRI plugin {plugin:?} made an invalid adjustment: {why}"),
    )
}

/// A key marked for removal (`-key`), unmarked.
pub(super) fn removal(key: &str) -> Option<&str> {
    key.strip_prefix('-').filter(|k| !k.is_empty())
}

pub(super) fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    let Value::Object(inner) = e else {
        unreachable!("made an object above")
    };
    inner
}

pub(super) fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m.entry(key).or_insert_with(|| json!([]));
    if !e.is_array() {
        *e = json!([]);
    }
    let Value::Array(a) = e else {
        unreachable!("made an array above")
    };
    a
}

/// Checks a cpuset list (`0-3,5`).
fn cpuset(s: &str) -> std::result::Result<(), String> {
    let ok = s.split(',').all(|part| {
        let mut it = part.splitn(2, '-');
        let a = it.next().map(|x| x.trim().parse::<u32>());
        let b = it.next().map(|x| x.trim().parse::<u32>());
        match (a, b) {
            (Some(Ok(a)), Some(Ok(b))) => a <= b,
            (Some(Ok(_)), None) => true,
            _ => false,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a list of numbers and ranges"))
    }
}

/// What applying an adjustment needs to know of the node: the container's OCI runtime (whose
/// `features` say which spec fields it honours) and where CDI specs are.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub runtime: PathBuf,
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// Applies one plugin's adjustment to `spec`.
pub fn apply(
    spec: &mut Value,
    a: &api::ContainerAdjustment,
    plugin: &str,
    owners: &mut Owners,
    host: &Host,
) -> Result<()> {
    for (k, v) in &a.annotations {
        match removal(k) {
            Some(key) => {
                owners.clear(&format!("annotation {key:?}"));
                obj(spec, "annotations").remove(key);
            }
            None => {
                owners.claim(format!("annotation {k:?}"), plugin)?;
                obj(spec, "annotations").insert(k.clone(), json!(v));
            }
        }
    }
    for m in &a.mounts {
        if let Some(dest) = removal(&m.destination) {
            owners.clear(&format!("mount {dest:?}"));
            arr(spec, "mounts").retain(|x| x["destination"] != dest);
            continue;
        }
        if !m.destination.starts_with('/') {
            return Err(bad(
                plugin,
                "mounts",
                format!("mount destination {:?} is not absolute", m.destination),
            ));
        }
        owners.claim(format!("mount {:?}", m.destination), plugin)?;
        let mounts = arr(spec, "mounts");
        mounts.retain(|x| x["destination"] != m.destination.as_str());
        mounts.push(json!({
            "destination": m.destination, "type": m.type_, "source": m.source, "options": m.options,
        }));
    }
    for e in &a.env {
        let process = obj(spec, "process");
        let env = process.entry("env").or_insert_with(|| json!([]));
        let Some(list) = env.as_array_mut() else { continue };
        let key = removal(&e.key).unwrap_or(&e.key);
        if key.is_empty() || key.contains('=') {
            return Err(bad(
                plugin,
                "env",
                format!("environment variable name {:?}", e.key),
            ));
        }
        let prefix = format!("{key}=");
        list.retain(|x| x.as_str().is_none_or(|s| !s.starts_with(&prefix) && s != key));
        if removal(&e.key).is_some() {
            owners.clear(&format!("env {key:?}"));
        } else {
            owners.claim(format!("env {key:?}"), plugin)?;
            list.push(json!(format!("{key}={}", e.value)));
        }
    }
    if let Some(h) = a.hooks.as_ref() {
        for (name, list) in [
            ("prestart", &h.prestart),
            ("createRuntime", &h.create_runtime),
            ("createContainer", &h.create_container),
            ("startContainer", &h.start_container),
            ("poststart", &h.poststart),
            ("poststop", &h.poststop),
        ] {
            for hook in list {
                if !hook.path.starts_with('/') {
                    return Err(bad(
                        plugin,
                        "hooks",
                        format!("hook path {:?} is not absolute", hook.path),
                    ));
                }
                let mut j = json!({"path": hook.path, "args": hook.args, "env": hook.env});
                if let Some(t) = hook.timeout.as_ref() {
                    j["timeout"] = json!(t.value);
                }
                let l = obj(spec, "hooks").entry(name).or_insert_with(|| json!([]));
                if let Some(l) = l.as_array_mut() {
                    l.push(j);
                }
            }
        }
    }
    for r in &a.rlimits {
        let t = r.type_.to_ascii_uppercase();
        if !RLIMITS.contains(&t.as_str()) {
            return Err(bad(
                plugin,
                "rlimits",
                format!("unknown rlimit type {:?}", r.type_),
            ));
        }
        if r.soft > r.hard {
            return Err(bad(
                plugin,
                "rlimits",
                format!("{t}: soft limit {} above hard limit {}", r.soft, r.hard),
            ));
        }
        owners.claim(format!("rlimit {t}"), plugin)?;
        let process = obj(spec, "process");
        let list = process.entry("rlimits").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.retain(|x| x["type"] != t.as_str());
            list.push(json!({"type": t, "hard": r.hard, "soft": r.soft}));
        }
    }
    if !a.CDI_devices.is_empty() {
        cdi(spec, &a.CDI_devices, plugin, owners, host)?;
    }
    if !a.args.is_empty() {
        owners.claim("args".into(), plugin)?;
        obj(spec, "process").insert("args".into(), json!(a.args));
    }
    if let Some(l) = a.linux.as_ref() {
        super::linux::apply(spec, l, plugin, owners, host)?;
    }
    Ok(())
}

/// CDI devices, resolved from the node's CDI specs and applied as for a CRI request's `cdi_devices`
/// (containerd injects them through the same CDI library it uses for CRI requests). An unknown
/// device or a broken spec fails the creation naming the plugin.
fn cdi(
    spec: &mut Value,
    devices: &[api::CDIDevice],
    plugin: &str,
    owners: &mut Owners,
    host: &Host,
) -> Result<()> {
    let mut reqs = Vec::new();
    for d in devices {
        owners.claim(format!("CDI device {:?}", d.name), plugin)?;
        reqs.push(crate::container::cdi::Request {
            name: d.name.clone(),
            field: format!("CDI device {:?}", d.name),
        });
    }
    crate::container::cdi::resolve(&host.cdi_spec_dirs, &reqs)
        .and_then(|r| crate::container::cdi::apply(spec, &r))
        .map_err(|e| bad(plugin, "CDI_devices", e))
}

/// Resource limit names runc knows.
const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// Applies NRI resources to an OCI `linux` object (creation, and container updates).
pub fn resources(
    linux: &mut Value,
    r: &api::LinuxResources,
    plugin: &str,
    owners: &mut Owners,
) -> Result<()> {
    let res = obj(linux, "resources");
    let mut set = |owners: &mut Owners, group: &str, key: &str, name: &str, v: Value| -> Result<()> {
        owners.claim(name.to_string(), plugin)?;
        let g = res.entry(group).or_insert_with(|| json!({}));
        if !g.is_object() {
            *g = json!({});
        }
        g[key] = v;
        Ok(())
    };
    if let Some(m) = r.memory.as_ref() {
        if let Some(v) = m.limit.as_ref() {
            set(owners, "memory", "limit", "memory limit", json!(v.value))?;
        }
        if let Some(v) = m.reservation.as_ref() {
            set(
                owners,
                "memory",
                "reservation",
                "memory reservation",
                json!(v.value),
            )?;
        }
        if let Some(v) = m.swap.as_ref() {
            set(owners, "memory", "swap", "memory swap limit", json!(v.value))?;
        }
        if let Some(v) = m.swappiness.as_ref() {
            set(
                owners,
                "memory",
                "swappiness",
                "memory swappiness",
                json!(v.value),
            )?;
        }
        if let Some(v) = m.disable_oom_killer.as_ref() {
            set(
                owners,
                "memory",
                "disableOOMKiller",
                "memory OOM killer",
                json!(v.value),
            )?;
        }
    }
    if let Some(c) = r.cpu.as_ref() {
        if let Some(v) = c.shares.as_ref() {
            set(owners, "cpu", "shares", "CPU shares", json!(v.value))?;
        }
        if let Some(v) = c.quota.as_ref() {
            set(owners, "cpu", "quota", "CPU quota", json!(v.value))?;
        }
        if let Some(v) = c.period.as_ref() {
            set(owners, "cpu", "period", "CPU period", json!(v.value))?;
        }
        if let Some(v) = c.realtime_runtime.as_ref() {
            set(
                owners,
                "cpu",
                "realtimeRuntime",
                "CPU realtime runtime",
                json!(v.value),
            )?;
        }
        if let Some(v) = c.realtime_period.as_ref() {
            set(
                owners,
                "cpu",
                "realtimePeriod",
                "CPU realtime period",
                json!(v.value),
            )?;
        }
        if !c.cpus.is_empty() {
            cpuset(&c.cpus).map_err(|e| bad(plugin, "linux.resources.cpu.cpus", e))?;
            set(owners, "cpu", "cpus", "cpuset CPUs", json!(c.cpus))?;
        }
        if !c.mems.is_empty() {
            cpuset(&c.mems).map_err(|e| bad(plugin, "linux.resources.cpu.mems", e))?;
            set(owners, "cpu", "mems", "cpuset memory nodes", json!(c.mems))?;
        }
    }
    if let Some(p) = r.pids.as_ref() {
        set(owners, "pids", "limit", "pids limit", json!(p.limit))?;
    }
    for h in &r.hugepage_limits {
        owners.claim(format!("hugepage limit {:?}", h.page_size), plugin)?;
        let l = res.entry("hugepageLimits").or_insert_with(|| json!([]));
        if let Some(l) = l.as_array_mut() {
            l.retain(|x| x["pageSize"] != h.page_size.as_str());
            l.push(json!({"pageSize": h.page_size, "limit": h.limit}));
        }
    }
    for (k, v) in &r.unified {
        owners.claim(format!("unified cgroup key {k:?}"), plugin)?;
        let u = res.entry("unified").or_insert_with(|| json!({}));
        if let Some(u) = u.as_object_mut() {
            u.insert(k.clone(), json!(v));
        }
    }
    for d in &r.devices {
        let mut j = json!({"allow": d.allow, "type": d.type_, "access": d.access});
        if let Some(m) = d.major.as_ref() {
            j["major"] = json!(m.value);
        }
        if let Some(m) = d.minor.as_ref() {
            j["minor"] = json!(m.value);
        }
        let l = res.entry("devices").or_insert_with(|| json!([]));
        if let Some(l) = l.as_array_mut() {
            l.push(j);
        }
    }
    // Block I/O classes need a class configuration, which crust does not have; containerd too
    // fails the creation when no block I/O configuration is loaded. Refused, not silently dropped.
    if let Some(c) = r.blockio_class.as_ref().filter(|c| !c.value.is_empty()) {
        return Err(bad(
            plugin,
            "linux.resources.blockio_class",
            format!(
                "block I/O class {:?}: no block I/O classes are configured on this node \
                 (crust has no block I/O class configuration)",
                c.value
            ),
        ));
    }
    // An RDT class is the container's CLOS (containerd sets `intelRdt.closID` to the class name);
    // without a mounted resctrl the runtime would fail the container, so it is refused here.
    if let Some(c) = r.rdt_class.as_ref().filter(|c| !c.value.is_empty()) {
        if !super::linux::resctrl_mounted() {
            return Err(bad(
                plugin,
                "linux.resources.rdt_class",
                format!(
                    "RDT class {:?}: RDT is not available on this node (no resctrl filesystem is mounted)",
                    c.value
                ),
            ));
        }
        owners.claim("RDT".into(), plugin)?;
        obj(linux, "intelRdt").insert("closID".into(), json!(c.value));
    }
    Ok(())
}
