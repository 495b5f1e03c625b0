//! Exec, Attach and PortForward: validate, ask the streaming server for a URL.

use cri_api::v1;

use crate::daemon::Daemon;
use crate::{Error, Result};

/// `Exec`.
pub async fn exec(_d: &Daemon, _req: v1::ExecRequest) -> Result<v1::ExecResponse> {
    Err(Error::Unimplemented("exec is not implemented yet".into()))
}

/// `Attach`.
pub async fn attach(_d: &Daemon, _req: v1::AttachRequest) -> Result<v1::AttachResponse> {
    Err(Error::Unimplemented("attach is not implemented yet".into()))
}

/// `PortForward`.
pub async fn port_forward(_d: &Daemon, _req: v1::PortForwardRequest) -> Result<v1::PortForwardResponse> {
    Err(Error::Unimplemented("port_forward is not implemented yet".into()))
}
