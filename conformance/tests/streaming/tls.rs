//! The streaming server over TLS with a configured certificate.

use cri_api::v1::*;
use harness::streamclient::handshake;

use super::*;

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
