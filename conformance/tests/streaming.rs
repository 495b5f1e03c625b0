//! Streaming end to end: Exec and PortForward URLs from crustd, driven by the test's own SPDY/3.1 and
//! WebSocket client (`harness::streamclient`), against real containers (runc, busybox).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cri_api::v1::*;
use harness::streamclient::{Spdy, SpdySession, Ws, WsMsg, exit_code, handshake};
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::Code;

struct Env {
    c: Crustd,
    imgs: TestImages,
    _reg: Registry,
}

async fn env() -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
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

struct Pod {
    id: String,
    config: PodSandboxConfig,
}

async fn pod(e: &Env, name: &str) -> Pod {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: e.c.dir.path().join("logs").join(name).display().to_string(),
        ..Default::default()
    };
    let id =
        e.c.runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
    Pod { id, config }
}

async fn container(e: &Env, p: &Pod, name: &str, command: &[&str], stdin: bool, tty: bool) -> String {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: e.imgs.busybox.reference.clone(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        stdin,
        tty,
        ..Default::default()
    };
    let mut rt = e.c.runtime().await;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: p.id.clone(),
            config: Some(config),
            sandbox_config: Some(p.config.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

async fn exec_url(e: &Env, id: &str, cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> String {
    e.c.runtime()
        .await
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout,
            stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn exec_sync(e: &Env, id: &str, cmd: &[&str]) -> ExecSyncResponse {
    e.c.runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner()
}

const SHELL_ERR_EXIT: &[&str] = &["sh", "-c", "echo out; echo err >&2; exit 3"];

#[tokio::test]
async fn exec_over_spdy_stdout_stderr_exit_code_and_validation() {
    let e = env().await;
    let p = pod(&e, "exec").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;

    // v4: a non-zero exit comes as a Status with the exit code.
    let url = exec_url(&e, &id, SHELL_ERR_EXIT, false, true, true, false).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, true, false).await.unwrap();
    assert_eq!(s.conn.protocol, "v4.channel.k8s.io");
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "out\n");
    assert_eq!(o.stderr_text(), "err\n");
    assert_eq!(exit_code(&o.error).unwrap(), 3, "{}", o.error);
    assert!(s.conn.wait_closed(Duration::from_secs(30)).await, "the server closes the connection");

    // A used token is gone.
    let again = handshake(&url, &[("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
        .await
        .unwrap();
    assert_eq!(again.status, 404, "{again:?}");
    let bogus = url.rsplit_once('/').unwrap().0.to_string() + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(handshake(&bogus, &[("Upgrade", "SPDY/3.1")]).await.unwrap().status, 404);

    // v4 success: a Success status.
    let url = exec_url(&e, &id, &["echo", "hi"], false, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false).await.unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "hi\n");
    assert_eq!(exit_code(&o.error).unwrap(), 0, "{}", o.error);

    // v2: success is an empty error stream, failure plain text.
    let url = exec_url(&e, &id, SHELL_ERR_EXIT, false, true, true, false).await;
    let s = SpdySession::start(&url, "v2.channel.k8s.io", false, true, true, false).await.unwrap();
    assert_eq!(s.conn.protocol, "v2.channel.k8s.io");
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "out\n");
    assert!(o.error.contains("exit") && o.error.contains('3'), "{}", o.error);

    // stdin reaches the process and its close is an EOF.
    let url = exec_url(&e, &id, &["cat"], true, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, false).await.unwrap();
    s.write_stdin(b"line one\n").await.unwrap();
    s.wait_stdout("line one").await.unwrap();
    s.write_stdin(b"line two\n").await.unwrap();
    s.close_stdin().await.unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "line one\nline two\n");
    assert_eq!(exit_code(&o.error).unwrap(), 0);

    // Validation.
    let mut rt = e.c.runtime().await;
    let req = |cmd: &[&str], stdout, stderr, tty, cid: &str| ExecRequest {
        container_id: cid.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: false,
        stdout,
        stderr,
    };
    let err = rt.exec(req(&[], true, false, false, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{}", err.message());
    let err = rt.exec(req(&["true"], false, false, false, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt.exec(req(&["true"], true, true, true, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("stderr"), "{}", err.message());
    let err = rt.exec(req(&["true"], true, false, false, "nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("container_id"), "{}", err.message());
    let exited = container(&e, &p, "quick", &["true"], false, false).await;
    for _ in 0..200 {
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: exited.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = rt.exec(req(&["true"], true, false, false, &exited)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}

#[tokio::test]
async fn exec_with_tty_stdin_and_resize() {
    let e = env().await;
    let p = pod(&e, "tty").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;

    let url = exec_url(&e, &id, &["sh", "-c", "read x; echo got:$x; exit 4"], true, true, false, true).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, true).await.unwrap();
    s.write_stdin(b"hello\n").await.unwrap();
    let o = s.finish().await.unwrap();
    assert!(o.stdout_text().contains("got:hello"), "{:?}", o.stdout_text());
    assert_eq!(exit_code(&o.error).unwrap(), 4, "{}", o.error);

    // A resize reaches the tty: `stty size` prints rows and columns.
    let url = exec_url(&e, &id, &["sh", "-c", "while read x; do stty size; done"], true, true, false, true).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, true).await.unwrap();
    s.resize(100, 33).await.unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        s.write_stdin(b"\n").await.unwrap();
        let out = s.conn.wait(s.stdout.unwrap(), Duration::from_secs(10), |d, _| {
            let t = String::from_utf8_lossy(d);
            t.matches('\n').count() >= 2
        });
        seen = String::from_utf8_lossy(&out.await.unwrap_or_default()).into_owned();
        if seen.contains("33 100") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("33 100"), "{seen:?}");
    // ^D at the start of a line is EOF for the tty: the loop ends.
    s.write_stdin(b"\x04").await.unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(exit_code(&o.error).unwrap(), 0, "{}", o.error);
}

#[tokio::test]
async fn client_going_away_ends_the_process_and_bad_frames_close_only_their_connection() {
    let e = env().await;
    let p = pod(&e, "gone").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;

    for tty in [false, true] {
        let marker = format!("/tmp/pid-{tty}");
        let script = format!("echo $$ > {marker}; echo ready; exec sleep 1000");
        let url = exec_url(&e, &id, &["sh", "-c", &script], true, true, false, tty).await;
        let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, tty).await.unwrap();
        s.wait_stdout("ready").await.unwrap();
        let pid = String::from_utf8(exec_sync(&e, &id, &["cat", &marker]).await.stdout).unwrap();
        let pid = pid.trim().to_string();
        assert!(!pid.is_empty());
        assert_eq!(exec_sync(&e, &id, &["kill", "-0", &pid]).await.exit_code, 0);
        drop(s);
        let mut alive = true;
        for _ in 0..100 {
            if exec_sync(&e, &id, &["kill", "-0", &pid]).await.exit_code != 0 {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!alive, "exec'd process {pid} (tty {tty}) outlived its client");
    }

    // A malformed frame (SPDY version 2) closes that connection, and only it.
    let url = exec_url(&e, &id, &["echo", "x"], false, true, false, false).await;
    let conn = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    conn.send_raw(&[0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]).await.unwrap();
    assert!(conn.wait_closed(Duration::from_secs(30)).await);
    let url = exec_url(&e, &id, &["echo", "still here"], false, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false).await.unwrap();
    assert_eq!(s.finish().await.unwrap().stdout_text(), "still here\n");
    assert!(e.c.pid().is_some(), "crustd is still running");
}

#[tokio::test]
async fn port_forward_to_httpd_in_the_pod() {
    let e = env().await;
    let p = pod(&e, "pf").await;
    let script = "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    let id = container(&e, &p, "httpd", &["sh", "-c", script], false, false).await;
    let url = e
        .c
        .runtime()
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
        conn.send(data, b"GET /index.html HTTP/1.0\r\n\r\n", true).await.unwrap();
        let body = conn.read_to_fin(data, Duration::from_secs(30)).await.unwrap();
        last_err = String::from_utf8_lossy(&conn.read_to_fin(err, Duration::from_secs(30)).await.unwrap()).into_owned();
        page = String::from_utf8_lossy(&body).into_owned();
        if page.contains("hello-from-pod") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(page.contains("200") && page.contains("hello-from-pod"), "{page:?} / {last_err}");
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
    let msg = String::from_utf8_lossy(&conn.read_to_fin(err, Duration::from_secs(30)).await.unwrap()).into_owned();
    assert!(msg.contains("8081"), "{msg}");
    let _ = conn.read_to_fin(data, Duration::from_secs(30)).await;
    let _ = id;
}

#[tokio::test]
async fn exec_over_websocket() {
    let e = env().await;
    let p = pod(&e, "ws").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    for proto in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        let url = exec_url(&e, &id, &["sh", "-c", "read x; echo out:$x; echo err >&2; exit 5"], true, true, true, false).await;
        let mut ws = Ws::connect(&url, &[proto]).await.unwrap();
        assert_eq!(ws.protocol, proto);
        ws.send(0, b"abc\n").await.unwrap();
        let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match ws.recv(Duration::from_secs(60)).await.unwrap() {
                WsMsg::Binary(m) | WsMsg::Text(m) if !m.is_empty() => match m[0] {
                    1 => out.extend_from_slice(&m[1..]),
                    2 => err.extend_from_slice(&m[1..]),
                    3 => status.extend_from_slice(&m[1..]),
                    _ => {}
                },
                WsMsg::Close => break,
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "out:abc\n");
        assert_eq!(String::from_utf8_lossy(&err), "err\n");
        assert_eq!(exit_code(&String::from_utf8_lossy(&status)).unwrap(), 5);
    }
}
