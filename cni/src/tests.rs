//! Tests against the real plugins in /usr/lib/cni, in a network namespace each test makes and removes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;

const REAL_BIN: &str = "/usr/lib/cni";

/// A network namespace pinned at a temp path; unpinned on drop.
struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns");
        std::fs::write(&path, b"").unwrap();
        let p = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        TestNetns { path, _dir: dir }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn rt(ns: &TestNetns) -> RuntimeConf {
    RuntimeConf::for_pod("c0ffee", ns.path.clone(), "default", "p", "uid-1")
}

#[tokio::test]
async fn loopback_plugin_brings_up_lo() {
    let ns = TestNetns::new();
    let cni = Cni::new(vec![REAL_BIN.into()], Duration::from_secs(20));
    let net =
        NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})).unwrap();
    let r = cni.add(&net, &rt(&ns)).await.unwrap();
    assert_eq!(r.cni_version, "1.0.0");
    assert!(r.interfaces.iter().any(|i| i.name == "lo"), "{:?}", r.raw);
    cni.check(&net, &rt(&ns), &r.raw).await.unwrap();
    cni.del(&net, &rt(&ns), Some(&r.raw)).await.unwrap();
}

#[tokio::test]
async fn bridge_host_local_add_check_del_in_all_versions() {
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let ns = TestNetns::new();
        let store = tempfile::tempdir().unwrap();
        let bridge = BridgeGuard(format!("crtc{}{i}", std::process::id() % 10000));
        let mut plugins = vec![json!({
            "type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "dataDir": store.path(), "ranges": [[{"subnet": format!("10.251.{i}.0/24")}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        })];
        // portmap's CHECK fails on hosts without ip6tables NAT chains, so it runs only where CHECK is
        // skipped (0.3.1).
        if version == "0.3.1" {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        }
        let net = NetworkConfig::from_value(
            json!({"cniVersion": version, "name": "crust-cni-test", "plugins": plugins}),
        )
        .unwrap();
        let cni = Cni::new(vec![REAL_BIN.into()], Duration::from_secs(20));
        let rt = rt(&ns).with_port_mappings(&[PortMapping {
            host_port: 40000 + i as u16,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        }]);
        let r = cni
            .add(&net, &rt)
            .await
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        let ips = r.container_ips();
        assert_eq!(ips.len(), 1, "{version}: {:?}", r.raw);
        assert!(ips[0].to_string().starts_with(&format!("10.251.{i}.")), "{ips:?}");
        // The lease is on disk in the IPAM store.
        let lease = store.path().join("crust-cni-test").join(ips[0].to_string());
        assert!(lease.exists(), "{version}: no lease at {}", lease.display());
        cni.check(&net, &rt, &r.raw).await.unwrap();
        cni.del(&net, &rt, Some(&r.raw)).await.unwrap();
        assert!(!lease.exists(), "{version}: lease left after DEL");
        // DEL is idempotent.
        cni.del(&net, &rt, Some(&r.raw)).await.unwrap();
    }
}

/// Deletes a test bridge on drop.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

#[tokio::test]
async fn plugin_error_message_and_missing_plugin() {
    let ns = TestNetns::new();
    let bin = tempfile::tempdir().unwrap();
    script(
        bin.path(),
        "failer",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no more addresses","details":"range 10.0.0.0/30 full"}'; exit 1"#,
    );
    let cni = Cni::new(vec![bin.path().into()], Duration::from_secs(20));
    let net =
        NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "name": "f", "type": "failer"})).unwrap();
    match cni.add(&net, &rt(&ns)).await.unwrap_err() {
        CniError::Plugin { plugin, code, msg } => {
            assert_eq!(plugin, "failer");
            assert_eq!(code, Some(11), "{msg}");
            assert_eq!(msg, "no more addresses: range 10.0.0.0/30 full");
        }
        e => panic!("unexpected {e}"),
    }
    let net = NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "name": "m", "type": "nosuchplugin"}))
        .unwrap();
    let e = cni.add(&net, &rt(&ns)).await.unwrap_err();
    assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
    assert!(e.to_string().contains("nosuchplugin"), "{e}");
}

