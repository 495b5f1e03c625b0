//! kubectl (a real Go client: spdystream, gorilla websocket) against crustd, through a fake API server
//! that splices the upgraded connections onto crustd's streaming URLs.

use std::time::Duration;

use cri_api::v1::*;

use super::*;

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
