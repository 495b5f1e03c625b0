//! Exec, Attach and PortForward: validate, ask the streaming server for a URL.

use cri_api::v1;

use crate::daemon::Daemon;
use crate::streaming::Pending;
use crate::validate;
use crate::{Error, Result};

fn streams_ok(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::invalid(
            "stdin",
            "one of stdin, stdout and stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Error::invalid(
            "stderr",
            "tty and stderr cannot both be set (a tty has one output)",
        ));
    }
    Ok(())
}

/// `Exec`.
pub async fn exec(d: &Daemon, req: v1::ExecRequest) -> Result<v1::ExecResponse> {
    let _ = validate::required("container_id", &req.container_id)?;
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(Error::invalid("cmd", "the command is empty"));
    }
    streams_ok(req.tty, req.stdin, req.stdout, req.stderr)?;
    let rec = d.running_container(&req.container_id)?;
    let req = v1::ExecRequest {
        container_id: rec.id,
        ..req
    };
    Ok(v1::ExecResponse {
        url: d.streaming.url(Pending::Exec(req))?,
    })
}

/// `Attach`.
pub async fn attach(d: &Daemon, req: v1::AttachRequest) -> Result<v1::AttachResponse> {
    let _ = validate::required("container_id", &req.container_id)?;
    streams_ok(req.tty, req.stdin, req.stdout, req.stderr)?;
    let rec = d.running_container(&req.container_id)?;
    let req = v1::AttachRequest {
        container_id: rec.id,
        ..req
    };
    Ok(v1::AttachResponse {
        url: d.streaming.url(Pending::Attach(req))?,
    })
}

/// `PortForward`.
pub async fn port_forward(d: &Daemon, req: v1::PortForwardRequest) -> Result<v1::PortForwardResponse> {
    let _ = validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    if let Some(p) = req.port.iter().find(|p| **p <= 0 || **p > 65535) {
        return Err(Error::invalid("port", format!("invalid port {p}")));
    }
    let ctx = d
        .sandboxes
        .pod_context(&req.pod_sandbox_id)
        .map_err(|e| e.context("pod_sandbox_id"))?;
    if !ctx.ready {
        return Err(Error::FailedPrecondition(format!(
            "pod_sandbox_id {:?}: the pod sandbox is not ready",
            ctx.id
        )));
    }
    let req = v1::PortForwardRequest {
        pod_sandbox_id: ctx.id,
        ..req
    };
    Ok(v1::PortForwardResponse {
        url: d.streaming.url(Pending::PortForward(req))?,
    })
}
