//! The monitor's side of the control socket (protocol in `ctl`): up to [`MAX_CLIENTS`] connections in
//! fixed slots, at most [`MAX_ATTACHED`] of them attached, so that one-shot requests (`REOPEN`,
//! `RESIZE`, answered and closed) always find a slot. `ATTACH` turns the connection into a framed
//! stream: the container's output is copied to it (non-blocking; a client that cannot keep up is
//! disconnected, never waited for), and its stdin frames go to the container's stdin pipe or pty.
//! Stdin the container does not take at once is stashed and the client is not read until the
//! container takes it (the loop polls the stdin fd for writability: back pressure, never a blocking
//! write); stdin the container cannot take at all (none, or closed) ends the attach with an `ERROR`
//! frame saying so. Nothing the client sent vanishes silently.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::ctl::{self, ERROR, FRAME_HEADER, MAX_LINE, Request, STDIN};
use super::event_loop::State;
use super::log::LogFile;
use super::sysutil;

/// Connections served at once.
pub const MAX_CLIENTS: usize = 8;
/// Attached clients at once; the other slots stay free for `REOPEN` and `RESIZE`.
pub const MAX_ATTACHED: usize = 4;
/// Bytes read from an attached client at once, and so at most stashed for the container's stdin.
const STASH: usize = 4096;

struct Client {
    fd: Option<OwnedFd>,
    buf: [u8; MAX_LINE],
    len: usize,
    attached: bool,
    frames: Frames,
    /// Client bytes not yet parsed because the container's stdin was full: `stash[off..len]`.
    stash: [u8; STASH],
    stash_off: usize,
    stash_len: usize,
}

/// Where the parser is in the client's frames.
#[derive(Default)]
struct Frames {
    /// Header bytes of the frame being read.
    hdr: [u8; FRAME_HEADER],
    hdr_len: usize,
    /// Payload bytes still to come in the current frame, and its stream.
    left: u32,
    stream: u8,
}

/// How far [`take_frames`] got.
enum Took {
    /// All of it.
    All,
    /// The container's stdin is full: this many bytes were taken, the rest waits.
    Blocked(usize),
    /// The container cannot take stdin at all.
    Refused(&'static str),
}

impl Client {
    /// Whether stashed stdin waits for the container.
    fn blocked(&self) -> bool {
        self.stash_off < self.stash_len
    }

    fn stash(&mut self, rest: &[u8]) {
        self.stash[..rest.len()].copy_from_slice(rest);
        self.stash_off = 0;
        self.stash_len = rest.len();
    }
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
                frames: Frames::default(),
                stash: [0; STASH],
                stash_off: 0,
                stash_len: 0,
            }),
        }
    }

    /// The fd of slot `i` (-1 when free) and the events to poll it for: none but hang-ups while its
    /// stdin waits for the container.
    pub fn poll_fd(&self, i: usize) -> (RawFd, libc::c_short) {
        let c = &self.slots[i];
        let fd = c.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        (fd, if c.blocked() { 0 } else { libc::POLLIN })
    }

    /// Whether some client's stdin waits for the container's stdin to take more.
    pub fn stdin_waiting(&self) -> bool {
        self.slots.iter().any(|c| c.fd.is_some() && c.blocked())
    }

    /// The container's stdin can take more (or failed): feeds the stashed stdin of waiting clients.
    pub fn resume_stdin(&mut self, st: &mut State) {
        for c in self.slots.iter_mut().filter(|c| c.fd.is_some() && c.blocked()) {
            let (off, len) = (c.stash_off, c.stash_len);
            match take_frames(&mut c.frames, st, &c.stash[off..len]) {
                Took::All => {
                    c.stash_off = 0;
                    c.stash_len = 0;
                }
                Took::Blocked(n) => c.stash_off += n,
                Took::Refused(why) => refuse(c, st, why),
            }
        }
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
                    c.frames = Frames::default();
                    c.stash_off = 0;
                    c.stash_len = 0;
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
        let attached = self.slots.iter().filter(|c| c.fd.is_some() && c.attached).count();
        let c = &mut self.slots[i];
        if c.attached && c.blocked() {
            // Polled for hang-ups only: the client is gone; nobody is left to take its stdin.
            detach(c, st);
        } else if c.attached {
            serve_attached(c, st);
        } else {
            serve_request(c, st, attached);
        }
    }
}

