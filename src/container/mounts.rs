//! Mounts and devices of a container's OCI spec: the default filesystems (proc, dev, sysfs, cgroup, …),
//! the pod's files (hostname, hosts, resolv.conf, shm), the CRI bind mounts with their propagation and
//! (recursive) read-only flags, and host devices.

use std::path::{Path, PathBuf};

use cri_api::v1;
use cri_api::v1::{MountPropagation, NamespaceMode};
use serde_json::{Value, json};

use super::spec::SpecInput;
use crate::{Error, Result};

/// A host device to expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub container_path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub permissions: String,
}

fn bind(dst: &str, src: &Path, opts: &[&str]) -> Value {
    json!({"destination": dst, "type": "bind", "source": src, "options": opts})
}

/// Mounts: the defaults (proc, dev, sysfs, cgroup, …), pod files, then the CRI mounts ordered parents
/// first; a CRI mount replaces a default at the same destination.
pub(super) fn mounts(
    inp: &SpecInput,
    privileged: bool,
    readonly_rootfs: bool,
) -> Result<(Vec<Value>, Option<&'static str>)> {
    let cfg = inp.config;
    let ro_sys = if privileged { "rw" } else { "ro" };
    let defaults = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", ro_sys]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", ro_sys]}),
    ];
    // The image's declared volumes count as CRI mounts here, as containerd adds them to those.
    let cri_dsts: Vec<String> = cfg
        .mounts
        .iter()
        .map(|m| clean(&m.container_path))
        .chain(inp.declared_volumes.iter().map(|v| v.path.clone()))
        .collect();
    let has = |d: &str| cri_dsts.iter().any(|x| x == d);
    let mut out: Vec<Value> = defaults
        .into_iter()
        .filter(|m| {
            let d = m["destination"].as_str().unwrap_or("");
            !(has(d) || has("/dev") && d.starts_with("/dev/"))
        })
        .collect();
    let ro = if readonly_rootfs { "ro" } else { "rw" };
    let p = &inp.pod.ctx;
    for (dst, src) in [
        ("/etc/hostname", &p.hostname_path),
        ("/etc/hosts", &p.hosts_path),
        ("/etc/resolv.conf", &p.resolv_path),
    ] {
        if !has(dst) && !src.as_os_str().is_empty() {
            out.push(bind(dst, src, &["rbind", "rprivate", ro]));
        }
    }
    if !has("/dev/shm") {
        let host_ipc = p.namespace_options.ipc == NamespaceMode::Node as i32;
        let shm = match &p.shm_path {
            Some(s) if !host_ipc => s.clone(),
            _ => PathBuf::from("/dev/shm"),
        };
        out.push(bind(
            "/dev/shm",
            &shm,
            &["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"],
        ));
    }
    let mut cri: Vec<(usize, &v1::Mount)> = cfg.mounts.iter().enumerate().collect();
    cri.sort_by_key(|(_, m)| Path::new(&clean(&m.container_path)).components().count());
    let mut rootfs_propagation = None;
    // The binds, by depth: parents before what is mounted inside them.
    let depth = |p: &str| Path::new(p).components().count();
    let mut binds: Vec<(usize, Value)> = Vec::new();
    for (i, m) in cri {
        let f = format!("config.mounts[{i}]");
        if !m.container_path.starts_with('/') {
            return Err(Error::invalid(
                format!("{f}.container_path"),
                format!("{:?} is not absolute", m.container_path),
            ));
        }
        if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
            // Always read-only, nosuid and nodev (the image's overlay is too), as containerd binds it.
            let src = inp
                .image_volumes
                .get(&i)
                .ok_or_else(|| Error::Internal(format!("{f}.image: the image volume was not mounted")))?;
            let prop = match MountPropagation::try_from(m.propagation) {
                Ok(MountPropagation::PropagationPrivate) | Err(_) => "rprivate",
                // An image volume has no mounts of its own to propagate.
                Ok(_) => "rslave",
            };
            let dst = clean(&m.container_path);
            binds.push((
                depth(&dst),
                bind(&dst, src, &["rbind", prop, "ro", "nosuid", "nodev"]),
            ));
            continue;
        }
        if m.host_path.is_empty() {
            return Err(Error::invalid(format!("{f}.host_path"), "must not be empty"));
        }
        let prop = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationPrivate) => "rprivate",
            Ok(MountPropagation::PropagationHostToContainer) => {
                rootfs_propagation.get_or_insert("rslave");
                "rslave"
            }
            Ok(MountPropagation::PropagationBidirectional) => {
                rootfs_propagation = Some("rshared");
                "rshared"
            }
            Err(_) => {
                return Err(Error::invalid(
                    format!("{f}.propagation"),
                    format!("unknown value {}", m.propagation),
                ));
            }
        };
        let mut opts = vec!["rbind", prop];
        if m.recursive_read_only {
            if !m.readonly {
                return Err(Error::invalid(
                    format!("{f}.recursive_read_only"),
                    "requires readonly",
                ));
            }
            if prop != "rprivate" {
                return Err(Error::invalid(
                    format!("{f}.recursive_read_only"),
                    "requires private propagation",
                ));
            }
            opts.extend(["ro", "rro"]);
        } else {
            opts.push(if m.readonly { "ro" } else { "rw" });
        }
        // A volume kubelet asked to be idmapped is bound from its idmapped clone.
        let src = inp
            .idmapped_volumes
            .get(&i)
            .map_or(Path::new(&m.host_path), PathBuf::as_path);
        let dst = clean(&m.container_path);
        binds.push((depth(&dst), bind(&dst, src, &opts)));
    }
    // Read-write and private, as containerd binds them (a CRI mount of neither flag).
    for v in inp.declared_volumes {
        binds.push((
            depth(&v.path),
            bind(&v.path, &v.source, &["rbind", "rprivate", "rw"]),
        ));
    }
    binds.sort_by_key(|(d, _)| *d);
    out.extend(binds.into_iter().map(|(_, b)| b));
    Ok((out, rootfs_propagation))
}

