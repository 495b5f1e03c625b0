//! What keeps the streaming server standing under abuse: a cap on concurrent sessions, overall and per
//! container (per pod for port-forward), answered with HTTP 429 before the upgrade; and an idle
//! timeout ([`IdleIo`]) that ends a connection on which no byte moved either way for
//! `stream.idle_timeout_seconds`, including one whose client stopped reading. The per-connection caps
//! (SPDY streams, port-forward pairs) live with the protocols (`spdy`, `portforward`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::StreamConfig;

/// The limits from `[stream]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_container: usize,
    pub max_streams_per_connection: usize,
    pub max_port_forwards_per_connection: usize,
    /// None: never.
    pub idle_timeout: Option<Duration>,
}

impl Limits {
    /// The limits `cfg` sets.
    pub fn from_config(cfg: &StreamConfig) -> Self {
        Limits {
            max_sessions: cfg.max_sessions,
            max_sessions_per_container: cfg.max_sessions_per_container,
            max_streams_per_connection: cfg.max_streams_per_connection,
            max_port_forwards_per_connection: cfg.max_port_forwards_per_connection,
            idle_timeout: (cfg.idle_timeout_seconds > 0)
                .then(|| Duration::from_secs(cfg.idle_timeout_seconds)),
        }
    }
}

/// Sessions running now: in total and per container (or pod).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per: HashMap<String, usize>,
}

/// One admitted session; dropping it frees its place.
#[derive(Debug)]
pub struct SessionGuard {
    inner: Arc<Mutex<Counts>>,
    key: String,
}

impl Sessions {
    /// Admits a session on `key` (a container or pod ID), or says which limit refuses it.
    pub fn admit(&self, key: &str, limits: &Limits) -> Result<SessionGuard, String> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.max_sessions {
            return Err(format!(
                "too many streaming sessions: {} running (stream.max_sessions)",
                limits.max_sessions
            ));
        }
        let n = c.per.get(key).copied().unwrap_or(0);
        if n >= limits.max_sessions_per_container {
            return Err(format!(
                "too many streaming sessions for {key}: {n} running (stream.max_sessions_per_container)"
            ));
        }
        c.total += 1;
        c.per.insert(key.to_string(), n + 1);
        Ok(SessionGuard {
            inner: Arc::clone(&self.inner),
            key: key.to_string(),
        })
    }

    /// Sessions running now.
    pub fn running(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.key);
            }
        }
    }
}

/// A connection that fails with `TimedOut` once no byte has been read or written for the timeout
/// while a read or write waits: the session on it then ends as if the client had left.
pub struct IdleIo<IO> {
    io: IO,
    timeout: Option<Duration>,
    last: Instant,
    /// One timer per direction: each is polled with its own side's waker.
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    what: String,
    logged: bool,
}

impl<IO> IdleIo<IO> {
    /// `io` with an idle `timeout` (None: never); `what` names it in the log line.
    pub fn new(io: IO, timeout: Option<Duration>, what: String) -> Self {
        let now = Instant::now();
        let far = now + timeout.unwrap_or(Duration::from_secs(86400 * 365));
        IdleIo {
            io,
            timeout,
            last: now,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            what,
            logged: false,
        }
    }
}

/// Whether the idle deadline (`last` + `timeout`) has passed; arms `timer` for it otherwise.
fn expired(
    timer: &mut Pin<Box<Sleep>>,
    last: Instant,
    timeout: Option<Duration>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(t) = timeout else { return false };
    let deadline = last + t;
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<IO> IdleIo<IO> {
    fn timed_out(&mut self) -> io::Error {
        if !self.logged {
            self.logged = true;
            tracing::info!(
                conn = %self.what,
                idle_seconds = self.timeout.map_or(0, |t| t.as_secs()),
                "streaming connection idle for stream.idle_timeout_seconds; closing it"
            );
        }
        io::Error::new(io::ErrorKind::TimedOut, "streaming connection idle timeout")
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleIo<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    me.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(&mut me.read_timer, me.last, me.timeout, cx) {
                    return Poll::Ready(Err(me.timed_out()));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleIo<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        match Pin::new(&mut me.io).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    me.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if expired(&mut me.write_timer, me.last, me.timeout, cx) {
                    return Poll::Ready(Err(me.timed_out()));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        match Pin::new(&mut me.io).poll_flush(cx) {
            Poll::Pending if expired(&mut me.write_timer, me.last, me.timeout, cx) => {
                Poll::Ready(Err(me.timed_out()))
            }
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        match Pin::new(&mut me.io).poll_shutdown(cx) {
            Poll::Pending if expired(&mut me.write_timer, me.last, me.timeout, cx) => {
                Poll::Ready(Err(me.timed_out()))
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_sessions: total,
            max_sessions_per_container: per,
            max_streams_per_connection: 8,
            max_port_forwards_per_connection: 4,
            idle_timeout: None,
        }
    }

    #[test]
    fn sessions_are_counted_overall_and_per_container() {
        let s = Sessions::default();
        let l = limits(3, 2);
        let a1 = s.admit("a", &l).unwrap();
        let _a2 = s.admit("a", &l).unwrap();
        assert!(
            s.admit("a", &l)
                .unwrap_err()
                .contains("max_sessions_per_container")
        );
        let _b = s.admit("b", &l).unwrap();
        assert!(s.admit("c", &l).unwrap_err().contains("stream.max_sessions"));
        drop(a1);
        assert_eq!(s.running(), 2);
        let _a3 = s.admit("a", &l).unwrap();
    }

    #[tokio::test]
    async fn idle_connections_time_out_and_busy_ones_do_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleIo::new(a, Some(Duration::from_millis(300)), "test".into());
        // Traffic every 100 ms keeps it open.
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            b.write_all(b"x").await.unwrap();
            assert_eq!(a.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = std::time::Instant::now();
        let e = a.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2));
        // A peer that stops reading: the blocked write times out too.
        let (c, _d) = tokio::io::duplex(16);
        let mut c = IdleIo::new(c, Some(Duration::from_millis(200)), "test".into());
        let e = c.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
