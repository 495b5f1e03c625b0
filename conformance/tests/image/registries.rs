//! Talking to registries: basic auth, credentials from the host config, unreachable, down, stalled
//! and fallback-off endpoints, TLS (CA file or skip-verify) and the proxy environment.

use super::*;

#[tokio::test]
async fn basic_auth_with_without_and_with_wrong_credentials() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    let r = &imgs.busybox.reference;

    let e = pull(&d, r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authentication failed"), "{}", e.message());
    assert!(e.message().contains(&reg.host()), "{}", e.message());

    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let e = pull(&d, r, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authentication failed"), "{}", e.message());
    assert!(list(&d).await.is_empty());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(pull(&d, r, Some(right)).await.unwrap(), imgs.busybox.id);
    // The `auth` field (base64 user:password) works too.
    let encoded = AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&d, &imgs.layered.reference, Some(encoded)).await.unwrap(),
        imgs.layered.id
    );
}

#[tokio::test]
async fn credentials_from_the_host_config() {
    let reg = Registry::start_with_auth("bob", "pw");
    let imgs = images::push_standard(&reg);
    let extra = format!(
        "[registry.configs.{:?}.auth]\nusername = \"bob\"\npassword = \"pw\"\n",
        reg.host()
    );
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    assert_eq!(
        pull(&d, &imgs.busybox.reference, None).await.unwrap(),
        imgs.busybox.id
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_naming_the_host() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let port = harness::free_port();
    let e = pull(&d, &format!("127.0.0.1:{port}/crust-test/x:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_down_mirror_falls_through_to_the_next_endpoint() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let closed = harness::free_port();
    let extra = format!(
        "[registry.mirrors.\"mirrored.example\"]\nendpoint = [\"http://127.0.0.1:{closed}\", {:?}]\nfallback_to_upstream = false\n",
        reg.url()
    );
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let id = pull(&d, "mirrored.example/crust-test/busybox:1", None)
        .await
        .unwrap();
    assert_eq!(id, imgs.busybox.id);
    assert_eq!(
        status(&d, "mirrored.example/crust-test/busybox:1", false)
            .await
            .image
            .unwrap()
            .id,
        id
    );
}

#[tokio::test]
async fn with_fallback_off_a_missing_image_is_not_found_at_the_mirror_only() {
    let reg = Registry::start();
    let d = Crustd::start(with_registry(&reg)).await;
    let e = pull(&d, "docker.io/library/does-not-exist:1", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains(&reg.host()), "{}", e.message());
    assert!(
        !e.message().contains("docker.io/v2") && !e.message().contains("registry-1"),
        "{}",
        e.message()
    );
    assert!(
        !d.log().contains("registry-1.docker.io"),
        "another host was tried:\n{}",
        d.log()
    );
    assert_eq!(reg.count_gets("/v2/library/does-not-exist/manifests/1"), 1);
}

#[tokio::test]
async fn a_stalled_registry_fails_with_a_clear_error() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let extra = "[image]\nstall_timeout_seconds = 1\n".to_string();
    let d = Crustd::start(CrustdOptions {
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let e = pull(&d, &format!("127.0.0.1:{port}/x/y:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("no data received for 1 s"),
        "{}",
        e.message()
    );
    hold.abort();
}

/// A docker-registry serving `storage` over TLS with a fresh self-signed certificate for 127.0.0.1.
struct TlsRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl TlsRegistry {
    fn start(storage: &Path) -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        // A CA, and a server certificate for 127.0.0.1 signed by it (webpki refuses a CA as end entity).
        let sh = |script: &str| {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{script}");
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=crust-test-ca -keyout ca.key -out ca.pem",
        );
        sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out req.csr");
        sh(
            "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem",
        );
        let port = harness::free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: x\n  tls:\n    certificate: {}\n    key: {}\n",
            storage.display(),
            cert.display(),
            key.display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let up = harness::wait_for(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(dir.path().join("registry.log"))
                .unwrap()
                .contains("listening on")
                .then_some(())
        });
        assert!(up.is_some(), "TLS registry did not start");
        TlsRegistry { dir, port, child }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_registries_with_a_ca_file_or_skip_verify() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let tls = TlsRegistry::start(&reg.storage());
    let image = "tls.example/crust-test/busybox:1";
    let mirror = format!(
        "[registry.mirrors.\"tls.example\"]\nendpoint = [\"https://127.0.0.1:{}\"]\nfallback_to_upstream = false\n",
        tls.port
    );
    let host_tls = format!("[registry.configs.\"127.0.0.1:{}\".tls]\n", tls.port);
    for (setting, ok) in [
        (format!("ca_file = {:?}\n", tls.ca()), true),
        ("insecure_skip_verify = true\n".into(), true),
        (String::new(), false),
    ] {
        let extra = format!("{mirror}{host_tls}{setting}");
        let d = Crustd::start(CrustdOptions {
            extra_toml: extra,
            ..Default::default()
        })
        .await;
        let r = pull(&d, image, None).await;
        if ok {
            assert_eq!(r.unwrap(), imgs.busybox.id, "{setting}");
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(
                e.message().contains(&format!("127.0.0.1:{}", tls.port)),
                "{}",
                e.message()
            );
            assert!(
                e.message().to_lowercase().contains("certificate"),
                "{}",
                e.message()
            );
        }
    }
}

#[tokio::test]
async fn the_proxy_environment_is_honoured() {
    // crustd runs with HTTP_PROXY at a closed port and NO_PROXY=127.0.0.1,localhost (the harness):
    // 127.0.0.2 is not exempt, so the pull must go to the (closed) proxy and never reach this listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = Crustd::start(CrustdOptions::default()).await;
    let e = pull(&d, &format!("127.0.0.2:{port}/x/y:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let direct = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(
        direct.is_err(),
        "the registry was contacted directly, not through the proxy"
    );
}

/// A node without system root certificates (no ca-certificates package: a minimal image) still pulls
/// from a plain-HTTP registry; the client was refused before ("cannot build the HTTP client").
#[tokio::test]
async fn a_node_without_root_certificates_pulls_over_plain_http() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let none = tempfile::tempdir().unwrap();
    let missing = none.path().join("none.pem").display().to_string();
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        env: vec![
            ("SSL_CERT_FILE".into(), missing),
            ("SSL_CERT_DIR".into(), none.path().display().to_string()),
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(
        pull(&d, &imgs.busybox.reference, None).await.unwrap(),
        imgs.busybox.id
    );
}
