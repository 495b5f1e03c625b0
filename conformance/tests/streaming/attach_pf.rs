//! Attach (pipes and tty, stdin_once) and port-forward to busybox httpd (SPDY and WebSocket).

use std::time::Duration;

use cri_api::v1::*;
use harness::streamclient::{Spdy, SpdySession, Ws, WsMsg};

use super::*;

#[tokio::test]
async fn port_forward_to_httpd_in_the_pod() {
    let e = env().await;
    let p = pod(&e, "pf").await;
    let script =
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    let id = container(&e, &p, "httpd", &["sh", "-c", script], false, false).await;
    let url =
        e.c.runtime()
            .await
            .port_forward(PortForwardRequest {
                pod_sandbox_id: p.id.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let conn = Spdy::connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(conn.protocol, "portforward.k8s.io");
    let mut page = String::new();
    let mut last_err = String::new();
    // Several requests on one connection (httpd may need a moment to listen).
    for rid in 0..50 {
        let rid = rid.to_string();
        let err = conn
            .open(&[("streamType", "error"), ("port", "8080"), ("requestID", &rid)])
            .await
            .unwrap();
        let data = conn
            .open(&[("streamType", "data"), ("port", "8080"), ("requestID", &rid)])
            .await
            .unwrap();
        conn.send(data, b"GET /index.html HTTP/1.0\r\n\r\n", true)
            .await
            .unwrap();
        let body = conn.read_to_fin(data, Duration::from_secs(30)).await.unwrap();
        last_err = String::from_utf8_lossy(&conn.read_to_fin(err, Duration::from_secs(30)).await.unwrap())
            .into_owned();
        page = String::from_utf8_lossy(&body).into_owned();
        if page.contains("hello-from-pod") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        page.contains("200") && page.contains("hello-from-pod"),
        "{page:?} / {last_err}"
    );
    assert!(last_err.is_empty(), "{last_err}");

    // Nothing listens on 8081: the error stream says so.
    let err = conn
        .open(&[("streamType", "error"), ("port", "8081"), ("requestID", "x")])
        .await
        .unwrap();
    let data = conn
        .open(&[("streamType", "data"), ("port", "8081"), ("requestID", "x")])
        .await
        .unwrap();
    let msg =
        String::from_utf8_lossy(&conn.read_to_fin(err, Duration::from_secs(30)).await.unwrap()).into_owned();
    assert!(msg.contains("8081"), "{msg}");
    let _ = conn.read_to_fin(data, Duration::from_secs(30)).await;
    drop(conn);

    // The same over WebSocket (v4.portforward.k8s.io): data channel 0, error channel 1, each opened
    // by the port (u16 little endian).
    let url =
        e.c.runtime()
            .await
            .port_forward(PortForwardRequest {
                pod_sandbox_id: p.id.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let mut ws = Ws::connect(&format!("{url}?ports=8080"), &["v4.portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol, "v4.portforward.k8s.io");
    ws.send(0, b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
    let (mut body, mut opened) = (Vec::new(), Vec::new());
    while !String::from_utf8_lossy(&body).contains("hello-from-pod") {
        match ws.recv(Duration::from_secs(30)).await.unwrap() {
            WsMsg::Binary(m) if m.len() == 3 && opened.len() < 2 => {
                opened.push((m[0], u16::from_le_bytes([m[1], m[2]])))
            }
            WsMsg::Binary(m) if m.first() == Some(&0) => body.extend_from_slice(&m[1..]),
            WsMsg::Binary(m) if m.first() == Some(&1) && m.len() > 1 => {
                panic!("error channel: {}", String::from_utf8_lossy(&m[1..]))
            }
            WsMsg::Close => panic!("closed early; body {:?}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    assert_eq!(opened, vec![(0, 8080), (1, 8080)]);
    let _ = id;
}

#[tokio::test]
async fn attach_to_a_running_containers_output_and_stdin() {
    let e = env().await;
    let p = pod(&e, "attach").await;
    let script = "while read l; do echo out:$l; echo err:$l >&2; done";
    let id = container(&e, &p, "echoer", &["sh", "-c", script], true, false).await;

    let url = attach_url(&e, &id, true, true, true, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, true, false)
        .await
        .unwrap();
    s.write_stdin(b"one\n").await.unwrap();
    s.wait_stdout("out:one").await.unwrap();
    s.conn
        .wait(s.stderr.unwrap(), Duration::from_secs(60), |d, _| {
            String::from_utf8_lossy(d).contains("err:one")
        })
        .await
        .unwrap();
    // Detaching leaves the container running, its stdin open (no stdin_once).
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&e, &id).await, ContainerState::ContainerRunning as i32);
    let url = attach_url(&e, &id, true, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, false)
        .await
        .unwrap();
    s.write_stdin(b"two\n").await.unwrap();
    s.wait_stdout("out:two").await.unwrap();
    drop(s);
    // The output went to the log too.
    let log = e.c.dir.path().join("logs/attach/echoer/0.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("out:two") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("stdout F out:one") && text.contains("stderr F err:one"),
        "{text}"
    );
    assert!(text.contains("out:two"), "{text}");

    // A tty container: input, output and a resize through the monitor's pty.
    let id = container(&e, &p, "shell", &["sh"], true, true).await;
    let url = attach_url(&e, &id, true, true, false, true).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, true)
        .await
        .unwrap();
    s.write_stdin(b"echo tty-$((1+2))\n").await.unwrap();
    s.wait_stdout("tty-3").await.unwrap();
    s.resize(77, 22).await.unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        s.write_stdin(b"stty size\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = s.wait_stdout("").await.unwrap();
        if seen.contains("22 77") {
            break;
        }
    }
    assert!(seen.contains("22 77"), "{seen:?}");
    drop(s);

    // stdin_once: closing stdin after the first attach ends the container's input.
    let id = container_once(&e, &p, "cat", &["cat"], true, false, true).await;
    let url = attach_url(&e, &id, true, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, false)
        .await
        .unwrap();
    s.write_stdin(b"meow\n").await.unwrap();
    s.wait_stdout("meow").await.unwrap();
    s.close_stdin().await.unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "meow\n");
    let mut st = 0;
    for _ in 0..200 {
        st = state_of(&e, &id).await;
        if st == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st, ContainerState::ContainerExited as i32);
}
