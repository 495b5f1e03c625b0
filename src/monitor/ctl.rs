//! The monitor's control protocol on `ctl.sock` (a unix stream socket in the container's state dir).
//!
//! A client connects and sends one request line (at most [`MAX_LINE`] bytes, ASCII, `\n`-terminated);
//! the monitor answers one line, `OK` or `ERR <text>`, and closes the connection:
//!
//! - `REOPEN` — reopen (create) the CRI log file at its path (after kubelet rotated it);
//! - `RESIZE <width> <height>` — set the pty's window size (only with `tty`);
//! - `ATTACH` — after `OK` the connection carries frames `[stream u8][len u32 BE][data]` both ways:
//!   [`STDIN`] from the client (a frame with len 0 closes stdin when the container has `stdin_once`),
//!   [`STDOUT`] and [`STDERR`] to it (a tty container's output is all `STDOUT`). The monitor closes the
//!   connection when the container has exited (after the last output), or when the client cannot keep
//!   up. With `stdin_once`, the container's stdin is closed when the first attached client leaves.
//!   Stdin the container does not take at once is held (the client is not read meanwhile: back
//!   pressure); stdin it cannot take at all (no stdin, closed) ends the attach with an [`ERROR`] frame.
//!   At most `MAX_ATTACHED` clients attach at once, so that `REOPEN` and `RESIZE` always find a slot.
//!
//! Parsing allocates nothing (the monitor's steady loop must not).

/// Longest request line accepted.
pub const MAX_LINE: usize = 128;

/// Attach frame stream: the container's stdin (client → monitor).
pub const STDIN: u8 = 0;
/// Attach frame stream: the container's stdout (monitor → client).
pub const STDOUT: u8 = 1;
/// Attach frame stream: the container's stderr (monitor → client).
pub const STDERR: u8 = 2;
/// Attach frame stream: why the monitor ends this attach (monitor → client, then it closes the
/// connection): the container's stdin cannot take what the client sent.
pub const ERROR: u8 = 3;
/// Bytes of an attach frame header: stream, then the payload length (u32, big endian).
pub const FRAME_HEADER: usize = 5;

/// Encodes one attach frame.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_HEADER + data.len());
    v.push(stream);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Reopen the log file.
    Reopen,
    /// Set the terminal size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Attach to the container's stdio (reserved).
    Attach,
}

/// Parses one request line (with or without its `\n`).
pub fn parse_request(line: &[u8]) -> Option<Request> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let cmd = words.next()?;
    let req = match cmd {
        b"REOPEN" => Request::Reopen,
        b"ATTACH" => Request::Attach,
        b"RESIZE" => {
            let width = parse_u16(words.next()?)?;
            let height = parse_u16(words.next()?)?;
            Request::Resize { width, height }
        }
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(req)
}

fn parse_u16(w: &[u8]) -> Option<u16> {
    if w.is_empty() || w.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &b in w {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    u16::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse_request(b"REOPEN\n"), Some(Request::Reopen));
        assert_eq!(
            parse_request(b"RESIZE 80 24\n"),
            Some(Request::Resize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(parse_request(b"ATTACH"), Some(Request::Attach));
        assert_eq!(parse_request(b"RESIZE 80\n"), None);
        assert_eq!(parse_request(b"RESIZE 80 99999\n"), None);
        assert_eq!(parse_request(b"RESIZE -1 2\n"), None);
        assert_eq!(parse_request(b"REOPEN now\n"), None);
        assert_eq!(parse_request(b"\n"), None);
        assert_eq!(parse_request(b"HELLO\n"), None);
    }
}
