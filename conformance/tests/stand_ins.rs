//! The critest image stand-ins (`harness::standins`, pushed by `crust-test-images`): every reference critest
//! pulls resolves in a real registry (indexes offering this host's platform), the images are what critest
//! needs (users, tags, distinct or shared IDs), and the programs in them behave as critest expects when
//! run from their unpacked root: the nginx and httpd stand-ins serve HTTP, nnp honours setuid and
//! no_new_privs, ipcs lists a segment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::Registry;
use harness::images::media;
use harness::standins::{self, Kind, StandIn};
use serde_json::Value;

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

fn get_json(reg: &Registry, path: &str) -> (Value, String) {
    let r = reg.request("GET", path, &[("Accept", ACCEPT)], b"");
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    let ct = r.header("Content-Type").unwrap_or_default().to_string();
    (serde_json::from_slice(&r.body).expect("json"), ct)
}

/// The host platform's manifest of a stand-in (through its index when it has one).
fn host_manifest(reg: &Registry, s: &StandIn) -> Value {
    let (doc, ct) = get_json(reg, &format!("/v2/{}/manifests/{}", s.repo, s.tag));
    assert_eq!(ct, s.media_type, "{}:{}", s.repo, s.tag);
    if s.kind == Kind::DockerManifest {
        return doc;
    }
    let entries = doc["manifests"].as_array().expect("manifests");
    let arch = standins::host_arch();
    let host: Vec<&Value> = entries
        .iter()
        .filter(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .collect();
    assert_eq!(
        host.len(),
        1,
        "{}:{} has one linux/{arch} entry: {doc}",
        s.repo,
        s.tag
    );
    assert!(
        entries.len() >= 2,
        "{}:{} offers another platform too",
        s.repo,
        s.tag
    );
    let digest = host[0]["digest"].as_str().unwrap();
    get_json(reg, &format!("/v2/{}/manifests/{digest}", s.repo)).0
}

fn config(reg: &Registry, s: &StandIn) -> Value {
    let m = host_manifest(reg, s);
    let d = m["config"]["digest"].as_str().unwrap();
    assert_eq!(d, s.id);
    get_json(reg, &format!("/v2/{}/blobs/{d}", s.repo)).0
}

fn find<'a>(all: &'a [StandIn], upstream: &str) -> &'a StandIn {
    all.iter()
        .find(|s| s.upstream.iter().any(|u| u == upstream))
        .unwrap_or_else(|| panic!("no stand-in for {upstream}"))
}

/// Unpacks the host platform's layers of `s`, lowest first, into `dir` (modes and owners kept).
fn unpack(reg: &Registry, s: &StandIn, dir: &Path) {
    let m = host_manifest(reg, s);
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let blob = reg.request("GET", &format!("/v2/{}/blobs/{d}", s.repo), &[], b"");
        assert_eq!(blob.status, 200);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob.body[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_overwrite(true);
        a.unpack(dir).unwrap();
    }
}

