//! Bounded pulls: every registry response has a size bound and a timeout (manifests, configs with or
//! without a declared size, token responses, slow token servers), layers have limits on unpacked bytes
//! and entries, sparse entries become holes, and a request's credentials never reach a mirror. Each
//! refusal names what was exceeded and leaves nothing in the store. Misbehaving servers are in-test
//! fakes (`harness::fakereg`).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use harness::fakereg::{FakeServer, Reply, Request};

use super::layers::assert_store_clean;
use super::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha(data: &[u8]) -> String {
    images::digest(data)
}

/// A one-layer-less OCI manifest whose config is `config` (declared size `size`).
fn manifest_for(config: &[u8], size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": size},
        "layers": [],
    }))
    .unwrap()
}

fn extra(toml: &str) -> CrustdOptions<'static> {
    CrustdOptions {
        extra_toml: toml.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_oversized_manifest_is_refused_naming_the_bound() {
    let big = vec![b' '; 5 << 20];
    let srv = FakeServer::start(move |r: &Request| {
        let mut reply = Reply::ok(OCI_MANIFEST, big.clone());
        // One answer declares its length, the other only ends: both are cut at the bound.
        reply.no_length = r.path.ends_with("/manifests/streamed");
        reply
    })
    .await;
    let d = Crustd::start(CrustdOptions::default()).await;
    for tag in ["declared", "streamed"] {
        let e = pull(&d, &format!("{}/x/big:{tag}", srv.host()), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{tag}: {e:?}");
        let want = format!(
            "manifest x/big:{tag} from {} is larger than 4194304 bytes",
            srv.url()
        );
        assert!(e.message().contains(&want), "{tag}: {}", e.message());
    }
    assert!(list(&d).await.is_empty());
    assert_store_clean(&d);
}

#[tokio::test]
async fn an_oversized_config_is_refused_declared_or_not() {
    let config = {
        let mut c = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]},"pad":""#.to_vec();
        c.extend(std::iter::repeat_n(b'x', 9 << 20));
        c.extend_from_slice(br#""}"#);
        c
    };
    let (declared, undeclared) = (manifest_for(&config, config.len()), manifest_for(&config, 0));
    let cfg_path = format!("/blobs/{}", sha(&config));
    let srv = FakeServer::start(move |r: &Request| {
        if r.path.ends_with("/manifests/declared") {
            Reply::ok(OCI_MANIFEST, declared.clone())
        } else if r.path.ends_with("/manifests/undeclared") {
            Reply::ok(OCI_MANIFEST, undeclared.clone())
        } else if r.path.ends_with(&cfg_path) {
            let mut reply = Reply::ok("application/octet-stream", config.clone());
            reply.no_length = true;
            reply
        } else {
            Reply::status(404)
        }
    })
    .await;
    let d = Crustd::start(CrustdOptions::default()).await;
    for tag in ["declared", "undeclared"] {
        let e = pull(&d, &format!("{}/x/fat:{tag}", srv.host()), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{tag}: {e:?}");
        assert!(
            e.message().contains("image config sha256:")
                && e.message()
                    .contains(&format!("from {} is larger than 8388608 bytes", srv.url())),
            "{tag}: {}",
            e.message()
        );
        assert_store_clean(&d);
    }
    // The declared size is refused before any byte of the config is fetched.
    let gets = srv
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(gets, 1, "{:?}", srv.requests());
    assert!(list(&d).await.is_empty());
}

/// A registry whose manifests need a Bearer token from `realm`.
async fn bearer_registry(realm: String) -> FakeServer {
    FakeServer::start(move |_r: &Request| {
        Reply::challenge(&format!(
            "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:x/y:pull\""
        ))
    })
    .await
}

#[tokio::test]
async fn an_oversized_token_response_is_refused() {
    let tokens = FakeServer::start(|_r: &Request| {
        let mut body = br#"{"token":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', 2 << 20));
        body.extend_from_slice(br#""}"#);
        let mut reply = Reply::ok("application/json", body);
        reply.no_length = true;
        reply
    })
    .await;
    let reg = bearer_registry(format!("{}/token", tokens.url())).await;
    let d = Crustd::start(CrustdOptions::default()).await;
    let e = pull(&d, &format!("{}/x/y:1", reg.host()), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let want = format!(
        "token response from {}/token is larger than 1048576 bytes",
        tokens.url()
    );
    assert!(e.message().contains(&want), "{}", e.message());
    assert_eq!(tokens.requests().len(), 1);
    assert_store_clean(&d);
}

#[tokio::test]
async fn a_token_server_that_does_not_answer_times_out() {
    let tokens = FakeServer::start(|_r: &Request| Reply {
        delay: Some(Duration::from_secs(60)),
        ..Reply::status(200)
    })
    .await;
    let reg = bearer_registry(format!("{}/token", tokens.url())).await;
    let d = Crustd::start(extra("[image]\nrequest_timeout_seconds = 1\n")).await;
    let t = Instant::now();
    let e = pull(&d, &format!("{}/x/y:1", reg.host()), None)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains(&format!("{}/token", tokens.url())) && e.message().contains("1 s"),
        "{}",
        e.message()
    );
    assert_store_clean(&d);
}

/// Pushes a one-layer image of `tar` to `reg` as `repo:1`.
fn push_layer(reg: &Registry, repo: &str, tar: &[u8]) -> (images::Pushed, Layer) {
    let layer = Layer::new(tar, Compression::Gzip, false);
    let s = TestImage::new(vec![layer.clone()], ImageConfig::default());
    (images::push_image(reg, repo, "1", &s), layer)
}

#[tokio::test]
async fn layers_over_the_unpacked_bytes_or_entries_limit_are_refused() {
    let reg = Registry::start();
    let big = LayerBuilder::new()
        .file("big", &vec![7u8; 2 << 20], 0o644)
        .build();
    let (big, _) = push_layer(&reg, "crust-test/big-layer", &big);
    let mut many = LayerBuilder::new();
    for i in 0..50 {
        many = many.file(&format!("f{i}"), b"x", 0o644);
    }
    let (many, _) = push_layer(&reg, "crust-test/many-entries", &many.build());
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: "[image]\nmax_layer_unpacked_bytes = 1048576\nmax_layer_entries = 20\n".into(),
        ..Default::default()
    })
    .await;
    for (p, want) in [
        (&big, "more than 1048576 bytes (image.max_layer_unpacked_bytes)"),
        (&many, "more than 20 entries (image.max_layer_entries)"),
    ] {
        let e = pull(&d, &p.reference, None).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
        assert_store_clean(&d);
    }
    assert!(list(&d).await.is_empty());
}

#[tokio::test]
async fn a_sparse_entry_is_unpacked_with_holes() {
    // GNU tar writes a sparse file as a GNU sparse entry ('S') with its map of data regions.
    let src = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.path().join("sparse")).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 100 << 20).unwrap();
        f.write_all_at(b"tail", size - 4).unwrap();
    }
    let out = std::process::Command::new("tar")
        .args([
            "--sparse",
            "--format=gnu",
            "--numeric-owner",
            "-cf",
            "-",
            "sparse",
        ])
        .current_dir(src.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tar = out.stdout;
    assert_eq!(tar[156], b'S', "GNU tar did not write a sparse entry");
    let reg = Registry::start();
    let (p, layer) = push_layer(&reg, "crust-test/sparse", &tar);
    let d = Crustd::start(with_registry(&reg)).await;
    pull(&d, &p.reference, None).await.unwrap();
    let file = images_dir(&d)
        .join("layers")
        .join(layer.diff_id.trim_start_matches("sha256:"))
        .join("sparse");
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(m.len(), size);
    assert!(
        m.blocks() * 512 <= 1 << 20,
        "{} bytes allocated for a file of 3 small data regions",
        m.blocks() * 512
    );
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&file).unwrap();
    for (at, want) in [(0, &b"head"[..]), (100 << 20, b"middle"), (size - 4, b"tail")] {
        let mut b = vec![0u8; want.len()];
        f.read_exact_at(&mut b, at).unwrap();
        assert_eq!(b, want, "at {at}");
    }
    let mut b = [1u8; 16];
    f.read_exact_at(&mut b, 50 << 20).unwrap();
    assert_eq!(b, [0u8; 16]);
}

