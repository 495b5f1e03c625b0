//! `crustd` under test: temporary root (persistent) and state (short path under /run, since unix socket
//! paths are limited to 108 bytes) dirs, a config with registry mirrors (upstream fallback off) and a CNI
//! network of its own, proxy variables aimed at a closed loopback port, and gRPC clients. On drop it
//! removes every pod and container through the API, stops crustd, and then sweeps what might remain:
//! runc containers in its runtime root, processes still using its state dir (by PID), mounts, cgroups,
//! the test bridge and the directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::net::TestNetwork;
use crate::registry::Registry;

/// How to start crustd.
#[derive(Default)]
pub struct CrustdOptions<'a> {
    /// Mirror the registry hosts tests use (`docker.io`, `registry.k8s.io`, … and the registry's own
    /// host) to this registry, with the upstream fallback off.
    pub registry: Option<&'a Registry>,
    /// Give crustd a CNI network of its own (a conflist in its conf dir). Without it, the conf dir is
    /// empty and the network is not ready.
    pub cni: bool,
    /// TOML written as a drop-in after the generated config (so it may override anything).
    pub extra_toml: String,
    /// More environment for crustd (on top of the proxy guard, which it cannot override).
    pub env: Vec<(String, String)>,
    /// The directory of the crustd and crust-monitor to run (another build's, as the upgrade tests'
    /// older release); this build's ([`crate::bin_dir`]) when `None`.
    pub bin_dir: Option<PathBuf>,
    /// The cgroupfs driver even where systemd is PID 1 (`auto` would pick systemd there), with a
    /// cgroup path as the pods' parent: the node bench's like-for-like row beside containerd's.
    pub cgroupfs: bool,
}

