//! The core's error type: every failure carries the kind the CRI caller should see (mapped to a gRPC
//! code in exactly one place, `server::status`) and a message that names what failed and with what input.

use std::io;

/// A failed core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {msg}")]
    InvalidArgument { field: String, msg: String },
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The named object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A remote (registry, plugin) could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Credentials were missing or refused.
    #[error("{0}")]
    Unauthenticated(String),
    /// Credentials were accepted but do not allow the operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// Not supported by crust.
    #[error("{0}")]
    Unimplemented(String),
    /// A limit was exceeded (a registry response or a layer larger than crust accepts).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Content that does not match what names it (a registry's blob whose size or digest differs from
    /// its descriptor): corrupt, not a bad request.
    #[error("{0}")]
    DataLoss(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Result with the core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `InvalidArgument` naming the request field.
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error with what was being done (`context`), e.g. "create /run/crust/netns/abc". A full
    /// filesystem (ENOSPC, or EDQUOT for a quota) is `ResourceExhausted` naming the mount that is full,
    /// found from the first absolute path in `context`: kubelet and operators read the code, and
    /// "no space" is not an internal error.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_no_space(&source) {
            return Error::no_space(&context, &source);
        }
        Error::Io { context, source }
    }

    /// The `ResourceExhausted` of a write that found its filesystem full; `context` says what was being
    /// written (with its path, from which the full mount is found).
    pub fn no_space(context: &str, source: &dyn std::fmt::Display) -> Self {
        match full_mount(context) {
            Some(m) => Error::ResourceExhausted(format!(
                "{context}: {source} (the filesystem mounted at {} is full)",
                m.display()
            )),
            None => Error::ResourceExhausted(format!("{context}: {source}{UNKNOWN_MOUNT}")),
        }
    }

    /// Names the mount of `dir` in a full filesystem's error whose context had no absolute path (a
    /// layer's entries are named relative to the layer, whose directory is `dir`); any other error is
    /// returned as it is.
    pub fn in_dir(self, dir: &std::path::Path) -> Self {
        match self {
            Error::ResourceExhausted(m) if m.ends_with(UNKNOWN_MOUNT) => {
                let base = &m[..m.len() - UNKNOWN_MOUNT.len()];
                let m = match full_mount(&dir.to_string_lossy()) {
                    Some(mount) => format!("{base} (the filesystem mounted at {} is full)", mount.display()),
                    None => format!("{base} (in {})", dir.display()),
                };
                Error::ResourceExhausted(m)
            }
            e => e,
        }
    }

    /// Prefixes the message with `ctx` ("RunPodSandbox: CNI ADD: ..."), keeping the kind.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::InvalidArgument { field, msg } => Error::InvalidArgument {
                field,
                msg: format!("{ctx}: {msg}"),
            },
            Error::NotFound(m) => Error::NotFound(format!("{ctx}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{ctx}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{ctx}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{ctx}: {m}")),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{ctx}: {m}")),
            Error::Unauthenticated(m) => Error::Unauthenticated(format!("{ctx}: {m}")),
            Error::PermissionDenied(m) => Error::PermissionDenied(format!("{ctx}: {m}")),
            Error::Unimplemented(m) => Error::Unimplemented(format!("{ctx}: {m}")),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(format!("{ctx}: {m}")),
            Error::DataLoss(m) => Error::DataLoss(format!("{ctx}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{ctx}: {context}"),
                source,
            },
            Error::Internal(m) => Error::Internal(format!("{ctx}: {m}")),
        }
    }

    /// The kind as a short metric label (`not_found`, `unavailable`, `timeout`, ...): failure
    /// counters are broken down by it.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::Unavailable(_) => "unavailable",
            Error::DeadlineExceeded(_) => "timeout",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::Unimplemented(_) => "unimplemented",
            Error::ResourceExhausted(_) => "too_large",
            Error::DataLoss(_) => "data_loss",
            Error::Io { .. } => "io",
            Error::Internal(_) => "internal",
        }
    }

    /// A copy with the same kind and message, for an outcome handed to several callers (I/O errors,
    /// which cannot be cloned, become `Internal` with the same text).
    pub fn duplicate(&self) -> Self {
        match self {
            Error::InvalidArgument { field, msg } => Error::invalid(field.clone(), msg.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(m.clone()),
            Error::Unauthenticated(m) => Error::Unauthenticated(m.clone()),
            Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
            Error::Unimplemented(m) => Error::Unimplemented(m.clone()),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(m.clone()),
            Error::DataLoss(m) => Error::DataLoss(m.clone()),
            Error::Io { .. } | Error::Internal(_) => Error::Internal(self.to_string()),
        }
    }
}

/// How a full filesystem's message ends when the mount could not be told from its context.
const UNKNOWN_MOUNT: &str = " (a filesystem is full)";

/// Whether `e` says that the filesystem is full (ENOSPC) or a quota is spent (EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The mount point under which the first absolute path in `text` lies: the path's deepest existing
/// ancestor, then up while the parent is on the same device.
fn full_mount(text: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // An absolute path starts the text or follows a space, a quote or an opening bracket ("a/b" is not one).
    let start = text.char_indices().find_map(|(i, ch)| {
        let before = text[..i].chars().next_back();
        (ch == '/' && before.is_none_or(|b| b.is_whitespace() || matches!(b, '"' | '\'' | '(' | '=')))
            .then_some(i)
    })?;
    let path = text[start..]
        .split(|c: char| c.is_whitespace() || c == ':' || c == '"' || c == '\'' || c == ',')
        .next()?;
    let mut p = std::path::Path::new(path);
    let mut dev = loop {
        match std::fs::symlink_metadata(p) {
            Ok(m) => break m.dev(),
            Err(_) => p = p.parent()?,
        }
    };
    while let Some(parent) = p.parent() {
        let pdev = std::fs::symlink_metadata(parent).ok()?.dev();
        if pdev != dev {
            break;
        }
        dev = pdev;
        p = parent;
    }
    Some(p.to_path_buf())
}

/// Adds `.ctx(...)` to results and I/O results.
pub trait ResultExt<T> {
    /// Attaches context to the error.
    fn ctx(self, ctx: impl std::fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, ctx: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(ctx))
    }
}

impl<T> ResultExt<T> for std::result::Result<T, io::Error> {
    fn ctx(self, ctx: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(ctx.to_string(), e))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io {
            context: "system call".into(),
            source: io::Error::from(e),
        }
    }
}

impl<T> ResultExt<T> for std::result::Result<T, nix::Error> {
    fn ctx(self, ctx: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(ctx.to_string(), io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filesystem_is_resource_exhausted_naming_its_mount() {
        let e = Error::io(
            "write container record /proc/self/status.tmp",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        match e {
            Error::ResourceExhausted(m) => {
                assert!(m.contains("the filesystem mounted at /proc is full"), "{m}");
                assert!(
                    m.starts_with("write container record /proc/self/status.tmp: "),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        let quota = Error::io("write \"a/b\"", io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(
            matches!(&quota, Error::ResourceExhausted(m) if m.ends_with(UNKNOWN_MOUNT)),
            "{quota:?}"
        );
        let named = quota.in_dir(std::path::Path::new("/proc/self/no-such-dir"));
        assert!(
            matches!(&named, Error::ResourceExhausted(m) if m.ends_with("(the filesystem mounted at /proc is full)")),
            "{named:?}"
        );
        let other = Error::io("open /x", io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(other, Error::Io { .. }), "{other:?}");
    }
}
