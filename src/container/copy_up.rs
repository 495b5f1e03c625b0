//! A copy of a directory tree that keeps what a file is beyond its bytes: owners, modes (setuid and
//! sticky bits too), extended attributes (but `security.selinux`, which belongs to the copy's place,
//! as containerd leaves it), access and modification times, symlinks as symlinks, hard links as hard
//! links, and device nodes, fifos and sockets as such. For the volumes an image declares.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Copies the directory `src` to `dst`, which must not exist.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    let meta = std::fs::symlink_metadata(src)?;
    copy_dir(src, dst, &meta, &mut links)
}

fn copy_dir(src: &Path, dst: &Path, meta: &std::fs::Metadata, links: &mut Links) -> io::Result<()> {
    std::fs::create_dir(dst).map_err(|e| at(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| at(src, e))? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let m = std::fs::symlink_metadata(&s).map_err(|e| at(&s, e))?;
        copy_entry(&s, &d, &m, links)?;
    }
    // Last: a mode without write permission must not stop the copy into it, and the times are the
    // source's once nothing is added any more.
    finish(src, dst, meta)
}

/// Where each multiply linked inode was copied to: (device, inode) → its first copy.
type Links = HashMap<(u64, u64), PathBuf>;

fn copy_entry(src: &Path, dst: &Path, meta: &std::fs::Metadata, links: &mut Links) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        return copy_dir(src, dst, meta, links);
    }
    if !ft.is_symlink() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            return std::fs::hard_link(first, dst).map_err(|e| at(dst, e));
        }
        links.insert(key, dst.to_path_buf());
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| at(src, e))?;
        std::os::unix::fs::symlink(&target, dst).map_err(|e| at(dst, e))?;
    } else if ft.is_file() {
        copy_file(src, dst)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
        let p = cpath(dst)?;
        // SAFETY: mknod on a NUL-terminated path with the source's type, mode and device.
        if unsafe { libc::mknod(p.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
            return Err(at(dst, io::Error::last_os_error()));
        }
    } else {
        return Err(at(src, io::Error::other("a file of an unknown type")));
    }
    finish(src, dst, meta)
}

/// The content of a regular file (its mode comes with `finish`).
fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = std::fs::File::open(src).map_err(|e| at(src, e))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| at(dst, e))?;
    io::copy(&mut from, &mut to).map_err(|e| at(dst, e))?;
    Ok(())
}

/// Owner, then mode (a change of owner clears setuid bits), xattrs and times of `src` onto `dst`,
/// without following a symlink.
fn finish(src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(|e| at(dst, e))?;
    let is_link = meta.file_type().is_symlink();
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| at(dst, e))?;
    }
    copy_xattrs(src, dst)?;
    let d = cpath(dst)?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: utimensat on a NUL-terminated path with two timespecs, not following a symlink.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            d.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(at(dst, io::Error::last_os_error()));
    }
    Ok(())
}

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    // SAFETY (all calls below): l*xattr on NUL-terminated paths, into and from buffers of the sizes
    // given.
    let size = unsafe { libc::llistxattr(s.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        return if unsupported(&e) { Ok(()) } else { Err(at(src, e)) };
    }
    if size == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; size as usize];
    let size = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(at(src, io::Error::last_os_error()));
    }
    names.truncate(size as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        let n = CString::new(name).map_err(io::Error::other)?;
        let len = unsafe { libc::lgetxattr(s.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(at(src, io::Error::last_os_error()));
        }
        let mut value = vec![0u8; len as usize];
        let len = unsafe { libc::lgetxattr(s.as_ptr(), n.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            return Err(at(src, io::Error::last_os_error()));
        }
        value.truncate(len as usize);
        let r = unsafe { libc::lsetxattr(d.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if !unsupported(&e) {
                return Err(at(dst, e));
            }
        }
    }
    Ok(())
}

/// The filesystem keeps no such attributes (or none of that namespace).
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn at(p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keeps_owners_modes_links_xattrs_and_times() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "data").unwrap();
        std::os::unix::fs::lchown(src.join("sub/f"), Some(65534), Some(65533)).unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o4750)).unwrap();
        std::fs::hard_link(src.join("sub/f"), src.join("hard")).unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
        std::os::unix::fs::lchown(src.join("link"), Some(7), Some(8)).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o1555)).unwrap();
        std::os::unix::fs::lchown(&src, Some(65534), Some(65534)).unwrap();
        let (n, v) = (CString::new("trusted.crust").unwrap(), b"v1");
        let p = cpath(&src.join("sub")).unwrap();
        // SAFETY: as in copy_xattrs.
        let xattr = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) } == 0;
        let dst = d.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        let m = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        let s = |p: &str| std::fs::symlink_metadata(src.join(p)).unwrap();
        assert_eq!(
            (m("").uid(), m("").gid(), m("").mode() & 0o7777),
            (65534, 65534, 0o1555)
        );
        assert_eq!((m("sub/f").uid(), m("sub/f").gid()), (65534, 65533));
        assert_eq!(m("sub/f").mode() & 0o7777, 0o4750);
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "data");
        assert_eq!(m("hard").ino(), m("sub/f").ino());
        assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("sub/f"));
        assert_eq!((m("link").uid(), m("link").gid()), (7, 8));
        assert!(m("fifo").file_type().is_fifo());
        assert_eq!(m("sub/f").mtime_nsec(), s("sub/f").mtime_nsec());
        assert_eq!(m("sub").mtime(), s("sub").mtime());
        if xattr {
            let p = cpath(&dst.join("sub")).unwrap();
            let mut buf = [0u8; 8];
            // SAFETY: as in copy_xattrs.
            let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            assert_eq!(&buf[..len.max(0) as usize], v);
        }
    }
}
