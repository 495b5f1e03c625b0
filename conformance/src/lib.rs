//! crust's integration-test harness, shared by the conformance suite (`tests/`), the critest runner and the
//! benchmarks: a real `docker-registry` on loopback, test images built from a static busybox
//! (`conformance/busybox.sh`, see [`images::busybox`]) and pushed to it, and `crustd` on temporary
//! directories with a CNI network of its own. Everything it starts it stops, by PID, also when a test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod busybox;
pub mod cri;
pub mod crustd;
pub mod fakereg;
pub mod fault;
pub mod http;
pub mod images;
pub mod net;
pub mod probes;
pub mod registry;
pub mod regproxy;
pub mod standins;
pub mod streamclient;

pub use crustd::{Crustd, CrustdOptions};
pub use images::{LayerBuilder, TestImages};
pub use registry::Registry;

use std::path::PathBuf;

/// Where the built binaries are: `$CRUST_BIN_DIR`, else the cargo target profile dir this test runs from.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRUST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The workspace's target dir (parent of the profile dir).
pub fn target_dir() -> PathBuf {
    let b = bin_dir();
    b.parent().map(|p| p.to_path_buf()).unwrap_or(b)
}

/// Path of a built binary, with a clear panic when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `make build` (or `cargo build --bins`) first",
        p.display()
    );
    p
}

/// The static pause binary built by `make pause`, when present.
pub fn pause_binary() -> Option<PathBuf> {
    let p = target_dir().join("static/x86_64-unknown-linux-gnu/tiny/crust-pause");
    if p.exists() { Some(p) } else { None }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
