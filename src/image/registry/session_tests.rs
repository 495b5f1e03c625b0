//! The session against a tiny in-process registry with a Bearer token server (the harness's
//! docker-registry only does Basic auth).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const BODY: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:00","size":1},"layers":[]}"#;

/// Serves `/token` (needs Basic alice:pw, gives "tok") and `/v2/a/b/manifests/1` (needs Bearer tok).
async fn server(tokens: Arc<AtomicUsize>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let realm = realm.clone();
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut buf[n..]).await.unwrap();
                    if k == 0 {
                        return;
                    }
                    n += k;
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = req.lines().next().unwrap().to_string();
                let auth = req
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(|l| l[14..].trim().to_string())
                    .unwrap_or_default();
                let (status, headers, body): (&str, String, Vec<u8>) = if line.starts_with("GET /token?") {
                    tokens.fetch_add(1, Ordering::SeqCst);
                    let scope_ok =
                        line.contains("scope=repository%3Aa%2Fb%3Apull") && line.contains("service=reg");
                    if auth == "Basic YWxpY2U6cHc=" && scope_ok {
                        ("200 OK", String::new(), br#"{"token":"tok"}"#.to_vec())
                    } else {
                        ("401 Unauthorized", String::new(), b"{}".to_vec())
                    }
                } else if auth == "Bearer tok" {
                    (
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                        BODY.to_vec(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        format!(
                            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\",scope=\"repository:a/b:pull\"\r\n"
                        ),
                        b"{}".to_vec(),
                    )
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    addr
}

fn session(addr: &str, creds: Credentials) -> Session {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ep = Endpoint {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        mirror: false,
        tls: None,
    };
    Session::new(
        client,
        ep,
        "a/b",
        creds,
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
}

#[tokio::test]
async fn bearer_challenge_gets_a_token_with_basic_credentials() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let addr = server(tokens.clone()).await;
    let s = session(&addr, Credentials::from_parts("alice", "pw", "", "", ""));
    let m = s.manifest("1").await.unwrap();
    assert_eq!(m.body, BODY);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    // The token is cached for the session.
    s.manifest("1").await.unwrap();
    assert_eq!(tokens.load(Ordering::SeqCst), 1);

    let bad = session(&addr, Credentials::from_parts("alice", "wrong", "", "", ""));
    let e = bad.manifest("1").await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");

    // A registry token from the request is used as is.
    let direct = session(&addr, Credentials::from_parts("", "", "", "", "tok"));
    direct.manifest("1").await.unwrap();
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        2,
        "only the bad attempt asked for another token"
    );
}

#[tokio::test]
async fn a_digest_reference_is_verified() {
    let addr = server(Arc::new(AtomicUsize::new(0))).await;
    let s = session(&addr, Credentials::from_parts("alice", "pw", "", "", ""));
    let wrong = format!("sha256:{}", "0".repeat(64));
    // The test server answers any manifest path the same; asking by a digest it does not match fails.
    let e = s.manifest(&wrong).await.unwrap_err();
    assert!(e.to_string().contains("content has digest"), "{e}");
}

#[test]
fn a_content_range_gives_its_first_byte() {
    assert_eq!(range_start("bytes 90000-99999/100000"), Some(90000));
    assert_eq!(range_start("bytes 5-9/*"), Some(5));
    assert_eq!(range_start("bytes */100000"), None);
    assert_eq!(range_start("items 1-2/3"), None);
}
