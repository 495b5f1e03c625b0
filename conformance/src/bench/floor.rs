//! The floor: what the machine allows for a pod, made of the same parts called directly — `ip netns
//! add`, the CNI bridge plugin (with host-local), and `runc run --detach` (runc's quickest way from a
//! bundle to a running process) of the static pause; and for a container, `runc run --detach` of busybox
//! in that pod's netns. Every figure reads also as a ratio to it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::Samples;
use super::suite::Latency;
use crate::net::TestNetwork;

const RUNC: &str = "/usr/sbin/runc";

/// The row of a container's floor (create and start: one `runc run`).
pub const CONTAINER: &str = "CreateContainer + StartContainer";

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// `runc run --detach`: the container inherits runc's stdio, so no pipe may be handed to it (reading it
/// to the end would wait for the container); errors go to a file.
fn runc_run(runc_root: &Path, bundle: &Path, id: &str, errors: &Path) -> Result<()> {
    let err = std::fs::File::create(errors)?;
    let st = Command::new(RUNC)
        .arg("--root")
        .arg(runc_root)
        .args(["run", "--detach", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()?;
    ensure!(
        st.success(),
        "runc run {id}: {}",
        std::fs::read_to_string(errors).unwrap_or_default()
    );
    Ok(())
}

fn cni(cmd: &str, conf: &[u8], id: &str, netns: &Path) -> Result<()> {
    let mut child = Command::new("/usr/lib/cni/bridge")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("bridge plugin")?;
    child.stdin.take().context("stdin")?.write_all(conf)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "bridge {cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// `runc spec`'s config.json, made once: a runtime writes its spec, it does not run a program for it.
fn spec_template(dir: &Path) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    run(Command::new(RUNC).arg("spec").arg("--bundle").arg(dir))?;
    Ok(serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?)
}

/// A bundle whose config.json is the template with `args`, a read-only rootfs and the netns path.
fn bundle(
    template: &serde_json::Value,
    dir: &Path,
    rootfs: &Path,
    args: &[&str],
    netns: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut spec = template.clone();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": true});
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut() {
            if n["type"] == "network" {
                n["path"] = netns.display().to_string().into();
            }
        }
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
    Ok(())
}

/// Measures `cycles` pod floors. `pause` is the static pause binary.
pub fn measure(cycles: usize, pause: &Path) -> Result<BTreeMap<String, Latency>> {
    let work = tempfile::Builder::new().prefix("crust-floor-").tempdir()?;
    let net = TestNetwork::reserve(&work.path().join("cni"), work.path());
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("cni/10-crust-test.conflist"))?)?;
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let conf = serde_json::to_vec(&conf)?;

    let pause_root = work.path().join("pause-rootfs");
    std::fs::create_dir_all(&pause_root)?;
    std::fs::copy(pause, pause_root.join("pause"))?;
    let bb_root = work.path().join("busybox-rootfs");
    std::fs::create_dir_all(&bb_root)?;
    tar::Archive::new(&crate::images::LayerBuilder::new().busybox_base().build()[..]).unpack(&bb_root)?;
    let runc_root = work.path().join("runc");
    let template = spec_template(&work.path().join("template"))?;

    let mut rows: BTreeMap<&str, Samples> = BTreeMap::new();
    let result = (|| -> Result<()> {
        for i in 0..cycles {
            let name = format!("crustfloor{}-{i}", net.index);
            let netns = PathBuf::from("/var/run/netns").join(&name);
            let (pod, ctr) = (format!("{name}-pod"), format!("{name}-ctr"));
            // A namespace of that name left by an interrupted run would fail `ip netns add`.
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
            let t0 = Instant::now();
            run(Command::new("ip").args(["netns", "add", &name]))?;
            cni("ADD", &conf, &pod, &netns)?;
            bundle(
                &template,
                &work.path().join(&pod),
                &pause_root,
                &["/pause"],
                &netns,
            )?;
            runc_run(
                &runc_root,
                &work.path().join(&pod),
                &pod,
                &work.path().join("runc-errors"),
            )?;
            rows.entry("RunPodSandbox").or_default().push(t0.elapsed());

            let t1 = Instant::now();
            bundle(
                &template,
                &work.path().join(&ctr),
                &bb_root,
                &["sleep", "3600"],
                &netns,
            )?;
            runc_run(
                &runc_root,
                &work.path().join(&ctr),
                &ctr,
                &work.path().join("runc-errors"),
            )?;
            rows.entry(CONTAINER).or_default().push(t1.elapsed());

            let t2 = Instant::now();
            run(Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", &ctr]))?;
            rows.entry("StopContainer + RemoveContainer")
                .or_default()
                .push(t2.elapsed());

            let t3 = Instant::now();
            run(Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", &pod]))?;
            cni("DEL", &conf, &pod, &netns)?;
            run(Command::new("ip").args(["netns", "del", &name]))?;
            rows.entry("StopPodSandbox + RemovePodSandbox")
                .or_default()
                .push(t3.elapsed());
        }
        Ok(())
    })();
    // Whatever happened, leave nothing: containers, namespaces.
    if let Ok(out) = Command::new(RUNC)
        .arg("--root")
        .arg(&runc_root)
        .args(["list", "-q"])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new(RUNC)
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .status();
        }
    }
    if let Ok(rd) = std::fs::read_dir("/var/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&format!("crustfloor{}-", net.index)) {
                let _ = Command::new("ip").args(["netns", "del", &n]).status();
            }
        }
    }
    result?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, s)| {
            Some((
                k.to_string(),
                Latency {
                    p50_ms: s.p50()?,
                    p95_ms: s.p95()?,
                    n: s.0.len(),
                },
            ))
        })
        .collect())
}
