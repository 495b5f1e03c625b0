//! NRI, judged by containerd's own reference plugins (`logger`, `device-injector`, `ulimit-adjuster`,
//! nri v0.11), run as external plugins against each test's own NRI socket: every event in order with
//! the right pod and container; a device node and rlimits put in a container by annotation; a plugin
//! connecting late is shown what runs; a plugin that stops answering is dropped and pods go on; one
//! that dies fails nothing; a malformed adjustment and two plugins setting the same thing fail the
//! creation, naming the plugins.
//!
//! Further plugins of nri v0.11's `plugins/` are used where present: `rdt` (RDT settings by
//! annotation). The device injector also asks for CDI devices, I/O priority, a scheduler policy and
//! network devices (`adjust`); pod-level events, a pre-installed plugin started from `plugin_path` and
//! messages larger than ttrpc's 4 KiB read buffer are in `events`.
//!
//! The plugins are not built here: they are looked for in `$CRUST_NRI_PLUGINS`, else
//! /var/cache/crust-nri-plugins; where absent, each test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adjust;
mod basics;
mod events;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};

pub(crate) fn plugin_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CRUST_NRI_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/crust-nri-plugins".into());
    let all = ["logger", "device-injector", "ulimit-adjuster"]
        .iter()
        .all(|p| dir.join(p).is_file());
    if !all {
        eprintln!(
            "SKIP: the NRI reference plugins (logger, device-injector, ulimit-adjuster) are not in {}; \
             build them from containerd/nri's plugins/ and set CRUST_NRI_PLUGINS",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// A plugin process this test started; killed (by PID) when dropped.
pub(crate) struct PluginProc {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl PluginProc {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PluginProc {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Env {
    pub(crate) c: Crustd,
    pub(crate) imgs: TestImages,
    pub(crate) plugins: PathBuf,
    _reg: Registry,
}

pub(crate) async fn env(plugins: PathBuf, extra_toml: &str) -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml: extra_toml.into(),
        ..Default::default()
    })
    .await;
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: imgs.busybox.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    Env {
        c,
        imgs,
        plugins,
        _reg: reg,
    }
}

impl Env {
    pub(crate) fn socket(&self) -> PathBuf {
        self.c.state.join("nri.sock")
    }

    /// Starts plugin `name` with index `idx` (its output to a log file of its own) and waits until
    /// crustd lists it as connected.
    pub(crate) async fn plugin(&self, name: &str, idx: &str, extra: &[&str]) -> PluginProc {
        let log = self.c.dir.path().join(format!("{idx}-{name}.log"));
        let sock = self.socket();
        let mut args: Vec<String> = vec!["-idx".into(), idx.into()];
        // The ulimit adjuster spells its socket flag differently from the others.
        let flag = if name == "ulimit-adjuster" {
            "-socket"
        } else {
            "-socket-path"
        };
        args.extend([flag.to_string(), sock.display().to_string()]);
        if name == "logger" {
            args.extend(["-log-file".to_string(), log.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::fs::File::create(log.with_extension("out")).unwrap();
        let child = Command::new(self.plugins.join(name))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let p = PluginProc { child, log };
        let want = format!("{idx}-{name}");
        for _ in 0..200 {
            if self.connected().await.contains(&want) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("plugin {want} did not connect:\n{}", self.c.log());
    }

    /// The plugins crustd lists (`crictl info`'s `nri.plugins`), as `idx-name`.
    pub(crate) async fn connected(&self) -> Vec<String> {
        let st = self
            .c
            .runtime()
            .await
            .status(StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        let Some(info) = st.info.get("nri") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(info).unwrap();
        v["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}-{}", p["index"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect()
    }

    pub(crate) async fn pod(&self, name: &str, annotations: &[(&str, &str)]) -> (String, PodSandboxConfig) {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "nri-test".into(),
                attempt: 0,
            }),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let id = self
            .c
            .runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }

    pub(crate) async fn create(
        &self,
        pod: &(String, PodSandboxConfig),
        name: &str,
    ) -> Result<String, tonic::Status> {
        self.create_cmd(pod, name, "sleep 1000").await
    }

    pub(crate) async fn create_cmd(
        &self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        script: &str,
    ) -> Result<String, tonic::Status> {
        self.c
            .runtime()
            .await
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: self.imgs.busybox.reference.clone(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into(), script.into()],
                    ..Default::default()
                }),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub(crate) async fn run(&self, pod: &(String, PodSandboxConfig), name: &str) -> String {
        self.run_cmd(pod, name, "sleep 1000").await
    }

    pub(crate) async fn run_cmd(&self, pod: &(String, PodSandboxConfig), name: &str, script: &str) -> String {
        let id = self.create_cmd(pod, name, script).await.unwrap();
        self.c
            .runtime()
            .await
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        id
    }

    pub(crate) async fn sh(&self, id: &str, script: &str) -> String {
        let r = self
            .c
            .runtime()
            .await
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    }
}

/// The logger's dumps, in order: (event, pod ID, container ID or "") for each `<Event>: pod:` block.
pub(crate) fn logged_events(log: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut section = "";
    for line in log.lines() {
        let Some(msg) = line.split("msg=\"").nth(1) else {
            continue;
        };
        let msg = msg.trim_end_matches('"');
        let Some((event, rest)) = msg.split_once(": ") else {
            continue;
        };
        if event.contains(' ') || event == "Synchronize" {
            continue;
        }
        match rest {
            "pod:" => {
                out.push((event.to_string(), String::new(), String::new()));
                section = "pod";
            }
            "container:" => section = "container",
            _ => {
                let Some(id) = rest.strip_prefix("   id: ") else {
                    continue;
                };
                let Some(last) = out.last_mut().filter(|l| l.0 == event) else {
                    continue;
                };
                match section {
                    "pod" if last.1.is_empty() => last.1 = id.to_string(),
                    "container" if last.2.is_empty() => last.2 = id.to_string(),
                    _ => {}
                }
            }
        }
    }
    out
}

pub(crate) async fn wait_log(p: &PluginProc, needle: &str) -> String {
    for _ in 0..200 {
        let l = p.log();
        if l.contains(needle) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{needle:?} never appeared in the plugin's log:\n{}", p.log());
}

/// A plugin beside the three (e.g. `rdt`), or None after saying why it is skipped.
pub(crate) fn optional_plugin(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        return Some(p);
    }
    eprintln!(
        "SKIP: NRI reference plugin {name} is not in {}; build it from containerd/nri v0.11.0's plugins/{name}",
        dir.display()
    );
    None
}

/// A plugin directory holding copies of `plugins` (`(binary, installed name, configuration)`) and
/// a configuration directory, with the drop-in that points crustd at them: crustd starts them itself.
pub(crate) fn preinstalled(
    plugins: &[(&std::path::Path, &str, Option<&str>)],
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("plugins"), dir.path().join("conf"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    for (src, name, config) in plugins {
        std::fs::copy(src, bin.join(name)).unwrap();
        if let Some(c) = config {
            std::fs::write(conf.join(format!("{name}.conf")), c).unwrap();
        }
    }
    let toml = format!("[nri]\nplugin_path = {bin:?}\nplugin_config_path = {conf:?}\n");
    (dir, toml)
}

/// The OCI runtime's `features` (runc's), as the tests decide what crust must refuse.
pub(crate) fn runc_features() -> serde_json::Value {
    let out = Command::new("runc").arg("features").output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

impl Env {
    /// The OCI spec crustd wrote for container `id`.
    pub(crate) fn bundle(&self, id: &str) -> serde_json::Value {
        let p = self.c.state.join("containers").join(id).join("config.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }
}