fn detach(c: &mut Client, st: &mut State) {
    c.fd = None;
    c.attached = false;
    c.stash_off = 0;
    c.stash_len = 0;
    if st.stdin_once {
        st.io.stdin_w = None;
    }
}

/// Tells the client why its stdin cannot be taken (an `ERROR` frame, best effort) and detaches it.
fn refuse(c: &mut Client, st: &mut State, why: &str) {
    if let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) {
        let mut f = [0u8; FRAME_HEADER + 128];
        let msg = &why.as_bytes()[..why.len().min(128)];
        f[0] = ERROR;
        f[1..FRAME_HEADER].copy_from_slice(&(msg.len() as u32).to_be_bytes());
        f[FRAME_HEADER..FRAME_HEADER + msg.len()].copy_from_slice(msg);
        let _ = sysutil::write_all(fd, &f[..FRAME_HEADER + msg.len()]);
    }
    detach(c, st);
}

/// Parses `data`, received from an attached client, and stashes or refuses what stdin cannot take.
fn take_client_bytes(c: &mut Client, st: &mut State, data: &[u8]) {
    match take_frames(&mut c.frames, st, data) {
        Took::All => {}
        Took::Blocked(n) => c.stash(&data[n..]),
        Took::Refused(why) => refuse(c, st, why),
    }
}

fn serve_request(c: &mut Client, st: &mut State, attached: usize) {
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
                Ok(mut l) => {
                    l.keep_count_of(&st.log);
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
        Some(Request::Attach) if attached >= MAX_ATTACHED => b"ERR too many attached clients\n",
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
            take_client_bytes(c, st, &rest[..end - start]);
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
    let mut buf = [0u8; STASH];
    match sysutil::read(fd, &mut buf) {
        Ok(0) => detach(c, st),
        Ok(n) => take_client_bytes(c, st, &buf[..n]),
        Err(e) if is_transient(&e) => {}
        Err(_) => detach(c, st),
    }
}

/// Parses `data` as (the continuation of) frames from an attached client, writing stdin payloads to
/// the container without blocking.
fn take_frames(c: &mut Frames, st: &mut State, data: &[u8]) -> Took {
    let mut at = 0;
    while at < data.len() {
        if c.left == 0 {
            let k = (FRAME_HEADER - c.hdr_len).min(data.len() - at);
            c.hdr[c.hdr_len..c.hdr_len + k].copy_from_slice(&data[at..at + k]);
            c.hdr_len += k;
            at += k;
            if c.hdr_len < FRAME_HEADER {
                return Took::All;
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
        let k = (c.left as usize).min(data.len() - at);
        let n = if c.stream == STDIN {
            match write_stdin(st, &data[at..at + k]) {
                Ok(n) => n,
                Err(why) => return Took::Refused(why),
            }
        } else {
            k
        };
        c.left -= n as u32;
        at += n;
        if n < k {
            return Took::Blocked(at);
        }
    }
    Took::All
}

/// The fd the container's stdin is written to: the pty master, else the stdin pipe.
pub fn stdin_fd(st: &State) -> Option<RawFd> {
    match (&st.io.tty, &st.io.stdin_w) {
        (Some(m), _) => Some(m.as_raw_fd()),
        (None, Some(w)) => Some(w.as_raw_fd()),
        (None, None) => None,
    }
}

/// Writes what the container takes now (non-blocking: the monitor never waits for it); how much.
fn write_stdin(st: &mut State, data: &[u8]) -> Result<usize, &'static str> {
    let Some(fd) = stdin_fd(st) else {
        return Err("the container has no open stdin (created without stdin, or closed by stdin_once)");
    };
    loop {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err("the container's stdin is closed"),
        }
    }
}