#[tokio::test]
async fn request_credentials_never_reach_a_mirror() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let imgs = images::push_standard(&reg);
    // A mirror that wants credentials for everything and records what it is sent.
    let mirror = FakeServer::start(|_r: &Request| Reply::challenge("Basic realm=\"mirror\"")).await;
    let mirrors = format!(
        "[registry.mirrors.{:?}]\nendpoint = [{:?}]\nfallback_to_upstream = true\n",
        reg.host(),
        mirror.url()
    );
    let alice = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let alice_header = "Basic YWxpY2U6czNjcmV0";
    let r = &imgs.busybox.reference;

    // Given for the image's registry (server_address empty): the mirror sees none, the registry gets them.
    let d = Crustd::start(extra(&mirrors)).await;
    assert_eq!(pull(&d, r, Some(alice.clone())).await.unwrap(), imgs.busybox.id);
    let seen = mirror.requests();
    assert!(!seen.is_empty(), "the mirror was not tried");
    assert!(seen.iter().all(|q| q.authorization.is_none()), "{seen:?}");
    drop(d);

    // A mirror configured with its own credentials gets those, never the request's.
    let own = format!(
        "{mirrors}[registry.configs.{:?}.auth]\nusername = \"mirror-user\"\npassword = \"mirror-pw\"\n",
        mirror.host()
    );
    let d = Crustd::start(extra(&own)).await;
    assert_eq!(pull(&d, r, Some(alice.clone())).await.unwrap(), imgs.busybox.id);
    let sent: Vec<Option<String>> = mirror.requests().into_iter().map(|q| q.authorization).collect();
    assert!(
        sent.contains(&Some("Basic bWlycm9yLXVzZXI6bWlycm9yLXB3".into())),
        "{sent:?}"
    );
    assert!(!sent.contains(&Some(alice_header.into())), "{sent:?}");
    drop(d);

    // Given for another host (server_address): neither the mirror nor this registry gets them.
    let d = Crustd::start(extra(&mirrors)).await;
    let elsewhere = AuthConfig {
        server_address: "https://other.example/v1/".into(),
        ..alice.clone()
    };
    let e = pull(&d, r, Some(elsewhere)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        !mirror
            .requests()
            .iter()
            .any(|q| q.authorization.as_deref() == Some(alice_header))
    );
    // Named for this registry, they are used.
    let here = AuthConfig {
        server_address: reg.url(),
        ..alice
    };
    assert_eq!(pull(&d, r, Some(here)).await.unwrap(), imgs.busybox.id);
}
