//! Probe programs of crust's own that tests run inside containers. Their C sources are in
//! `conformance/probes/`; each is compiled static with the host's gcc (`build-essential`, which `make
//! deps` installs) once per version of its source and cached under the target dir, so an image of a
//! probe needs nothing else (no libc, no busybox).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::images::{Compression, ImageConfig, ImageSpec, Layer, LayerBuilder, Pushed, digest, push_image};
use crate::registry::Registry;

/// The seccomp probe: one line per syscall it makes, `<name> ok` or `<name> <ERRNO name>`.
pub const SECCOMP_PROBE_SRC: &str = include_str!("../probes/seccomp_probe.c");

/// Where the seccomp probe lives in [`push_probe_image`]'s image.
pub const SECCOMP_PROBE_PATH: &str = "/usr/local/bin/seccomp-probe";

/// The seccomp probe, built if this version of its source was not built yet.
pub fn seccomp_probe() -> PathBuf {
    build("seccomp-probe", SECCOMP_PROBE_SRC)
}

/// Compiles `src` with `gcc -static` into `<target>/probes/<source hash>/<name>` unless it is there.
fn build(name: &str, src: &str) -> PathBuf {
    let hash = digest(src.as_bytes());
    let dir = crate::target_dir()
        .join("probes")
        .join(&hash["sha256:".len()..][..16]);
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    // Built under names of this build's own and renamed, so that tests building it at once never
    // read a half-written source or run a half-written binary.
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}.{n}", std::process::id());
    let c = dir.join(format!("{name}.{tag}.c"));
    std::fs::write(&c, src).unwrap_or_else(|e| panic!("write {}: {e}", c.display()));
    let tmp = dir.join(format!("{name}.{tag}.tmp"));
    let res = Command::new("gcc")
        .args(["-static", "-O1", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("run gcc (install build-essential: `make deps`): {e}"));
    assert!(
        res.status.success(),
        "gcc -static {}: {}\n{}",
        c.display(),
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
    let _ = std::fs::remove_file(&c);
    out
}

/// Pushes `crust-test/probe:1`: the busybox base and the seccomp probe at [`SECCOMP_PROBE_PATH`], its
/// entrypoint.
pub fn push_probe_image(reg: &Registry) -> Pushed {
    let probe = std::fs::read(seccomp_probe()).expect("read the seccomp probe");
    let tar = LayerBuilder::new()
        .busybox_base()
        .dir("usr/local", 0o755)
        .dir("usr/local/bin", 0o755)
        .file(SECCOMP_PROBE_PATH.trim_start_matches('/'), &probe, 0o755)
        .build();
    let spec = ImageSpec::new(
        vec![Layer::new(&tar, Compression::Gzip, false)],
        ImageConfig {
            entrypoint: vec![SECCOMP_PROBE_PATH.into()],
            ..Default::default()
        },
    );
    push_image(reg, "crust-test/probe", "1", &spec)
}
