//! A registry proxy the test controls, for the fault-injection suite: it forwards HTTP/1.1 requests to
//! a real registry (`harness::Registry`, one connection per request) and, per rule, misbehaves on the
//! requests whose path contains a given part: resets the connection after N bytes of the body, stalls
//! after N bytes, answers a status (500, 503, 429 with `Retry-After`) without asking the registry,
//! serves a blob as if it were truncated at byte N (also to `Range` requests: 416 past it) or with
//! the byte at N flipped. `Range` headers are forwarded as they come; the registry answers them. Every
//! request is recorded with the body bytes sent back, so a test can count what was downloaded again.
//! Threads of its own (no tokio), stopped on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Registry;

/// What a rule does to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Reset the connection (TCP RST) once the client has had the blob up to this byte (a response
    /// that starts at or past it is reset at once).
    ResetAfter(u64),
    /// Send the blob up to this byte, then nothing until the rules are lifted or the proxy stops.
    StallAfter(u64),
    /// Answer this status (with `Retry-After` when given) without asking the registry.
    Status(u16, Option<String>),
    /// Serve the blob as if it ended before this byte (a consistent lie: lengths and ranges say so).
    Truncate(u64),
    /// Flip the bits of the blob's byte at this offset.
    Corrupt(u64),
    /// Forward without the request's `Range` header: the registry sends the whole blob (200), as one
    /// that does not serve ranges would.
    IgnoreRange,
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Its `Range` header.
    pub range: Option<String>,
    /// The status sent back (0: none).
    pub status: u16,
    /// Body bytes sent back.
    pub body_bytes: u64,
    /// The fault applied.
    pub fault: Option<Fault>,
}

struct Rule {
    path_part: String,
    fault: Fault,
    /// Requests left to apply it to (`None`: every one).
    left: Option<usize>,
}

struct Shared {
    upstream: String,
    rules: Mutex<VecDeque<Rule>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    /// Bumped by `lift`: stalled answers end.
    generation: AtomicU64,
}

/// A running proxy.
pub struct RegProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RegProxy {
    /// A proxy in front of `reg`, forwarding everything until told otherwise.
    pub fn start(reg: &Registry) -> RegProxy {
        Self::start_at(reg, 0)
    }

