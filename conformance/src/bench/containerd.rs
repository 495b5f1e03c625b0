//! containerd (Debian's, with its CRI plugin) for side-by-side figures: a config of the bench's own
//! (temporary root, state and socket, the same registry mirrors, a CNI network of its own, runc through
//! the runc v2 shim), started and stopped by PID; the shims it leaves are ended by PID too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::net::TestNetwork;
use crate::registry::Registry;

/// The image containerd uses as the pod's pause (crust's own static pause, pushed to the local registry).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.9";

/// A running containerd.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Child,
    cfg_path: PathBuf,
    _network: TestNetwork,
    /// containerd makes its default cgroup parent, `k8s.io`, in every hierarchy; when this run made it,
    /// the run removes it.
    made_cgroup_parent: bool,
    /// The network namespaces under [`NETNS_DIR`] before containerd started: the `cni-*` ones that
    /// appear after are its pods', which it does not always remove (seen with critest's benchmark).
    netns_before: Vec<String>,
}

/// Where containerd pins its pods' network namespaces.
const NETNS_DIR: &str = "/run/netns";

fn netns_names() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// containerd's default cgroup parent (cgroupfs driver, no parent asked for).
const CGROUP_PARENT: &str = "k8s.io";

fn cgroup_parent_exists() -> bool {
    crate::crustd::cgroup_exists(CGROUP_PARENT)
}

/// Whether containerd and its runc shim are installed.
pub fn installed() -> bool {
    Path::new("/usr/bin/containerd").exists() && Path::new("/usr/bin/containerd-shim-runc-v2").exists()
}

impl Containerd {
    /// Writes a config and starts containerd (runc with the cgroupfs driver); returns once its socket
    /// answers.
    pub async fn start(reg: &Registry) -> Result<Containerd> {
        Self::start_with(reg, false).await
    }

    /// [`Containerd::start`], with runc's systemd cgroup driver when `systemd_cgroup` (`SystemdCgroup =
    /// true`, as kubeadm's nodes run it where systemd is PID 1: each container a scope that runc asks
    /// systemd for, in the slice its pod names as its parent).
    pub async fn start_with(reg: &Registry, systemd_cgroup: bool) -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("crust-bench-containerd-")
            .tempdir()?;
        let cni = dir.path().join("cni");
        let network = TestNetwork::reserve(&cni, dir.path());
        let socket = dir.path().join("containerd.sock");
        let mut mirrors = String::new();
        let mut hosts: Vec<String> = crate::crustd::MIRRORED_HOSTS
            .iter()
            .map(|h| h.to_string())
            .collect();
        hosts.push(reg.host());
        for h in hosts {
            mirrors.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{h}\"]\n  endpoint = [\"{}\"]\n",
                reg.url()
            ));
        }
        let cfg = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This host lacks CAP_SYS_RESOURCE: the pause (-998) must not ask for less than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = {systemd_cgroup}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
{mirrors}"#,
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
            cni = cni.display(),
        );
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(&cfg_path, cfg)?;
        let child = spawn(&cfg_path, dir.path())?;
        let made_cgroup_parent = !cgroup_parent_exists();
        let netns_before = netns_names();
        let c = Containerd {
            dir,
            socket,
            child,
            cfg_path,
            _network: network,
            made_cgroup_parent,
            netns_before,
        };
        for _ in 0..300 {
            if let Ok(ch) = crate::crustd::channel(&c.socket).await {
                let mut rt = cri_api::v1::runtime_service_client::RuntimeServiceClient::new(ch);
                if rt.version(cri_api::v1::VersionRequest::default()).await.is_ok() {
                    return Ok(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "containerd did not answer on {}; its log is in {}",
            c.socket.display(),
            c.dir.path().join("containerd.log").display()
        )
    }

    /// Stops and removes every pod containerd has (what the bench and critest's benchmark left, also
    /// after a failure), so that stopping it leaves no pause process, shim or network namespace
    /// behind: containerd's pods outlive the daemon. Returns how many there were.
    pub async fn remove_all_pods(&self) -> Result<usize> {
        use cri_api::v1::*;
        let mut rt =
            runtime_service_client::RuntimeServiceClient::new(crate::crustd::channel(&self.socket).await?);
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .context("containerd: ListPodSandbox")?
            .into_inner()
            .items;
        for p in &pods {
            let id = p.id.clone();
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .with_context(|| format!("containerd: StopPodSandbox {id}"))?;
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .with_context(|| format!("containerd: RemovePodSandbox {id}"))?;
        }
        Ok(pods.len())
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops containerd (SIGTERM; its shims and containers live on) and starts it again with the same
    /// configuration, without waiting for it to answer (the bench's cold node). Returns the new PID.
    pub fn respawn_nowait(&mut self) -> Result<u32> {
        self.stop_daemon();
        self.child = spawn(&self.cfg_path, self.dir.path())?;
        Ok(self.child.id())
    }

    fn stop_daemon(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cfg_path: &Path, dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))?;
    Command::new("/usr/bin/containerd")
        .arg("--config")
        .arg(cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .spawn()
        .context("spawn containerd")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop_daemon();
        // Shims outlive containerd by design; these are the ones this run started.
        let needle = self.socket.display().to_string();
        for p in super::memory::find("containerd-shim", &needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let dirs = [self.dir.path()];
        crate::crustd::kill_processes_using(&dirs);
        crate::crustd::unmount_under(&dirs);
        for n in netns_names() {
            if n.starts_with("cni-") && !self.netns_before.contains(&n) {
                let p = Path::new(NETNS_DIR).join(&n);
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&p);
            }
        }
        if self.made_cgroup_parent {
            crate::crustd::remove_cgroup_everywhere(CGROUP_PARENT);
        }
    }
}