#[test]
fn every_reference_critest_pulls_resolves() {
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let mut upstream: Vec<&str> = all
        .iter()
        .flat_map(|s| s.upstream.iter().map(|u| u.as_str()))
        .collect();
    upstream.sort();
    let before = upstream.len();
    upstream.dedup();
    assert_eq!(before, upstream.len(), "each upstream reference is served once");

    // Every reference in cri-tools' pkg/validate and pkg/framework (linux/amd64), except the pull by the
    // upstream digest (standins::NOT_SERVABLE).
    let arch = standins::host_arch();
    let mut expected = vec![
        "registry.k8s.io/e2e-test-images/busybox:1.29-2".to_string(),
        "registry.k8s.io/e2e-test-images/nginx:1.14-2".into(),
        "registry.k8s.io/e2e-test-images/httpd:2.4.39-4".into(),
        "registry.k8s.io/pause:3.9".into(),
        "k8s.gcr.io/pause:3.9".into(),
        format!("gcr.io/k8s-staging-cri-tools/hostnet-nginx-{arch}:latest"),
    ];
    if arch == "amd64" {
        expected.push("registry.k8s.io/e2e-test-images/nonewprivs:1.3".into());
    }
    for n in [
        "test-image-user-uid:latest",
        "test-image-user-username:latest",
        "test-image-user-uid-group:latest",
        "test-image-user-username-group:latest",
        "test-image-predefined-group:latest",
        "test-image-latest:latest",
        "test-image-tag:test",
        "test-image-tag:all",
        "test-image-digest:latest",
        "test-image-1:latest",
        "test-image-2:latest",
        "test-image-3:latest",
        "test-image-tags:1",
        "test-image-tags:2",
        "test-image-tags:3",
    ] {
        expected.push(format!("gcr.io/k8s-staging-cri-tools/{n}"));
    }
    for e in &expected {
        assert!(upstream.contains(&e.as_str()), "no stand-in for {e}");
    }

    for s in &all {
        // The local path is the upstream one without its registry host.
        for u in &s.upstream {
            assert_eq!(u.split_once('/').unwrap().1, format!("{}:{}", s.repo, s.tag));
        }
        let r = reg.request(
            "GET",
            &format!("/v2/{}/manifests/{}", s.repo, s.tag),
            &[("Accept", ACCEPT)],
            b"",
        );
        assert_eq!(r.status, 200, "{}:{}", s.repo, s.tag);
        assert_eq!(harness::images::digest(&r.body), s.digest);
        let m = host_manifest(&reg, s);
        for l in m["layers"].as_array().unwrap() {
            let head = reg.request(
                "HEAD",
                &format!("/v2/{}/blobs/{}", s.repo, l["digest"].as_str().unwrap()),
                &[],
                b"",
            );
            assert_eq!(head.status, 200);
        }
        let cfg = config(&reg, s);
        assert_eq!(cfg["architecture"], arch);
        assert_eq!(cfg["os"], "linux");
        match s.kind {
            Kind::DockerList => assert_eq!(s.media_type, media::DOCKER_LIST),
            Kind::OciIndex => assert_eq!(s.media_type, media::OCI_INDEX),
            Kind::DockerManifest => assert_eq!(s.media_type, media::DOCKER_MANIFEST),
        }
    }

    // The users ImageStatus reports.
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
        ("test-image-predefined-group", "1000"),
    ] {
        let s = find(&all, &format!("gcr.io/k8s-staging-cri-tools/{name}:latest"));
        assert_eq!(config(&reg, s)["config"]["User"], user, "{name}");
    }

    // One image under test-image-tags:1/2/3 and under both pause names; three different test-image-N.
    let tags: Vec<&StandIn> = (1..=3)
        .map(|i| find(&all, &format!("gcr.io/k8s-staging-cri-tools/test-image-tags:{i}")))
        .collect();
    assert!(
        tags.iter()
            .all(|s| s.id == tags[0].id && s.digest == tags[0].digest)
    );
    let pause = find(&all, "registry.k8s.io/pause:3.9");
    assert!(pause.upstream.contains(&"k8s.gcr.io/pause:3.9".to_string()));
    let mut ids: Vec<&str> = (1..=3)
        .map(|i| {
            find(
                &all,
                &format!("gcr.io/k8s-staging-cri-tools/test-image-{i}:latest"),
            )
            .id
            .as_str()
        })
        .chain([
            tags[0].id.as_str(),
            find(&all, "gcr.io/k8s-staging-cri-tools/test-image-tag:test")
                .id
                .as_str(),
        ])
        .chain([find(&all, "gcr.io/k8s-staging-cri-tools/test-image-tag:all")
            .id
            .as_str()])
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "the test images are distinct");

    // The digest critest pulls by cannot be served: the registry says so (and the runner says why).
    let (r, _) = standins::NOT_SERVABLE[0];
    let (repo, digest) = r.split_once('/').unwrap().1.split_once('@').unwrap();
    let miss = reg.request(
        "GET",
        &format!("/v2/{repo}/manifests/{digest}"),
        &[("Accept", ACCEPT)],
        b"",
    );
    assert_eq!(miss.status, 404);
}

