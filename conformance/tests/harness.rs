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

/// A crustd that is gone with a pod still up (a test that failed half-way): dropping it leaves no
/// process behind, the pause included, whose monitor the sweep kills first and which runs in a root
/// of its own, so that only its cgroup tells whose it is.
#[tokio::test]
async fn a_dead_crustd_s_pause_is_swept_by_its_cgroup() {
    use cri_api::v1::*;
    let mut c = harness::Crustd::start(harness::CrustdOptions {
        cni: true,
        ..Default::default()
    })
    .await;
    let id = c
        .runtime()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "left".into(),
                    uid: "uid-left".into(),
                    namespace: "crust-harness".into(),
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
    let pause_cgroup = c.pause_cgroup(&id);
    c.kill9();
    let members = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|h| std::fs::read_to_string(h.path().join(&pause_cgroup).join("cgroup.procs")).ok())
            .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    assert!(!members().is_empty(), "the pause runs in {pause_cgroup}");
    drop(c);
    assert!(members().is_empty(), "left in {pause_cgroup}: {:?}", members());
    assert!(
        !harness::crustd::cgroup_exists(&pause_cgroup),
        "{pause_cgroup} is left"
    );
}
