//! Test images built from a static busybox (see [`busybox`]) and pushed to the test registry: layers as tar
//! streams (with whiteouts, symlinks, hard links, or deliberately hostile entries), compressed with gzip,
//! zstd or not at all, with Docker schema 2 or OCI manifests, and multi-platform indexes.

use std::io::Write;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

pub use crate::busybox::{Busybox, busybox};

/// Media types.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Builds one layer's tar stream.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("tar dir");
        self
    }

    /// A directory owned by `uid:gid`.
    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("tar dir");
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data).expect("tar file");
        self
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data).expect("tar file");
        self
    }

    /// A symbolic link `path` → `target` (target not checked).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).expect("tar symlink");
        self
    }

    /// A hard link `path` → `target` (target not checked). `mode` should be the target's, as tar writers
    /// record it: some unpackers (containerd's) chmod the link, and so the shared inode, to it.
    pub fn hardlink(mut self, path: &str, target: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Link, mode, 0);
        self.tar.append_link(&mut h, path, target).expect("tar hardlink");
        self
    }

    /// An OCI whiteout: deletes `dir/name` of the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    /// An OCI opaque marker: `dir` hides everything the layers below have in it.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"", 0o644)
    }

    /// An entry whose name is written raw into the header (for hostile paths like `../x` or `/etc/x`),
    /// bypassing the tar crate's own path checks.
    pub fn raw_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let bytes = name.as_bytes();
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name = [0; 100];
        gnu.name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        self.tar.append(&h, data).expect("tar raw");
        self
    }

    /// The busybox base, laid out like the upstream busybox images: /bin/busybox (see [`busybox`]) and a
    /// hard link to it per applet in /bin (with symlinks, masking `/bin/ls` would mask busybox itself),
    /// /etc/passwd and /etc/group with test users, and the usual empty dirs.
    pub fn busybox_base(self) -> Self {
        let bb = busybox();
        let binary = std::fs::read(&bb.path).unwrap_or_else(|e| panic!("{}: {e}", bb.path.display()));
        let mut b = self
            .dir("bin", 0o755)
            .dir("etc", 0o755)
            .dir("tmp", 0o1777)
            .dir("root", 0o700)
            .dir("home", 0o755)
            .dir("home/crust", 0o755)
            .dir("proc", 0o755)
            .dir("sys", 0o755)
            .dir("dev", 0o755)
            .dir("var", 0o755)
            .dir("usr", 0o755)
            .dir("usr/bin", 0o755)
            .file("bin/busybox", &binary, 0o755)
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\ncrust:x:1000:1000:crust test user:/home/crust:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                0o644,
            )
            .file(
                "etc/group",
                b"root:x:0:\ncrust:x:1000:\nextra:x:2000:crust\nwheel:x:10:crust\nnogroup:x:65534:\n",
                0o644,
            );
        for applet in &bb.applets {
            if applet != "busybox" {
                b = b.hardlink(&format!("bin/{applet}"), "bin/busybox", 0o755);
            }
        }
        b
    }

    /// The finished tar stream.
    pub fn build(self) -> Vec<u8> {
        self.tar.into_inner().expect("tar finish")
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// A layer ready to push.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The blob as pushed.
    pub blob: Vec<u8>,
    /// Digest of the blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Media type for the manifest.
    pub media_type: String,
}

impl Layer {
    /// Compresses a tar stream.
    pub fn new(tar: &[u8], c: Compression, docker: bool) -> Layer {
        let diff_id = digest(tar);
        let (blob, media_type) = match c {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).expect("gzip");
                let mt = if docker {
                    media::DOCKER_LAYER_GZIP
                } else {
                    media::OCI_LAYER_GZIP
                };
                (e.finish().expect("gzip"), mt)
            }
            Compression::Zstd => (zstd::encode_all(tar, 3).expect("zstd"), media::OCI_LAYER_ZSTD),
            Compression::None => (tar.to_vec(), media::OCI_LAYER),
        };
        Layer {
            digest: digest(&blob),
            blob,
            diff_id,
            media_type: media_type.into(),
        }
    }
}

