//! Stand-ins for the images critest pulls (cri-tools `pkg/validate`, `pkg/framework`), built from a static
//! busybox with upstream's default applets (`conformance/busybox.sh`, see [`images::busybox`]; its applets
//! are hard links, as in the upstream images) and two tiny programs of crust's own (the static
//! `crust-pause`, and a 108-byte `nnp` assembled here), pushed to a local registry under the upstream
//! repository paths: a stand-in for `registry.k8s.io/e2e-test-images/busybox:1.29-2` is
//! `<registry>/e2e-test-images/busybox:1.29-2`, so that crust's registry mirrors for `registry.k8s.io`,
//! `k8s.gcr.io` and `gcr.io` serve it. Nothing comes from outside this machine. Each builder says what
//! critest needs from its image.
//!
//! The images that upstream are multi-platform are pushed as indexes (Docker manifest lists for the
//! registry.k8s.io ones, OCI indexes for cri-tools' own) with the host's platform (runnable) and a
//! placeholder for one other platform (not runnable, so a runtime that picks the wrong entry fails).

use serde_json::{Value, json};

use crate::images::{self, Compression, ImageConfig, ImageSpec, Layer, LayerBuilder, Pushed, media};
use crate::registry::Registry;

mod content;

pub use content::nnp_elf;
use content::{GROUP, HTTPD_FOREGROUND, IPCS, PASSWD, nginx_script};

/// How a stand-in is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Docker manifest list over Docker schema 2 manifests.
    DockerList,
    /// An OCI index over OCI manifests.
    OciIndex,
    /// A single Docker schema 2 manifest (single-platform upstream too).
    DockerManifest,
}

/// A stand-in as pushed.
#[derive(Clone, Debug)]
pub struct StandIn {
    /// The references critest uses that this stand-in serves (through a mirror of their registry).
    pub upstream: Vec<String>,
    /// Repository path in the local registry (`e2e-test-images/busybox`).
    pub repo: String,
    /// Tag in the local registry.
    pub tag: String,
    pub kind: Kind,
    /// Digest of what the tag points at (index or manifest).
    pub digest: String,
    /// Media type of what the tag points at.
    pub media_type: String,
    /// `os/arch` of each platform it offers; the first one is this host's and runnable.
    pub platforms: Vec<String>,
    /// The image ID (config digest) of the host platform's image.
    pub id: String,
    /// What critest needs from it.
    pub what: &'static str,
}

/// References critest uses that no stand-in can serve, with why.
pub const NOT_SERVABLE: &[(&str, &str)] = &[(
    "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
    "a pull by the digest of the upstream manifest: no locally built image has that digest (the stand-in \
     is pushed as test-image-digest:latest), so 'public image with digest should be pulled and removed' fails",
)];

/// The OCI/Go name of this host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

fn placeholder_arch() -> &'static str {
    if host_arch() == "arm64" { "amd64" } else { "arm64" }
}

/// The layers the stand-ins share.
struct Parts {
    /// busybox_base(): /bin/busybox and its applet links.
    busybox: Vec<u8>,
    /// The upstream busybox /etc/passwd and /etc/group (and the ipcs stand-in when busybox has no ipcs).
    etc: Vec<u8>,
    /// One file saying this is a placeholder for a platform the host does not run.
    placeholder: Vec<u8>,
}

impl Parts {
    fn new() -> Parts {
        let mut etc = LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/passwd", PASSWD.as_bytes(), 0o644)
            .file("etc/group", GROUP.as_bytes(), 0o644)
            .dir("var", 0o755)
            .dir("var/www", 0o755);
        if !images::busybox().has("ipcs") {
            // Only with the fallback, Debian's busybox-static.
            etc = etc
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .file("usr/bin/ipcs", IPCS.as_bytes(), 0o755);
        }
        let etc = etc.build();
        let placeholder = LayerBuilder::new()
            .file(
                "STAND-IN-PLACEHOLDER",
                b"crust stand-in: a placeholder platform entry, not runnable\n",
                0o644,
            )
            .build();
        Parts {
            busybox: LayerBuilder::new().busybox_base().build(),
            etc,
            placeholder,
        }
    }
}

