//! `make install` / `make uninstall` (deploy/install.sh) into a staging root: the binaries, the unit, the
//! default configuration only when there is none, the default CNI network only when there is none;
//! uninstall keeps the configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn script(args: &[&str], root: &Path) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/install.sh"))
        .args(args)
        .arg("--destdir")
        .arg(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_keeps_what_the_operator_has_and_uninstall_keeps_the_configuration() {
    let bins = harness::bin_dir();
    let pause = harness::pause_binary().expect("the static pause (make build-debug)");
    // The binaries as a build leaves them: crust-pause beside the others.
    let from = tempfile::tempdir().unwrap();
    for b in ["crustd", "crust-monitor", "crustctl"] {
        std::fs::copy(bins.join(b), from.path().join(b)).unwrap();
    }
    std::fs::copy(pause, from.path().join("crust-pause")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let from_s = from.path().display().to_string();

    let out = script(&["install", "--from", &from_s], r);
    for b in ["crustd", "crust-monitor", "crust-pause", "crustctl"] {
        assert_eq!(mode(&r.join("usr/local/bin").join(b)), 0o755, "{b}");
    }
    assert_eq!(mode(&r.join("etc/systemd/system/crust.service")), 0o644);
    assert_eq!(mode(&r.join("etc/crust/crust.toml")), 0o600);
    assert!(r.join("etc/cni/net.d/10-crust.conflist").exists(), "{out}");
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/crust.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/crustd"), "{unit}");

    // A second install (an upgrade) replaces binaries, not the operator's files.
    std::fs::write(r.join("etc/crust/crust.toml"), "log_level = \"debug\"\n").unwrap();
    std::fs::remove_file(r.join("etc/cni/net.d/10-crust.conflist")).unwrap();
    std::fs::write(r.join("etc/cni/net.d/05-mine.conflist"), "{}").unwrap();
    let out = script(&["install", "--from", &from_s], r);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/crust/crust.toml")).unwrap(),
        "log_level = \"debug\"\n"
    );
    assert!(!r.join("etc/cni/net.d/10-crust.conflist").exists(), "{out}");
    assert!(out.contains("kept /etc/crust/crust.toml"), "{out}");

    let out = script(&["uninstall"], r);
    assert!(!r.join("usr/local/bin/crustd").exists());
    assert!(!r.join("etc/systemd/system/crust.service").exists());
    assert!(r.join("etc/crust/crust.toml").exists(), "{out}");
}