/// What an image's config says (the `config` section of the image config JSON).
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    /// Declared volumes (`VOLUME`), as written.
    pub volumes: Vec<String>,
}

/// An image to push.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    /// Docker schema 2 media types instead of OCI.
    pub docker: bool,
    pub architecture: String,
    pub os: String,
    pub variant: String,
}

impl ImageSpec {
    /// linux/amd64 with OCI media types.
    pub fn new(layers: Vec<Layer>, config: ImageConfig) -> Self {
        ImageSpec {
            layers,
            config,
            docker: false,
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: String::new(),
        }
    }
}

/// What was pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `127.0.0.1:PORT/repo:tag`.
    pub reference: String,
    /// `127.0.0.1:PORT/repo@sha256:…`.
    pub by_digest: String,
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// The image ID crust must report (`sha256:` of the config).
    pub id: String,
    /// The manifest bytes and its media type.
    pub manifest: Vec<u8>,
    pub media_type: String,
}

/// Uploads a blob (POST, then PUT with the digest); returns its digest.
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let head = reg.request("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
    if head.status == 200 {
        return d;
    }
    let start = reg.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(start.status, 202, "start upload to {repo}: {start:?}");
    let loc = start.header("Location").expect("upload location").to_string();
    let path = match loc.find("/v2/") {
        Some(i) => loc[i..].to_string(),
        None => loc,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = reg.request(
        "PUT",
        &format!("{path}{sep}digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(
        put.status,
        201,
        "upload blob {d} to {repo}: {put:?} {}",
        String::from_utf8_lossy(&put.body)
    );
    d
}

/// Uploads a manifest (or index) under `reference` (a tag or a digest).
pub fn push_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let put = reg.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    );
    assert_eq!(
        put.status,
        201,
        "push manifest {repo}:{reference}: {put:?} {}",
        String::from_utf8_lossy(&put.body)
    );
    digest(body)
}

/// The image config JSON for `spec`.
pub fn config_json(spec: &ImageSpec) -> Vec<u8> {
    let c = &spec.config;
    let mut cfg = serde_json::Map::new();
    let strings = |v: &Vec<String>| Value::from(v.clone());
    if !c.entrypoint.is_empty() {
        cfg.insert("Entrypoint".into(), strings(&c.entrypoint));
    }
    if !c.cmd.is_empty() {
        cfg.insert("Cmd".into(), strings(&c.cmd));
    }
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    cfg.insert("Env".into(), Value::from(env));
    if !c.working_dir.is_empty() {
        cfg.insert("WorkingDir".into(), c.working_dir.clone().into());
    }
    if !c.user.is_empty() {
        cfg.insert("User".into(), c.user.clone().into());
    }
    if !c.stop_signal.is_empty() {
        cfg.insert("StopSignal".into(), c.stop_signal.clone().into());
    }
    if !c.volumes.is_empty() {
        let vols: serde_json::Map<String, Value> = c.volumes.iter().map(|v| (v.clone(), json!({}))).collect();
        cfg.insert("Volumes".into(), Value::Object(vols));
    }
    let mut doc = json!({
        "architecture": spec.architecture,
        "os": spec.os,
        "created": "2026-01-01T00:00:00Z",
        "config": Value::Object(cfg),
        "rootfs": { "type": "layers", "diff_ids": spec.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
    });
    if !spec.variant.is_empty() {
        doc["variant"] = spec.variant.clone().into();
    }
    serde_json::to_vec(&doc).expect("config json")
}

/// Pushes the layers, config and manifest of `spec` as `repo:tag`.
pub fn push_image(reg: &Registry, repo: &str, tag: &str, spec: &ImageSpec) -> Pushed {
    let config = config_json(spec);
    let config_digest = push_blob(reg, repo, &config);
    for l in &spec.layers {
        push_blob(reg, repo, &l.blob);
    }
    let (mt, cfg_mt) = if spec.docker {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    } else {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": { "mediaType": cfg_mt, "digest": config_digest, "size": config.len() },
        "layers": spec.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = push_manifest(reg, repo, tag, mt, &manifest);
    Pushed {
        reference: format!("{}/{repo}:{tag}", reg.host()),
        by_digest: format!("{}/{repo}@{manifest_digest}", reg.host()),
        manifest_digest,
        id: config_digest,
        manifest,
        media_type: mt.into(),
    }
}

/// Pushes each image by digest and an index (OCI) over them as `repo:tag`; returns the index digest.
pub fn push_index(reg: &Registry, repo: &str, tag: &str, images: &[(&ImageSpec, &Pushed)]) -> String {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(spec, p)| {
            let mut platform = json!({"architecture": spec.architecture, "os": spec.os});
            if !spec.variant.is_empty() {
                platform["variant"] = spec.variant.clone().into();
            }
            json!({"mediaType": p.media_type, "digest": p.manifest_digest, "size": p.manifest.len(), "platform": platform})
        })
        .collect();
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests}),
    )
    .expect("index json");
    push_manifest(reg, repo, tag, media::OCI_INDEX, &index)
}

