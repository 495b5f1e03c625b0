//! crustctl's connections: CRI over the CRI socket (tonic, unix socket), and the admin socket
//! (line-delimited JSON, `crust::server::admin`), whose progress lines go to stderr.

use std::path::Path;

use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use crust::server::admin::{Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::transport::Channel;

use crate::{CtlError, Ctx};

/// A gRPC channel to crustd's CRI socket.
pub async fn channel(socket: &Path) -> Result<Channel, CtlError> {
    crust::server::connect(socket)
        .await
        .map_err(|e| CtlError::Connect {
            path: socket.display().to_string(),
            msg: std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        })
}

/// A RuntimeService client.
pub async fn runtime(ctx: &Ctx) -> Result<RuntimeServiceClient<Channel>, CtlError> {
    Ok(RuntimeServiceClient::new(channel(&ctx.cfg.api.socket).await?))
}

/// An ImageService client.
pub async fn images(ctx: &Ctx) -> Result<ImageServiceClient<Channel>, CtlError> {
    Ok(ImageServiceClient::new(channel(&ctx.cfg.api.socket).await?))
}

/// Sends one admin request; prints its progress to stderr (unless `quiet`); returns the result.
pub async fn admin(ctx: &Ctx, req: &Request, quiet: bool) -> Result<serde_json::Value, CtlError> {
    let path = ctx.cfg.admin_socket();
    let s = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| CtlError::Connect {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    let (r, mut w) = s.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| CtlError::Rpc(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| CtlError::io(format!("write to {}", path.display()), e))?;
    let mut lines = BufReader::new(r).lines();
    while let Some(l) = lines
        .next_line()
        .await
        .map_err(|e| CtlError::io(format!("read from {}", path.display()), e))?
    {
        match serde_json::from_str::<Reply>(&l) {
            Ok(Reply::Progress(p)) => {
                if !quiet {
                    eprintln!("{p}");
                }
            }
            Ok(Reply::Done(v)) => return Ok(v),
            Ok(Reply::Error { code, message }) => return Err(CtlError::Admin { code, message }),
            Err(e) => return Err(CtlError::Rpc(format!("unreadable reply from crustd: {e}"))),
        }
    }
    Err(CtlError::Rpc(
        "crustd closed the admin connection without a result".into(),
    ))
}