    /// `start` on 127.0.0.1:`port` (0: any free port).
    pub fn start_at(reg: &Registry, port: u16) -> RegProxy {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy");
        let port = l.local_addr().expect("proxy addr").port();
        l.set_nonblocking(true).expect("nonblocking listener");
        let shared = Arc::new(Shared {
            upstream: reg.host(),
            rules: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let sh = sh.clone();
                        std::thread::spawn(move || {
                            let _ = serve(s, &sh);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        RegProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`: the registry host to pull from through the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to the next `times` requests whose path contains `path_part` (`None`: to
    /// every one). Rules are matched in the order they were added.
    pub fn fault(&self, path_part: &str, fault: Fault, times: Option<usize>) {
        self.shared.rules.lock().unwrap().push_back(Rule {
            path_part: path_part.to_string(),
            fault,
            left: times,
        });
    }

    /// Removes every rule and ends stalled answers: the proxy forwards faithfully from now on.
    pub fn lift(&self) {
        self.shared.rules.lock().unwrap().clear();
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests whose path contains `path_part`.
    pub fn seen_for(&self, path_part: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains(path_part))
            .collect()
    }

    /// Body bytes sent back for requests whose path contains `path_part`.
    pub fn body_bytes(&self, path_part: &str) -> u64 {
        self.seen_for(path_part).iter().map(|s| s.body_bytes).sum()
    }
}

impl Drop for RegProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.lift();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A parsed message head: the first line and the headers.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Some(Head {
            first: first.trim_end().to_string(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or adds) a header.
    fn set(&mut self, name: &str, value: String) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// The rule for `path`, used up by one.
fn take_rule(sh: &Shared, path: &str) -> Option<Fault> {
    let mut rules = sh.rules.lock().unwrap();
    let i = rules
        .iter()
        .position(|r| path.contains(&r.path_part) && r.left != Some(0))?;
    let r = &mut rules[i];
    if let Some(n) = r.left.as_mut() {
        *n -= 1;
    }
    Some(r.fault.clone())
}

/// Serves one connection: one request, forwarded (or faulted), one answer, close.
fn serve(client: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let Some(mut req) = Head::read(&mut cr)? else {
        return Ok(());
    };
    let mut parts = req.first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut body = vec![
        0u8;
        req.get("Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    ];
    cr.read_exact(&mut body)?;
    let fault = take_rule(sh, &path);
    let i = {
        let mut seen = sh.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            range: req.get("Range").map(str::to_string),
            status: 0,
            body_bytes: 0,
            fault: fault.clone(),
        });
        seen.len() - 1
    };
    let record = |status: u16, bytes: u64| {
        let mut seen = sh.seen.lock().unwrap();
        seen[i].status = status;
        seen[i].body_bytes = bytes;
    };
    let mut client = client;
    if let Some(Fault::Status(code, after)) = &fault {
        let mut h = format!("HTTP/1.1 {code} Fault\r\nConnection: close\r\nContent-Length: 0\r\n");
        if let Some(a) = after {
            h.push_str(&format!("Retry-After: {a}\r\n"));
        }
        h.push_str("\r\n");
        record(*code, 0);
        return client.write_all(h.as_bytes());
    }
    let mut up = TcpStream::connect(&sh.upstream)?;
    if fault == Some(Fault::IgnoreRange) {
        req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("Range"));
    }
    req.set("Connection", "close".into());
    req.set("Host", sh.upstream.clone());
    up.write_all(&req.bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let Some(mut resp) = Head::read(&mut ur)? else {
        return Ok(());
    };
    resp.set("Connection", "close".into());
    let status: u16 = resp
        .first
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let length: Option<u64> = resp.get("Content-Length").and_then(|v| v.parse().ok());
    // Where this body starts in the blob.
    let start = if status == 206 {
        resp.get("Content-Range")
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let mut limit = length; // body bytes to send on
    let sent_status = status;
    if let (Some(Fault::Truncate(k)), Some(n), true) = (&fault, length, status == 200 || status == 206) {
        let k = *k;
        if start >= k {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nConnection: close\r\nContent-Range: bytes */{k}\r\nContent-Length: 0\r\n\r\n"
            );
            record(416, 0);
            return client.write_all(h.as_bytes());
        }
        let end = (start + n).min(k);
        resp.set("Content-Length", (end - start).to_string());
        if status == 206 {
            resp.set("Content-Range", format!("bytes {start}-{}/{k}", end - 1));
        }
        limit = Some(end - start);
    }
    client.write_all(&resp.bytes())?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    let result = loop {
        let want = match limit {
            Some(l) if sent >= l => break Ok(()),
            Some(l) => buf.len().min((l - sent) as usize),
            None => buf.len(),
        };
        let k = match ur.read(&mut buf[..want]) {
            Ok(0) => break Ok(()),
            Ok(k) => k,
            Err(e) => break Err(e),
        };
        let chunk = &mut buf[..k];
        match &fault {
            Some(Fault::Corrupt(at)) if *at >= start + sent && *at < start + sent + k as u64 => {
                chunk[(*at - start - sent) as usize] ^= 0xff;
            }
            Some(Fault::ResetAfter(n)) | Some(Fault::StallAfter(n)) if start + sent + k as u64 >= *n => {
                let part = n.saturating_sub(start + sent) as usize;
                if let Err(e) = client.write_all(&chunk[..part]) {
                    break Err(e);
                }
                sent += part as u64;
                record(sent_status, sent);
                if let Some(Fault::StallAfter(_)) = &fault {
                    client.flush()?;
                    let g = sh.generation.load(Ordering::SeqCst);
                    while sh.generation.load(Ordering::SeqCst) == g && !sh.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return Ok(());
                }
                // What a reset drops is what the client has not read yet: let it take what was sent,
                // so that the fault is "reset after N bytes reached the client".
                let t = Instant::now();
                while unacked(&client) > 0 && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(500));
                return reset(client);
            }
            _ => {}
        }
        if let Err(e) = client.write_all(chunk) {
            break Err(e);
        }
        sent += k as u64;
        record(sent_status, sent);
    };
    record(sent_status, sent);
    result
}

/// Bytes sent on `s` that its peer has not acknowledged yet (`SIOCOUTQ`).
fn unacked(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) on a socket writes one int through the pointer, which is valid.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 { n } else { 0 }
}

/// Closes `s` with a TCP reset (SO_LINGER 0), as a failing middlebox or registry would.
fn reset(s: TcpStream) -> std::io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &l).map_err(std::io::Error::from)?;
    drop(s);
    Ok(())
}
