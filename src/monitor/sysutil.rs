//! Thin libc wrappers the monitor process uses (no allocation, errors as `io::Error`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `-1` → the last OS error.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pipe, both ends close-on-exec; the read end non-blocking when `nonblock_read`.
pub fn pipe(nonblock_read: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if nonblock_read {
        set_nonblock(fds[0])?;
    }
    Ok((r, w))
}

/// Sets O_NONBLOCK.
pub fn set_nonblock(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) }).map(drop)
}

/// `open(path, flags)` with close-on-exec.
pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated path; the fd is owned below.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a live, writable slice.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes all of `data` (best effort: stops at the first error).
pub fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Reads a small file into `buf`, returning the filled part (no allocation).
pub fn read_small<'a>(path: &CStr, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut len = 0;
    while len < buf.len() {
        let n = read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(&buf[..len])
}

/// The value after `key ` on its own line of a `key value` file (memory.events, memory.oom_control).
pub fn field(text: &[u8], key: &[u8]) -> Option<u64> {
    for line in text.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(key)
            && let Some(v) = rest.strip_prefix(b" ")
        {
            let mut n: u64 = 0;
            for &b in v {
                if !b.is_ascii_digit() {
                    return None;
                }
                n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let t = b"oom_kill_disable 0\nunder_oom 0\noom_kill 12\n";
        assert_eq!(field(t, b"oom_kill"), Some(12));
        assert_eq!(field(t, b"under_oom"), Some(0));
        assert_eq!(field(t, b"oom"), None);
    }
}
