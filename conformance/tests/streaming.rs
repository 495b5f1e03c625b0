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
    container_once(e, p, name, command, stdin, tty, false).await
}

async fn container_once(
    e: &Env,
    p: &Pod,
    name: &str,
    command: &[&str],
    stdin: bool,
    tty: bool,
    stdin_once: bool,
) -> String {
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
        stdin_once,
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

async fn exec_url(
    e: &Env,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> String {
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
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, true, false)
        .await
        .unwrap();
    assert_eq!(s.conn.protocol, "v4.channel.k8s.io");
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "out\n");
    assert_eq!(o.stderr_text(), "err\n");
    assert_eq!(exit_code(&o.error).unwrap(), 3, "{}", o.error);
    assert!(
        s.conn.wait_closed(Duration::from_secs(30)).await,
        "the server closes the connection"
    );

    // A used token is gone.
    let again = handshake(
        &url,
        &[
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(again.status, 404, "{again:?}");
    let bogus =
        url.rsplit_once('/').unwrap().0.to_string() + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        handshake(&bogus, &[("Upgrade", "SPDY/3.1")])
            .await
            .unwrap()
            .status,
        404
    );

    // v4 success: a Success status.
    let url = exec_url(&e, &id, &["echo", "hi"], false, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false)
        .await
        .unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "hi\n");
    assert_eq!(exit_code(&o.error).unwrap(), 0, "{}", o.error);

    // v2: success is an empty error stream, failure plain text.
    let url = exec_url(&e, &id, SHELL_ERR_EXIT, false, true, true, false).await;
    let s = SpdySession::start(&url, "v2.channel.k8s.io", false, true, true, false)
        .await
        .unwrap();
    assert_eq!(s.conn.protocol, "v2.channel.k8s.io");
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout_text(), "out\n");
    assert!(o.error.contains("exit") && o.error.contains('3'), "{}", o.error);

    // stdin reaches the process and its close is an EOF.
    let url = exec_url(&e, &id, &["cat"], true, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, false)
        .await
        .unwrap();
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
    let err = rt
        .exec(req(&["true"], false, false, false, &id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt.exec(req(&["true"], true, true, true, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("stderr"), "{}", err.message());
    let err = rt
        .exec(req(&["true"], true, false, false, "nope"))
        .await
        .unwrap_err();
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
    let err = rt
        .exec(req(&["true"], true, false, false, &exited))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}

#[tokio::test]
async fn exec_with_tty_stdin_and_resize() {
    let e = env().await;
    let p = pod(&e, "tty").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;

    let url = exec_url(
        &e,
        &id,
        &["sh", "-c", "read x; echo got:$x; exit 4"],
        true,
        true,
        false,
        true,
    )
    .await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, true)
        .await
        .unwrap();
    s.write_stdin(b"hello\n").await.unwrap();
    let o = s.finish().await.unwrap();
    assert!(o.stdout_text().contains("got:hello"), "{:?}", o.stdout_text());
    assert_eq!(exit_code(&o.error).unwrap(), 4, "{}", o.error);

    // A resize reaches the tty: `stty size` prints rows and columns.
    let url = exec_url(
        &e,
        &id,
        &["sh", "-c", "while read x; do stty size; done"],
        true,
        true,
        false,
        true,
    )
    .await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, true)
        .await
        .unwrap();
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
        let s = SpdySession::start(&url, "v4.channel.k8s.io", true, true, false, tty)
            .await
            .unwrap();
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
    conn.send_raw(&[0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00])
        .await
        .unwrap();
    assert!(conn.wait_closed(Duration::from_secs(30)).await);
    let url = exec_url(&e, &id, &["echo", "still here"], false, true, false, false).await;
    let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, false)
        .await
        .unwrap();
    assert_eq!(s.finish().await.unwrap().stdout_text(), "still here\n");
    assert!(e.c.pid().is_some(), "crustd is still running");
}

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
async fn exec_over_websocket() {
    let e = env().await;
    let p = pod(&e, "ws").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    for proto in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        let url = exec_url(
            &e,
            &id,
            &["sh", "-c", "read x; echo out:$x; echo err >&2; exit 5"],
            true,
            true,
            true,
            false,
        )
        .await;
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

async fn attach_url(e: &Env, id: &str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> String {
    e.c.runtime()
        .await
        .attach(AttachRequest {
            container_id: id.into(),
            stdin,
            tty,
            stdout,
            stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn state_of(e: &Env, id: &str) -> i32 {
    e.c.runtime()
        .await
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .state
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

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn children_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_thousand_exec_sessions_leave_no_fd_or_process_behind() {
    let e = env().await;
    let p = pod(&e, "leak").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    let crustd = e.c.pid().unwrap();
    let fd_dir = format!("/proc/{crustd}/fd");
    let one = |i: usize| {
        let (e, id) = (&e, id.clone());
        async move {
            let tty = i.is_multiple_of(10);
            let url = exec_url(e, &id, &["echo", "x"], false, true, false, tty).await;
            let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, false, tty)
                .await
                .unwrap();
            if i.is_multiple_of(7) {
                // Some clients just go away.
                drop(s);
                return;
            }
            let o = s.finish().await.unwrap();
            assert!(o.stdout_text().starts_with('x'), "{i}: {:?}", o.stdout_text());
            assert_eq!(exit_code(&o.error).unwrap(), 0);
        }
    };
    for i in 0..5 {
        one(i).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (fds, kids) = (count_dir(&fd_dir), children_of(crustd));
    for i in 0..1000 {
        one(i).await;
    }
    let mut now = (0, 0);
    for _ in 0..100 {
        now = (count_dir(&fd_dir), children_of(crustd));
        if now.0 <= fds && now.1 <= kids {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now.0 <= fds, "crustd has {} fds, had {fds}", now.0);
    assert!(now.1 <= kids, "crustd has {} children, had {kids}", now.1);
    let procs = exec_sync(&e, &id, &["ps", "-o", "pid,comm"]).await;
    let text = String::from_utf8_lossy(&procs.stdout).into_owned();
    assert!(!text.contains("echo"), "{text}");
}

// ---------------------------------------------------------------- kubectl, a real (Go) client

/// Answers kubectl as an API server would for one pod (`mypod`, container `c`): the pod GET, and the
/// exec / attach / portforward subresources, by asking crustd for a URL and splicing the client's
/// upgrade request (path rewritten) onto crustd's streaming server.
async fn fake_apiserver(
    rt: cri_api::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod_id: String,
    ctr_id: String,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let (mut rt, pod_id, ctr_id) = (rt.clone(), pod_id.clone(), ctr_id.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let target = text.split(' ').nth(1).unwrap_or("").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let q: Vec<(&str, &str)> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
                let flag = |k: &str| q.iter().any(|(n, v)| *n == k && (*v == "true" || *v == "1"));
                let base = "/api/v1/namespaces/default/pods/mypod";
                let pod_json = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"mypod","namespace":"default"},"spec":{"containers":[{"name":"c","image":"busybox","stdin":true}]},"status":{"phase":"Running"}}"#;
                let sub = |n: &str, k: &str| {
                    format!(
                        r#"{{"name":"pods/{n}","singularName":"","namespaced":true,"kind":"{k}","verbs":["create","get"]}}"#
                    )
                };
                let resources = format!(
                    r#"{{"kind":"APIResourceList","groupVersion":"v1","resources":[{{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]}},{},{},{}]}}"#,
                    sub("exec", "PodExecOptions"),
                    sub("attach", "PodAttachOptions"),
                    sub("portforward", "PodPortForwardOptions")
                );
                let fixed: Option<String> = match path {
                    p if p == base => Some(pod_json.to_string()),
                    "/version" => Some(r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#.into()),
                    "/api" => Some(r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:1"}]}"#.into()),
                    "/apis" => Some(r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.into()),
                    "/api/v1" => Some(resources),
                    _ => None,
                };
                let url = if let Some(body) = fixed {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    return;
                } else if path == format!("{base}/exec") {
                    let cmd = q
                        .iter()
                        .filter(|(n, _)| *n == "command")
                        .map(|(_, v)| unescape(v))
                        .collect();
                    let r = ExecRequest {
                        container_id: ctr_id,
                        cmd,
                        tty: flag("tty"),
                        stdin: flag("stdin"),
                        stdout: flag("stdout"),
                        stderr: flag("stderr"),
                    };
                    rt.exec(r).await.map(|r| r.into_inner().url)
                } else if path == format!("{base}/attach") {
                    let r = AttachRequest {
                        container_id: ctr_id,
                        tty: flag("tty"),
                        stdin: flag("stdin"),
                        stdout: flag("stdout"),
                        stderr: flag("stderr"),
                    };
                    rt.attach(r).await.map(|r| r.into_inner().url)
                } else if path == format!("{base}/portforward") {
                    rt.port_forward(PortForwardRequest {
                        pod_sandbox_id: pod_id,
                        port: vec![],
                    })
                    .await
                    .map(|r| r.into_inner().url)
                } else {
                    eprintln!("fake apiserver: 404 for {target}");
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                };
                let url = match url {
                    Ok(u) => u,
                    Err(e) => {
                        let msg = e.message().to_string();
                        let _ = s.write_all(format!("HTTP/1.1 500 Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len()).as_bytes()).await;
                        return;
                    }
                };
                let rest = url.strip_prefix("http://").unwrap();
                let (host, upath) = rest.split_at(rest.find('/').unwrap());
                let upath = if query.is_empty() {
                    upath.to_string()
                } else {
                    format!("{upath}?{query}")
                };
                let head = text.replacen(&target, &upath, 1);
                let upgrade = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("upgrade:"))
                    .unwrap_or("")
                    .to_string();
                eprintln!("fake apiserver: {path} with {upgrade}");
                let mut up = tokio::net::TcpStream::connect(host).await.unwrap();
                up.write_all(head.as_bytes()).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    port
}

/// Decodes a query value (`+` and `%XX`).
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kubectl() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|p| p.exists())
    })
}

async fn run_kubectl(
    server: u16,
    websockets: bool,
    args: &[&'static str],
    stdin: &'static [u8],
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(kubectl().unwrap());
    c.arg(format!("--server=http://127.0.0.1:{server}"))
        .args(args)
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .env("KUBECONFIG", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    eprintln!("kubectl {args:?} (websockets {websockets})");
    let mut child = c.spawn().unwrap();
    let mut i = child.stdin.take().unwrap();
    i.write_all(stdin).await.unwrap();
    drop(i);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl hung")
        .unwrap()
}

#[tokio::test]
async fn kubectl_exec_attach_and_port_forward_work_against_crustd() {
    if kubectl().is_none() {
        eprintln!("kubectl is not on PATH: skipped");
        return;
    }
    let e = env().await;
    let p = pod(&e, "kubectl").await;
    let script = "mkdir -p /tmp/www && echo hello-kubectl > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && while read l; do echo attached:$l; done";
    let id = container(&e, &p, "c", &["sh", "-c", script], true, false).await;
    let server = fake_apiserver(e.c.runtime().await, p.id.clone(), id.clone()).await;

    for ws in [false, true] {
        let o = run_kubectl(
            server,
            ws,
            &[
                "exec",
                "mypod",
                "-c",
                "c",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            b"",
        )
        .await;
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(out, "out\n", "websockets {ws}: {err}");
        assert!(err.contains("err"), "{err}");
        assert_eq!(o.status.code(), Some(3), "websockets {ws}: {err}");
        let o = run_kubectl(
            server,
            ws,
            &["exec", "-i", "mypod", "-c", "c", "--", "cat"],
            b"piped through\n",
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "piped through\n",
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success());
    }

    // port-forward (SPDY), to httpd in the pod.
    let local = harness::free_port();
    let mut pf = tokio::process::Command::new(kubectl().unwrap())
        .arg(format!("--server=http://127.0.0.1:{server}"))
        .args(["port-forward", "pod/mypod", &format!("{local}:8080")])
        .env("KUBECONFIG", "/dev/null")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut page = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", local)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
            let mut b = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut b)).await;
            page = String::from_utf8_lossy(&b).into_owned();
            if page.contains("hello-kubectl") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = pf.start_kill();
    let _ = pf.wait().await;
    assert!(page.contains("hello-kubectl"), "{page:?}");

    // attach -i: stdin reaches the container's read loop, its output comes back.
    // (attach runs until the container exits: it is ended here once the line is through.)
    let attach = tokio::spawn(run_kubectl(
        server,
        false,
        &["attach", "-i", "mypod", "-c", "c"],
        b"via attach\n",
    ));
    let log = e.c.dir.path().join("logs/kubectl/c/0.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("attached:via attach") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attach.abort();
    assert!(text.contains("attached:via attach"), "{text}");
}

#[tokio::test]
async fn tls_streaming_server_with_a_configured_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let c = Crustd::start(CrustdOptions {
        cni: true,
        extra_toml: format!(
            "[stream]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        ..Default::default()
    })
    .await;
    let e_pod = c
        .runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "tls".into(),
                    uid: "uid-tls".into(),
                    namespace: "crust-test".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let url = c
        .runtime()
        .await
        .port_forward(PortForwardRequest {
            pod_sandbox_id: e_pod,
            port: vec![80],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // curl speaks TLS (not SPDY): the server answers that the URL needs an upgrade.
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--noproxy", "*", "-o", "-", "-w", "%{http_code}", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("400") && text.contains("upgrade"), "{text}");
    // A plain-HTTP client gets no answer from a TLS server.
    let plain = url.replacen("https://", "http://", 1);
    assert!(handshake(&plain, &[("Upgrade", "SPDY/3.1")]).await.is_err());
}
