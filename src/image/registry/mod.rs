//! The registry client: which endpoints serve a registry host (its mirrors in order, then the host
//! itself unless `fallback_to_upstream = false`), one HTTP client per endpoint host with that host's TLS
//! settings, and the standard proxy environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`).

mod auth;
mod download;
pub mod hosts;
mod retry;
mod session;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub use auth::Credentials;
pub(crate) use download::{check_blob, fetch_blob};
pub use download::{download_to, fetch_small};
pub use retry::Retry;
pub use session::{Manifest, Session};

use crate::config::{Config, HostConfig};
use crate::{Error, Result};

/// One place an image can be pulled from.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `scheme://host[:port][/prefix]`, without a trailing `/` or `/v2`.
    pub base: String,
    /// `host[:port]`: the key for auth and TLS settings, and the name used in errors.
    pub host: String,
    /// A mirror (not the registry itself).
    pub mirror: bool,
    /// TLS settings from a `hosts.toml` (else `registry.configs` of `host` apply).
    pub tls: Option<HostConfig>,
}

/// An endpoint from a base URL (`scheme://host[:port][/prefix][/v2]`).
pub(crate) fn endpoint_of(url: &str, mirror: bool) -> Endpoint {
    let base = url.trim_end_matches('/');
    let base = base.strip_suffix("/v2").unwrap_or(base).to_string();
    let host = base
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&base)
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    Endpoint {
        base,
        host,
        mirror,
        tls: None,
    }
}

/// The endpoints for a registry host: from its `hosts.toml` under `registry.config_path` when there is
/// one (read now, so edits apply to the next pull), else from `registry.mirrors`. `by_tag`: the
/// reference is a tag, not a digest.
pub fn endpoints_for(cfg: &Config, registry: &str, by_tag: bool) -> Result<Vec<Endpoint>> {
    let dir = &cfg.registry.config_path;
    if !dir.as_os_str().is_empty()
        && let Some(file) = hosts::file_for(dir, registry)
    {
        let upstream = endpoints(&Config::default(), registry)
            .pop()
            .map(|e| e.base)
            .unwrap_or_else(|| format!("https://{registry}"));
        return hosts::endpoints(&file, &upstream, by_tag);
    }
    Ok(endpoints(cfg, registry))
}

/// The endpoints to try for a registry host, in order.
pub fn endpoints(cfg: &Config, registry: &str) -> Vec<Endpoint> {
    let mirror = cfg
        .registry
        .mirrors
        .get(registry)
        .or_else(|| cfg.registry.mirrors.get("*"));
    let mut out = Vec::new();
    if let Some(m) = mirror {
        for ep in &m.endpoint {
            out.push(endpoint_of(ep, true));
        }
    }
    if mirror.is_none_or(|m| m.fallback_to_upstream) {
        let host = if registry == super::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let plain = cfg.registry.configs.get(registry).is_some_and(|h| h.insecure) || is_loopback(&host);
        let scheme = if plain { "http" } else { "https" };
        out.push(Endpoint {
            base: format!("{scheme}://{host}"),
            host,
            mirror: false,
            tls: None,
        });
    }
    out
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port: plain HTTP unless configured.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// HTTP clients, one per endpoint host (TLS settings differ per host), reused across pulls.
pub struct Clients {
    cfg: Config,
    map: Mutex<HashMap<String, reqwest::Client>>,
}

impl Clients {
    /// Clients for the configuration's hosts.
    pub fn new(cfg: &Config) -> Self {
        Clients {
            cfg: cfg.clone(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The per-host settings of `host` (auth, TLS).
    pub fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.cfg.registry.configs.get(host)
    }

    /// The client for an endpoint: its `hosts.toml` TLS settings, else its host's configuration.
    pub fn get(&self, ep: &Endpoint) -> Result<reqwest::Client> {
        let host = &ep.host;
        let key = match &ep.tls {
            Some(t) => format!("{host}\n{:?}", t.tls),
            None => host.clone(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = match &ep.tls {
            Some(t) => build_client(Some(t)).map_err(|e| e.context(format!("hosts.toml of {host:?}")))?,
            None => build_client(self.host_config(host))
                .map_err(|e| e.context(format!("registry.configs.{host:?}")))?,
        };
        map.insert(key, c.clone());
        Ok(c)
    }
}

fn build_client(h: Option<&HostConfig>) -> Result<reqwest::Client> {
    match builder(h, false)?.build() {
        Ok(c) => Ok(c),
        // The platform verifier finds no root certificates (a node without ca-certificates): plain-HTTP
        // registries and those with their own `ca_file` still work, TLS to others fails verification.
        Err(first) => match builder(h, true)?.build() {
            Ok(c) => {
                tracing::warn!(error = %first, "no system root certificates (install ca-certificates): \
                    only plain-HTTP registries and those with a ca_file can be verified");
                Ok(c)
            }
            Err(_) => Err(Error::Internal(format!("cannot build the HTTP client: {first}"))),
        },
    }
}

/// The client's settings; `own_roots_only`: the configured `ca_file` alone as roots, not the system's.
fn builder(h: Option<&HostConfig>, own_roots_only: bool) -> Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("crust/", env!("CARGO_PKG_VERSION")));
    if let Some(h) = h {
        let t = &h.tls;
        if !t.ca_file.as_os_str().is_empty() {
            let pem = std::fs::read(&t.ca_file)
                .map_err(|e| Error::io(format!("read {}", t.ca_file.display()), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::invalid("tls.ca_file", format!("{}: {e}", t.ca_file.display())))?;
            b = if own_roots_only {
                b.tls_certs_only(certs)
            } else {
                b.tls_certs_merge(certs)
            };
        } else if own_roots_only {
            b = b.tls_certs_only(Vec::new());
        }
        if !t.cert_file.as_os_str().is_empty() {
            let mut pem = std::fs::read(&t.cert_file)
                .map_err(|e| Error::io(format!("read {}", t.cert_file.display()), e))?;
            let key = std::fs::read(&t.key_file)
                .map_err(|e| Error::io(format!("read {}", t.key_file.display()), e))?;
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(&key);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::invalid("tls.cert_file", format!("{}: {e}", t.cert_file.display())))?;
            b = b.identity(id);
        }
        if t.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
    } else if own_roots_only {
        b = b.tls_certs_only(Vec::new());
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mirror;

    #[test]
    fn mirrors_then_upstream_unless_fallback_off() {
        let mut cfg = Config::default();
        cfg.registry.mirrors.insert(
            "docker.io".into(),
            Mirror {
                endpoint: vec!["http://127.0.0.1:5000/".into(), "https://m.example/v2".into()],
                fallback_to_upstream: true,
            },
        );
        let e = endpoints(&cfg, "docker.io");
        let bases: Vec<_> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5000",
                "https://m.example",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(e[0].host, "127.0.0.1:5000");
        assert!(e[0].mirror && !e[2].mirror);
        cfg.registry
            .mirrors
            .get_mut("docker.io")
            .unwrap()
            .fallback_to_upstream = false;
        assert_eq!(endpoints(&cfg, "docker.io").len(), 2);
        let up = endpoints(&cfg, "quay.io");
        assert_eq!(up[0].base, "https://quay.io");
        assert_eq!(endpoints(&cfg, "127.0.0.1:7000")[0].base, "http://127.0.0.1:7000");
        assert_eq!(endpoints(&cfg, "localhost")[0].base, "http://localhost");
    }
}
