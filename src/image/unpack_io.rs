//! The byte-level parts of layer unpacking: the hashing, counting reader under the per-layer byte
//! limit, file content copies (sparse entries written with holes, never materialized zeros), and
//! xattrs set without following symlinks.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// The uncompressed layer stream: hashed (the diff ID) and counted; reading past `max` bytes fails
/// and sets `over`, so the caller can tell a limit from a corrupt stream.
pub(super) struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub n: u64,
    pub max: u64,
    pub over: bool,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, max: u64) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            n: 0,
            max,
            over: false,
        }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        if self.n > self.max {
            self.over = true;
            return Err(std::io::Error::other("the layer is larger than its limit"));
        }
        Ok(k)
    }
}

/// `io::copy` with our own (large) buffer.
pub(super) fn copy_big(r: &mut impl Read, w: &mut File, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Block size for hole detection: the file system's allocation unit on every file system in use.
const HOLE_BLOCK: usize = 4096;

/// Copies a sparse entry's content (the tar reader yields zeros for its holes): blocks of zeros are
/// skipped, leaving holes, and the file is given its full size at the end. Returns the bytes written.
pub(super) fn copy_sparse(r: &mut impl Read, w: &File, size: u64, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut pos = 0u64;
    let mut written = 0u64;
    // `buf` holds `fill` bytes starting at file offset `pos`; only whole blocks leave it (but the last).
    let mut fill = 0usize;
    loop {
        let k = match r.read(&mut buf[fill..]) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        fill += k;
        let end = k == 0;
        let whole = if end { fill } else { fill - fill % HOLE_BLOCK };
        let mut off = 0usize;
        while off < whole {
            let b = &buf[off..whole.min(off + HOLE_BLOCK)];
            if b.iter().any(|&x| x != 0) {
                w.write_all_at(b, pos + off as u64)?;
                written += b.len() as u64;
            }
            off += b.len();
        }
        buf.copy_within(whole..fill, 0);
        pos += whole as u64;
        fill -= whole;
        if end {
            break;
        }
    }
    if pos != size {
        return Err(std::io::Error::other(format!(
            "sparse content is {pos} bytes, its header says {size}"
        )));
    }
    w.set_len(size)?;
    Ok(written)
}

/// Sets an xattr on an open file.
pub(super) fn fset_xattr(f: &File, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: valid fd, NUL-terminated name, value pointer and length from a slice.
    let r = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an xattr on `parent/name` without following a final symlink (`lsetxattr` through
/// `/proc/self/fd`, which pins the parent directory).
pub(super) fn set_xattr_at(
    parent: &impl AsFd,
    name: &OsStr,
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = std::ffi::CString::new(path).map_err(std::io::Error::other)?;
    let key = std::ffi::CString::new(key).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated path and name, value pointer and length from a slice.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_copies_leave_holes_and_keep_the_data() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = File::create(&p).unwrap();
        let size = 8u64 << 20;
        let mut content = vec![0u8; size as usize];
        content[5000..5010].copy_from_slice(b"0123456789");
        let tail = content.len() - 3;
        content[tail..].copy_from_slice(b"end");
        let mut buf = vec![0u8; 256 << 10];
        let n = copy_sparse(&mut content.as_slice(), &f, size, &mut buf).unwrap();
        assert_eq!(n, 2 * 4096);
        assert_eq!(std::fs::read(&p).unwrap(), content);
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), size);
        assert!(m.blocks() * 512 <= 64 << 10, "{} blocks allocated", m.blocks());
    }
}
