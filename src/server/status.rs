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
        Error::DataLoss(_) => Code::DataLoss,
        Error::Io { .. } | Error::Internal(_) => Code::Internal,
    };
    let status = Status::new(code, bounded(e.to_string()));
    if code == Code::Internal {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, code = ?code, "request refused");
    }
    status
}

/// The most bytes of a message sent back: it travels in the `grpc-message` trailer, and a message that
/// quotes a huge request field would exceed the client's header list limit (16 KiB in hyper's client),
/// turning a clear refusal into an HTTP/2 protocol error. The log keeps the whole message.
pub const MAX_MESSAGE: usize = 4096;

fn bounded(mut msg: String) -> String {
    if msg.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("… (truncated)");
    }
    msg
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character() {
        let e = Error::invalid("config.metadata.name", "é".repeat(10_000));
        let s = to_status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().len() <= MAX_MESSAGE + 20);
        assert!(s.message().starts_with("config.metadata.name:"));
        assert!(s.message().ends_with("(truncated)"));
    }
}
