//! Plugin results: the 0.3.0–1.1.0 shape (`interfaces`, `ips`, `routes`, `dns`) and the older 0.1/0.2
//! shape (`ip4`, `ip6`), parsed into typed IPs, routes and interfaces. The raw JSON is kept: it is what
//! the next plugin gets as `prevResult`, and what DEL and CHECK get later.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CniError;

/// One interface a plugin made or uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The netns path when the interface is inside the container; empty for host interfaces.
    #[serde(default)]
    pub sandbox: String,
}

/// An address given to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    pub gw: Option<IpAddr>,
}

/// DNS settings a plugin returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// A parsed result with its raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The JSON the plugin printed.
    pub raw: Value,
}

impl CniResult {
    /// Parses a result of any supported version.
    pub fn parse(raw: Value) -> Result<Self, CniError> {
        let bad = |m: String| CniError::Result(m);
        let Value::Object(obj) = &raw else {
            return Err(bad("result is not a JSON object".into()));
        };
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.1.0")
            .to_string();
        let mut r = CniResult {
            cni_version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Dns::default(),
            raw: raw.clone(),
        };
        if let Some(d) = obj.get("dns") {
            r.dns = serde_json::from_value(d.clone()).map_err(|e| bad(format!("dns: {e}")))?;
        }
        if r.cni_version.starts_with("0.1.") || r.cni_version.starts_with("0.2.") {
            for key in ["ip4", "ip6"] {
                let Some(ip) = obj.get(key) else { continue };
                let (address, prefix_len) = parse_cidr(
                    ip.get("ip")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("{key}.ip is missing")))?,
                )
                .map_err(|m| bad(format!("{key}.ip: {m}")))?;
                let gateway = opt_ip(ip.get("gateway")).map_err(|m| bad(format!("{key}.gateway: {m}")))?;
                r.ips.push(IpConfig {
                    address,
                    prefix_len,
                    gateway,
                    interface: None,
                });
                r.routes
                    .extend(parse_routes(ip.get("routes")).map_err(|m| bad(format!("{key}.routes: {m}")))?);
            }
            return Ok(r);
        }
        if let Some(ifs) = obj.get("interfaces") {
            r.interfaces =
                serde_json::from_value(ifs.clone()).map_err(|e| bad(format!("interfaces: {e}")))?;
        }
        if let Some(Value::Array(ips)) = obj.get("ips") {
            for (i, ip) in ips.iter().enumerate() {
                let (address, prefix_len) = parse_cidr(
                    ip.get("address")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("ips[{i}].address is missing")))?,
                )
                .map_err(|m| bad(format!("ips[{i}].address: {m}")))?;
                let gateway = opt_ip(ip.get("gateway")).map_err(|m| bad(format!("ips[{i}].gateway: {m}")))?;
                let interface = ip.get("interface").and_then(Value::as_u64).map(|n| n as usize);
                r.ips.push(IpConfig {
                    address,
                    prefix_len,
                    gateway,
                    interface,
                });
            }
        }
        r.routes = parse_routes(obj.get("routes")).map_err(|m| bad(format!("routes: {m}")))?;
        Ok(r)
    }

    /// The addresses on interfaces inside the container (`sandbox` set), or all when none says where.
    pub fn container_ips(&self) -> Vec<IpAddr> {
        let in_sandbox = |ip: &IpConfig| match ip.interface {
            Some(i) => self.interfaces.get(i).is_none_or(|x| !x.sandbox.is_empty()),
            None => true,
        };
        self.ips
            .iter()
            .filter(|ip| in_sandbox(ip))
            .map(|ip| ip.address)
            .collect()
    }
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not CIDR notation"))?;
    let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IP address"))?;
    let prefix: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix length {prefix} is too long"));
    }
    Ok((addr, prefix))
}

fn opt_ip(v: Option<&Value>) -> Result<Option<IpAddr>, String> {
    match v.and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{s:?} is not an IP address")),
    }
}

fn parse_routes(v: Option<&Value>) -> Result<Vec<Route>, String> {
    let Some(Value::Array(routes)) = v else {
        return Ok(Vec::new());
    };
    routes
        .iter()
        .map(|r| {
            let dst = r
                .get("dst")
                .and_then(Value::as_str)
                .ok_or("dst is missing")?
                .to_string();
            Ok(Route {
                dst,
                gw: opt_ip(r.get("gw"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_1_0_result() {
        let r = CniResult::parse(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa:bb"}, {"name": "eth0", "mac": "cc:dd", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].prefix_len, 24);
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(
            r.container_ips(),
            vec!["10.1.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
        );
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.interfaces[1].sandbox, "/run/netns/x");
        assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
    }

    #[test]
    fn parses_0_3_and_0_2_results() {
        let r = CniResult::parse(json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.2.0.7/16", "gateway": "10.2.0.1"}]
        }))
        .unwrap();
        assert_eq!(r.container_ips(), vec!["10.2.0.7".parse::<IpAddr>().unwrap()]);
        let r = CniResult::parse(json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.3.0.2/24", "gateway": "10.3.0.1", "routes": [{"dst": "0.0.0.0/0"}]}
        }))
        .unwrap();
        assert_eq!(r.ips[0].address, "10.3.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn refuses_bad_addresses() {
        let e =
            CniResult::parse(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]})).unwrap_err();
        assert!(e.to_string().contains("ips[0].address"), "{e}");
    }
}