/// Hosts whose pulls the tests mirror to the local registry.
pub const MIRRORED_HOSTS: &[&str] = &[
    "docker.io",
    "registry.k8s.io",
    "gcr.io",
    "quay.io",
    "public.ecr.aws",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running crustd (or one that was killed and can be restarted).
pub struct Crustd {
    /// Temp dir holding root, config and logs.
    pub dir: tempfile::TempDir,
    /// Short temp dir holding state.
    pub state_dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// The pod cgroup parent this instance uses (relative, per test): a cgroup path with the
    /// cgroupfs driver, a top-level slice (`crusttest_<pid>_<n>.slice`, its own dir under the cgroup
    /// root too) where systemd is PID 1 and `auto` picks the systemd driver.
    pub cgroup_parent: String,
    /// Whether crustd runs the systemd cgroup driver (systemd is PID 1 here).
    pub systemd: bool,
    /// The CNI network, when asked for.
    pub network: Option<TestNetwork>,
    env: Vec<(String, String)>,
    /// Where crustd and crust-monitor come from.
    bin_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

/// A gRPC channel to a unix socket.
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    crust::server::connect(socket).await
}

impl Crustd {
    /// The cgroup (relative to a hierarchy's root) of pod `id` when its request names no parent.
    pub fn pod_cgroup(&self, id: &str) -> String {
        match self.cgroup_parent.strip_suffix(".slice") {
            Some(stem) => format!("{}/{stem}-pod{id}.slice", self.cgroup_parent),
            None => format!("{}/{id}", self.cgroup_parent),
        }
    }

    /// The cgroup of pod `id`'s pause.
    pub fn pause_cgroup(&self, id: &str) -> String {
        if self.systemd {
            format!("{}/crust-pause-{id}.scope", self.pod_cgroup(id))
        } else {
            format!("{}/pause", self.pod_cgroup(id))
        }
    }

    /// Writes the config and starts crustd; returns once it answers `Version`.
    pub async fn start(opts: CrustdOptions<'_>) -> Crustd {
        let dir = tempfile::Builder::new()
            .prefix("crust-test-")
            .tempdir()
            .expect("tempdir");
        let state_dir = tempfile::Builder::new()
            .prefix("ct")
            .tempdir_in("/run")
            .expect("state tempdir in /run");
        let root = dir.path().join("root");
        let state = state_dir.path().to_path_buf();
        let socket = state.join("crust.sock");
        let config = dir.path().join("crust.toml");
        let cni_conf_dir = dir.path().join("cni");
        std::fs::create_dir_all(&cni_conf_dir).expect("cni dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let systemd = !opts.cgroupfs && std::path::Path::new("/run/systemd/system").is_dir();
        let cgroup_parent = if systemd {
            format!("crusttest_{}_{n}.slice", std::process::id())
        } else {
            format!("crust-test-{}-{n}", std::process::id())
        };
        let network = opts.cni.then(|| TestNetwork::reserve(&cni_conf_dir, dir.path()));
        let this_build = opts.bin_dir.is_none();
        let bin_dir = opts.bin_dir.unwrap_or_else(crate::bin_dir);

        let mut toml = format!(
            "root = {root:?}\nstate = {state:?}\nlog_level = \"debug\"\n\n[api]\nsocket = {socket:?}\n\n[runtime]\ncgroup_parent = {cgroup_parent:?}\nmonitor_path = {monitor:?}\n",
            monitor = bin_dir.join("crust-monitor"),
        );
        if opts.cgroupfs {
            toml.push_str("cgroup_driver = \"cgroupfs\"\n");
        }
        if let Some(p) = crate::pause_binary() {
            toml.push_str(&format!("pause_path = {p:?}\n"));
        }
        toml.push_str(&format!("\n[cni]\nconf_dir = {cni_conf_dir:?}\n"));
        // An older release's crustd (opts.bin_dir) knows no [nri] table: it gets one at upgrade_to.
        if this_build {
            toml.push_str(&nri_table(dir.path(), &state));
        }
        if let Some(reg) = opts.registry {
            let mut hosts: Vec<String> = MIRRORED_HOSTS.iter().map(|h| h.to_string()).collect();
            hosts.push(reg.host());
            for h in hosts {
                toml.push_str(&format!(
                    "\n[registry.mirrors.{h:?}]\nendpoint = [{url:?}]\nfallback_to_upstream = false\n",
                    url = reg.url()
                ));
            }
        }
        std::fs::write(&config, toml).expect("write config");
        if !opts.extra_toml.is_empty() {
            let d = dir.path().join("crust.d");
            std::fs::create_dir_all(&d).expect("dropin dir");
            std::fs::write(d.join("50-test.toml"), &opts.extra_toml).expect("write dropin");
        }
        let log_path = dir.path().join("crustd.log");
        let mut c = Crustd {
            dir,
            state_dir,
            root,
            state,
            socket,
            config,
            cni_conf_dir,
            cgroup_parent,
            systemd,
            network,
            env: opts.env,
            bin_dir,
            child: None,
            log_path,
        };
        c.spawn().await;
        c
    }

    async fn spawn(&mut self) {
        self.spawn_process();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = channel(&self.socket).await {
                let mut rt = RuntimeServiceClient::new(ch);
                if rt.version(cri_api::v1::VersionRequest::default()).await.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("crustd exited during start-up ({st}):\n{}", self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "crustd did not answer within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops crustd (SIGTERM) and starts it again without waiting for it to answer: the caller times
    /// how long the new process takes (the bench's cold node). Returns the new PID.
    pub fn respawn_nowait(&mut self) -> u32 {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn_process();
        self.pid().unwrap_or(0)
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log");
        let crustd = self.bin_dir.join("crustd");
        assert!(crustd.exists(), "{} is not built", crustd.display());
        let child = Command::new(crustd)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Second guard against leaving the machine: any proxied request goes to a closed port.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("NO_COLOR", "1")
            .spawn()
            .expect("spawn crustd");
        self.child = Some(child);
    }

    /// A RuntimeService client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(channel(&self.socket).await.expect("connect to crustd"))
    }

    /// An ImageService client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(channel(&self.socket).await.expect("connect to crustd"))
    }

    /// crustd's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// crustd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `crustctl -o json check` of this crustd's image store: the report (`problems`, `notes`, counts).
    pub fn check_store(&self) -> serde_json::Value {
        let out = std::process::Command::new(crate::binary("crustctl"))
            .arg("--config")
            .arg(&self.config)
            .args(["-o", "json", "check"])
            .output()
            .expect("run crustctl check");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "crustctl check: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// SIGKILLs crustd (containers must survive it).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs crustd and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..200 {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Starts crustd again with the same configuration and directories.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn().await;
    }

    /// Replaces the binaries as an upgrade does: stops crustd (SIGTERM), points the configuration's
    /// monitor_path at `dir`'s crust-monitor and starts `dir`'s crustd on the same directories.
    pub async fn upgrade_to(&mut self, dir: &Path) {
        self.terminate();
        let old = format!("monitor_path = {:?}", self.bin_dir.join("crust-monitor"));
        let new = format!("monitor_path = {:?}", dir.join("crust-monitor"));
        let mut toml = std::fs::read_to_string(&self.config).expect("read config");
        assert!(toml.contains(&old), "{old} is not in {toml}");
        toml = toml.replace(&old, &new);
        if !toml.contains("\n[nri]\n") {
            toml.push_str(&nri_table(self.dir.path(), &self.state));
        }
        std::fs::write(&self.config, toml).expect("write config");
        self.bin_dir = dir.to_path_buf();
        self.spawn().await;
    }

    /// Removes every container and pod through the API (stop, then remove).
    pub async fn remove_everything(&self) -> Result<(), tonic::Status> {
        use cri_api::v1::*;
        let mut rt = self.runtime().await;
        let pods = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await;
        let containers = rt.list_containers(ListContainersRequest::default()).await;
        if let Ok(cs) = containers {
            for c in cs.into_inner().containers {
                let _ = rt
                    .stop_container(StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: 0,
                    })
                    .await;
                rt.remove_container(RemoveContainerRequest { container_id: c.id })
                    .await?;
            }
        }
        if let Ok(ps) = pods {
            for p in ps.into_inner().items {
                rt.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p.id })
                    .await?;
            }
        }
        Ok(())
    }

    /// Everything that drop does after the API clean-up: kills what still uses the state dir, unmounts,
    /// removes cgroups. Returns a description of what had to be swept (empty when crustd left nothing).
    pub fn sweep(&self) -> Vec<String> {
        let mut swept = Vec::new();
        let runc_root = self.state.join("runtime").join("runc");
        if runc_root.exists()
            && let Ok(out) = Command::new("/usr/sbin/runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["list", "-q"])
                .output()
        {
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                swept.push(format!("runc container {id}"));
                let _ = Command::new("/usr/sbin/runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", id])
                    .status();
            }
        }
        swept.extend(kill_processes_using(&[&self.state, &self.root]));
        swept.extend(unmount_under(&[&self.state, &self.root]));
        swept.extend(remove_cgroups(&self.cgroup_parent));
        swept
    }
}

