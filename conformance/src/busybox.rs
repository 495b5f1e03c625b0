//! The static busybox the test images are built from: found (a build of `conformance/busybox.sh` in the
//! cache, or one named by `$CRUST_TEST_BUSYBOX`, or Debian's as a fallback) and asked for its applets once
//! per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The busybox binary the test images are built from, and its applets.
#[derive(Clone, Debug)]
pub struct Busybox {
    pub path: PathBuf,
    /// `busybox --list`.
    pub applets: Vec<String>,
}

impl Busybox {
    /// Whether it has `applet`.
    pub fn has(&self, applet: &str) -> bool {
        self.applets.iter().any(|a| a == applet)
    }
}

/// The recipe `conformance/busybox.sh`; its hash names the build in the cache.
const BUSYBOX_RECIPE: &[u8] = include_bytes!("../busybox.sh");

/// The busybox of the test images (looked up once per process):
/// 1. `$CRUST_TEST_BUSYBOX` when set (it must exist);
/// 2. the static busybox `conformance/busybox.sh` (`make test-images`) built from Debian's source package
///    with upstream's default applets, cached as `busybox-<version>-<hash>/busybox` in
///    `$CRUST_TEST_IMAGES_CACHE` (default `/var/cache/crust-test-images`), `<hash>` the first 12 hex digits
///    of the script's sha256;
/// 3. else Debian's busybox-static, `/bin/busybox`, with a message on stderr: it lacks applets critest
///    runs (pgrep, pkill, ipcs, printenv).
pub fn busybox() -> &'static Busybox {
    static BUSYBOX: OnceLock<Busybox> = OnceLock::new();
    BUSYBOX.get_or_init(|| {
        let path = find_busybox();
        let out = std::process::Command::new(&path)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| panic!("{} --list: {e}", path.display()));
        assert!(out.status.success(), "{} --list: {out:?}", path.display());
        let applets = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Busybox { path, applets }
    })
}

fn find_busybox() -> PathBuf {
    if let Some(p) = std::env::var_os("CRUST_TEST_BUSYBOX") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CRUST_TEST_BUSYBOX={}: no such file (conformance/busybox.sh prints the one it builds)",
            p.display()
        );
        return p;
    }
    let cache = std::env::var_os("CRUST_TEST_IMAGES_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/crust-test-images"));
    if let Some(p) = cached_busybox(&cache) {
        return p;
    }
    eprintln!(
        "crust test images: no busybox built by conformance/busybox.sh (recipe {}) in {}: using Debian's \
         busybox-static /bin/busybox, which lacks applets critest runs (pgrep, pkill, ipcs, printenv). \
         Run `make test-images` (or set CRUST_TEST_BUSYBOX) for images like the upstream ones.",
        recipe_hash(),
        cache.display()
    );
    let fallback = PathBuf::from("/bin/busybox");
    assert!(
        fallback.is_file(),
        "/bin/busybox: run `make test-images`, or apt-get install busybox-static"
    );
    fallback
}

/// The first 12 hex digits of the recipe's sha256 (as `sha256sum conformance/busybox.sh | cut -c1-12`).
fn recipe_hash() -> String {
    hex::encode(Sha256::digest(BUSYBOX_RECIPE))[..12].to_string()
}

/// `<cache>/busybox-*-<hash>/busybox` of this recipe, if built.
fn cached_busybox(cache: &Path) -> Option<PathBuf> {
    let suffix = format!("-{}", recipe_hash());
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("busybox-") && name.ends_with(&suffix)
        })
        .map(|e| e.path().join("busybox"))
        .filter(|p| p.is_file())
        .collect();
    found.sort(); // the first, as the script's glob picks it
    found.into_iter().next()
}
