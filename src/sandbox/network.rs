//! Pod networking through CNI: the default network from the configuration dir, the runtime config
//! (K8S args, port mappings, pod CIDR), ADD with the result kept in the record, DEL with that result as
//! `prevResult` (also after a restart or a reboot: the plugins' IPAM store outlives both).

use std::collections::HashMap;
use std::path::Path;

use cri_api::v1;
use crust_cni::{Bandwidth, Cni, CniError, CniResult, IpRange, NetworkConfig, PortMapping, RuntimeConf};

use super::record::{NetworkRecord, PodRecord};
use crate::{Error, Result};

/// Port mappings for the portmap plugin; those without a host port are skipped.
pub fn port_mappings(ports: &[v1::PortMapping]) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("config.port_mappings[{i}].{f}");
        let container_port = u16::try_from(p.container_port)
            .ok()
            .filter(|&x| x != 0)
            .ok_or_else(|| {
                Error::invalid(
                    field("container_port"),
                    format!("{} is not a port", p.container_port),
                )
            })?;
        let host_port = u16::try_from(p.host_port)
            .map_err(|_| Error::invalid(field("host_port"), format!("{} is not a port", p.host_port)))?;
        if host_port == 0 {
            continue;
        }
        let protocol = match v1::Protocol::try_from(p.protocol) {
            Ok(v1::Protocol::Tcp) => "tcp",
            Ok(v1::Protocol::Udp) => "udp",
            Ok(v1::Protocol::Sctp) => "sctp",
            Err(_) => {
                return Err(Error::invalid(
                    field("protocol"),
                    format!("unknown protocol {}", p.protocol),
                ));
            }
        };
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(
                field("host_ip"),
                format!("{:?} is not an IP address", p.host_ip),
            ));
        }
        out.push(PortMapping {
            host_port,
            container_port,
            protocol: protocol.into(),
            host_ip: p.host_ip.clone(),
        });
    }
    Ok(out)
}

/// The `ipRanges` capability for a pod CIDR from UpdateRuntimeConfig (empty: none).
pub fn ip_ranges(pod_cidr: &str) -> Vec<Vec<IpRange>> {
    pod_cidr
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            vec![IpRange {
                subnet: s.to_string(),
                range_start: String::new(),
                range_end: String::new(),
                gateway: String::new(),
            }]
        })
        .collect()
}

