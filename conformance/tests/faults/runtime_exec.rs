//! Fault scenarios: runtime exec (see runtime.rs for the wrappers and the checks): ExecSync, and exec
//! over the streaming server (SPDY and WebSocket), whose runtime hangs before the process runs; and
//! the streaming exec whose client goes away while the runtime hangs.

use harness::streamclient::{SpdySession, Ws, WsMsg, exit_code};

use super::*;
/// ExecSync `cmd` in `id` with no timeout of its own.
async fn exec(c: &Crustd, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
    c.runtime()
        .await
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 0,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync() {
    let e = Env::new().await;
    scenario_async("runtime-hang-exec", async {
        e.set("hang exec");
        let (pod, _pc, id) = e.pod_and_container("hang-exec").await;
        crate::start(&e.c, &id).await.unwrap();
        // No timeout of the request's own: only the bound on the runtime's start of the process ends it.
        let mut rt = e.c.runtime().await;
        let cid = id.clone();
        let call = tokio::spawn(async move {
            rt.exec_sync(ExecSyncRequest {
                container_id: cid,
                cmd: vec!["echo".into(), "hi".into()],
                timeout: 0,
            })
            .await
        });
        e.wait_hung(1, "exec").await;
        e.others_proceed(&call, Some(&id)).await;
        assert_error(
            answer(call).await,
            tonic::Code::DeadlineExceeded,
            &["runtime exec", BOUND_KEY],
        );
        e.assert_hung_gone("ExecSync").await;
        // The container runs on; with the runtime mended, exec works again.
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning);
        e.clear();
        let out = exec(&e.c, &id, &["echo", "back"]).await.unwrap();
        assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"back\n"[..]));
        e.remove_all(&pod, &id).await;
    })
    .await;
    scenario_async("runtime-fail-exec", async {
        e.set("fail exec");
        let (pod, _pc, id) = e.pod_and_container("fail-exec").await;
        crate::start(&e.c, &id).await.unwrap();
        assert_error(
            exec(&e.c, &id, &["echo", "hi"]).await,
            tonic::Code::Internal,
            &["runtime exec", "injected failure of runc exec"],
        );
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
}

/// The URL of a streaming exec of `cmd` in `id` (stdout and stderr; a tty when `tty`).
async fn exec_url(c: &Crustd, id: &str, cmd: &[&str], tty: bool) -> String {
    c.runtime()
        .await
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: false,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// Reads a WebSocket exec session to its end: (stdout, the error channel's status).
async fn ws_outcome(mut ws: Ws) -> (String, String) {
    let (mut out, mut status) = (Vec::new(), Vec::new());
    loop {
        match ws.recv(Duration::from_secs(10 * BOUND_SECS)).await.unwrap() {
            WsMsg::Binary(m) | WsMsg::Text(m) if !m.is_empty() => match m[0] {
                1 => out.extend_from_slice(&m[1..]),
                3 => status.extend_from_slice(&m[1..]),
                _ => {}
            },
            WsMsg::Close => break,
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&status).into_owned(),
    )
}

/// The error status of a streaming exec whose runtime hung names the verb and the bound.
fn assert_exec_not_started(status: &str) {
    for w in ["runtime exec", "did not start the process", BOUND_KEY] {
        assert!(
            status.contains(w),
            "the exec's status does not name {w:?}: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stream() {
    let e = Env::new().await;
    scenario_async("runtime-hang-exec-stream", async {
        e.set("hang exec");
        let (pod, _pc, id) = e.pod_and_container("hang-exec-stream").await;
        crate::start(&e.c, &id).await.unwrap();
        // SPDY (kubectl's), no tty: the runtime in the foreground.
        let url = exec_url(&e.c, &id, &["echo", "hi"], false).await;
        let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, true, false)
            .await
            .unwrap();
        let call = tokio::spawn(async move { s.finish().await });
        e.wait_hung(1, "a streaming exec").await;
        e.others_proceed(&call, Some(&id)).await;
        let o = answer(call).await.unwrap();
        assert_exec_not_started(&o.error);
        assert!(o.stdout.is_empty(), "{o:?}");
        e.assert_hung_gone("a streaming exec (SPDY)").await;
        // WebSocket with a tty: the runtime detached, sending the pty through a socket.
        e.set("hang exec");
        let url = exec_url(&e.c, &id, &["echo", "hi"], true).await;
        let ws = Ws::connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
        let call = tokio::spawn(ws_outcome(ws));
        e.wait_hung(1, "a streaming tty exec").await;
        let (_, status) = answer(call).await;
        assert_exec_not_started(&status);
        e.assert_hung_gone("a streaming tty exec (WebSocket)").await;
        // The container runs on; with the runtime mended, a streaming exec works again.
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning);
        e.clear();
        let url = exec_url(&e.c, &id, &["echo", "back"], false).await;
        let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, true, false)
            .await
            .unwrap();
        let o = bounded(s.finish()).await.unwrap();
        assert_eq!(
            (o.stdout_text().as_str(), exit_code(&o.error).unwrap()),
            ("back\n", 0)
        );
        e.remove_all(&pod, &id).await;
    })
    .await;
    scenario_async("runtime-hang-exec-stream-client-gone", async {
        let (pod, _pc, id) = e.pod_and_container("gone-exec-stream").await;
        crate::start(&e.c, &id).await.unwrap();
        for tty in [false, true] {
            e.set("hang exec");
            let url = exec_url(&e.c, &id, &["echo", "hi"], tty).await;
            if tty {
                let ws = Ws::connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
                e.wait_hung(1, "a streaming tty exec").await;
                drop(ws);
            } else {
                let s = SpdySession::start(&url, "v4.channel.k8s.io", false, true, true, false)
                    .await
                    .unwrap();
                e.wait_hung(1, "a streaming exec").await;
                s.conn.shutdown().await;
                drop(s);
            }
            // The client is gone while the runtime hangs: the runtime and its child are killed (at
            // once; at the latest at the bound), not left to hang.
            e.assert_hung_gone(if tty {
                "a tty exec's client went away"
            } else {
                "an exec's client went away"
            })
            .await;
        }
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
}