/// One image to push: extra layers over busybox + etc (or none of them), and its config.
struct Build<'a> {
    busybox: bool,
    extra: Vec<Vec<u8>>,
    config: ImageConfig,
    parts: &'a Parts,
}

impl Build<'_> {
    fn spec(&self, docker: bool) -> ImageSpec {
        let mut tars: Vec<&[u8]> = Vec::new();
        if self.busybox {
            tars.push(&self.parts.busybox);
            tars.push(&self.parts.etc);
        }
        tars.extend(self.extra.iter().map(|t| t.as_slice()));
        let layers = tars
            .into_iter()
            .map(|t| Layer::new(t, Compression::Gzip, docker))
            .collect();
        let mut spec = ImageSpec::new(layers, self.config.clone());
        spec.docker = docker;
        spec.architecture = host_arch().into();
        spec
    }
}

/// Pushes the layers, config and manifest of `spec` by digest (no tag), like `images::push_image`.
fn push_by_digest(reg: &Registry, repo: &str, spec: &ImageSpec) -> Pushed {
    let config = images::config_json(spec);
    let config_digest = images::push_blob(reg, repo, &config);
    for l in &spec.layers {
        images::push_blob(reg, repo, &l.blob);
    }
    let (mt, cfg_mt) = if spec.docker {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    } else {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": { "mediaType": cfg_mt, "digest": config_digest, "size": config.len() },
        "layers": spec.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
    }))
    .expect("manifest json");
    let manifest_digest = images::push_manifest(reg, repo, &images::digest(&manifest), mt, &manifest);
    Pushed {
        reference: format!("{}/{repo}@{manifest_digest}", reg.host()),
        by_digest: format!("{}/{repo}@{manifest_digest}", reg.host()),
        manifest_digest,
        id: config_digest,
        manifest,
        media_type: mt.into(),
    }
}

/// Where and how one stand-in is published.
struct Target<'a> {
    kind: Kind,
    /// Repository path in the local registry.
    repo: &'a str,
    tags: &'a [&'a str],
    /// Upstream references, `{tag}` standing for each tag.
    upstream: Vec<String>,
    what: &'static str,
}

/// Pushes one stand-in under every tag of `t`.
fn publish(reg: &Registry, parts: &Parts, t: Target<'_>, build: &Build<'_>) -> Vec<StandIn> {
    let Target {
        kind,
        repo,
        tags,
        upstream,
        what,
    } = t;
    let docker = kind != Kind::OciIndex;
    let spec = build.spec(docker);
    let main = push_by_digest(reg, repo, &spec);
    let (body, media_type, platforms) = match kind {
        Kind::DockerManifest => (
            main.manifest.clone(),
            main.media_type.clone(),
            vec![format!("linux/{}", host_arch())],
        ),
        Kind::DockerList | Kind::OciIndex => {
            let mut other = ImageSpec::new(
                vec![Layer::new(&parts.placeholder, Compression::Gzip, docker)],
                ImageConfig {
                    cmd: vec!["/STAND-IN-PLACEHOLDER".into()],
                    ..Default::default()
                },
            );
            other.docker = docker;
            other.architecture = placeholder_arch().into();
            let other_pushed = push_by_digest(reg, repo, &other);
            let list_mt = if docker {
                media::DOCKER_LIST
            } else {
                media::OCI_INDEX
            };
            let manifests: Vec<Value> = [(&spec, &main), (&other, &other_pushed)]
                .iter()
                .map(|(s, p)| {
                    json!({"mediaType": p.media_type, "digest": p.manifest_digest, "size": p.manifest.len(),
                           "platform": {"architecture": s.architecture, "os": s.os}})
                })
                .collect();
            let body = serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": list_mt, "manifests": manifests}),
            )
            .expect("index json");
            let platforms = vec![
                format!("linux/{}", host_arch()),
                format!("linux/{}", placeholder_arch()),
            ];
            (body, list_mt.to_string(), platforms)
        }
    };
    tags.iter()
        .map(|tag| {
            let digest = images::push_manifest(reg, repo, tag, &media_type, &body);
            let upstream = upstream.iter().map(|u| u.replace("{tag}", tag)).collect();
            StandIn {
                upstream,
                repo: repo.into(),
                tag: tag.to_string(),
                kind,
                digest,
                media_type: media_type.clone(),
                platforms: platforms.clone(),
                id: main.id.clone(),
                what,
            }
        })
        .collect()
}

