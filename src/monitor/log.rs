//! The CRI log writer used by the monitor: lines `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F>
//! <text>\n`. A line longer than [`LINE_MAX`], or data left unterminated at EOF, is written as `P`
//! (partial) pieces; the piece that ends the line is `F`. Fixed buffers, no allocation.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The longest piece written as one log line.
pub const LINE_MAX: usize = 16 * 1024;

/// Which of the container's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (also the pty's output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// The CRI log file (or nowhere, when the container has no log path).
///
/// A line that cannot be written (the log's filesystem is full) is dropped whole, never left half
/// written, and counted; the container is never blocked on its output, as with containerd and conmon.
/// The count so far is kept in [`DROPPED_FILE`] in the monitor's directory (the container's state
/// dir), where crustd reads it for verbose ContainerStatus.
#[derive(Debug)]
pub struct LogFile {
    fd: Option<OwnedFd>,
    /// Lines dropped since the monitor started, and the count last written to [`DROPPED_FILE`] (when).
    dropped: u64,
    reported: u64,
    reported_at_ns: i64,
}

/// The file (in the monitor's cwd, the container's state dir) holding how many log lines were dropped.
pub const DROPPED_FILE: &str = "log-dropped";

impl LogFile {
    /// Discards everything.
    pub fn none() -> Self {
        LogFile {
            fd: None,
            dropped: 0,
            reported: 0,
            reported_at_ns: 0,
        }
    }

    /// Carries the dropped-line count over to a reopened log (`REOPEN` after rotation).
    pub fn keep_count_of(&mut self, old: &LogFile) {
        self.dropped = old.dropped;
        self.reported = old.reported;
        self.reported_at_ns = old.reported_at_ns;
    }

    /// Opens (creating, appending) the log at `path`; a symlink there is refused (O_NOFOLLOW), so a
    /// link planted where the log goes cannot turn crust's writes to another file.
    pub fn open(path: &CStr) -> std::io::Result<Self> {
        // SAFETY: open(2) with a NUL-terminated path; the returned fd is owned below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o640,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(LogFile {
            fd: Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            ..LogFile::none()
        })
    }

    /// Writes one log line; a line that cannot be written whole (a full disk) is dropped and counted.
    pub fn write_line(&mut self, stream: Stream, partial: bool, text: &[u8]) {
        let written = self.write_whole(stream, partial, text);
        if !written {
            self.dropped += 1;
        }
        if self.dropped != self.reported {
            // While lines are being dropped the count is written at most once a second; the first line
            // written again writes the final count.
            let now = now_ns();
            if written || now - self.reported_at_ns >= 1_000_000_000 {
                if write_count(self.dropped) {
                    self.reported = self.dropped;
                }
                self.reported_at_ns = now;
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes the line, all or nothing: a write that stops part way is cut back off the file, so the
    /// next line does not continue a broken one. `true` when it was written (or there is no log).
    fn write_whole(&mut self, stream: Stream, partial: bool, text: &[u8]) -> bool {
        let Some(fd) = &self.fd else { return true };
        let mut ts = [0u8; TIMESTAMP_LEN];
        format_timestamp(now_ns(), &mut ts);
        let tag: &[u8] = match (stream, partial) {
            (Stream::Stdout, false) => b" stdout F ",
            (Stream::Stdout, true) => b" stdout P ",
            (Stream::Stderr, false) => b" stderr F ",
            (Stream::Stderr, true) => b" stderr P ",
        };
        let parts: [&[u8]; 4] = [&ts, tag, text, b"\n"];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let iov = parts.map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
        // SAFETY: the iovecs point into live buffers for the duration of the call.
        let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return false;
        }
        if n as usize == total {
            return true;
        }
        // A short write (a filesystem filling up): write what is left, part by part.
        let mut skip = n as usize;
        let mut done = n as usize;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            let more = write_all(fd.as_raw_fd(), &p[skip..]);
            done += more;
            if more < p.len() - skip {
                cut_back(fd.as_raw_fd(), done);
                return false;
            }
            skip = 0;
        }
        true
    }
}

/// Writes `data`, retrying on EINTR; returns how much was written before an error.
fn write_all(fd: i32, mut data: &[u8]) -> usize {
    let mut done = 0;
    while !data.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return done;
        }
        done += n as usize;
        data = &data[n as usize..];
    }
    done
}

/// Takes the last `n` bytes (a line written in part) off the end of the log.
fn cut_back(fd: i32, n: usize) {
    // SAFETY: fstat into a zeroed struct, ftruncate on our own descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && st.st_size >= n as libc::off_t {
            libc::ftruncate(fd, st.st_size - n as libc::off_t);
        }
    }
}

