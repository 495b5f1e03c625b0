//! The pod's pause container root: a tiny directory holding crust's static `crust-pause` binary as
//! `/pause`, plus `/etc/passwd` and `/etc/group` naming the unprivileged user it runs as.
//!
//! The pause process runs as uid/gid [`PAUSE_UID`]:[`PAUSE_GID`] (65535, `nobody`-like, as in
//! Kubernetes' own pause image), with `args = ["/pause"]`, a read-only rootfs and no capabilities.
//! One prepared root can be shared by every pod (it is never written to).

use std::path::Path;

use crate::error::ResultExt;
use crate::{Error, Result};

/// The pause process's uid.
pub const PAUSE_UID: u32 = 65535;
/// The pause process's gid.
pub const PAUSE_GID: u32 = 65535;
/// The pause binary's path inside the root (use it as the process's `args[0]`).
pub const PAUSE_COMMAND: &str = "/pause";

/// Prepares `dir` as the pause container's rootfs: `/pause` (a copy of `pause_binary`, mode 0755),
/// `/etc/passwd`, `/etc/group`, and empty mount points `/proc`, `/dev`, `/sys`. Idempotent: a root that
/// is already complete (same binary size) is left as it is; the copy goes through a temporary file and a
/// rename, so concurrent callers never see a half-written binary.
pub fn prepare_rootfs(dir: &Path, pause_binary: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(pause_binary)
        .map_err(|e| Error::io(format!("pause binary {}", pause_binary.display()), e))?;
    if !meta.is_file() {
        return Err(Error::FailedPrecondition(format!(
            "pause binary {} is not a file",
            pause_binary.display()
        )));
    }
    for sub in ["etc", "proc", "dev", "sys"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).ctx(format!("create {}", p.display()))?;
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\npause:x:{PAUSE_UID}:{PAUSE_GID}:pause:/:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\npause:x:{PAUSE_GID}:\n");
    write_if_changed(&dir.join("etc/passwd"), passwd.as_bytes())?;
    write_if_changed(&dir.join("etc/group"), group.as_bytes())?;

    let target = dir.join(PAUSE_COMMAND.trim_start_matches('/'));
    let same = std::fs::metadata(&target).is_ok_and(|m| m.len() == meta.len());
    if !same {
        let tmp = dir.join(format!(".pause.tmp{}", std::process::id()));
        std::fs::copy(pause_binary, &tmp).ctx(format!(
            "copy {} to {}",
            pause_binary.display(),
            tmp.display()
        ))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .ctx(format!("chmod {}", tmp.display()))?;
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("rename to {}", target.display()), e));
        }
    }
    exec_mount(dir)
}

/// Gives `dir` a mount of its own without `noexec` when the filesystem under it has it (Debian mounts
/// /run noexec): a pause in a user namespace inherits the flags of the mount its root is bound from,
/// locked, and could neither exec from it nor remount it without them. Idempotent.
fn exec_mount(dir: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    use nix::sys::statvfs::{FsFlags, statvfs};
    let noexec = |p: &Path| statvfs(p).is_ok_and(|s| s.flags().contains(FsFlags::ST_NOEXEC));
    if !noexec(dir) {
        return Ok(());
    }
    let none: Option<&str> = None;
    mount(Some(dir), dir, none, MsFlags::MS_BIND, none)
        .map_err(|e| Error::io(format!("bind {} onto itself", dir.display()), e.into()))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(none, dir, none, flags, none)
        .map_err(|e| Error::io(format!("remount {} exec", dir.display()), e.into()))
}

fn write_if_changed(path: &Path, data: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|d| d == data) {
        return Ok(());
    }
    crate::state::atomic_write(path, data).ctx(format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_root_idempotently() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::write(&bin, b"\x7fELF fake").unwrap();
        let root = tmp.path().join("root");
        prepare_rootfs(&root, &bin).unwrap();
        prepare_rootfs(&root, &bin).unwrap();
        assert_eq!(std::fs::read(root.join("pause")).unwrap(), b"\x7fELF fake");
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.contains(":65535:65535:"), "{passwd}");
        assert!(root.join("proc").is_dir() && root.join("dev").is_dir());
        let err = prepare_rootfs(&root, &tmp.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
