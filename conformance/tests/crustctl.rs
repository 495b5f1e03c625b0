//! `crustctl` against a real crustd, and live configuration: export of a pulled image, removal, import
//! of the file (listed by ListImages and crictl, run with the registry stopped), a docker-archive
//! import, `check` finding a corrupt blob, `wipe` refusing while a container runs, SIGHUP applying a
//! changed mirror, and a containerd-style `hosts.toml` mirror.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use cri_api::v1::*;
use harness::images::{self, Compression, ImageConfig, ImageSpec as TestImage, Layer, LayerBuilder};
use harness::{Crustd, CrustdOptions, Registry};

/// Runs crustctl against `d`; returns (success, stdout, stderr).
fn ctl(d: &Crustd, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(harness::binary("crustctl"))
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run crustctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spec(image: &str) -> Option<cri_api::v1::ImageSpec> {
    Some(cri_api::v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(d: &Crustd, image: &str) -> Result<String, tonic::Status> {
    d.images()
        .await
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn image_ids(d: &Crustd) -> Vec<(String, Vec<String>)> {
    d.images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| (i.id, i.repo_tags))
        .collect()
}

/// `crictl images` against `d`, or None (with a message) when crictl is absent.
fn crictl_images(d: &Crustd) -> Option<String> {
    let Ok(out) = Command::new("crictl")
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", d.socket.display()))
        .arg("images")
        .output()
    else {
        println!("crictl is not on PATH: skipping the crictl part");
        return None;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pod_config(name: &str, d: &Crustd) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: d.dir.path().join("logs").join(name).display().to_string(),
        ..Default::default()
    }
}

/// Runs a pod with one container of `image` running `cmd`; returns the container ID.
async fn run_container(d: &Crustd, name: &str, image: &str, cmd: &[&str]) -> String {
    let config = pod_config(name, d);
    let pod = d.run_pod(&config).await;
    let ctr = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    };
    d.run_container(&pod, ctr, &config).await
}

async fn wait_exited(d: &Crustd, id: &str) -> ContainerStatus {
    d.wait_exited(id, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("container {id} did not exit"))
}

#[tokio::test]
async fn export_remove_import_then_run_with_the_registry_stopped() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let r = &imgs.layered.reference;
    assert_eq!(pull(&d, r).await.unwrap(), imgs.layered.id);
    let file = d.dir.path().join("layered.tar");
    let f = file.to_str().unwrap();
    let (ok, out, err) = ctl(&d, &["-o", "json", "images", "export", r, "-f", f]);
    assert!(ok, "export: {out}{err}");
    let exported: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new_id = exported[0]["id"].as_str().unwrap().to_string();
    assert_eq!(exported[0]["source_id"], imgs.layered.id.as_str());

    let (ok, out, err) = ctl(&d, &["images", "rm", r]);
    assert!(ok, "rm: {out}{err}");
    assert!(image_ids(&d).await.is_empty());

    drop(reg); // air-gapped from here on
    let (ok, out, err) = ctl(&d, &["images", "import", f]);
    assert!(ok, "import: {out}{err}");
    assert!(err.contains("layer 3/3"), "progress on stderr: {err}");
    let listed = image_ids(&d).await;
    assert_eq!(listed, vec![(new_id.clone(), vec![r.clone()])], "ListImages");
    let (ok, out, _) = ctl(&d, &["images", "ls"]);
    assert!(ok && out.contains(r.as_str()), "{out}");
    if let Some(list) = crictl_images(&d) {
        let repo = r.rsplit_once(':').unwrap().0;
        assert!(list.contains(repo), "crictl images:\n{list}");
    }
    // The layered image's whiteout and opaque directory came through the re-made tars.
    let id = run_container(
        &d,
        "imported",
        r,
        &[
            "sh",
            "-c",
            "test ! -e /data/a && test -e /data/b && ls /opq && echo imported-ok",
        ],
    )
    .await;
    let st = wait_exited(&d, &id).await;
    let (_, logs, _) = ctl(&d, &["containers", "logs", &id]);
    assert_eq!(st.exit_code, 0, "logs: {logs}");
    assert_eq!(logs, "new\nimported-ok\n");
    let (ok, out, _) = ctl(&d, &["containers", "ls", "-a"]);
    assert!(ok && out.contains("imported") && out.contains("EXITED"), "{out}");
    let (ok, out, _) = ctl(&d, &["-o", "json", "pods", "ls"]);
    assert!(ok && out.contains("\"imported\""), "{out}");

    // A second export of the imported image reproduces its tars: same ID.
    let again = d.dir.path().join("again.tar");
    let (ok, out, err) = ctl(
        &d,
        &[
            "-o",
            "json",
            "images",
            "export",
            r,
            "-f",
            again.to_str().unwrap(),
            "--format",
            "docker",
        ],
    );
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"].as_str().unwrap(), new_id, "re-export is deterministic");
    let (ok, out, _) = ctl(&d, &["check"]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_docker_archive_imports_and_tags() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let tar = LayerBuilder::new().busybox_base().build();
    let layer = Layer::new(&tar, Compression::None, true);
    let mut spec_ = TestImage::new(
        vec![layer.clone()],
        ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    );
    spec_.docker = true;
    let config = images::config_json(&spec_);
    let config_id = images::digest(&config);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", hex(&config_id)),
        "RepoTags": ["crust-test/docker-archive:1"],
        "Layers": [format!("{}/layer.tar", hex(&layer.diff_id))],
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("{}/layer.tar", hex(&layer.diff_id)), &tar);
    add(&format!("{}.json", hex(&config_id)), &config);
    add("manifest.json", manifest.to_string().as_bytes());
    let file = d.dir.path().join("docker.tar");
    std::fs::write(&file, b.into_inner().unwrap()).unwrap();

    let (ok, out, err) = ctl(&d, &["images", "import", file.to_str().unwrap()]);
    assert!(ok, "import: {out}{err}");
    let name = "docker.io/crust-test/docker-archive:1";
    assert_eq!(
        image_ids(&d).await,
        vec![(config_id.clone(), vec![name.to_string()])]
    );
    if let Some(list) = crictl_images(&d) {
        assert!(list.contains("docker.io/crust-test/docker-archive"), "{list}");
    }
    let (ok, out, err) = ctl(&d, &["images", "tag", name, "crust-test/other:2"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = ctl(&d, &["-o", "json", "images", "inspect", "crust-test/other:2"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["image"]["id"], config_id.as_str());
    // A corrupt archive is refused and leaves nothing.
    let bad = d.dir.path().join("bad.tar");
    std::fs::write(&bad, b"not a tar at all").unwrap();
    let (ok, _, err) = ctl(&d, &["images", "import", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("archive"), "{err}");
    assert!(
        std::fs::read_dir(d.root.join("images/ingest"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn check_finds_a_corrupt_blob() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        ..Default::default()
    })
    .await;
    pull(&d, &imgs.busybox.reference).await.unwrap();
    let (ok, out, _) = ctl(&d, &["check"]);
    assert!(ok && out.contains("ok"), "{out}");
    let blob = d
        .root
        .join("images/blobs/sha256")
        .join(imgs.busybox.id.trim_start_matches("sha256:"));
    let mut b = std::fs::read(&blob).unwrap();
    b.push(b' ');
    std::fs::write(&blob, b).unwrap();
    let (ok, out, _) = ctl(&d, &["check"]);
    assert!(!ok, "{out}");
    assert!(out.contains("corrupt") && out.contains(&imgs.busybox.id), "{out}");
    let (_, out, _) = ctl(&d, &["-o", "json", "check"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn wipe_refuses_while_a_container_runs() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    pull(&d, &imgs.busybox.reference).await.unwrap();
    let _id = run_container(&d, "sleeper", &imgs.busybox.reference, &["sleep", "1000"]).await;
    let (ok, out, err) = ctl(&d, &["wipe", "--yes"]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("running") && err.contains("sleeper"), "{err}");
    assert_eq!(image_ids(&d).await.len(), 1, "nothing was removed");
    let (ok, out, _) = ctl(&d, &["-o", "json", "status"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runtimeName"], "crust");
    assert!(v["crustd"]["config"]["root"].is_string(), "{v}");
}

#[tokio::test]
async fn sighup_applies_a_changed_mirror_to_the_next_pull() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        ..Default::default()
    })
    .await;
    let repo_tag = imgs.busybox.reference.split_once('/').unwrap().1;
    let image = format!("sighup-mirror.test/{repo_tag}");
    let dropin = d.dir.path().join("crust.d/60-mirror.toml");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    let closed = harness::free_port();
    let write = |url: &str| {
        std::fs::write(
            &dropin,
            format!("[registry.mirrors.\"sighup-mirror.test\"]\nendpoint = [{url:?}]\nfallback_to_upstream = false\n"),
        )
        .unwrap()
    };
    write(&format!("http://127.0.0.1:{closed}"));
    let pid = nix::unistd::Pid::from_raw(d.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let seen = harness::wait_for(Duration::from_secs(10), || {
        d.log().contains("SIGHUP: configuration reloaded").then_some(())
    });
    assert!(seen.is_some(), "{}", d.log());
    let e = pull(&d, &image).await.unwrap_err();
    assert!(e.message().contains(&format!("127.0.0.1:{closed}")), "{e:?}");

    write(&reg.url());
    std::fs::write(
        d.dir.path().join("crust.d/70-other.toml"),
        "[cni]\nplugin_timeout_seconds = 7\n",
    )
    .unwrap();
    let before = d.log().matches("SIGHUP: configuration reloaded").count();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let seen = harness::wait_for(Duration::from_secs(10), || {
        (d.log().matches("SIGHUP: configuration reloaded").count() > before).then_some(())
    });
    assert!(seen.is_some(), "{}", d.log());
    assert_eq!(pull(&d, &image).await.unwrap(), imgs.busybox.id);
    let log = d.log();
    assert!(
        log.contains("cni.plugin_timeout_seconds") && log.contains("next restart"),
        "{log}"
    );
    let (ok, out, _) = ctl(&d, &["-o", "json", "status"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cfg = &v["crustd"]["config"];
    assert_eq!(
        cfg["registry"]["mirrors"]["sighup-mirror.test"]["endpoint"][0],
        reg.url().as_str()
    );
    assert_eq!(
        cfg["cni"]["plugin_timeout_seconds"], 60,
        "needs a restart: not in effect"
    );
}

#[tokio::test]
async fn a_hosts_toml_mirror_serves_pulls() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let t = tempfile::tempdir().unwrap();
    let certs = t.path().join("certs.d");
    let d = Crustd::start(CrustdOptions {
        extra_toml: format!("[registry]\nconfig_path = {:?}\n", certs.display().to_string()),
        ..Default::default()
    })
    .await;
    let repo_tag = imgs.busybox.reference.split_once('/').unwrap().1;
    let image = format!("hosts-toml.test/{repo_tag}");
    let closed = harness::free_port();
    std::fs::create_dir_all(certs.join("hosts-toml.test")).unwrap();
    let write = |text: String| std::fs::write(certs.join("hosts-toml.test/hosts.toml"), text).unwrap();
    // A host that may only push is skipped; the server (a closed port) is tried last.
    write(format!(
        "server = \"http://127.0.0.1:{closed}\"\n\n[host.{url:?}]\ncapabilities = [\"push\"]\n",
        url = reg.url()
    ));
    let e = pull(&d, &image).await.unwrap_err();
    assert!(e.message().contains(&format!("127.0.0.1:{closed}")), "{e:?}");
    // Read at each pull: no reload needed.
    write(format!(
        "server = \"http://127.0.0.1:{closed}\"\n\n[host.{url:?}]\ncapabilities = [\"pull\", \"resolve\"]\n",
        url = reg.url()
    ));
    assert_eq!(pull(&d, &image).await.unwrap(), imgs.busybox.id);
}

/// The default handler is chosen by the host (crun needs cgroup v2 and a crun that runs; this CI
/// host is cgroup v1 hybrid, so runc), `crustctl status` says which and why, and an explicit
/// `runtime.default_handler` wins.
#[tokio::test]
async fn status_says_which_handler_is_the_default_and_why() {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let crun_runs = Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let d = Crustd::start(CrustdOptions::default()).await;
    let (ok, out, err) = ctl(&d, &["status"]);
    assert!(ok, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("default handler: "))
        .unwrap_or_else(|| panic!("no default handler line in:\n{out}"));
    if !v2 {
        assert_eq!(
            line,
            "default handler: runc (runc: the host runs cgroups v1 (or the v1/v2 hybrid), which crun refuses)"
        );
    } else if crun_runs {
        assert!(
            line.starts_with("default handler: crun (crun: cgroup v2 and /"),
            "{line}"
        );
    } else {
        assert!(
            line.starts_with("default handler: runc (runc: cgroup v2, but "),
            "{line}"
        );
    }
    let (ok, out, _) = ctl(&d, &["-o", "json", "status"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["crustd"]["config"]["runtime"]["default_handler"], "auto", "{v}");
    let handlers = v["handlers"].as_array().unwrap();
    assert_eq!(handlers.iter().any(|h| h == "crun"), v2 && crun_runs, "{v}");
    let userns = &v["info"]["userNamespaces"];
    assert!(userns["supported"].is_boolean(), "{v}");
    assert_eq!(userns["reason"].is_string(), userns["supported"] == false, "{v}");
    assert_eq!(
        v["info"]["defaultRuntimeHandler"]["name"],
        if v2 && crun_runs { "crun" } else { "runc" }
    );
    drop(d);

    let d = Crustd::start(CrustdOptions {
        extra_toml: "[runtime]\ndefault_handler = \"runc\"\n".into(),
        ..Default::default()
    })
    .await;
    let (ok, out, err) = ctl(&d, &["status"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("default handler: runc (runtime.default_handler in the configuration)"),
        "{out}"
    );
}