impl Drop for Crustd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let socket = self.socket.clone();
            // The API clean-up needs a runtime of its own: drop may run inside (or outside) a tokio test.
            let me: &Crustd = self;
            let res = std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    Some(rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(90), me.remove_everything()).await
                    }))
                })
                .join()
                .ok()
                .flatten()
            });
            if !matches!(res, Some(Ok(Ok(())))) {
                eprintln!(
                    "harness: API clean-up of crustd at {} failed: {res:?}",
                    socket.display()
                );
            }
            self.terminate();
        }
        let swept = self.sweep();
        if !swept.is_empty() {
            eprintln!("harness: swept after crustd: {swept:?}");
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- crustd log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.network.take();
    }
}

/// SIGKILLs processes whose command line, cwd or root mentions one of `dirs` (monitors, pause and container
/// processes this crustd made). Returns what it killed.
pub fn kill_processes_using(dirs: &[&Path]) -> Vec<String> {
    let mut killed = Vec::new();
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let uses = dirs.iter().any(|d| {
            let d = d.to_string_lossy();
            cmdline.contains(d.as_ref()) || root.starts_with(d.as_ref()) || cwd.starts_with(d.as_ref())
        });
        if uses {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push(format!("pid {pid} ({})", cmdline.trim()));
        }
    }
    if !killed.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }
    killed
}

/// Lazily unmounts every mount under `dirs`, deepest first. Returns what it unmounted.
pub fn unmount_under(dirs: &[&Path]) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(|s| s.replace("\\040", " ")))
        .filter(|m| dirs.iter().any(|d| Path::new(m).starts_with(d)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in &points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    points.into_iter().map(|p| format!("mount {p}")).collect()
}

/// Removes the cgroup `rel` (and everything below it) in every hierarchy. Returns what it removed.
pub fn remove_cgroups(rel: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return removed;
    };
    for e in rd.flatten() {
        let top = e.path().join(rel);
        if top.is_dir() {
            // The parent itself is crustd's to keep (shared by all pods); only cgroups below it are leftovers.
            let children = std::fs::read_dir(&top)
                .map(|rd| {
                    rd.flatten()
                        .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                        .count()
                })
                .unwrap_or(0);
            removed.extend(kill_cgroup_members(&top));
            remove_cgroup_tree(&top);
            if children > 0 {
                removed.push(format!("cgroup {} ({children} below it)", top.display()));
            }
        }
    }
    removed
}

/// Whether cgroup `rel` exists in any hierarchy.
pub fn cgroup_exists(rel: &str) -> bool {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().any(|e| e.path().join(rel).is_dir()))
        .unwrap_or(false)
}

/// Removes cgroup `rel` itself, and what is below it, from every hierarchy.
pub fn remove_cgroup_everywhere(rel: &str) {
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let top = e.path().join(rel);
            if top.is_dir() {
                remove_cgroup_tree(&top);
            }
        }
    }
}

/// SIGKILLs every process in the cgroups below `dir` (not in `dir` itself: crustd's parent), and
/// waits a moment for them to go. A pause whose monitor was killed is found only this way: it runs
/// in a root and mount namespace of its own, so neither its command line, its root nor its cwd names
/// the state dir.
fn kill_cgroup_members(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, top: bool, out: &mut Vec<(u32, PathBuf)>) {
        if !top {
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse() {
                    out.push((pid, dir.to_path_buf()));
                }
            }
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), false, out);
            }
        }
    }
    let mut members = Vec::new();
    walk(dir, true, &mut members);
    for (pid, _) in &members {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !members.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }
    members
        .into_iter()
        .map(|(pid, cg)| format!("pid {pid} in cgroup {}", cg.display()))
        .collect()
}

/// rmdir of cgroup `dir` and the cgroups below it, deepest first (each retried for a second while
/// its last processes go).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..20 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// NRI on (the default) but on a socket and plugin dirs of this instance's own: tests never share
/// /var/run/nri/nri.sock, nor start the host's pre-installed plugins.
fn nri_table(dir: &Path, state: &Path) -> String {
    format!(
        "\n[nri]\nsocket_path = {nri_sock:?}\nplugin_path = {nri_plugins:?}\nplugin_config_path = {nri_conf:?}\n",
        nri_sock = state.join("nri.sock"),
        nri_plugins = dir.join("nri-plugins"),
        nri_conf = dir.join("nri-conf"),
    )
}
