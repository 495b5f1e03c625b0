//! NRI, judged by containerd's own reference plugins (`logger`, `device-injector`, `ulimit-adjuster`,
//! nri v0.11), run as external plugins against each test's own NRI socket: every event in order with
//! the right pod and container; a device node and rlimits put in a container by annotation; a plugin
//! connecting late is shown what runs; a plugin that stops answering is dropped and pods go on; one
//! that dies fails nothing; a malformed adjustment and two plugins setting the same thing fail the
//! creation, naming the plugins.
//!
//! The plugins are not built here: they are looked for in `$CRUST_NRI_PLUGINS`, else
//! /var/cache/crust-nri-plugins; where absent, each test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::Code;

fn plugin_dir() -> Option<PathBuf> {
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
struct PluginProc {
    child: Child,
    log: PathBuf,
}

impl PluginProc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn log(&self) -> String {
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

struct Env {
    c: Crustd,
    imgs: TestImages,
    plugins: PathBuf,
    _reg: Registry,
}

async fn env(plugins: PathBuf, extra_toml: &str) -> Env {
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
    fn socket(&self) -> PathBuf {
        self.c.state.join("nri.sock")
    }

    /// Starts plugin `name` with index `idx` (its output to a log file of its own) and waits until
    /// crustd lists it as connected.
    async fn plugin(&self, name: &str, idx: &str, extra: &[&str]) -> PluginProc {
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
    async fn connected(&self) -> Vec<String> {
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

    async fn pod(&self, name: &str, annotations: &[(&str, &str)]) -> (String, PodSandboxConfig) {
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

    async fn create(&self, pod: &(String, PodSandboxConfig), name: &str) -> Result<String, tonic::Status> {
        self.create_cmd(pod, name, "sleep 1000").await
    }

    async fn create_cmd(
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

    async fn run(&self, pod: &(String, PodSandboxConfig), name: &str) -> String {
        self.run_cmd(pod, name, "sleep 1000").await
    }

    async fn run_cmd(&self, pod: &(String, PodSandboxConfig), name: &str, script: &str) -> String {
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

    async fn sh(&self, id: &str, script: &str) -> String {
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
fn logged_events(log: &str) -> Vec<(String, String, String)> {
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

async fn wait_log(p: &PluginProc, needle: &str) -> String {
    for _ in 0..200 {
        let l = p.log();
        if l.contains(needle) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{needle:?} never appeared in the plugin's log:\n{}", p.log());
}

#[tokio::test]
async fn logger_sees_every_event_in_order() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("logged", &[]).await;
    let id = e.run(&pod, "c1").await;
    let mut rt = e.c.runtime().await;
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.0.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.0.clone(),
    })
    .await
    .unwrap();
    let log = wait_log(&logger, "RemovePodSandbox").await;
    let got = logged_events(&log);
    let p = pod.0.as_str();
    let c = id.as_str();
    let want: Vec<(String, String, String)> = [
        ("RunPodSandbox", ""),
        ("CreateContainer", c),
        ("PostCreateContainer", c),
        ("StartContainer", c),
        ("PostStartContainer", c),
        ("StopContainer", c),
        ("RemoveContainer", c),
        ("StopPodSandbox", ""),
        ("RemovePodSandbox", ""),
    ]
    .iter()
    .map(|(ev, ctr)| (ev.to_string(), p.to_string(), ctr.to_string()))
    .collect();
    assert_eq!(got, want, "logger output:\n{log}");
    // The container is shown with its pod and its name.
    assert!(
        log.contains(&format!("CreateContainer:    pod_sandbox_id: {p}")),
        "{log}"
    );
    assert!(log.contains("CreateContainer:    name: c1"), "{log}");
}

#[tokio::test]
async fn device_injector_and_ulimit_adjuster_change_the_container() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _dev = e.plugin("device-injector", "10", &[]).await;
    let _ulimit = e.plugin("ulimit-adjuster", "20", &[]).await;
    let devices = "- path: /dev/nri-null\n  type: c\n  major: 1\n  minor: 3\n  file_mode: 0666\n";
    let ulimits =
        "- type: nofile\n  hard: 4096\n  soft: 1024\n- type: RLIMIT_NPROC\n  hard: 900\n  soft: 800\n";
    let pod = e
        .pod(
            "adjusted",
            &[
                ("devices.noderesource.dev/container.c1", devices),
                ("ulimits.noderesource.dev/container.c1", ulimits),
            ],
        )
        .await;
    let id = e
        .run_cmd(
            &pod,
            "c1",
            "ulimit -a > /tmp/l; ulimit -Ha >> /tmp/l; mv /tmp/l /tmp/limits; sleep 1000",
        )
        .await;
    let out = e
        .sh(
            &id,
            "stat -c '%F %t,%T %a' /dev/nri-null; echo x > /dev/nri-null && echo wrote",
        )
        .await;
    assert_eq!(out, "character special file 1,3 666\nwrote\n");
    // The container's own process is asked: runc 1.1 applies an exec's rlimits from outside, after
    // the exec'd process may already have run, so an exec's `ulimit` can race.
    let all = e
        .sh(
            &id,
            "while [ ! -s /tmp/limits ]; do sleep 0.1; done; cat /tmp/limits",
        )
        .await;
    println!("ulimit -a inside the container:\n{all}");
    let line = |flag: &str, nth: usize| -> String {
        all.lines()
            .filter(|l| l.ends_with(&format!("({flag})")) || l.contains(&format!("({flag}) ")))
            .nth(nth)
            .and_then(|l| l.split_whitespace().last().map(String::from))
            .unwrap_or_default()
    };
    // Soft (`ulimit -a`) then hard (`ulimit -Ha`).
    assert_eq!(
        (line("-n", 0), line("-n", 1)),
        ("1024".into(), "4096".into()),
        "{all}"
    );
    assert_eq!(
        (line("-u", 0), line("-u", 1)),
        ("800".into(), "900".into()),
        "{all}"
    );
    // A container the annotations do not name is left alone.
    let other = e.run(&pod, "c2").await;
    let out = e
        .sh(
            &other,
            "test -e /dev/nri-null && echo present; grep processes /proc/1/limits",
        )
        .await;
    assert!(!out.contains("present") && !out.contains(" 800 "), "{out}");
}

#[tokio::test]
async fn a_late_plugin_is_shown_what_runs() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let pod = e.pod("early", &[]).await;
    let id = e.run(&pod, "c1").await;
    let logger = e.plugin("logger", "10", &[]).await;
    wait_log(&logger, "Synchronize: containers:").await;
    let log = wait_log(&logger, &format!("Synchronize:      id: {id}")).await;
    let sync: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("msg=\"Synchronize: ").nth(1))
        .collect();
    let text = sync.join("\n");
    assert!(text.contains(&format!("id: {}", pod.0)), "{log}");
    assert!(text.contains(&format!("id: {id}")), "{log}");
    // Running (CONTAINER_RUNNING is 3), with its process.
    assert!(text.contains("state: 3") && text.contains("args:"), "{log}");
    // It sees what comes after, too.
    let c2 = e.run(&pod, "c2").await;
    wait_log(&logger, &format!("PostStartContainer:    id: {c2}")).await;
}

#[tokio::test]
async fn a_plugin_past_the_timeout_is_dropped_and_pods_go_on() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "[nri]\nplugin_request_timeout = \"1s\"\n").await;
    let logger = e.plugin("logger", "10", &[]).await;
    let _ulimit = e.plugin("ulimit-adjuster", "20", &[]).await;
    // The logger stops answering (SIGSTOP): the next event waits one timeout, drops it, goes on.
    unsafe {
        libc::kill(logger.pid(), libc::SIGSTOP);
    }
    let pod = e.pod("goes-on", &[]).await;
    let id = e.run(&pod, "c1").await;
    assert_eq!(e.sh(&id, "echo up").await, "up\n");
    let connected = e.connected().await;
    assert_eq!(connected, vec!["20-ulimit-adjuster".to_string()], "{}", e.c.log());
    assert!(e.c.log().contains("disconnecting it"), "{}", e.c.log());
    // A second pod does not wait for the dropped plugin at all.
    let pod2 = e.pod("goes-on-2", &[]).await;
    e.run(&pod2, "c1").await;
}

#[tokio::test]
async fn a_crashed_plugin_fails_nothing() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let mut logger = e.plugin("logger", "10", &[]).await;
    let pod = e.pod("survives", &[]).await;
    let id = e.run(&pod, "c1").await;
    logger.child.kill().unwrap();
    logger.child.wait().unwrap();
    for _ in 0..100 {
        if e.connected().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.connected().await.is_empty());
    assert_eq!(e.sh(&id, "echo still").await, "still\n");
    let c2 = e.run(&pod, "c2").await;
    assert_eq!(e.sh(&c2, "echo new").await, "new\n");
}

#[tokio::test]
async fn bad_and_conflicting_adjustments_fail_the_creation_naming_the_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _a = e.plugin("device-injector", "10", &[]).await;
    // A device of a type that does not exist: InvalidArgument naming the plugin.
    let bad = "- path: /dev/nri-bad\n  type: x\n  major: 1\n  minor: 3\n";
    let pod = e
        .pod("bad", &[("devices.noderesource.dev/container.c1", bad)])
        .await;
    let err = e.create(&pod, "c1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("10-device-injector"), "{err:?}");
    // Nothing of the failed container is left: the same name can be created once the pod is fixed.
    assert!(
        e.c.runtime()
            .await
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
    // Two plugins injecting the same device: refused, naming both.
    let _b = e.plugin("device-injector", "20", &[]).await;
    let dev = "- path: /dev/nri-null\n  type: c\n  major: 1\n  minor: 3\n";
    let pod2 = e
        .pod("conflict", &[("devices.noderesource.dev/container.c1", dev)])
        .await;
    let err = e.create(&pod2, "c1").await.unwrap_err();
    assert!(
        err.message().contains("10-device-injector") && err.message().contains("20-device-injector"),
        "{err:?}"
    );
    assert!(err.message().contains("/dev/nri-null"), "{err:?}");
}

/// `crustctl status` lists the connected plugins.
#[tokio::test]
async fn crustctl_status_lists_plugins() {
    let Some(dir) = plugin_dir() else { return };
    let e = env(dir, "").await;
    let _l = e.plugin("logger", "10", &[]).await;
    let out = Command::new(harness::binary("crustctl"))
        .args(["--config", e.c.config.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("NRI plugins connected: 1") && text.contains("10-logger  external"),
        "{text}"
    );
}