/// The standard test images.
#[derive(Clone, Debug)]
pub struct TestImages {
    /// busybox, one gzip layer, Docker schema 2, `Cmd ["sh"]`.
    pub busybox: Pushed,
    /// Entrypoint/Cmd/Env/WorkingDir/User set: entrypoint `/bin/sh -c`, cmd `echo "$GREETING from $PWD as $(id -u)"`,
    /// env `GREETING=hello`, working dir `/home/crust`, user `1000`, stop signal `SIGUSR1`.
    pub configured: Pushed,
    /// Three gzip layers: busybox; `/data/{a,b,dir/x}`, `/opq/old`; whiteout of `/data/a`, opaque `/opq` with
    /// `/opq/new`.
    pub layered: Pushed,
    /// busybox with an uncompressed layer (OCI).
    pub uncompressed: Pushed,
}

/// Builds and pushes the standard images under `crust-test/…:1`.
pub fn push_standard(reg: &Registry) -> TestImages {
    let base = LayerBuilder::new().busybox_base().build();
    let base_gz_docker = Layer::new(&base, Compression::Gzip, true);
    let base_gz = Layer::new(&base, Compression::Gzip, false);
    let mut bb = ImageSpec::new(
        vec![base_gz_docker],
        ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    );
    bb.docker = true;
    let busybox = push_image(reg, "crust-test/busybox", "1", &bb);

    let configured = ImageSpec::new(
        vec![base_gz.clone()],
        ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo \"$GREETING from $PWD as $(id -u)\"".into()],
            env: vec!["GREETING=hello".into()],
            working_dir: "/home/crust".into(),
            user: "1000".into(),
            stop_signal: "SIGUSR1".into(),
            ..Default::default()
        },
    );
    let configured = push_image(reg, "crust-test/configured", "1", &configured);

    let l2 = LayerBuilder::new()
        .dir("data", 0o755)
        .file("data/a", b"a\n", 0o644)
        .file("data/b", b"b\n", 0o644)
        .dir("data/dir", 0o755)
        .file("data/dir/x", b"x\n", 0o644)
        .dir("opq", 0o755)
        .file("opq/old", b"old\n", 0o644)
        .build();
    let l3 = LayerBuilder::new()
        .dir("data", 0o755)
        .whiteout("data/a")
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/new", b"new\n", 0o644)
        .build();
    let layered = ImageSpec::new(
        vec![
            base_gz.clone(),
            Layer::new(&l2, Compression::Gzip, false),
            Layer::new(&l3, Compression::Gzip, false),
        ],
        ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    );
    let layered = push_image(reg, "crust-test/layered", "1", &layered);

    let unc = ImageSpec::new(
        vec![Layer::new(&base, Compression::None, false)],
        ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    );
    let uncompressed = push_image(reg, "crust-test/uncompressed", "1", &unc);
    TestImages {
        busybox,
        configured,
        layered,
        uncompressed,
    }
}
