//! What other tools and clients send: an image whose layers were written by umoci, Python's tarfile and
//! GNU tar (a `/` root entry, `./` prefixes, absolute member names and hard link targets), container
//! names as kubelet and critest make them, and a RunAsGroup without a user (refused, as by the peers).

use std::process::{Command, Stdio};

use harness::images::{self, Compression, ImageConfig, ImageSpec as TestImage, Layer};

use super::*;

/// Runs a command, returning its stdout; panics with its stderr on failure.
fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stderr(Stdio::piped()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The base layer as umoci writes it (`umoci repack` of a rootfs holding busybox and a hard-linked sh).
fn umoci_layer(dir: &Path) -> Vec<u8> {
    let layout = dir.join("layout");
    let image = format!("{}:base", layout.display());
    let bundle = dir.join("bundle");
    sh(Command::new("umoci").arg("init").arg("--layout").arg(&layout));
    sh(Command::new("umoci").args(["new", "--image", &image]));
    sh(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/from-umoci"), "umoci\n").unwrap();
    sh(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    // The one layer of the repacked image, gunzipped.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob =
        |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let gz = blob(layers[0]["digest"].as_str().unwrap());
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
    tar
}

/// A layer from Python's tarfile with a `/` root entry and absolute names, as some build tools write.
fn python_layer(dir: &Path) -> Vec<u8> {
    let out = dir.join("python.tar");
    let script = r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, kind, data=b"", link=""):
        i = tarfile.TarInfo(name)
        i.type = kind
        i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        i.linkname = link
        i.size = len(data)
        t.addfile(i, io.BytesIO(data) if data else None)
    add("/", tarfile.DIRTYPE)
    add("/etc", tarfile.DIRTYPE)
    add("/etc/from-python", tarfile.REGTYPE, b"python\n")
    add("/etc/python-link", tarfile.LNKTYPE, link="/etc/from-python")
    add("/etc/python-symlink", tarfile.SYMTYPE, link="/etc/from-python")
"#;
    sh(Command::new("/usr/bin/python3").args(["-c", script]).arg(&out));
    std::fs::read(out).unwrap()
}

/// A layer from GNU tar run in a directory: `./` prefixes and a `./` root entry.
fn gnu_tar_layer(dir: &Path) -> Vec<u8> {
    let root = dir.join("gnu");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/from-gnu-tar"), "gnu tar\n").unwrap();
    let tar = sh(Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&root)
        .args(["-cf", "-", "."]));
    assert!(tar[..100].starts_with(b"./"), "GNU tar wrote ./ names");
    tar
}

#[tokio::test]
async fn an_image_written_by_other_tools_pulls_and_runs() {
    let e = env().await;
    let work = tempfile::tempdir().unwrap();
    let tars = [
        umoci_layer(work.path()),
        python_layer(work.path()),
        gnu_tar_layer(work.path()),
    ];
    let names = |t: &[u8]| -> Vec<String> {
        tar::Archive::new(t)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    };
    assert!(
        names(&tars[1]).contains(&"/".to_string()),
        "{:?}",
        names(&tars[1])
    );
    assert!(names(&tars[1]).contains(&"/etc/from-python".to_string()));
    let layers = tars
        .iter()
        .map(|t| Layer::new(t, Compression::Gzip, false))
        .collect();
    let img = TestImage::new(layers, ImageConfig::default());
    let pushed = images::push_image(&e._reg, "crust-test/foreign", "1", &img);
    pull(&e.c, &pushed.reference).await;
    let p = pod(&e, "foreign").await;
    let cmd = [
        "sh",
        "-c",
        "cat /etc/from-umoci /etc/from-python /etc/python-link /etc/python-symlink /etc/from-gnu-tar",
    ];
    let id = run(&e, &p, ctr("foreign", &pushed.reference, &cmd)).await;
    let s = wait_exited(&e, &id).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(
        stdout_text(&s.log_path),
        "umoci\npython\npython\npython\ngnu tar\n"
    );
}

#[tokio::test]
async fn container_names_as_kubelet_and_critest_send_them() {
    let e = env().await;
    let p = pod(&e, "names").await;
    let long = format!("Container-For-{}", "MixedCase9".repeat(20));
    let mut cfg = ctr(&long, &e.imgs.busybox.reference, &["true"]);
    cfg.log_path = "long/0.log".into();
    let id = run(&e, &p, cfg).await;
    let s = wait_exited(&e, &id).await;
    assert_eq!(s.metadata.unwrap().name, long);
    assert_eq!(s.exit_code, 0);
}

#[tokio::test]
async fn run_as_group_without_a_user_is_refused_naming_the_field() {
    let e = env().await;
    let p = pod(&e, "group").await;
    let mut cfg = ctr("group", &e.imgs.busybox.reference, &["id"]);
    sc(&mut cfg).run_as_group = Some(Int64Value { value: 3000 });
    let err = create(&e, &p, cfg).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("config.linux.security_context.run_as_group"),
        "{}",
        err.message()
    );
    let left = containers(&e).await;
    assert!(left.is_empty(), "a refused create leaves no record: {left:?}");
}
