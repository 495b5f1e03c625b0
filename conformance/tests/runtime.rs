//! The runtime-wide RPCs and crustd's process behaviour: Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig, unimplemented RPCs, configuration errors, the socket, signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions};

#[tokio::test]
async fn version_names_crust_and_v1() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let v = d
        .runtime()
        .await
        .version(VersionRequest { version: "v1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crust");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, crust::version::RUNTIME_VERSION);
    assert_eq!(
        v.runtime_version,
        format!("{}+{}", env!("CARGO_PKG_VERSION"), built_from())
    );
}

/// The commit the binaries were built from: `CRUST_COMMIT` when set, else git's HEAD here.
fn built_from() -> String {
    if let Ok(c) = std::env::var("CRUST_COMMIT") {
        return c;
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "git rev-parse: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn version_flags_name_the_release_and_the_commit() {
    for bin in ["crustd", "crustctl"] {
        let out = Command::new(harness::bin_dir().join(bin))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} --version: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{bin} {} (commit {})\n", env!("CARGO_PKG_VERSION"), built_from())
        );
    }
}

#[tokio::test]
async fn status_reports_network_not_ready_without_cni_config() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let s = d
        .runtime()
        .await
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let rt = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(rt.status);
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message.contains(&d.cni_conf_dir.display().to_string()),
        "{}",
        net.message
    );
    let cfg: serde_json::Value = serde_json::from_str(s.info.get("config").unwrap()).unwrap();
    assert_eq!(cfg["root"], serde_json::json!(d.root));
    assert!(s.runtime_handlers.iter().any(|h| h.name == "runc"));
}

#[tokio::test]
async fn status_reports_network_ready_with_a_cni_config() {
    let d = Crustd::start(CrustdOptions {
        cni: true,
        ..Default::default()
    })
    .await;
    let s = d
        .runtime()
        .await
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let net = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(net.status, "{net:?}");
    assert!(s.info.is_empty());
}

#[tokio::test]
async fn runtime_config_and_pod_cidr() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let mut rt = d.runtime().await;
    let c = rt
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    // `auto`: systemd where systemd is PID 1, else cgroupfs.
    let want = if d.systemd {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    assert_eq!(c.linux.unwrap().cgroup_driver, want as i32);

    let req = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    rt.update_runtime_config(req("10.88.0.0/16")).await.unwrap();
    let s = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.info.get("podCIDR").unwrap(), "\"10.88.0.0/16\"");
    let e = rt.update_runtime_config(req("10.88.0.0/99x")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("pod_cidr"), "{}", e.message());
}

// Multi-threaded: the client's connection keeps being served while `terminate` blocks this thread, as a
// live client's is (crustd's graceful shutdown waits for each connection to take its going-away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_has_mode_0660_and_a_second_crustd_refuses_it() {
    let mut d = Crustd::start(CrustdOptions::default()).await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let out = Command::new(harness::binary("crustd"))
        .arg("--config")
        .arg(&d.config)
        .arg("--root")
        .arg(d.dir.path().join("root2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&d.socket.display().to_string()) && err.contains("running"),
        "{err}"
    );
    // The first one still serves.
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
    // SIGTERM: clean exit 0, socket removed.
    assert_eq!(d.terminate().and_then(|s| s.code()), Some(0));
    assert!(!d.socket.exists());
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let mut d = Crustd::start(CrustdOptions::default()).await;
    d.kill9();
    assert!(d.socket.exists(), "SIGKILL leaves the socket file behind");
    d.restart().await;
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
}

fn crustd_with_config(text: &str, dropin: Option<&str>) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("crust.toml");
    std::fs::write(&cfg, text).unwrap();
    if let Some(d) = dropin {
        std::fs::create_dir_all(dir.path().join("crust.d")).unwrap();
        std::fs::write(dir.path().join("crust.d/10-x.toml"), d).unwrap();
    }
    let out = Command::new(harness::binary("crustd"))
        .arg("--config")
        .arg(&cfg)
        .arg("config")
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn an_unknown_key_stops_crustd_with_status_2_naming_file_and_key() {
    let (out, dir) = crustd_with_config("[image]\nmax_parallel = 4\n", None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.path().join("crust.toml").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("max_parallel") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_or_impossible_value_stops_crustd_with_status_2() {
    let (out, _d) = crustd_with_config("[image]\nmax_concurrent_downloads = \"three\"\n", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_concurrent_downloads"));

    let (out, dir) = crustd_with_config("", Some("[runtime]\ndefault_handler = \"kata\"\n"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.path().join("crust.d/10-x.toml").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("runtime.default_handler") && err.contains("kata"),
        "{err}"
    );
}

#[test]
fn crustd_config_prints_every_default_and_reads_back() {
    let (out, dir) = crustd_with_config("log_level = \"debug\"\n", None);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "root = \"/var/lib/crust\"",
        "state = \"/run/crust\"",
        "log_level = \"debug\"",
        "[runtime.handlers.runc]",
        "conf_dir = \"/etc/cni/net.d\"",
        "socket = \"/run/crust/crust.sock\"",
    ] {
        assert!(text.contains(key), "missing {key:?} in:\n{text}");
    }
    // The printed configuration is itself a valid configuration that prints the same.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let out2 = Command::new(harness::binary("crustd"))
        .arg("--config")
        .arg(&again)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out2.stdout).unwrap(), text);
}

#[tokio::test]
async fn crictl_version_and_info_when_installed() {
    let Ok(crictl) = which("crictl") else {
        eprintln!("crictl not on PATH: skipped");
        return;
    };
    let d = Crustd::start(CrustdOptions::default()).await;
    let ep = format!("unix://{}", d.socket.display());
    let out = Command::new(&crictl)
        .args(["--runtime-endpoint", &ep, "version"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RuntimeName:  crust"),
        "{out:?}"
    );
    let out = Command::new(&crictl)
        .args(["--runtime-endpoint", &ep, "info"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RuntimeReady"),
        "{out:?}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .ok_or(())
}

#[test]
fn deploy_crust_toml_is_the_generated_default() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crust.toml")).unwrap();
    let body: String = shipped
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new(harness::binary("crustd"))
        .args(["--config", "/dev/null", "config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let generated = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        body.trim(),
        generated.trim(),
        "deploy/crust.toml is stale: regenerate it with `crustd --config /dev/null config`"
    );
}
