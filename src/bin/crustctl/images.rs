//! `crustctl images`: list, pull (with progress), remove and inspect through CRI; tag, import and
//! export through the admin socket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Subcommand, ValueEnum};
use cri_api::v1::{
    AuthConfig, Image, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use crust::image::archive::Format;
use crust::server::admin::Request;
use serde_json::{Value, json};

use crate::output::{print, print_json, short_id, size};
use crate::{CtlError, Ctx, Output, client};

#[derive(Subcommand)]
pub enum Cmd {
    /// Lists images.
    #[command(alias = "list")]
    Ls,
    /// Pulls an image (as kubelet would, through CRI).
    Pull {
        image: String,
        /// Credentials, `user:password`.
        #[arg(long)]
        creds: Option<String>,
    },
    /// Removes images (a tag of an image that has others, else the image).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Adds the tag TARGET to the image SOURCE names.
    Tag { source: String, target: String },
    /// Shows an image's record, config and layers.
    Inspect { image: String },
    /// Imports an OCI image-layout or docker-archive tarball (plain or gzip).
    Import {
        file: PathBuf,
        /// Tags to give each imported image (required for an archive whose images have no names).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
    },
    /// Imports a checkpoint archive (CheckpointContainer's) as an image NAME, as CRI-O restores from:
    /// a container created with NAME as its image is restored from the checkpoint.
    ImportCheckpoint { archive: PathBuf, name: String },
    /// Exports images to a tarball. Layers are re-made from the unpacked store, so the exported
    /// image gets a new image ID unless the re-made tars reproduce the original diff IDs.
    Export {
        #[arg(required = true)]
        images: Vec<String>,
        /// The tarball to write.
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = ArchiveFormat::Oci)]
        format: ArchiveFormat,
    },
}

/// Archive formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum ArchiveFormat {
    /// OCI image layout.
    Oci,
    /// `docker save` format.
    Docker,
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn image_json(i: &Image) -> Value {
    json!({
        "id": i.id,
        "repoTags": i.repo_tags,
        "repoDigests": i.repo_digests,
        "size": i.size,
        "uid": i.uid.as_ref().map(|u| u.value),
        "username": i.username,
        "pinned": i.pinned,
    })
}

