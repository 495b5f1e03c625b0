//! `crustctl check` (the image store on disk, read only) and `crustctl wipe` (crust's state after a
//! drain). Wipe refuses while any container runs. With crustd running it removes every container,
//! pod (so CNI releases their addresses) and image through CRI; with crustd stopped it unmounts what
//! is mounted under root and state and deletes both directories' contents (no CNI DEL then: the
//! plugins' address leases are left to expire).

use std::path::{Path, PathBuf};

use clap::Args;
use cri_api::v1::{
    ContainerState, ImageSpec, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    RemoveContainerRequest, RemoveImageRequest, RemovePodSandboxRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::json;

use crate::output::{print_json, short_id};
use crate::{CtlError, Ctx, Output, client};

#[derive(Args)]
pub struct WipeArgs {
    /// Really do it (without it, wipe says what it would remove).
    #[arg(long)]
    yes: bool,
}

pub fn check(ctx: &Ctx) -> Result<(), CtlError> {
    let dir = ctx.cfg.root.join("images");
    let r = crust::image::check::check(&dir);
    match ctx.output {
        Output::Json => print_json(&r)?,
        Output::Table => {
            println!(
                "{}: {} images, {} blobs, {} layers",
                dir.display(),
                r.images,
                r.blobs,
                r.layers
            );
            for p in &r.problems {
                println!("PROBLEM  {p}");
            }
            for n in &r.notes {
                println!("note     {n}");
            }
            if r.ok() {
                println!("ok");
            }
        }
    }
    if r.ok() {
        Ok(())
    } else {
        Err(CtlError::Failed(format!(
            "{} problems in the image store",
            r.problems.len()
        )))
    }
}

pub async fn wipe(ctx: &Ctx, a: WipeArgs) -> Result<(), CtlError> {
    match client::runtime(ctx).await {
        Ok(_) => wipe_online(ctx, a).await,
        Err(_) => wipe_offline(ctx, a),
    }
}

async fn wipe_online(ctx: &Ctx, a: WipeArgs) -> Result<(), CtlError> {
    let mut rt = client::runtime(ctx).await?;
    let mut im = client::images(ctx).await?;
    let containers = rt
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    let running: Vec<String> = containers
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .map(|c| {
            format!(
                "{} ({})",
                c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
                short_id(&c.id)
            )
        })
        .collect();
    if !running.is_empty() {
        return Err(CtlError::Refused(format!(
            "refusing to wipe: {} container(s) running: {}; drain the node first",
            running.len(),
            running.join(", ")
        )));
    }
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let images = im
        .list_images(ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    if !a.yes {
        println!(
            "would remove {} containers, {} pods and {} images (crustd running); run with --yes",
            containers.len(),
            pods.len(),
            images.len()
        );
        return Ok(());
    }
    for c in &containers {
        rt.stop_container(StopContainerRequest {
            container_id: c.id.clone(),
            timeout: 0,
        })
        .await?;
        rt.remove_container(RemoveContainerRequest {
            container_id: c.id.clone(),
        })
        .await?;
    }
    for p in &pods {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await?;
    }
    for i in &images {
        im.remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: i.id.clone(),
                ..Default::default()
            }),
        })
        .await?;
    }
    let out = json!({"containers": containers.len(), "pods": pods.len(), "images": images.len()});
    match ctx.output {
        Output::Json => print_json(&out),
        Output::Table => {
            println!(
                "removed {} containers, {} pods and {} images through crustd",
                containers.len(),
                pods.len(),
                images.len()
            );
            Ok(())
        }
    }
}

/// Container monitors still alive, by their `monitor.pid` files (pid and start time).
fn live_monitors(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in crust::image::store::read_dir(&state.join("containers")) {
        let Ok(s) = std::fs::read_to_string(e.join(crust::monitor::MONITOR_PID_FILE)) else {
            continue;
        };
        let mut it = s.split_ascii_whitespace();
        let (Some(pid), Some(start)) = (it.next(), it.next()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(19) == Some(&start) {
            out.push(
                e.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn wipe_offline(ctx: &Ctx, a: WipeArgs) -> Result<(), CtlError> {
    let (root, state) = (&ctx.cfg.root, &ctx.cfg.state);
    let live = live_monitors(state);
    if !live.is_empty() {
        return Err(CtlError::Refused(format!(
            "refusing to wipe: {} container(s) still running without crustd: {}",
            live.len(),
            live.iter().map(|s| short_id(s)).collect::<Vec<_>>().join(", ")
        )));
    }
    if !a.yes {
        println!(
            "would unmount what is mounted under and delete the contents of {} and {} (crustd stopped); run with --yes",
            root.display(),
            state.display()
        );
        return Ok(());
    }
    for d in [state, root] {
        for m in mounts_under(d) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("cannot unmount {}: {e}", m.display());
            }
        }
        for e in crust::image::store::read_dir(d) {
            let r = if e.is_dir() && !e.is_symlink() {
                std::fs::remove_dir_all(&e)
            } else {
                std::fs::remove_file(&e)
            };
            r.map_err(|x| CtlError::io(format!("remove {}", e.display()), x))?;
        }
    }
    println!("wiped {} and {}", root.display(), state.display());
    Ok(())
}