#[tokio::test]
async fn env_stdin_prev_result_and_runtime_config_reach_the_plugin() {
    let ns = TestNetns::new();
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("log");
    // Records its env and stdin, then prints a 1.0.0 result (the first) or echoes prevResult.
    script(
        bin.path(),
        "recorder",
        &format!(
            r#"in=$(cat); echo "$CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH|$in" >> {log}
echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.9.0.2/24"}}]}}'"#,
            log = log.display()
        ),
    );
    let cni = Cni::new(vec![bin.path().into()], Duration::from_secs(20));
    let net = NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "name": "rec", "plugins": [
        {"type": "recorder"},
        {"type": "recorder", "capabilities": {"portMappings": true, "bandwidth": false}}
    ]}))
    .unwrap();
    let rt = rt(&ns)
        .with_port_mappings(&[PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }])
        .with_bandwidth(&Bandwidth {
            ingress_rate: 1,
            ingress_burst: 1,
            egress_rate: 1,
            egress_burst: 1,
        });
    let r = cni.add(&net, &rt).await.unwrap();
    assert_eq!(
        r.container_ips(),
        vec!["10.9.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    cni.del(&net, &rt, Some(&r.raw)).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let fields: Vec<_> = lines[0].splitn(7, '|').collect();
    assert_eq!(fields[0], "ADD");
    assert_eq!(fields[1], "c0ffee");
    assert_eq!(fields[2], ns.path.to_str().unwrap());
    assert_eq!(fields[3], "eth0");
    assert_eq!(
        fields[4],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-1"
    );
    assert_eq!(fields[5], bin.path().to_str().unwrap());
    let first: serde_json::Value = serde_json::from_str(fields[6]).unwrap();
    assert!(
        first.get("prevResult").is_none() && first.get("runtimeConfig").is_none(),
        "{first}"
    );
    assert_eq!(first["name"], "rec");
    let second: serde_json::Value = serde_json::from_str(lines[1].splitn(7, '|').nth(6).unwrap()).unwrap();
    assert_eq!(second["prevResult"]["ips"][0]["address"], "10.9.0.2/24");
    assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert!(second["runtimeConfig"].get("bandwidth").is_none(), "{second}");
    // DEL runs in reverse order with the cached result.
    assert!(lines[2].starts_with("DEL|"));
    let del: serde_json::Value = serde_json::from_str(lines[2].splitn(7, '|').nth(6).unwrap()).unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.9.0.2/24");
    assert!(del["runtimeConfig"]["portMappings"].is_array());
}

#[tokio::test]
async fn a_hung_plugin_is_killed_at_the_timeout() {
    let ns = TestNetns::new();
    let bin = tempfile::tempdir().unwrap();
    let pidfile = bin.path().join("pid");
    script(
        bin.path(),
        "hang",
        &format!("echo $$ > {}; exec sleep 600", pidfile.display()),
    );
    let cni = Cni::new(vec![bin.path().into()], Duration::from_millis(300));
    let net = NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "name": "h", "type": "hang"})).unwrap();
    let e = cni.add(&net, &rt(&ns)).await.unwrap_err();
    assert!(matches!(e, CniError::Timeout { .. }), "{e}");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // kill_on_drop sent SIGKILL; the runtime reaps the child shortly after.
    let mut gone = false;
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "plugin {pid} still running");
}

#[test]
fn versions_compare_numerically() {
    assert!(version_at_least("1.0.0", "0.4.0"));
    assert!(version_at_least("0.4.0", "0.4.0"));
    assert!(!version_at_least("0.3.1", "0.4.0"));
    assert!(version_at_least("0.10.0", "0.4.0"));
}
