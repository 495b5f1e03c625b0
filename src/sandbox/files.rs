//! The pod's files in `<state>/pods/<id>/`: `hostname`, `hosts`, `resolv.conf` (from the pod's DNS
//! config, or the host's), and `shm`, a tmpfs every container mounts as /dev/shm (unless host IPC).

use std::path::{Path, PathBuf};

use cri_api::v1;
use nix::mount::{MntFlags, MsFlags};

use crate::error::ResultExt;
use crate::{Error, Result};

/// Size of the pod's /dev/shm (as Docker and CRI-O default).
pub const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// Paths of the pod's files.
#[derive(Debug, Clone)]
pub struct PodFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    pub shm: PathBuf,
}

impl PodFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        PodFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv: dir.join("resolv.conf"),
            shm: dir.join("shm"),
        }
    }
}

/// Checks the DNS config: servers are IP addresses, nothing holds a newline or blank.
pub fn validate_dns(dns: &v1::DnsConfig) -> Result<()> {
    for (i, s) in dns.servers.iter().enumerate() {
        if s.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(
                format!("config.dns_config.servers[{i}]"),
                format!("{s:?} is not an IP address"),
            ));
        }
    }
    for (field, list) in [("searches", &dns.searches), ("options", &dns.options)] {
        for (i, s) in list.iter().enumerate() {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(
                    format!("config.dns_config.{field}[{i}]"),
                    format!("{s:?} must be one word"),
                ));
            }
        }
    }
    Ok(())
}

/// The resolv.conf text for a DNS config.
pub fn resolv_conf(dns: &v1::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Writes hostname, hosts and resolv.conf. With the host network, hosts (and resolv.conf when no DNS
/// config is given) are the host's; otherwise hosts names localhost and the pod's hostname.
pub fn write(
    files: &PodFiles,
    hostname: &str,
    dns: Option<&v1::DnsConfig>,
    host_network: bool,
) -> Result<()> {
    if let Some(dir) = files.hostname.parent() {
        std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    }
    let write = |p: &Path, data: &[u8]| std::fs::write(p, data).ctx(format!("write {}", p.display()));
    write(&files.hostname, format!("{hostname}\n").as_bytes())?;
    let hosts = if host_network {
        std::fs::read("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        )
        .into_bytes()
    };
    write(&files.hosts, &hosts)?;
    let resolv = match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            resolv_conf(d).into_bytes()
        }
        _ => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
    };
    write(&files.resolv, &resolv)
}

/// Mounts the pod's /dev/shm tmpfs at `path` (created).
pub fn mount_shm(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).ctx(format!("create {}", path.display()))?;
    nix::mount::mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
    )
    .map_err(|e| Error::io(format!("mount shm tmpfs on {}", path.display()), e.into()))
}

/// Unmounts (every layer) and removes the shm dir; idempotent.
pub fn unmount_shm(path: &Path) -> Result<()> {
    for _ in 0..8 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(Error::io(format!("unmount {}", path.display()), e.into())),
        }
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = v1::DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        validate_dns(&dns).unwrap();
        assert_eq!(
            resolv_conf(&dns),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n"
        );
        let bad = v1::DnsConfig {
            servers: vec!["dns.example".into()],
            ..Default::default()
        };
        let e = validate_dns(&bad).unwrap_err();
        assert!(e.to_string().starts_with("config.dns_config.servers[0]"), "{e}");
        let bad = v1::DnsConfig {
            options: vec!["a\nnameserver 1.2.3.4".into()],
            ..Default::default()
        };
        assert!(validate_dns(&bad).is_err());
    }

    #[test]
    fn writes_files_and_mounts_shm() {
        let d = tempfile::tempdir().unwrap();
        let f = PodFiles::in_dir(&d.path().join("pod"));
        write(&f, "web-0", None, false).unwrap();
        assert_eq!(std::fs::read_to_string(&f.hostname).unwrap(), "web-0\n");
        assert!(std::fs::read_to_string(&f.hosts).unwrap().contains("\tweb-0\n"));
        mount_shm(&f.shm).unwrap();
        let st = nix::sys::statfs::statfs(&f.shm).unwrap();
        assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        unmount_shm(&f.shm).unwrap();
        assert!(!f.shm.exists());
        unmount_shm(&f.shm).unwrap();
    }
}