/// An absolute path for crustd (which does not share our working directory).
fn absolute(p: PathBuf) -> Result<PathBuf, CtlError> {
    std::path::absolute(&p).map_err(|e| CtlError::io(format!("resolve {}", p.display()), e))
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> Result<(), CtlError> {
    match cmd {
        Cmd::Ls => {
            let list = client::images(ctx)
                .await?
                .list_images(ListImagesRequest::default())
                .await?
                .into_inner()
                .images;
            let mut rows = Vec::new();
            for i in &list {
                let names: Vec<&String> = if i.repo_tags.is_empty() {
                    i.repo_digests.iter().take(1).collect()
                } else {
                    i.repo_tags.iter().collect()
                };
                for n in names
                    .iter()
                    .map(|s| s.as_str())
                    .chain(names.is_empty().then_some("<none>"))
                {
                    rows.push(vec![
                        n.to_string(),
                        short_id(&i.id),
                        size(i.size),
                        if i.pinned { "yes" } else { "" }.to_string(),
                    ]);
                }
            }
            let js: Vec<Value> = list.iter().map(image_json).collect();
            print(ctx, &["IMAGE", "ID", "SIZE", "PINNED"], rows, &js)
        }
        Cmd::Pull { image, creds } => {
            let auth = creds.map(|c| {
                let (u, p) = c.split_once(':').unwrap_or((&c, ""));
                AuthConfig {
                    username: u.into(),
                    password: p.into(),
                    ..Default::default()
                }
            });
            let mut c = client::images(ctx).await?;
            let started = Instant::now();
            let req = c.pull_image(PullImageRequest {
                image: spec(&image),
                auth,
                sandbox_config: None,
            });
            tokio::pin!(req);
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            let show = std::io::IsTerminal::is_terminal(&std::io::stderr()) || ctx.output == Output::Table;
            let resp = loop {
                tokio::select! {
                    r = &mut req => break r?,
                    _ = tick.tick() => if show {
                        eprintln!("pulling {image}: {}s", started.elapsed().as_secs());
                    },
                }
            };
            let id = resp.into_inner().image_ref;
            match ctx.output {
                Output::Json => print_json(&json!({"image": image, "id": id})),
                Output::Table => {
                    println!("{image}: pulled {id} in {:.1}s", started.elapsed().as_secs_f64());
                    Ok(())
                }
            }
        }
        Cmd::Rm { images } => {
            let mut c = client::images(ctx).await?;
            for i in &images {
                c.remove_image(RemoveImageRequest { image: spec(i) }).await?;
                if ctx.output == Output::Table {
                    println!("removed {i}");
                }
            }
            if ctx.output == Output::Json {
                print_json(&json!({"removed": images}))?;
            }
            Ok(())
        }
        Cmd::Tag { source, target } => {
            let v = client::admin(ctx, &Request::Tag { source, target }, false).await?;
            match ctx.output {
                Output::Json => print_json(&v),
                Output::Table => {
                    println!("{} {}", short_id(v["id"].as_str().unwrap_or("")), v["repo_tags"]);
                    Ok(())
                }
            }
        }
        Cmd::Inspect { image } => {
            let r = client::images(ctx)
                .await?
                .image_status(ImageStatusRequest {
                    image: spec(&image),
                    verbose: true,
                })
                .await?
                .into_inner();
            let Some(i) = r.image else {
                return Err(CtlError::Refused(format!("image {image:?} not found")));
            };
            let info: Value = r
                .info
                .get("info")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            print_json(&json!({"image": image_json(&i), "info": info}))
        }
        Cmd::Import { file, tags } => {
            let path = absolute(file)?;
            let v = client::admin(ctx, &Request::Import { path, tags }, ctx.output == Output::Json).await?;
            print_imported(ctx, &v)
        }
        Cmd::ImportCheckpoint { archive, name } => {
            let archive = absolute(archive)?;
            // An OCI layout made here, imported by crustd as any archive is (crustd reads the file).
            let tmp = std::env::temp_dir().join(format!("crustctl-checkpoint-{}.tar", std::process::id()));
            let r = match crate::checkpoint_image::write_layout(&archive, &tmp) {
                Ok(()) => {
                    let req = Request::Import {
                        path: tmp.clone(),
                        tags: vec![name],
                    };
                    client::admin(ctx, &req, ctx.output == Output::Json).await
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&tmp);
            print_imported(ctx, &r?)
        }
        Cmd::Export { images, file, format } => {
            let path = absolute(file)?;
            let format = match format {
                ArchiveFormat::Oci => Format::Oci,
                ArchiveFormat::Docker => Format::Docker,
            };
            let v = client::admin(
                ctx,
                &Request::Export {
                    images,
                    path: path.clone(),
                    format,
                },
                ctx.output == Output::Json,
            )
            .await?;
            let rows = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| {
                            let (src, id) = (
                                i["source_id"].as_str().unwrap_or(""),
                                i["id"].as_str().unwrap_or(""),
                            );
                            vec![
                                short_id(src),
                                short_id(id),
                                if src == id { "same" } else { "new (layers re-made)" }.to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print(ctx, &["SOURCE ID", "EXPORTED ID", "IMAGE ID"], rows, &v)
        }
    }
}

/// The images an import made: ID and tags.
fn print_imported(ctx: &Ctx, v: &Value) -> Result<(), CtlError> {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        short_id(i["id"].as_str().unwrap_or("")),
                        i["repo_tags"]
                            .as_array()
                            .map(|t| t.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print(ctx, &["ID", "TAGS"], rows, v)
}
