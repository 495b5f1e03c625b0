//! The monitor's side of the control socket (protocol in `ctl`): up to [`MAX_CLIENTS`] connections in
//! fixed slots. One-shot requests (`REOPEN`, `RESIZE`) are answered and closed; `ATTACH` turns the
//! connection into a framed stream: the container's output is copied to it (non-blocking; a client
//! that cannot keep up is disconnected, never waited for), and its stdin frames go to the container's
//! stdin pipe or pty (what the container does not take at once is dropped).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::ctl::{self, FRAME_HEADER, MAX_LINE, Request, STDIN};
use super::event_loop::State;
use super::log::LogFile;
use super::sysutil;

/// Connections served at once.
pub const MAX_CLIENTS: usize = 4;

struct Client {
    fd: Option<OwnedFd>,
    buf: [u8; MAX_LINE],
    len: usize,
    attached: bool,
    /// Header bytes of the frame being read.
    hdr: [u8; FRAME_HEADER],
    hdr_len: usize,
    /// Payload bytes still to come in the current frame, and its stream.
    left: u32,
    stream: u8,
}

/// The connection slots.
pub struct Clients {
    slots: [Client; MAX_CLIENTS],
}

impl Clients {
    /// No connections.
    pub fn new() -> Self {
        Clients {
            slots: std::array::from_fn(|_| Client {
                fd: None,
                buf: [0; MAX_LINE],
                len: 0,
                attached: false,
                hdr: [0; FRAME_HEADER],
                hdr_len: 0,
                left: 0,
                stream: 0,
            }),
        }
    }

    /// The fd of slot `i` (-1 when free), for poll.
    pub fn fd(&self, i: usize) -> RawFd {
        self.slots[i].fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Accepts pending connections into free slots (a full house answers `ERR busy`).
    pub fn accept(&mut self, listener: RawFd) {
        loop {
            // SAFETY: accept4 on our listening socket; the fd is owned below.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            // SAFETY: fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            match self.slots.iter_mut().find(|c| c.fd.is_none()) {
                Some(c) => {
                    c.fd = Some(fd);
                    c.len = 0;
                    c.attached = false;
                    c.hdr_len = 0;
                    c.left = 0;
                }
                None => {
                    let _ = sysutil::write_all(fd.as_raw_fd(), b"ERR busy\n");
                }
            }
        }
    }

    /// Copies container output (`stream` 1 or 2) to every attached client.
    pub fn forward(&mut self, stream: u8, data: &[u8], st: &mut State) {
        if data.is_empty() {
            return;
        }
        let mut hdr = [0u8; FRAME_HEADER];
        hdr[0] = stream;
        hdr[1..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        for c in self.slots.iter_mut().filter(|c| c.attached) {
            let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
                continue;
            };
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                },
            ];
            // SAFETY: the iovecs point into live buffers for the call.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            if n < 0 || n as usize != hdr.len() + data.len() {
                // Too slow (or gone): a partial frame cannot be resumed without buffering.
                detach(c, st);
            }
        }
    }

    /// Serves slot `i`, which poll reported ready.
    pub fn serve(&mut self, i: usize, st: &mut State) {
        let c = &mut self.slots[i];
        if c.attached {
            serve_attached(c, st);
        } else {
            serve_request(c, st);
        }
    }
}

fn detach(c: &mut Client, st: &mut State) {
    c.fd = None;
    c.attached = false;
    if st.stdin_once {
        st.io.stdin_w = None;
    }
}

fn serve_request(c: &mut Client, st: &mut State) {
    let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
        return;
    };
    let n = match sysutil::read(fd, &mut c.buf[c.len..]) {
        Ok(0) => {
            c.fd = None;
            return;
        }
        Ok(n) => n,
        Err(e) if is_transient(&e) => return,
        Err(_) => {
            c.fd = None;
            return;
        }
    };
    c.len += n;
    let Some(nl) = c.buf[..c.len].iter().position(|b| *b == b'\n') else {
        if c.len == MAX_LINE {
            let _ = sysutil::write_all(fd, b"ERR request too long\n");
            c.fd = None;
        }
        return;
    };
    let answer: &[u8] = match ctl::parse_request(&c.buf[..nl]) {
        Some(Request::Reopen) => match &st.log_cpath {
            None => b"OK\n",
            Some(p) => match LogFile::open(p) {
                Ok(l) => {
                    st.log = l;
                    b"OK\n"
                }
                Err(_) => b"ERR cannot open the log file\n",
            },
        },
        Some(Request::Resize { width, height }) => match &st.io.tty {
            None => b"ERR the container has no tty\n",
            Some(m) => {
                let ws = libc::winsize {
                    ws_row: height,
                    ws_col: width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads a winsize from a live local.
                if unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == 0 {
                    b"OK\n"
                } else {
                    b"ERR resize failed\n"
                }
            }
        },
        Some(Request::Attach) => {
            if sysutil::write_all(fd, b"OK\n").is_err() {
                c.fd = None;
                return;
            }
            c.attached = true;
            // Frames the client sent right behind the request line.
            let (start, end) = (nl + 1, c.len);
            let mut rest = [0u8; MAX_LINE];
            rest[..end - start].copy_from_slice(&c.buf[start..end]);
            c.len = 0;
            take_frames(c, st, &rest[..end - start]);
            return;
        }
        None => b"ERR bad request\n",
    };
    let _ = sysutil::write_all(fd, answer);
    c.fd = None;
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

fn serve_attached(c: &mut Client, st: &mut State) {
    let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
        return;
    };
    let mut buf = [0u8; 4096];
    match sysutil::read(fd, &mut buf) {
        Ok(0) => detach(c, st),
        Ok(n) => take_frames(c, st, &buf[..n]),
        Err(e) if is_transient(&e) => {}
        Err(_) => detach(c, st),
    }
}

/// Parses `data` as (the continuation of) frames from an attached client.
fn take_frames(c: &mut Client, st: &mut State, mut data: &[u8]) {
    while !data.is_empty() {
        if c.left == 0 {
            let k = (FRAME_HEADER - c.hdr_len).min(data.len());
            c.hdr[c.hdr_len..c.hdr_len + k].copy_from_slice(&data[..k]);
            c.hdr_len += k;
            data = &data[k..];
            if c.hdr_len < FRAME_HEADER {
                return;
            }
            c.hdr_len = 0;
            c.stream = c.hdr[0];
            c.left = u32::from_be_bytes([c.hdr[1], c.hdr[2], c.hdr[3], c.hdr[4]]);
            if c.left == 0 && c.stream == STDIN && st.stdin_once {
                // The client closed its stdin.
                st.io.stdin_w = None;
            }
            continue;
        }
        let k = (c.left as usize).min(data.len());
        if c.stream == STDIN {
            write_stdin(st, &data[..k]);
        }
        c.left -= k as u32;
        data = &data[k..];
    }
}

fn write_stdin(st: &mut State, data: &[u8]) {
    let fd = match (&st.io.tty, &st.io.stdin_w) {
        (Some(m), _) => m.as_raw_fd(),
        (None, Some(w)) => w.as_raw_fd(),
        (None, None) => return,
    };
    // Non-blocking: what the container does not take now is dropped rather than stall the monitor.
    // SAFETY: writes from a live slice.
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
}
