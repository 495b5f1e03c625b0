//! CDI (Container Device Interface) devices: `ContainerConfig.cdi_devices` and the `cdi.k8s.io/*`
//! annotations name devices as `vendor.com/class=name`; their specs are JSON or YAML files in the
//! configured directories (`runtime.cdi_spec_dirs`, later directories win, as `/var/run/cdi` over
//! `/etc/cdi`). A device's edits (and those of the spec that declares it) become environment variables,
//! device nodes (with the cgroup rules that allow them), mounts, OCI hooks and additional groups of
//! the container's OCI spec (`edits`).
//!
//! Specs are read at each CreateContainer that asks for a device: no cache to go stale, and a spec
//! dropped in by a device plugin is seen at once. A spec file that cannot be read or parsed is skipped;
//! a device then not found is refused, and the message names the broken files.
//!
//! (The `container-device-interface` crate was evaluated: it brings a JSON-schema validator, clap and
//! the deprecated `serde_yaml` into the daemon — about 400 crates — for what is a small, stable format.)

mod edits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use edits::apply;

use crate::{Error, Result};

/// Annotations whose values name CDI devices (comma-separated), as containerd and CRI-O read them.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// One CDI spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// A device of a spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device (or its whole spec) changes in the container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default, rename = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
}

/// A device node; what is left out is taken from the host's node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(default)]
    pub host_path: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub major: Option<i64>,
    #[serde(default)]
    pub minor: Option<i64>,
    #[serde(default)]
    pub file_mode: Option<u32>,
    #[serde(default)]
    pub permissions: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A mount.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// An OCI hook, by the OCI stage it runs at.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// The edits a container gets for its CDI devices, in the order to apply them: each spec's own edits
/// once (before its first device's), then each device's; each with the request field that asked for
/// it, and its device nodes completed from the host.
pub type Resolved = Vec<(String, ContainerEdits)>;

/// A requested device: its fully qualified name and the request field that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub field: String,
}

/// The devices a container asks for: `config.cdi_devices[i]`, then the `cdi.k8s.io/*` annotations
/// (sorted by key), duplicates dropped.
pub fn requests(cfg: &cri_api::v1::ContainerConfig) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    let mut push = |name: &str, field: String| {
        let name = name.trim();
        if !out.iter().any(|r| r.name == name) {
            out.push(Request {
                name: name.to_string(),
                field,
            });
        }
    };
    for (i, d) in cfg.cdi_devices.iter().enumerate() {
        push(&d.name, format!("config.cdi_devices[{i}].name"));
    }
    let mut keys: Vec<&String> = cfg
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        for name in cfg.annotations[k].split(',').filter(|s| !s.trim().is_empty()) {
            push(name, format!("config.annotations[{k:?}]"));
        }
    }
    out
}

/// Splits `vendor.com/class=name` into its kind and device name, checking each part.
pub fn parse_name(s: &str) -> std::result::Result<(&str, &str), String> {
    let (kind, name) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not a CDI device name (vendor.com/class=name)"))?;
    check_kind(kind)?;
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if !ok {
        return Err(format!("{s:?}: device name {name:?} is invalid"));
    }
    Ok((kind, name))
}

fn check_kind(kind: &str) -> std::result::Result<(), String> {
    let Some((vendor, class)) = kind.split_once('/') else {
        return Err(format!("kind {kind:?} is not vendor.com/class"));
    };
    let part = |s: &str, extra: &[char]| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    if !part(vendor, &['.', '-', '_']) || !part(class, &['-', '_']) {
        return Err(format!("kind {kind:?} is not vendor.com/class"));
    }
    Ok(())
}

/// Parses a spec file (JSON or YAML, by extension) and checks what the edits rely on.
pub fn parse_spec(path: &Path, data: &[u8]) -> std::result::Result<Spec, String> {
    let json = path.extension().is_some_and(|e| e == "json");
    let spec: Spec = if json {
        serde_json::from_slice(data).map_err(|e| e.to_string())?
    } else {
        serde_norway::from_slice(data).map_err(|e| e.to_string())?
    };
    let v = spec.cdi_version.trim();
    let mut parts = v.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    if !matches!(major, Some(0 | 1)) || parts.any(|p| p.parse::<u32>().is_err()) {
        return Err(format!("unsupported cdiVersion {v:?}"));
    }
    check_kind(&spec.kind)?;
    for d in &spec.devices {
        parse_name(&format!("{}={}", spec.kind, d.name))?;
    }
    Ok(spec)
}

/// Every spec under `dirs` (later directories override earlier ones, device by device), with the
/// files that could not be read or parsed.
fn load(dirs: &[PathBuf]) -> (Vec<(PathBuf, Spec)>, Vec<String>) {
    let mut specs = Vec::new();
    let mut broken = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
            })
            .collect();
        files.sort();
        for f in files {
            match std::fs::read(&f)
                .map_err(|e| e.to_string())
                .and_then(|d| parse_spec(&f, &d))
            {
                Ok(s) => specs.push((f, s)),
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "CDI spec skipped");
                    broken.push(format!("{}: {e}", f.display()));
                }
            }
        }
    }
    (specs, broken)
}

/// Finds every requested device in the specs under `dirs`: the edits to apply, or an error naming
/// the request field (InvalidArgument for a malformed name or when broken spec files may hold the
/// device, NotFound otherwise).
pub fn resolve(dirs: &[PathBuf], reqs: &[Request]) -> Result<Resolved> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted = Vec::new();
    for r in reqs {
        let (kind, name) = parse_name(&r.name).map_err(|m| Error::invalid(&r.field, m))?;
        wanted.push((r, kind, name));
    }
    let (specs, broken) = load(dirs);
    // (kind, device) → (spec index, device index); later files win.
    let mut by_name: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    for (si, (_, s)) in specs.iter().enumerate() {
        for (di, d) in s.devices.iter().enumerate() {
            by_name.insert((s.kind.as_str(), d.name.as_str()), (si, di));
        }
    }
    let mut out = Vec::new();
    let mut specs_done = Vec::new();
    for (r, kind, name) in wanted {
        let Some(&(si, di)) = by_name.get(&(kind, name)) else {
            let where_ = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if broken.is_empty() {
                return Err(Error::NotFound(format!(
                    "{}: CDI device {:?} is not declared by any spec in {where_}",
                    r.field, r.name
                )));
            }
            return Err(Error::invalid(
                &r.field,
                format!(
                    "CDI device {:?} not found; malformed CDI spec files: {}",
                    r.name,
                    broken.join("; ")
                ),
            ));
        };
        if !specs_done.contains(&si) {
            specs_done.push(si);
            out.push((r.field.clone(), specs[si].1.container_edits.clone()));
        }
        out.push((r.field.clone(), specs[si].1.devices[di].container_edits.clone()));
    }
    for (field, e) in &mut out {
        for n in &mut e.device_nodes {
            edits::complete_node(field, n)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