/// Writes the dropped-line count to [`DROPPED_FILE`] (a temporary file renamed over it); `false` when
/// it could not be written (the state dir's filesystem full too): it is tried again later.
fn write_count(n: u64) -> bool {
    let tmp = format!(".{DROPPED_FILE}.tmp");
    std::fs::write(&tmp, format!("{n}\n")).is_ok() && std::fs::rename(&tmp, DROPPED_FILE).is_ok()
}

/// One stream's pending partial line.
pub struct LineBuf {
    stream: Stream,
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineBuf {
    /// An empty buffer for `stream`.
    pub fn new(stream: Stream) -> Self {
        LineBuf {
            stream,
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// The stream this buffer collects.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Where the next read goes (never empty).
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Takes `n` bytes just read into [`Self::space`]: writes every complete line, and the whole buffer
    /// as a `P` piece when it is full without a newline.
    pub fn filled(&mut self, n: usize, log: &mut LogFile) {
        let old = self.len;
        let end = old + n;
        let mut start = 0;
        let mut i = old;
        while let Some(off) = self.buf[i..end].iter().position(|b| *b == b'\n') {
            let nl = i + off;
            log.write_line(self.stream, false, &self.buf[start..nl]);
            start = nl + 1;
            i = start;
        }
        if start > 0 {
            self.buf.copy_within(start..end, 0);
        }
        self.len = end - start;
        if self.len == LINE_MAX {
            log.write_line(self.stream, true, &self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// Takes bytes read elsewhere (during the runtime's start), as reads into [`Self::space`] would.
    pub fn feed(&mut self, mut data: &[u8], log: &mut LogFile) {
        while !data.is_empty() {
            let space = self.space();
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            self.filled(n, log);
            data = &data[n..];
        }
    }

    /// At EOF: writes what is left as a `P` piece.
    pub fn flush(&mut self, log: &mut LogFile) {
        if self.len > 0 {
            log.write_line(self.stream, true, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

/// Length of `2006-01-02T15:04:05.999999999Z`.
pub const TIMESTAMP_LEN: usize = 30;

/// The wall clock in ns since the epoch.
pub fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Formats `ns` since the epoch as RFC 3339 UTC with nine fraction digits.
pub fn format_timestamp(ns: i64, out: &mut [u8; TIMESTAMP_LEN]) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut put = |at: usize, width: usize, mut v: i64| {
        for k in (0..width).rev() {
            out[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 9, frac);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        for ns in [
            0i64,
            1_700_000_000_123_456_789,
            951_782_400_000_000_001,
            4_102_444_799_999_999_999,
        ] {
            let mut b = [0u8; TIMESTAMP_LEN];
            format_timestamp(ns, &mut b);
            let s = std::str::from_utf8(&b).unwrap();
            let want = chrono::DateTime::from_timestamp_nanos(ns)
                .format("%Y-%m-%dT%H:%M:%S%.9fZ")
                .to_string();
            assert_eq!(s, want);
        }
    }

    fn lines_of(path: &std::path::Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
                (
                    it.next().unwrap().into(),
                    it.next().unwrap().into(),
                    it.next().unwrap_or("").into(),
                )
            })
            .collect()
    }

    #[test]
    fn splits_lines_and_partials() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut log = LogFile::open(&c).unwrap();
        let mut out = LineBuf::new(Stream::Stdout);
        let mut err = LineBuf::new(Stream::Stderr);
        let feed = |lb: &mut LineBuf, data: &[u8], log: &mut LogFile| {
            let mut data = data;
            while !data.is_empty() {
                let space = lb.space();
                let n = space.len().min(data.len());
                space[..n].copy_from_slice(&data[..n]);
                lb.filled(n, log);
                data = &data[n..];
            }
        };
        feed(&mut out, b"hello\nwor", &mut log);
        feed(&mut err, b"oops\n", &mut log);
        feed(&mut out, b"ld\n\n", &mut log);
        let long = vec![b'x'; LINE_MAX + 10];
        feed(&mut out, &long, &mut log);
        feed(&mut out, b"\ntail", &mut log);
        out.flush(&mut log);
        err.flush(&mut log);
        let got = lines_of(&path);
        let want: Vec<(String, String, String)> = [
            ("stdout", "F", "hello".to_string()),
            ("stderr", "F", "oops".to_string()),
            ("stdout", "F", "world".to_string()),
            ("stdout", "F", String::new()),
            ("stdout", "P", "x".repeat(LINE_MAX)),
            ("stdout", "F", "x".repeat(10)),
            ("stdout", "P", "tail".to_string()),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
        .collect();
        assert_eq!(got, want);
    }
}