/// A temporary root for an unpacked image (not under a nosuid mount: nnp is setuid).
fn rootfs() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crust-standin-")
        .tempdir_in(harness::target_dir())
        .unwrap()
}

fn wait_file(p: &Path) -> String {
    harness::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(p).ok().filter(|s| !s.trim().is_empty())
    })
    .unwrap_or_else(|| panic!("{} never written", p.display()))
}

/// `wget` from the host's busybox inside the network namespace of `pid`.
fn http_get_in_netns(pid: u32, port: u16) -> Option<String> {
    // (Debian's busybox wget crashes on -T; `timeout` bounds it instead.)
    let out = Command::new("timeout")
        .args(["10", "nsenter"])
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `cmd` of the unpacked image `root` in new network and mount namespaces (loopback up), in this
/// PID namespace, as the same process all along (unshare and chroot exec).
fn start_in_netns(root: &Path, cmd: &[&str]) -> Running {
    // A container has /dev (ash needs /dev/null for `&`): bind the host's in a mount namespace of its own.
    let mut script = String::from("ip link set lo up && mount --bind /dev \"$0/dev\" && exec chroot \"$0\"");
    for (i, _) in cmd.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .arg(root)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap()
}

/// A started stand-in; SIGKILLed with its children (by PID) if the test ends while it runs.
struct Running(std::process::Child);

fn children_of(pid: u32) -> Vec<i32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|c| c.parse().ok()).collect()
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            for c in children_of(self.0.id()) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn terminate(run: &mut Running, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
    let children = children_of(run.0.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), sig).unwrap();
    let st = harness::wait_for(Duration::from_secs(10), || run.0.try_wait().unwrap())
        .unwrap_or_else(|| panic!("the stand-in ignored {sig}"));
    for c in children {
        // Its server must go with it (a zombie waiting for PID 1's reaping counts as gone).
        let gone = harness::wait_for(Duration::from_secs(5), || {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            (stat.is_empty()
                || stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')))
            .then_some(())
        });
        if gone.is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), nix::sys::signal::Signal::SIGKILL);
            panic!("server process {c} outlived the stand-in");
        }
    }
    st
}

#[test]
fn the_stand_in_programs_behave_as_critest_expects() {
    let reg = Registry::start();
    let all = standins::push_all(&reg, None);

    // nginx: a process named nginx (its PID in /var/run/nginx.pid, "master process" in its command
    // line) serving HTTP on :80, stopping on SIGTERM.
    let nginx = find(&all, "registry.k8s.io/e2e-test-images/nginx:1.14-2");
    let root = rootfs();
    unpack(&reg, nginx, root.path());
    let cfg = config(&reg, nginx);
    let cmd: Vec<String> = serde_json::from_value(cfg["config"]["Cmd"].clone()).unwrap();
    let mut child = start_in_netns(root.path(), &cmd.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let pid = child.0.id();
    assert_eq!(
        wait_file(&root.path().join("var/run/nginx.pid")).trim(),
        pid.to_string()
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "nginx"
    );
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned();
    assert!(cmdline.contains("master process"), "{cmdline:?}");
    let page = harness::wait_for(Duration::from_secs(10), || http_get_in_netns(pid, 80))
        .expect("nginx stand-in serves :80");
    assert!(page.contains("nginx"), "{page}");
    assert!(terminate(&mut child, nix::sys::signal::Signal::SIGTERM).success());

    // httpd: "httpd" on stdout, HTTP on :80, stops on its image's stop signal (SIGWINCH).
    let httpd = find(&all, "registry.k8s.io/e2e-test-images/httpd:2.4.39-4");
    let root = rootfs();
    unpack(&reg, httpd, root.path());
    let cfg = config(&reg, httpd);
    assert_eq!(cfg["config"]["StopSignal"], "SIGWINCH");
    assert_eq!(cfg["config"]["Cmd"][0], "httpd-foreground");
    let mut child = start_in_netns(root.path(), &["/usr/local/bin/httpd-foreground"]);
    let pid = child.0.id();
    let page = harness::wait_for(Duration::from_secs(10), || http_get_in_netns(pid, 80))
        .expect("httpd stand-in serves :80");
    assert!(page.contains("It works!"), "{page}");
    assert!(terminate(&mut child, nix::sys::signal::Signal::SIGWINCH).success());
    let mut out = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("httpd"), "{out:?}");

    // nnp: setuid root takes effect for UID 1000, unless no_new_privs is set.
    if let Some(nnp) = all.iter().find(|s| s.repo == "e2e-test-images/nonewprivs") {
        let root = rootfs();
        unpack(&reg, nnp, root.path());
        let run = |nnp_flag: bool| {
            let mut c = Command::new("setpriv");
            if nnp_flag {
                c.arg("--no-new-privs");
            }
            let out = c
                .arg("chroot")
                .arg("--userspec=1000:1000")
                .arg(root.path())
                .arg("/usr/local/bin/nnp")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(false), "Effective uid: 0\n");
        assert_eq!(run(true), "Effective uid: 1000\n");
    }

    // ipcs: lists a segment made in its IPC namespace.
    let busybox = find(&all, "registry.k8s.io/e2e-test-images/busybox:1.29-2");
    let root = rootfs();
    unpack(&reg, busybox, root.path());
    let script = "mount --bind /proc \"$0/proc\" && id=$(ipcmk -M 4096 | sed 's/[^0-9]//g') && echo \"id=$id\" && chroot \"$0\" ipcs -m";
    let out = Command::new("unshare")
        .args([
            "--ipc",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id="))
        .unwrap()
        .trim()
        .to_string();
    assert!(!id.is_empty(), "{text}");
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
        "{text}"
    );
    // The user the RunAsUsername spec asks for.
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("nobody:x:65534:")),
        "{passwd}"
    );
}

