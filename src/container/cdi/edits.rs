//! CDI container edits applied to an OCI spec (as JSON, before it is typed): environment variables
//! (replacing by name), device nodes with their cgroup allow rules, mounts (ordered parents first
//! afterwards, as the CDI library orders them), hooks by OCI stage, and additional groups.

use std::path::Path;

use serde_json::{Value, json};

use super::{ContainerEdits, DeviceNode, Resolved};
use crate::{Error, Result};

/// Completes a device node from the host's node at `hostPath` (default: `path`): its type, numbers
/// and mode where the spec leaves them out. A node the host lacks must say all of type, major, minor.
pub(super) fn complete_node(field: &str, n: &mut DeviceNode) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !n.path.starts_with('/') {
        return Err(Error::invalid(
            field,
            format!("CDI device node path {:?} is not absolute", n.path),
        ));
    }
    let host = n.host_path.clone().unwrap_or_else(|| n.path.clone());
    let complete =
        n.kind.as_deref() == Some("p") || n.kind.is_some() && n.major.is_some() && n.minor.is_some();
    match std::fs::metadata(&host) {
        Ok(m) => {
            let ft = m.file_type();
            let host_kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else if ft.is_fifo() {
                "p"
            } else {
                return Err(Error::invalid(
                    field,
                    format!("CDI device node {host:?} is not a device"),
                ));
            };
            if n.kind.is_none() {
                n.kind = Some(host_kind.to_string());
            }
            if n.kind.as_deref() == Some(host_kind) && host_kind != "p" {
                let rdev = m.rdev();
                n.major.get_or_insert(libc::major(rdev) as i64);
                n.minor.get_or_insert(libc::minor(rdev) as i64);
            }
            n.file_mode.get_or_insert(m.mode() & 0o777);
        }
        Err(e) if !complete => {
            return Err(Error::invalid(
                field,
                format!("CDI device node {host:?}: {e} (and the spec does not give type, major and minor)"),
            ));
        }
        Err(_) => {}
    }
    match n.kind.as_deref() {
        Some("c" | "u" | "b") if n.major.is_some() && n.minor.is_some() => {}
        Some("p") => {}
        k => {
            return Err(Error::invalid(
                field,
                format!("CDI device node {:?}: type {k:?} without major and minor", n.path),
            ));
        }
    }
    if let Some(p) = &n.permissions
        && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
    {
        return Err(Error::invalid(
            field,
            format!(
                "CDI device node {:?}: permissions {p:?} are not a subset of \"rwm\"",
                n.path
            ),
        ));
    }
    Ok(())
}

fn set_env(env: &mut Vec<Value>, kv: &str) {
    let key = kv.split('=').next().unwrap_or("");
    let same = |v: &Value| v.as_str().and_then(|s| s.split('=').next()) == Some(key);
    match env.iter_mut().find(|v| same(v)) {
        Some(v) => *v = json!(kv),
        None => env.push(json!(kv)),
    }
}

fn array<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v[key].is_array() {
        v[key] = json!([]);
    }
    match &mut v[key] {
        Value::Array(a) => a,
        // Just made an array.
        _ => unreachable!(),
    }
}

const HOOK_STAGES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn apply_one(spec: &mut Value, field: &str, e: &ContainerEdits) -> Result<()> {
    for kv in &e.env {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(Error::invalid(field, format!("CDI env {kv:?} is not NAME=value")));
        }
        set_env(array(&mut spec["process"], "env"), kv);
    }
    for n in &e.device_nodes {
        let kind = n.kind.clone().unwrap_or_default();
        let mut dev = json!({"path": n.path, "type": kind});
        for (k, v) in [("major", n.major), ("minor", n.minor)] {
            if let Some(v) = v {
                dev[k] = json!(v);
            }
        }
        for (k, v) in [("fileMode", n.file_mode), ("uid", n.uid), ("gid", n.gid)] {
            if let Some(v) = v {
                dev[k] = json!(v);
            }
        }
        let devices = array(&mut spec["linux"], "devices");
        devices.retain(|d| d["path"].as_str() != Some(n.path.as_str()));
        devices.push(dev);
        if kind != "p" {
            let rule = json!({
                "allow": true, "type": if kind == "u" { "c" } else { kind.as_str() },
                "major": n.major, "minor": n.minor,
                "access": n.permissions.as_deref().filter(|p| !p.is_empty()).unwrap_or("rwm"),
            });
            array(&mut spec["linux"]["resources"], "devices").push(rule);
        }
    }
    for m in &e.mounts {
        if !m.container_path.starts_with('/') {
            return Err(Error::invalid(
                field,
                format!("CDI mount destination {:?} is not absolute", m.container_path),
            ));
        }
        let kind = m
            .kind
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "bind".into());
        let mut opts = m.options.clone();
        if kind == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
            opts.push("rbind".into());
        }
        let mounts = array(spec, "mounts");
        mounts.retain(|x| x["destination"].as_str() != Some(m.container_path.as_str()));
        mounts.push(json!({
            "destination": m.container_path, "source": m.host_path, "type": kind, "options": opts,
        }));
    }
    for h in &e.hooks {
        let Some(stage) = HOOK_STAGES.iter().find(|s| **s == h.hook_name) else {
            return Err(Error::invalid(
                field,
                format!("CDI hook stage {:?} is unknown", h.hook_name),
            ));
        };
        if !Path::new(&h.path).is_absolute() {
            return Err(Error::invalid(
                field,
                format!("CDI hook path {:?} is not absolute", h.path),
            ));
        }
        let mut hook = json!({"path": h.path});
        if !h.args.is_empty() {
            hook["args"] = json!(h.args);
        }
        if !h.env.is_empty() {
            hook["env"] = json!(h.env);
        }
        if let Some(t) = h.timeout {
            hook["timeout"] = json!(t);
        }
        if !spec["hooks"].is_object() {
            spec["hooks"] = json!({});
        }
        array(&mut spec["hooks"], stage).push(hook);
    }
    for &g in &e.additional_gids {
        let gids = array(&mut spec["process"]["user"], "additionalGids");
        if g != 0 && !gids.iter().any(|x| x.as_u64() == Some(u64::from(g))) {
            gids.push(json!(g));
        }
    }
    Ok(())
}

fn depth(m: &Value) -> usize {
    m["destination"]
        .as_str()
        .unwrap_or("")
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .count()
}

/// Applies the resolved edits of a container's CDI devices to its spec.
pub fn apply(spec: &mut Value, edits: &Resolved) -> Result<()> {
    if edits.is_empty() {
        return Ok(());
    }
    for (field, e) in edits {
        apply_one(spec, field, e)?;
    }
    if let Value::Array(m) = &mut spec["mounts"] {
        m.sort_by_key(depth);
    }
    Ok(())
}