const E2E: &str = "registry.k8s.io/e2e-test-images";
const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools";

fn target<'a>(
    kind: Kind,
    repo: &'a str,
    tags: &'a [&'a str],
    upstream: &[&str],
    what: &'static str,
) -> Target<'a> {
    Target {
        kind,
        repo,
        tags,
        upstream: upstream.iter().map(|u| u.to_string()).collect(),
        what,
    }
}

fn nginx_layer(port: u16) -> Vec<u8> {
    LayerBuilder::new()
        .dir("usr", 0o755)
        .dir("usr/sbin", 0o755)
        .file("usr/sbin/nginx", nginx_script(port).as_bytes(), 0o755)
        .dir("usr/share", 0o755)
        .dir("usr/share/nginx", 0o755)
        .dir("usr/share/nginx/html", 0o755)
        .file(
            "usr/share/nginx/html/index.html",
            b"<html><body><h1>Welcome to nginx!</h1><p>crust stand-in.</p></body></html>\n",
            0o644,
        )
        .dir("var", 0o755)
        .dir("var/run", 0o755)
        .build()
}

/// Builds every stand-in and pushes it to `reg`; returns what was pushed, in a stable order.
/// `pause` is a static pause binary for the `pause:3.9` stand-in (crust's own `crust-pause`); without
/// one, a busybox shell loop stands in.
pub fn push_all(reg: &Registry, pause: Option<&std::path::Path>) -> Vec<StandIn> {
    let parts = Parts::new();
    let p = &parts;
    let mut out = Vec::new();
    let bb = |config: ImageConfig, extra: Vec<Vec<u8>>| Build {
        busybox: true,
        extra,
        config,
        parts: p,
    };
    let sh = ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let arch = host_arch();

    // The default container image of nearly every spec: sh, echo, sleep, top, id, ls, cat, touch,
    // hostname, netstat, pidof, pgrep, pkill, printenv, ping, brctl, mount, grep; the upstream
    // /etc/passwd (RunAsUsername "nobody"); ipcs (HostIpc specs); applets as hard links (MaskedPaths).
    let t = target(
        Kind::DockerList,
        "e2e-test-images/busybox",
        &["1.29-2"],
        &[&format!("{E2E}/busybox:{{tag}}")],
        "default test container image: busybox applets, upstream /etc/passwd (nobody), ipcs",
    );
    out.extend(publish(reg, p, t, &bb(sh.clone(), vec![])));

    // Web server of the networking, port mapping, port forward and PID namespace specs: HTTP 200 on
    // port 80; a process named nginx whose PID is in /var/run/nginx.pid; "master process" in its
    // command line (PID 1 of a container PID namespace).
    let nginx_cfg = ImageConfig {
        cmd: vec![
            "/usr/sbin/nginx".into(),
            "nginx: master process".into(),
            "-g".into(),
            "daemon off;".into(),
        ],
        ..Default::default()
    };
    let t = target(
        Kind::DockerList,
        "e2e-test-images/nginx",
        &["1.14-2"],
        &[&format!("{E2E}/nginx:{{tag}}")],
        "web server on :80 (HTTP 200 on /), a process named nginx, /var/run/nginx.pid, \"master process\" in its cmdline",
    );
    out.extend(publish(reg, p, t, &bb(nginx_cfg.clone(), vec![nginx_layer(80)])));

    // Host-network web server of the hostNetwork port-forward spec: nginx listening on 12003.
    // Upstream it is a single-platform image named after the architecture.
    let repo = format!("k8s-staging-cri-tools/hostnet-nginx-{arch}");
    let t = target(
        Kind::DockerManifest,
        &repo,
        &["latest"],
        &[&format!("{CRI_TOOLS}/hostnet-nginx-{arch}:{{tag}}")],
        "host-network web server on :12003 (HTTP 200 on /), single-platform",
    );
    out.extend(publish(reg, p, t, &bb(nginx_cfg, vec![nginx_layer(12003)])));

    // The multi-container specs' web server: HTTP 200 on port 80, "httpd" in its log, exec works.
    let httpd_layer = LayerBuilder::new()
        .dir("usr", 0o755)
        .dir("usr/local", 0o755)
        .dir("usr/local/bin", 0o755)
        .file(
            "usr/local/bin/httpd-foreground",
            HTTPD_FOREGROUND.as_bytes(),
            0o755,
        )
        .dir("usr/local/apache2", 0o755)
        .dir("usr/local/apache2/htdocs", 0o755)
        .file(
            "usr/local/apache2/htdocs/index.html",
            b"<html><body><h1>It works!</h1></body></html>\n",
            0o644,
        )
        .build();
    let httpd_cfg = ImageConfig {
        cmd: vec!["httpd-foreground".into()],
        working_dir: "/usr/local/apache2".into(),
        stop_signal: "SIGWINCH".into(),
        ..Default::default()
    };
    let t = target(
        Kind::DockerList,
        "e2e-test-images/httpd",
        &["2.4.39-4"],
        &[&format!("{E2E}/httpd:{{tag}}")],
        "web server on :80 (HTTP 200 on /), logs a line with \"httpd\", command found in PATH, stop signal SIGWINCH",
    );
    out.extend(publish(reg, p, t, &bb(httpd_cfg, vec![httpd_layer])));

    // NoNewPrivs specs: a setuid-root program printing its effective UID, run as UID 1000.
    if arch == "amd64" {
        let nnp = LayerBuilder::new()
            .dir("usr", 0o755)
            .dir("usr/local", 0o755)
            .dir("usr/local/bin", 0o755)
            .file_owned("usr/local/bin/nnp", &nnp_elf(), 0o4755, 0, 0)
            .build();
        let cfg = ImageConfig {
            entrypoint: vec!["/usr/local/bin/nnp".into()],
            ..Default::default()
        };
        let t = target(
            Kind::DockerList,
            "e2e-test-images/nonewprivs",
            &["1.3"],
            &[&format!("{E2E}/nonewprivs:{{tag}}")],
            "setuid-root /usr/local/bin/nnp (entrypoint) printing \"Effective uid: N\"",
        );
        out.extend(publish(reg, p, t, &bb(cfg, vec![nnp])));
    }

    // One image under two registries (image ID consistency specs), run with its own entrypoint.
    let pause_build = match pause.and_then(|p| std::fs::read(p).ok()) {
        Some(bin) => Build {
            busybox: false,
            extra: vec![LayerBuilder::new().file("pause", &bin, 0o755).build()],
            config: ImageConfig {
                entrypoint: vec!["/pause".into()],
                user: "65535:65535".into(),
                ..Default::default()
            },
            parts: p,
        },
        None => bb(
            ImageConfig {
                entrypoint: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
                ],
                user: "65535:65535".into(),
                ..Default::default()
            },
            vec![],
        ),
    };
    let t = target(
        Kind::DockerList,
        "pause",
        &["3.9"],
        &["registry.k8s.io/pause:{tag}", "k8s.gcr.io/pause:{tag}"],
        "one image under registry.k8s.io and k8s.gcr.io (one ID), runs with its own entrypoint /pause",
    );
    out.extend(publish(reg, p, t, &pause_build));

    // ImageStatus uid/username specs: the image's USER in each form.
    for (name, user, what) in [
        (
            "test-image-user-uid",
            "1002",
            "USER 1002: ImageStatus uid 1002, no username",
        ),
        (
            "test-image-user-username",
            "www-data",
            "USER www-data: ImageStatus username www-data, uid 0",
        ),
        (
            "test-image-user-uid-group",
            "1003:1004",
            "USER 1003:1004: ImageStatus uid 1003, no username",
        ),
        (
            "test-image-user-username-group",
            "www-data:1004",
            "USER www-data:1004: ImageStatus username www-data, uid 0",
        ),
    ] {
        let cfg = ImageConfig {
            cmd: vec!["sh".into()],
            user: user.into(),
            ..Default::default()
        };
        let repo = format!("k8s-staging-cri-tools/{name}");
        let t = target(
            Kind::OciIndex,
            &repo,
            &["latest"],
            &[&format!("{CRI_TOOLS}/{name}:{{tag}}")],
            what,
        );
        out.extend(publish(reg, p, t, &bb(cfg, vec![])));
    }

    // SupplementalGroupsPolicy specs: default-user (1000) is in group-defined-in-image (50000).
    let group_layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            format!("{PASSWD}default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n").as_bytes(),
            0o644,
        )
        .file(
            "etc/group",
            format!("{GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n").as_bytes(),
            0o644,
        )
        .dir("home", 0o755)
        .dir("home/default-user", 0o755)
        .build();
    let cfg = ImageConfig {
        cmd: vec!["sh".into()],
        user: "1000".into(),
        ..Default::default()
    };
    let t = target(
        Kind::OciIndex,
        "k8s-staging-cri-tools/test-image-predefined-group",
        &["latest"],
        &[&format!("{CRI_TOOLS}/test-image-predefined-group:{{tag}}")],
        "USER 1000 = default-user, a member of group-defined-in-image (50000) in /etc/group",
    );
    out.extend(publish(reg, p, t, &bb(cfg, vec![group_layer])));

    // Pull/list/remove/status specs: busybox plus a file named after the image, so that each is a
    // distinct image; test-image-tags:1/2/3 are one image under three tags.
    let marked = |file: &str| {
        bb(
            sh.clone(),
            vec![LayerBuilder::new().file(file, b"", 0o644).build()],
        )
    };
    for (name, tags, file, what) in [
        (
            "test-image-latest",
            &["latest"][..],
            "test-image-latest",
            "pulled without a tag (:latest)",
        ),
        (
            "test-image-tag",
            &["test"][..],
            "test",
            "pulled by tag; runs its default command; image volume source",
        ),
        (
            "test-image-tag",
            &["all"][..],
            "all",
            "ImageStatus by ID, tag and digest agree",
        ),
        (
            "test-image-digest",
            &["latest"][..],
            "test-image-digest",
            "upstream pulls it by a digest no stand-in can have",
        ),
        (
            "test-image-1",
            &["latest"][..],
            "test-image-1",
            "one of three different images",
        ),
        (
            "test-image-2",
            &["latest"][..],
            "test-image-2",
            "one of three different images",
        ),
        (
            "test-image-3",
            &["latest"][..],
            "test-image-3",
            "one of three different images",
        ),
        (
            "test-image-tags",
            &["1", "2", "3"][..],
            "same-image",
            "one image under tags 1, 2 and 3",
        ),
    ] {
        let repo = format!("k8s-staging-cri-tools/{name}");
        let t = target(
            Kind::OciIndex,
            &repo,
            tags,
            &[&format!("{CRI_TOOLS}/{name}:{{tag}}")],
            what,
        );
        out.extend(publish(reg, p, t, &marked(file)));
    }
    out
}