/// crustd, with mirrors for the upstream registries (k8s.gcr.io too) and fallback off, pulls every
/// stand-in by its upstream reference and reports what critest's image specs check.
#[tokio::test]
async fn crustd_pulls_every_stand_in_through_its_mirrors() {
    use cri_api::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let extra = format!(
        "[registry.mirrors.\"k8s.gcr.io\"]\nendpoint = [{:?}]\nfallback_to_upstream = false\n",
        reg.url()
    );
    let crustd = harness::Crustd::start(harness::CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let mut images = crustd.images().await;
    let spec = |r: &str| {
        Some(ImageSpec {
            image: r.to_string(),
            ..Default::default()
        })
    };
    let mut ids = std::collections::HashMap::new();
    for s in &all {
        for u in &s.upstream {
            let pulled = images
                .pull_image(PullImageRequest {
                    image: spec(u),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("pull {u}: {e}"))
                .into_inner();
            assert_eq!(
                pulled.image_ref, s.id,
                "{u}: the image ID is the host platform's config digest"
            );
            let st = images
                .image_status(ImageStatusRequest {
                    image: spec(u),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
                .unwrap_or_else(|| panic!("{u} has no status after its pull"));
            assert!(st.repo_tags.contains(u), "{u}: {:?}", st.repo_tags);
            ids.insert(u.clone(), st);
        }
    }
    // What critest's "image status get image fields should not have Uid|Username empty" spec wants.
    let cri = "gcr.io/k8s-staging-cri-tools";
    for (name, uid, username) in [
        ("test-image-user-uid", Some(1002), ""),
        ("test-image-user-username", None, "www-data"),
        ("test-image-user-uid-group", Some(1003), ""),
        ("test-image-user-username-group", None, "www-data"),
    ] {
        let st = &ids[&format!("{cri}/{name}:latest")];
        assert_eq!(
            st.uid.as_ref().map(|v| v.value).unwrap_or(0),
            uid.unwrap_or(0),
            "{name}"
        );
        assert_eq!(st.username, username, "{name}");
    }
    assert_eq!(
        ids["registry.k8s.io/pause:3.9"].id,
        ids["k8s.gcr.io/pause:3.9"].id
    );
    // Three tags of one image: one image with the three tags (status asked after all three pulls).
    let tags = images
        .image_status(ImageStatusRequest {
            image: spec(&format!("{cri}/test-image-tags:1")),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    let mut repo_tags = tags.repo_tags.clone();
    repo_tags.sort();
    assert_eq!(
        repo_tags,
        (1..=3)
            .map(|i| format!("{cri}/test-image-tags:{i}"))
            .collect::<Vec<_>>()
    );
}

/// In real pods of crustd (runc, CNI): the nginx stand-in serves HTTP on the pod IP and `pidof nginx`
/// finds the PID in /var/run/nginx.pid; ipcs and id work in the busybox stand-in; nnp runs setuid-root
/// unless NoNewPrivs.
#[tokio::test]
async fn the_stand_ins_work_in_pods() {
    use cri_api::v1::*;
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let crustd = harness::Crustd::start(harness::CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let mut images = crustd.images().await;
    let mut rt = crustd.runtime().await;
    for s in &all {
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: s.upstream[0].clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let log_dir = crustd.dir.path().join("logs");
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "standins".into(),
            uid: "uid-standins".into(),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let start = |image: &str, name: &str, command: Vec<String>, sc: Option<LinuxContainerSecurityContext>| {
        let mut rt = rt.clone();
        let (pod, config, image, name) = (pod.clone(), config.clone(), image.to_string(), name.to_string());
        async move {
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: name.clone(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image,
                            ..Default::default()
                        }),
                        command,
                        log_path: format!("{name}.log"),
                        linux: Some(LinuxContainerConfig {
                            security_context: sc,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    sandbox_config: Some(config),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            rt.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
            id
        }
    };
    let exec = |id: String, cmd: &[&str]| {
        let mut rt = rt.clone();
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        async move {
            let r = rt
                .exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8_lossy(&r.stdout).into_owned()
        }
    };

    let nginx = start(
        "registry.k8s.io/e2e-test-images/nginx:1.14-2",
        "nginx",
        vec![],
        None,
    )
    .await;
    let st = rt
        .clone()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap();
    let ip = st.into_inner().status.unwrap().network.unwrap().ip;
    let page = harness::wait_for(Duration::from_secs(20), || {
        harness::http::request(&format!("{ip}:80"), "GET", "/", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    })
    .expect("the nginx stand-in answers on the pod IP");
    assert!(String::from_utf8_lossy(&page.body).contains("nginx"));
    let pid = exec(
        nginx.clone(),
        &[
            "sh",
            "-c",
            "while [ ! -f /var/run/nginx.pid ]; do sleep 1; done && cat /var/run/nginx.pid",
        ],
    )
    .await;
    let pids = exec(nginx.clone(), &["pidof", "nginx"]).await;
    assert!(
        pids.split_whitespace().any(|p| p == pid.trim()),
        "pidof nginx {pids:?}, pid file {pid:?}"
    );

    let bb = start(
        "registry.k8s.io/e2e-test-images/busybox:1.29-2",
        "busybox",
        vec!["sleep".into(), "1000".into()],
        None,
    )
    .await;
    assert!(
        exec(bb.clone(), &["ipcs", "-m"])
            .await
            .contains("Shared Memory Segments")
    );
    assert_eq!(exec(bb, &["id", "-nu"]).await, "root\n");

    if all.iter().any(|s| s.repo == "e2e-test-images/nonewprivs") {
        for (nnp, want) in [(false, "Effective uid: 0\n"), (true, "Effective uid: 1000\n")] {
            let sc = LinuxContainerSecurityContext {
                no_new_privs: nnp,
                run_as_user: Some(Int64Value { value: 1000 }),
                ..Default::default()
            };
            let name = format!("nnp-{nnp}");
            start(
                "registry.k8s.io/e2e-test-images/nonewprivs:1.3",
                &name,
                vec![],
                Some(sc),
            )
            .await;
            let log = log_dir.join(format!("{name}.log"));
            let line = harness::wait_for(Duration::from_secs(20), || {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|l| l.contains("Effective uid"))
            })
            .unwrap_or_else(|| panic!("no output of nnp in {}", log.display()));
            assert!(
                line.trim_end().ends_with(want.trim_end()),
                "{line:?} (no_new_privs {nnp})"
            );
        }
    }
    drop(crustd);
}
