//! The one place core errors become gRPC statuses.

use tonic::{Code, Status};

use crate::Error;

/// Maps a core error to the gRPC status the CRI caller sees.
pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unavailable(_) => Code::Unavailable,
        Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Io { .. } | Error::Internal(_) => Code::Internal,
    };
    let status = Status::new(code, e.to_string());
    if code == Code::Internal {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, code = ?code, "request refused");
    }
    status
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        to_status(e)
    }
}

/// `Ok(Response)` from a core result.
pub fn respond<T>(r: crate::Result<T>) -> Result<tonic::Response<T>, Status> {
    r.map(tonic::Response::new).map_err(to_status)
}
