//! The harness itself: the registry serves what it pushes, auth is enforced, images are well-formed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use harness::Registry;
use harness::images::{self, media};

#[test]
fn standard_images_are_served_by_the_registry() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    for p in [&imgs.busybox, &imgs.configured, &imgs.layered, &imgs.uncompressed] {
        let (repo, tag) = p.reference.split_once('/').unwrap().1.rsplit_once(':').unwrap();
        let r = reg.request(
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[(
                "Accept",
                &format!("{},{}", media::OCI_MANIFEST, media::DOCKER_MANIFEST),
            )],
            b"",
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(images::digest(&r.body), p.manifest_digest);
        let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let cfg = m["config"]["digest"].as_str().unwrap();
        assert_eq!(cfg, p.id);
        let b = reg.request("GET", &format!("/v2/{repo}/blobs/{cfg}"), &[], b"");
        assert_eq!(images::digest(&b.body), p.id);
    }
    assert!(reg.count_gets("/manifests/1") >= 4, "{}", reg.log());
}

#[test]
fn an_auth_registry_refuses_anonymous_requests() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let anon = harness::http::request(&reg.host(), "GET", "/v2/", &[], b"").unwrap();
    assert_eq!(anon.status, 401);
    assert!(anon.header("WWW-Authenticate").unwrap().starts_with("Basic"));
    let ok = reg.request("GET", "/v2/", &[], b"");
    assert_eq!(ok.status, 200);
}
