//! An in-test HTTP/1.1 server standing in for a registry, a mirror or a token server where a real
//! `docker-registry` cannot misbehave on purpose: answers come from a closure (oversized bodies, slow
//! or missing answers, auth challenges), and every request is recorded with its `Authorization` header.
//! It listens on 127.0.0.1 and stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, when sent.
    pub authorization: Option<String>,
}

/// One answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send no `Content-Length`: the body ends when the connection closes.
    pub no_length: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Reply {
    /// 200 with `body` and a content type.
    pub fn ok(content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            ..Default::default()
        }
    }

    /// A status with an empty JSON body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: b"{}".to_vec(),
            ..Default::default()
        }
    }

    /// 401 with a `WWW-Authenticate` challenge.
    pub fn challenge(www_authenticate: &str) -> Reply {
        Reply {
            status: 401,
            headers: vec![("WWW-Authenticate".into(), www_authenticate.into())],
            body: b"{}".to_vec(),
            ..Default::default()
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running fake server.
pub struct FakeServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Starts serving every request with `handler` (on the calling tokio runtime).
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, handler.clone(), log.clone()));
            }
        });
        FakeServer { port, requests, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection: one request, one answer, close.
async fn serve(mut s: tokio::net::TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<Request>>>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if n == buf.len() {
            return;
        }
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    let mut line = head.lines().next().unwrap_or("").split_whitespace();
    let req = Request {
        method: line.next().unwrap_or("").to_string(),
        path: line.next().unwrap_or("").to_string(),
        authorization: head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        }),
    };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_length {
        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    out.push_str("\r\n");
    if s.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let _ = s.write_all(&reply.body).await;
    let _ = s.shutdown().await;
}
