//! The remotecommand protocol (exec and attach): version negotiation and, over SPDY, gathering the
//! streams the client opens (`streamtype` header: error, stdin, stdout, stderr, resize).

use std::time::Duration;

use super::channel::{Sink, Streams};
use super::spdy::{Conn, frame::header};

/// SPDY subprotocols, preferred first, with their versions.
pub const SPDY_PROTOCOLS: &[(&str, u8)] = &[
    ("v4.channel.k8s.io", 4),
    ("v3.channel.k8s.io", 3),
    ("v2.channel.k8s.io", 2),
    ("channel.k8s.io", 1),
];

/// How long the client has to open its streams.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The streams a session asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Picks the protocol: the first the client offers that we speak. `offered` are the values of every
/// offer header (each possibly comma-separated). `Ok(None)` when the client offered none (legacy).
pub fn negotiate<'a>(offered: &[String], ours: &'a [(&'a str, u8)]) -> Result<Option<(&'a str, u8)>, String> {
    let offers: Vec<&str> = offered
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if offers.is_empty() {
        return Ok(None);
    }
    for o in &offers {
        if let Some(p) = ours.iter().find(|(name, _)| name == o) {
            return Ok(Some(*p));
        }
    }
    Err(format!(
        "no common protocol: client offered {offers:?}, server supports {:?}",
        ours.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    ))
}

/// Waits until the client has opened every stream the session needs; Err when it does not in time or
/// the connection ends.
pub async fn collect_spdy(mut conn: Conn, version: u8, want: Wanted) -> Result<Streams, String> {
    let mut s = Streams {
        version,
        stdin: None,
        stdout: None,
        stderr: None,
        error: None,
        resize: None,
        out: conn.out.clone(),
        gone: conn.gone.clone(),
    };
    let complete = |s: &Streams| {
        s.error.is_some()
            && (!want.stdin || s.stdin.is_some())
            && (!want.stdout || s.stdout.is_some())
            && (!want.stderr || s.stderr.is_some())
            && (!(want.tty && version >= 3) || s.resize.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&s) {
        let st = match tokio::time::timeout_at(deadline, conn.streams.recv()).await {
            Ok(Some(st)) => st,
            Ok(None) => return Err("the connection closed before every stream was opened".into()),
            Err(_) => return Err("timed out waiting for the client to open its streams".into()),
        };
        let sink = Sink::new(st.id, conn.out.clone());
        match header(&st.headers, "streamtype").unwrap_or("") {
            "error" => s.error = Some(sink),
            "stdin" => s.stdin = Some(st.rx),
            "stdout" => s.stdout = Some(sink),
            "stderr" => s.stderr = Some(sink),
            "resize" => s.resize = Some(st.rx),
            other => {
                tracing::warn!(stream_type = other, "unknown stream type; ignored");
            }
        }
    }
    // Streams opened later are not ours to serve; keep draining so the reader never blocks on them.
    tokio::spawn(async move { while conn.streams.recv().await.is_some() {} });
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_clients_order() {
        let offered = vec!["v4.channel.k8s.io, v3.channel.k8s.io".to_string()];
        assert_eq!(
            negotiate(&offered, SPDY_PROTOCOLS).unwrap(),
            Some(("v4.channel.k8s.io", 4))
        );
        let offered = vec!["v2.channel.k8s.io".to_string(), "v4.channel.k8s.io".to_string()];
        assert_eq!(
            negotiate(&offered, SPDY_PROTOCOLS).unwrap(),
            Some(("v2.channel.k8s.io", 2))
        );
        assert_eq!(negotiate(&[], SPDY_PROTOCOLS).unwrap(), None);
        assert!(negotiate(&["v9.channel.k8s.io".to_string()], SPDY_PROTOCOLS).is_err());
    }
}
