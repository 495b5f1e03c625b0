//! Every reference critest pulls resolves in the registry, to images that are what critest needs.

use super::*;

#[test]
fn every_reference_critest_pulls_resolves() {
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let mut upstream: Vec<&str> = all
        .iter()
        .flat_map(|s| s.upstream.iter().map(|u| u.as_str()))
        .collect();
    upstream.sort();
    let before = upstream.len();
    upstream.dedup();
    assert_eq!(before, upstream.len(), "each upstream reference is served once");

    // Every reference in cri-tools' pkg/validate and pkg/framework (linux/amd64), except the pull by the
    // upstream digest (standins::NOT_SERVABLE).
    let arch = standins::host_arch();
    let mut expected = vec![
        "registry.k8s.io/e2e-test-images/busybox:1.29-2".to_string(),
        "registry.k8s.io/e2e-test-images/nginx:1.14-2".into(),
        "registry.k8s.io/e2e-test-images/httpd:2.4.39-4".into(),
        "registry.k8s.io/pause:3.9".into(),
        "k8s.gcr.io/pause:3.9".into(),
        format!("gcr.io/k8s-staging-cri-tools/hostnet-nginx-{arch}:latest"),
    ];
    if arch == "amd64" {
        expected.push("registry.k8s.io/e2e-test-images/nonewprivs:1.3".into());
    }
    for n in [
        "test-image-user-uid:latest",
        "test-image-user-username:latest",
        "test-image-user-uid-group:latest",
        "test-image-user-username-group:latest",
        "test-image-predefined-group:latest",
        "test-image-latest:latest",
        "test-image-tag:test",
        "test-image-tag:all",
        "test-image-digest:latest",
        "test-image-1:latest",
        "test-image-2:latest",
        "test-image-3:latest",
        "test-image-tags:1",
        "test-image-tags:2",
        "test-image-tags:3",
    ] {
        expected.push(format!("gcr.io/k8s-staging-cri-tools/{n}"));
    }
    for e in &expected {
        assert!(upstream.contains(&e.as_str()), "no stand-in for {e}");
    }

    for s in &all {
        // The local path is the upstream one without its registry host.
        for u in &s.upstream {
            assert_eq!(u.split_once('/').unwrap().1, format!("{}:{}", s.repo, s.tag));
        }
        let r = reg.request(
            "GET",
            &format!("/v2/{}/manifests/{}", s.repo, s.tag),
            &[("Accept", ACCEPT)],
            b"",
        );
        assert_eq!(r.status, 200, "{}:{}", s.repo, s.tag);
        assert_eq!(harness::images::digest(&r.body), s.digest);
        let m = host_manifest(&reg, s);
        for l in m["layers"].as_array().unwrap() {
            let head = reg.request(
                "HEAD",
                &format!("/v2/{}/blobs/{}", s.repo, l["digest"].as_str().unwrap()),
                &[],
                b"",
            );
            assert_eq!(head.status, 200);
        }
        let cfg = config(&reg, s);
        assert_eq!(cfg["architecture"], arch);
        assert_eq!(cfg["os"], "linux");
        match s.kind {
            Kind::DockerList => assert_eq!(s.media_type, media::DOCKER_LIST),
            Kind::OciIndex => assert_eq!(s.media_type, media::OCI_INDEX),
            Kind::DockerManifest => assert_eq!(s.media_type, media::DOCKER_MANIFEST),
        }
    }

    // The users ImageStatus reports.
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
        ("test-image-predefined-group", "1000"),
    ] {
        let s = find(&all, &format!("gcr.io/k8s-staging-cri-tools/{name}:latest"));
        assert_eq!(config(&reg, s)["config"]["User"], user, "{name}");
    }

    // One image under test-image-tags:1/2/3 and under both pause names; three different test-image-N.
    let tags: Vec<&StandIn> = (1..=3)
        .map(|i| find(&all, &format!("gcr.io/k8s-staging-cri-tools/test-image-tags:{i}")))
        .collect();
    assert!(
        tags.iter()
            .all(|s| s.id == tags[0].id && s.digest == tags[0].digest)
    );
    let pause = find(&all, "registry.k8s.io/pause:3.9");
    assert!(pause.upstream.contains(&"k8s.gcr.io/pause:3.9".to_string()));
    let mut ids: Vec<&str> = (1..=3)
        .map(|i| {
            find(
                &all,
                &format!("gcr.io/k8s-staging-cri-tools/test-image-{i}:latest"),
            )
            .id
            .as_str()
        })
        .chain([
            tags[0].id.as_str(),
            find(&all, "gcr.io/k8s-staging-cri-tools/test-image-tag:test")
                .id
                .as_str(),
        ])
        .chain([find(&all, "gcr.io/k8s-staging-cri-tools/test-image-tag:all")
            .id
            .as_str()])
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "the test images are distinct");

    // The digest critest pulls by cannot be served: the registry says so (and the runner says why).
    let (r, _) = standins::NOT_SERVABLE[0];
    let (repo, digest) = r.split_once('/').unwrap().1.split_once('@').unwrap();
    let miss = reg.request(
        "GET",
        &format!("/v2/{repo}/manifests/{digest}"),
        &[("Accept", ACCEPT)],
        b"",
    );
    assert_eq!(miss.status, 404);
}
