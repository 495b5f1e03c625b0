//! The streaming server and attach under abuse: session limits (HTTP 429), SPDY streams and
//! port-forward pairs per connection, the idle timeout, an attach client that reads nothing (it must
//! hold up neither ReopenContainerLog nor a resize, nor the log), and attach
//! stdin a container cannot take (the client is told).

use std::time::{Duration, Instant};

use cri_api::v1::*;
use harness::streamclient::{Spdy, SpdySession, Ws, WsMsg, handshake};
use harness::{Crustd, CrustdOptions, Registry};

use super::*;

/// An environment whose crustd has `extra` in its `[stream]` table.
async fn env_with(stream: &str) -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml: format!("[stream]\n{stream}\n"),
        ..Default::default()
    })
    .await;
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: imgs.busybox.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    Env { c, imgs, _reg: reg }
}

async fn log_has(e: &Env, needle: &str, timeout: Duration) -> bool {
    harness::wait_for(timeout, || e.c.log().contains(needle).then_some(())).is_some()
}

async fn pf_url(e: &Env, pod: &str) -> String {
    e.c.runtime()
        .await
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

#[tokio::test]
async fn sessions_beyond_the_limits_are_refused_with_429() {
    let e = env_with("max_sessions = 3\nmax_sessions_per_container = 2").await;
    let p = pod(&e, "limits").await;
    let a = container(&e, &p, "a", &["sleep", "3600"], false, false).await;
    let b = container(&e, &p, "b", &["sleep", "3600"], false, false).await;
    let attach = |id: String| {
        let e = &e;
        async move {
            let url = attach_url(e, &id, false, true, false, false).await;
            SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false).await
        }
    };
    let a1 = attach(a.clone()).await.unwrap();
    let a2 = attach(a.clone()).await.unwrap();
    // A third on the same container: refused, over SPDY and WebSocket alike.
    let url = attach_url(&e, &a, false, true, false, false).await;
    let hs = handshake(
        &url,
        &[
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(hs.status, 429, "{hs:?}");
    assert!(hs.body.contains("max_sessions_per_container"), "{}", hs.body);
    let url = attach_url(&e, &a, false, true, false, false).await;
    let err = Ws::connect(&url, &["v4.channel.k8s.io"])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("429"), "{err}");
    // Another container still gets one; then the overall limit refuses.
    let b1 = attach(b.clone()).await.unwrap();
    let err = attach(b.clone()).await.err().unwrap().to_string();
    assert!(
        err.contains("429") && err.contains("stream.max_sessions"),
        "{err}"
    );
    assert!(log_has(&e, "streaming session refused", Duration::from_secs(5)).await);
    // A session that ends frees its place.
    drop(a1);
    let mut again = None;
    for _ in 0..50 {
        let url = attach_url(&e, &b, false, true, false, false).await;
        if let Ok(s) = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(again.is_some(), "a freed session place was not given again");
    drop((a2, b1, again));
}

#[tokio::test]
async fn spdy_streams_and_port_forwards_beyond_the_limits_are_refused() {
    let e = env_with("max_streams_per_connection = 8\nmax_port_forwards_per_connection = 2").await;
    let p = pod(&e, "pflimits").await;
    let script =
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    container(&e, &p, "httpd", &["sh", "-c", script], false, false).await;

    // Streams: 8 open ones are answered, the 9th is reset.
    let conn = Spdy::connect(&pf_url(&e, &p.id).await, &["portforward.k8s.io"])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..9 {
        let rid = format!("half-{i}");
        ids.push(
            conn.open(&[("streamType", "error"), ("port", "8080"), ("requestID", &rid)])
                .await
                .unwrap(),
        );
    }
    let last = *ids.last().unwrap();
    conn.wait(last, Duration::from_secs(10), |_, fin| fin)
        .await
        .unwrap();
    assert!(!conn.replied(last), "the stream beyond the limit was accepted");
    assert!(ids[..8].iter().all(|id| conn.replied(*id)));
    assert!(log_has(&e, "max_streams_per_connection", Duration::from_secs(5)).await);
    drop(conn);

    // Pairs: wait until httpd answers, then hold two forwarded connections open; a third is refused
    // on its error stream.
    let conn = Spdy::connect(&pf_url(&e, &p.id).await, &["portforward.k8s.io"])
        .await
        .unwrap();
    let mut ok = false;
    for rid in 0..50 {
        let rid = format!("probe-{rid}");
        let err = conn
            .open(&[("streamType", "error"), ("port", "8080"), ("requestID", &rid)])
            .await
            .unwrap();
        // As kubectl does: the error stream is only read.
        conn.send(err, b"", true).await.unwrap();
        let data = conn
            .open(&[("streamType", "data"), ("port", "8080"), ("requestID", &rid)])
            .await
            .unwrap();
        conn.send(data, b"GET /index.html HTTP/1.0\r\n\r\n", true)
            .await
            .unwrap();
        let body = conn.read_to_fin(data, Duration::from_secs(30)).await.unwrap();
        let _ = conn.read_to_fin(err, Duration::from_secs(30)).await;
        if String::from_utf8_lossy(&body).contains("hello-from-pod") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "httpd never answered");
    drop(conn);
    let conn = Spdy::connect(&pf_url(&e, &p.id).await, &["portforward.k8s.io"])
        .await
        .unwrap();
    let mut held = Vec::new();
    for rid in ["held-1", "held-2", "third"] {
        let err = conn
            .open(&[("streamType", "error"), ("port", "8080"), ("requestID", rid)])
            .await
            .unwrap();
        conn.send(err, b"", true).await.unwrap();
        let data = conn
            .open(&[("streamType", "data"), ("port", "8080"), ("requestID", rid)])
            .await
            .unwrap();
        held.push((err, data));
    }
    let (err3, data3) = held[2];
    let msg =
        String::from_utf8_lossy(&conn.read_to_fin(err3, Duration::from_secs(10)).await.unwrap()).into_owned();
    assert!(msg.contains("max_port_forwards_per_connection"), "{msg}");
    conn.read_to_fin(data3, Duration::from_secs(10)).await.unwrap();
    // The held ones still work.
    let (err1, data1) = held[0];
    conn.send(data1, b"GET /index.html HTTP/1.0\r\n\r\n", true)
        .await
        .unwrap();
    let body = conn.read_to_fin(data1, Duration::from_secs(30)).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("hello-from-pod"));
    let _ = conn.read_to_fin(err1, Duration::from_secs(30)).await;
    drop(conn);

    // WebSocket: more ports than the limit on one connection is refused before the upgrade.
    let url = pf_url(&e, &p.id).await;
    let err = Ws::connect(&format!("{url}?ports=8080,8080,8080"), &["v4.portforward.k8s.io"])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("429") && err.contains("max_port_forwards_per_connection"),
        "{err}"
    );
}

