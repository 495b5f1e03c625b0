//! containerd-style registry host directories (`registry.config_path`): `<dir>/<host>/hosts.toml`, or
//! `<dir>/_default/hosts.toml` for any host without its own, read at every pull. As containerd does,
//! the `[host."…"]` entries are tried in file order, then `server` (default: the registry itself).
//! Keys: `server`, `ca`, `client`, `skip_verify` at the top (for `server`) and per host, plus
//! `capabilities` per host (a host without `pull` is skipped, as is one without `resolve` for a tag,
//! since it cannot turn a tag into a digest). A port in the host name is written `host_port_` or
//! `host:port` as the directory name (both are looked up).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Endpoint;
use crate::config::{HostConfig, TlsConfig};
use crate::{Error, Result};

/// One `hosts.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostsFile {
    server: String,
    #[serde(flatten)]
    tls: TlsKeys,
    /// Kept in file order.
    host: toml::Table,
}

/// The TLS keys a `hosts.toml` has, at the top and per host.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TlsKeys {
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    skip_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    #[serde(flatten)]
    tls: TlsKeys,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The `hosts.toml` for `registry` under `dir`, when there is one.
pub fn file_for(dir: &Path, registry: &str) -> Option<PathBuf> {
    let underscored = registry.replace(':', "_") + "_";
    [registry.to_string(), underscored, "_default".to_string()]
        .iter()
        .map(|d| dir.join(d).join("hosts.toml"))
        .find(|p| p.is_file())
}

/// The endpoints a `hosts.toml` gives for `registry` (`upstream` is the registry's own base URL, used
/// when `server` is absent). `by_tag`: the pull resolves a tag (hosts without `resolve` are skipped).
pub fn endpoints(file: &Path, upstream: &str, by_tag: bool) -> Result<Vec<Endpoint>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(format!("read {}", file.display()), e))?;
    let parsed: HostsFile = toml::from_str(&text)
        .map_err(|e| Error::invalid("registry.config_path", format!("{}: {e}", file.display())))?;
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    for (url, v) in &parsed.host {
        let entry: HostEntry = v.clone().try_into().map_err(|e: toml::de::Error| {
            Error::invalid(
                "registry.config_path",
                format!("{}: host {url:?}: {e}", file.display()),
            )
        })?;
        let caps = entry
            .capabilities
            .unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
        if !caps.iter().any(|c| c == "pull") || (by_tag && !caps.iter().any(|c| c == "resolve")) {
            continue;
        }
        out.push(endpoint(url, true, tls_of(&entry.tls, base_dir, file)?));
    }
    let server = if parsed.server.is_empty() {
        upstream.to_string()
    } else {
        parsed.server.clone()
    };
    out.push(endpoint(&server, false, tls_of(&parsed.tls, base_dir, file)?));
    Ok(out)
}

/// An endpoint from a URL (`https://` when it has no scheme, as containerd assumes).
fn endpoint(url: &str, mirror: bool, tls: Option<HostConfig>) -> Endpoint {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let mut e = super::endpoint_of(&url, mirror);
    e.tls = tls;
    e
}

/// TLS settings, relative paths resolved against the `hosts.toml`'s directory.
fn tls_of(t: &TlsKeys, dir: &Path, file: &Path) -> Result<Option<HostConfig>> {
    if t.ca.is_none() && t.client.is_none() && !t.skip_verify {
        return Ok(None);
    }
    let abs = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut tls = TlsConfig {
        insecure_skip_verify: t.skip_verify,
        ..Default::default()
    };
    match &t.ca {
        Some(OneOrMany::One(c)) => tls.ca_file = abs(c),
        Some(OneOrMany::Many(cs)) => {
            if cs.len() > 1 {
                return Err(Error::invalid(
                    "registry.config_path",
                    format!("{}: only one `ca` file is supported", file.display()),
                ));
            }
            if let Some(c) = cs.first() {
                tls.ca_file = abs(c);
            }
        }
        None => {}
    }
    // `client` is "cert.pem" (cert and key in one file), ["cert", "key"] or [["cert", "key"]].
    let bad = || {
        Error::invalid(
            "registry.config_path",
            format!(
                "{}: `client` must be a path, [cert, key] or [[cert, key]]",
                file.display()
            ),
        )
    };
    match &t.client {
        None => {}
        Some(toml::Value::String(p)) => {
            tls.cert_file = abs(p);
            tls.key_file = abs(p);
        }
        Some(toml::Value::Array(a)) => {
            let pair = match a.first() {
                Some(toml::Value::Array(inner)) => inner.clone(),
                _ => a.clone(),
            };
            let s: Vec<&str> = pair.iter().filter_map(|v| v.as_str()).collect();
            match s.as_slice() {
                [c] => {
                    tls.cert_file = abs(c);
                    tls.key_file = abs(c);
                }
                [c, k] => {
                    tls.cert_file = abs(c);
                    tls.key_file = abs(k);
                }
                _ => return Err(bad()),
            }
        }
        Some(_) => return Err(bad()),
    }
    Ok(Some(HostConfig {
        tls,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_order_then_server_with_capabilities_and_tls() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("reg.example:5000");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            r#"
server = "https://reg.example:5000"
ca = "ca.pem"

[host."http://127.0.0.1:7000"]
capabilities = ["pull", "resolve"]

[host."mirror.example/v2"]
capabilities = ["pull"]
skip_verify = true
client = [["/c.pem", "/k.pem"]]

[host."https://push.example"]
capabilities = ["push"]
"#,
        )
        .unwrap();
        let f = file_for(t.path(), "reg.example:5000").unwrap();
        let e = endpoints(&f, "https://reg.example:5000", true).unwrap();
        let bases: Vec<_> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(bases, ["http://127.0.0.1:7000", "https://reg.example:5000"]);
        assert!(e[0].mirror && !e[1].mirror);
        assert_eq!(e[1].tls.as_ref().unwrap().tls.ca_file, d.join("ca.pem"));
        let e = endpoints(&f, "https://reg.example:5000", false).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].base, "https://mirror.example");
        assert_eq!(e[1].host, "mirror.example");
        let tls = &e[1].tls.as_ref().unwrap().tls;
        assert!(tls.insecure_skip_verify);
        assert_eq!(tls.key_file, PathBuf::from("/k.pem"));
        assert!(file_for(t.path(), "other.example").is_none());
        std::fs::create_dir_all(t.path().join("_default")).unwrap();
        std::fs::write(t.path().join("_default/hosts.toml"), "").unwrap();
        let f = file_for(t.path(), "other.example").unwrap();
        let e = endpoints(&f, "https://other.example", true).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base, "https://other.example");
    }
}