/// The pod annotation limiting ingress bandwidth (a Kubernetes quantity of bits per second).
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
/// The pod annotation limiting egress bandwidth.
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// The `bandwidth` capability from the pod's annotations (`None` when neither is set). Bursts are
/// left unlimited, as kubelet's other runtimes do.
pub fn bandwidth(annotations: &HashMap<String, String>) -> Result<Option<Bandwidth>> {
    let rate = |key: &str| -> Result<u64> {
        match annotations.get(key) {
            None => Ok(0),
            Some(v) => parse_quantity(v).ok_or_else(|| {
                Error::invalid(
                    format!("config.annotations[{key}]"),
                    format!("{v:?} is not a quantity"),
                )
            }),
        }
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
    if ingress == 0 && egress == 0 {
        return Ok(None);
    }
    let burst = |r: u64| if r == 0 { 0 } else { u64::from(u32::MAX) };
    Ok(Some(Bandwidth {
        ingress_rate: ingress,
        ingress_burst: burst(ingress),
        egress_rate: egress,
        egress_burst: burst(egress),
    }))
}

/// A Kubernetes quantity without fractions: `10M`, `1Gi`, `500k`, `1000`.
fn parse_quantity(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The default network: the first valid configuration in `conf_dir`.
pub fn default_network(conf_dir: &Path) -> Result<NetworkConfig> {
    let loaded = crust_cni::load_dir(conf_dir);
    loaded.networks.into_iter().next().ok_or_else(|| {
        let broken: Vec<String> = loaded
            .errors
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect();
        Error::FailedPrecondition(if broken.is_empty() {
            format!("no CNI network configuration in {}", conf_dir.display())
        } else {
            format!(
                "no valid CNI network configuration in {} ({})",
                conf_dir.display(),
                broken.join("; ")
            )
        })
    })
}

fn runtime_conf(rec: &PodRecord, net: &NetworkRecord) -> RuntimeConf {
    let rt = RuntimeConf::for_pod(
        &rec.id,
        rec.netns.clone().unwrap_or_default(),
        &rec.namespace,
        &rec.name,
        &rec.uid,
    )
    .with_port_mappings(&net.port_mappings)
    .with_ip_ranges(&net.ip_ranges);
    match &net.bandwidth {
        Some(bw) => rt.with_bandwidth(bw),
        None => rt,
    }
}

fn cni_error(verb: &str, network: &str, e: CniError) -> Error {
    let msg = format!("CNI {verb} of network {network:?} failed: {e}");
    match e {
        CniError::Timeout { .. } => Error::DeadlineExceeded(msg),
        CniError::Config(_) => Error::FailedPrecondition(msg),
        _ => Error::Internal(msg),
    }
}

/// Runs ADD for the pod's network; returns the parsed result.
pub async fn add(cni: &Cni, rec: &PodRecord, net: &NetworkRecord) -> Result<CniResult> {
    let conf = NetworkConfig::from_value(net.config.clone()).map_err(|e| cni_error("ADD", &net.name, e))?;
    cni.add(&conf, &runtime_conf(rec, net))
        .await
        .map_err(|e| cni_error("ADD", &net.name, e))
        .inspect_err(|e| crate::metrics::global().cni_failure("ADD", e))
}

/// Runs DEL for the pod's network with the cached ADD result.
pub async fn del(cni: &Cni, rec: &PodRecord, net: &NetworkRecord) -> Result<()> {
    let conf = NetworkConfig::from_value(net.config.clone()).map_err(|e| cni_error("DEL", &net.name, e))?;
    cni.del(&conf, &runtime_conf(rec, net), net.result.as_ref())
        .await
        .map_err(|e| cni_error("DEL", &net.name, e))
        .inspect_err(|e| crate::metrics::global().cni_failure("DEL", e))
}

/// The pod's IPs from a result: container-side addresses, IPv4 first.
pub fn pod_ips(r: &CniResult) -> Vec<String> {
    let mut ips = r.container_ips();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    ips.iter().map(|ip| ip.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mapping_validation() {
        let ok = port_mappings(&[
            v1::PortMapping {
                protocol: 0,
                container_port: 80,
                host_port: 8080,
                host_ip: "127.0.0.1".into(),
            },
            v1::PortMapping {
                protocol: 1,
                container_port: 53,
                host_port: 0,
                host_ip: String::new(),
            },
        ])
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].protocol, "tcp");
        let e = port_mappings(&[v1::PortMapping {
            protocol: 0,
            container_port: 70000,
            host_port: 1,
            host_ip: String::new(),
        }])
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.port_mappings[0].container_port"),
            "{e}"
        );
        let e = port_mappings(&[v1::PortMapping {
            protocol: 9,
            container_port: 1,
            host_port: 1,
            host_ip: String::new(),
        }])
        .unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
    }

    #[test]
    fn bandwidth_annotations() {
        assert_eq!(bandwidth(&HashMap::new()).unwrap(), None);
        let a: HashMap<String, String> = [(INGRESS_BANDWIDTH.to_string(), "10M".to_string())].into();
        let bw = bandwidth(&a).unwrap().unwrap();
        assert_eq!(
            (bw.ingress_rate, bw.egress_rate, bw.egress_burst),
            (10_000_000, 0, 0)
        );
        let a: HashMap<String, String> = [(EGRESS_BANDWIDTH.to_string(), "1Mi".to_string())].into();
        assert_eq!(bandwidth(&a).unwrap().unwrap().egress_rate, 1 << 20);
        let a: HashMap<String, String> = [(EGRESS_BANDWIDTH.to_string(), "fast".to_string())].into();
        let e = bandwidth(&a).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.annotations[kubernetes.io/egress-bandwidth]"),
            "{e}"
        );
    }

    #[test]
    fn pod_cidr_to_ranges() {
        assert!(ip_ranges("").is_empty());
        let r = ip_ranges("10.0.0.0/24, fd00::/64");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1][0].subnet, "fd00::/64");
    }
}
