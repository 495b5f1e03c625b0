//! Send-side flow control (SPDY/3.1 section 2.6.8): the peer's window for the session and for each
//! stream, 64 KiB at first (or the peer's SETTINGS_INITIAL_WINDOW_SIZE), spent by our DATA and refilled by
//! its WINDOW_UPDATEs. Consumption is always counted, but waiting for a window only starts once the peer
//! has shown it does flow control (a WINDOW_UPDATE or that setting): Kubernetes' spdystream never sends
//! WINDOW_UPDATE and does not expect senders to wait.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

/// SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
const DEFAULT_WINDOW: i64 = 64 << 10;

#[derive(Debug)]
struct Windows {
    enforce: bool,
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
}

/// The peer's windows, shared by the reader (updates) and the writer (spends).
#[derive(Debug)]
pub struct Flow {
    w: Mutex<Windows>,
    changed: Notify,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            w: Mutex::new(Windows {
                enforce: false,
                initial: DEFAULT_WINDOW,
                session: DEFAULT_WINDOW,
                streams: HashMap::new(),
            }),
            changed: Notify::new(),
        }
    }
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.w.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the peer does flow control (so sending may have to wait).
    pub fn enforced(&self) -> bool {
        self.lock().enforce
    }

    /// A stream was opened.
    pub fn open(&self, id: u32) {
        let mut w = self.lock();
        let initial = w.initial;
        w.streams.insert(id, initial);
    }

    /// Our side of a stream is finished.
    pub fn close(&self, id: u32) {
        self.lock().streams.remove(&id);
    }

    /// A WINDOW_UPDATE from the peer (stream 0: the session).
    pub fn update(&self, id: u32, delta: u32) {
        let mut w = self.lock();
        w.enforce = true;
        if id == 0 {
            w.session = w.session.saturating_add(i64::from(delta));
        } else if let Some(s) = w.streams.get_mut(&id) {
            *s = s.saturating_add(i64::from(delta));
        }
        drop(w);
        self.changed.notify_waiters();
    }

    /// SETTINGS_INITIAL_WINDOW_SIZE from the peer: applies the difference to every open stream.
    pub fn initial_window(&self, size: u32) {
        let mut w = self.lock();
        w.enforce = true;
        let delta = i64::from(size) - w.initial;
        w.initial = i64::from(size);
        for s in w.streams.values_mut() {
            *s += delta;
        }
        drop(w);
        self.changed.notify_waiters();
    }

    /// How many of `want` bytes may go out on stream `id` now (spent at once); waits while the
    /// windows are closed and enforced. Never 0 for `want > 0`.
    pub async fn take(&self, id: u32, want: usize) -> usize {
        loop {
            let notified = self.changed.notified();
            {
                let mut w = self.lock();
                let stream = w.streams.get(&id).copied().unwrap_or(w.initial);
                let avail = w.session.min(stream);
                let n = if !w.enforce {
                    want
                } else {
                    usize::try_from(avail).unwrap_or(0).min(want)
                };
                if n > 0 || want == 0 {
                    w.session -= n as i64;
                    if let Some(s) = w.streams.get_mut(&id) {
                        *s -= n as i64;
                    }
                    return n;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn windows_are_spent_and_refilled_once_enforced() {
        let f = Flow::default();
        f.open(1);
        // Not enforced: everything goes, but is counted.
        assert_eq!(f.take(1, 100 << 10).await, 100 << 10);
        f.update(1, 1000);
        f.update(0, 200 << 10);
        // Stream window: 64K - 100K + 1000 < 0: must wait for an update.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), f.take(1, 10)).await;
        assert!(waiting.is_err());
        f.update(1, 40 << 10);
        let n = f.take(1, 1 << 20).await;
        assert_eq!(n as i64, (64 << 10) - (100 << 10) + 1000 + (40 << 10));
        f.initial_window(1 << 20);
        f.open(3);
        assert_eq!(f.take(3, 10).await, 10);
    }
}