/// `p` as an absolute path without `.`, `..` or repeated slashes (`..` stops at the root).
pub(super) fn clean(p: &str) -> String {
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Resolves a CRI device's host path (a device node, or a directory of them) on the host.
pub fn host_devices(field: &str, d: &v1::Device) -> Result<Vec<HostDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let meta = std::fs::metadata(&d.host_path)
        .map_err(|e| Error::invalid(format!("{field}.host_path"), format!("{}: {e}", d.host_path)))?;
    let perms = if d.permissions.is_empty() {
        "rwm".to_string()
    } else {
        d.permissions.clone()
    };
    if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::invalid(
            format!("{field}.permissions"),
            format!("{perms:?} is not a subset of \"rwm\""),
        ));
    }
    let mk = |cpath: String, m: &std::fs::Metadata| -> Option<HostDevice> {
        let ft = m.file_type();
        let kind = if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            return None;
        };
        let rdev = m.rdev();
        Some(HostDevice {
            container_path: cpath,
            kind,
            major: libc::major(rdev) as i64,
            minor: libc::minor(rdev) as i64,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            permissions: perms.clone(),
        })
    };
    if meta.is_dir() {
        let rd =
            std::fs::read_dir(&d.host_path).map_err(|e| Error::io(format!("read {}", d.host_path), e))?;
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                let cpath = Path::new(&d.container_path).join(e.file_name());
                out.extend(mk(cpath.to_string_lossy().into_owned(), &m));
            }
        }
    } else {
        let dst = if d.container_path.is_empty() {
            d.host_path.clone()
        } else {
            d.container_path.clone()
        };
        out.extend(mk(dst, &meta));
        if out.is_empty() {
            return Err(Error::invalid(
                format!("{field}.host_path"),
                format!("{} is not a device", d.host_path),
            ));
        }
    }
    Ok(out)
}

/// Every device node under the host's `/dev` (for privileged containers), skipping pty and shm dirs.
pub fn all_host_devices() -> Vec<HostDevice> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !e.file_name().to_str().is_some_and(|n| skip.contains(&n)) {
                    stack.push(p);
                }
                continue;
            }
            if ft.is_symlink() || p == Path::new("/dev/console") {
                continue;
            }
            let dev = v1::Device {
                container_path: p.to_string_lossy().into_owned(),
                host_path: p.to_string_lossy().into_owned(),
                permissions: "rwm".into(),
            };
            if let Ok(d) = host_devices("privileged", &dev) {
                out.extend(d);
            }
        }
    }
    out
}