#[tokio::test]
async fn idle_streaming_connections_are_closed_and_busy_ones_are_not() {
    let e = env_with("idle_timeout_seconds = 2").await;
    let p = pod(&e, "idle").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    // Output every half second keeps a session open past the timeout.
    let url = exec_url(
        &e,
        &id,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick; sleep 0.5; done",
        ],
        false,
        true,
        false,
        false,
    )
    .await;
    let busy = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false)
        .await
        .unwrap();
    // Nothing either way: closed after about 2 s.
    let url = exec_url(&e, &id, &["sleep", "30"], false, true, false, false).await;
    let idle = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false)
        .await
        .unwrap();
    let t = Instant::now();
    assert!(
        idle.conn.wait_closed(Duration::from_secs(15)).await,
        "idle connection left open"
    );
    assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
    assert!(log_has(&e, "idle_timeout_seconds", Duration::from_secs(5)).await);
    let o = busy.finish().await.unwrap();
    assert_eq!(o.stdout_text().matches("tick").count(), 10, "{o:?}");
    assert_eq!(harness::streamclient::exit_code(&o.error).unwrap(), 0);
}

#[tokio::test]
async fn attach_stdin_the_container_cannot_take_is_reported() {
    let e = env().await;
    let p = pod(&e, "nostdin").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    let url = attach_url(&e, &id, true, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, false)
        .await
        .unwrap();
    s.write_stdin(b"lost?\n").await.unwrap();
    let o = s.finish().await.unwrap();
    assert!(o.error.contains("no open stdin"), "{o:?}");
    assert_eq!(state_of(&e, &id).await, ContainerState::ContainerRunning as i32);
}

/// The last 64 KiB of the flood test's container log.
fn log_tail(e: &Env) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let path = e.c.dir.path().join("logs/stall/flood/0.log");
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let _ = f.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).into_owned()
}

#[tokio::test]
async fn a_stalled_attach_reader_holds_up_neither_reopen_nor_resize() {
    let e = env().await;
    let p = pod(&e, "stall").await;
    // A tty container that floods its output once told to, then reports its terminal size.
    // 32 MB: far more than every buffer between the client and the monitor holds.
    let script = "read x; yes $(head -c 4000 /dev/zero | tr '\\0' x) | head -c 32000000; \
                  while :; do stty size; sleep 0.2; done";
    let id = container(&e, &p, "flood", &["sh", "-c", script], true, true).await;
    let url = attach_url(&e, &id, true, true, false, true).await;
    // A WebSocket client that reads nothing from here on.
    let mut ws = Ws::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    ws.send(0, b"go\n").await.unwrap();
    let mut rt = e.c.runtime().await;
    let mut resized = false;
    let mut resizer = None;
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(180) {
        let t = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            rt.reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            }),
        )
        .await
        .expect("ReopenContainerLog blocked behind a stalled attach client")
        .unwrap();
        slowest = slowest.max(t.elapsed());
        if !resized {
            // Through a second attach session (the stalled one may have been dropped by now).
            let url = attach_url(&e, &id, false, true, false, true).await;
            let other = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, true)
                .await
                .unwrap();
            other.resize(99, 33).await.unwrap();
            resizer = Some(other);
            resized = true;
        }
        if log_tail(&e).contains("33 99") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "ReopenContainerLog took {slowest:?}"
    );
    // The whole flood was logged past the stalled client (far more than every buffer between it and
    // the monitor holds), and the resize reached the pty meanwhile.
    let tail = log_tail(&e);
    assert!(
        tail.contains("33 99"),
        "the resize never reached the container; log ends {:?}; crustd: {}",
        &tail[tail.len().saturating_sub(300)..],
        e.c.log().lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(state_of(&e, &id).await, ContainerState::ContainerRunning as i32);
    drop(resizer);
    // The monitor dropped the stalled client rather than wait for it: once the client reads again it
    // gets what crustd had buffered, then the end of the session, with the reason.
    let mut received = 0usize;
    loop {
        match ws.recv(Duration::from_secs(30)).await.unwrap() {
            WsMsg::Binary(m) => received += m.len(),
            WsMsg::Close => break,
            WsMsg::Text(_) => {}
        }
    }
    assert!(
        received < 32_000_000,
        "the client got the whole flood: {received} bytes"
    );
    assert!(log_has(&e, "did not keep up", Duration::from_secs(10)).await);
}
