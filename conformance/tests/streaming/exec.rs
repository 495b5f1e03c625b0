//! Exec over SPDY (v4 and v2) and WebSocket (v5, v4): output, exit codes, stdin, tty and resize, SPDY
//! flow control, clients going away, malformed frames, and a thousand sessions leaving nothing behind.

use std::time::Duration;

use cri_api::v1::*;
use harness::streamclient::{Spdy, SpdySession, Ws, WsMsg, exit_code, handshake};
use tonic::Code;

use super::*;

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
async fn spdy_flow_control_with_a_peer_that_uses_it() {
    let e = env().await;
    let p = pod(&e, "flow").await;
    let id = container(&e, &p, "sleeper", &["sleep", "3600"], false, false).await;
    let cmd = ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a"];
    let url = exec_url(&e, &id, &cmd, false, true, false, false).await;
    let conn = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    // Streams get a 1000-byte window: the server must stop there until we grant more.
    conn.settings(&[(7, 1000)]).await.unwrap();
    let s = SpdySession::open_streams(conn, false, true, false, false)
        .await
        .unwrap();
    let out = s.stdout.unwrap();
    let got = s
        .conn
        .wait(out, Duration::from_secs(60), |d, _| d.len() >= 1000)
        .await
        .unwrap();
    assert_eq!(got.len(), 1000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = s
        .conn
        .wait(out, Duration::from_secs(1), |_, _| true)
        .await
        .unwrap();
    assert_eq!(got.len(), 1000, "sent past the window");
    s.conn.window_update(out, 10_000).await.unwrap();
    let o = s.finish().await.unwrap();
    assert_eq!(o.stdout.len(), 5000);
    assert!(o.stdout.iter().all(|b| *b == b'a'));
    assert_eq!(exit_code(&o.error).unwrap(), 0, "{}", o.error);
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
