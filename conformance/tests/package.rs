//! `make deb` (deploy/deb.sh, cargo-deb from Cargo.toml's metadata) on the debug build: the package's
//! fields, files and modes (the conffile 0600, the static pause beside crustd), its maintainer scripts
//! (restart on upgrade, stop only on remove, purge refusing while containers run), and lintian with no
//! errors. Skipped, saying why, where cargo-deb or lintian is not installed (`make deb` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether an ELF64 file names a program interpreter (a PT_INTERP program header): dynamically linked.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// `dpkg-deb --contents` as path → (mode string, size).
fn contents(deb: &Path) -> Vec<(String, String)> {
    run(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.get(5)?.trim_start_matches('.').to_string(),
                f.first()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn the_package_holds_crust_as_installed_and_lintian_finds_no_errors() {
    for tool in ["cargo-deb", "lintian"] {
        if !on_path(tool) {
            println!("{tool} is not installed: skipping the package test (make deb installs it)");
            return;
        }
    }
    // The debug build as `make build-debug` leaves it: the static pause copied beside the others.
    let pause = harness::bin_dir().join("crust-pause");
    let elf = std::fs::read(&pause).expect("crust-pause beside the binaries (make build-debug)");
    assert!(
        !has_interpreter(&elf),
        "{} is not the static pause: run make build-debug",
        pause.display()
    );
    let out = tempfile::tempdir().unwrap();
    let stdout = run(Command::new(repo().join("deploy/deb.sh"))
        .args(["--profile", "dev", "--fast", "--output"])
        .arg(out.path()));
    let deb = PathBuf::from(stdout.lines().last().unwrap());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let commit = crust::version::COMMIT;
    assert!(
        name.starts_with(&format!("crust_{}+", env!("CARGO_PKG_VERSION")))
            && name.ends_with(&format!(".{commit}-1_amd64.deb")),
        "{name}"
    );

    let field = |f: &str| {
        run(Command::new("dpkg-deb").args(["--field"]).arg(&deb).arg(f))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "crust");
    let depends = field("Depends");
    for d in ["runc | crun", "containernetworking-plugins", "iptables", "libc6"] {
        assert!(depends.contains(d), "Depends: {depends}");
    }
    assert_eq!(field("Recommends"), "crun, criu, apparmor");

    let files = contents(&deb);
    let mode = |p: &str| {
        files
            .iter()
            .find(|(f, _)| f == p)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{p} is not in the package: {files:?}"))
    };
    for b in ["crustd", "crust-monitor", "crust-pause", "crustctl"] {
        assert_eq!(mode(&format!("/usr/bin/{b}")), "-rwxr-xr-x", "{b}");
    }
    assert_eq!(mode("/etc/crust/crust.toml"), "-rw-------");
    assert_eq!(mode("/usr/lib/systemd/system/crust.service"), "-rw-r--r--");
    assert_eq!(mode("/usr/share/crust/10-crust.conflist"), "-rw-r--r--");
    for p in [
        "/usr/share/man/man8/crustd.8.gz",
        "/usr/share/man/man8/crustctl.8.gz",
        "/usr/share/man/man8/crustctl-wipe.8.gz",
        "/usr/share/man/man5/crust.toml.5.gz",
        "/usr/share/bash-completion/completions/crustctl",
        "/usr/share/zsh/vendor-completions/_crustctl",
        "/usr/share/fish/vendor_completions.d/crustctl.fish",
        "/usr/share/doc/crust/guide/installing.md",
    ] {
        mode(p);
    }
    // The CNI network is the postinst's to place, only where none exists: never a file of the package.
    assert!(!files.iter().any(|(f, _)| f.starts_with("/etc/cni")), "{files:?}");

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(control.path()));
    let script = |s: &str| std::fs::read_to_string(control.path().join(s)).unwrap();
    assert_eq!(script("conffiles").trim(), "/etc/crust/crust.toml");
    // Upgrade: no stop in the prerm, a restart in the postinst; remove: a stop.
    let prerm = script("prerm");
    assert!(
        prerm.contains(r#"[ "$1" = remove ]"#) && prerm.contains("deb-systemd-invoke stop crust.service"),
        "{prerm}"
    );
    let postinst = script("postinst");
    assert!(
        postinst.contains("_dh_action=restart")
            && postinst.contains("deb-systemd-helper enable crust.service"),
        "{postinst}"
    );
    assert!(script("postrm").contains("refusing to purge"));
    // A restart stops crustd alone: the unit's KillMode.
    let unit = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .output()
        .unwrap()
        .stdout;
    let mut tar = tar::Archive::new(unit.as_slice());
    let mut text = String::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("crust.service") {
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        }
    }
    assert!(
        text.contains("ExecStart=/usr/bin/crustd ") && text.contains("KillMode=process"),
        "{text}"
    );

    let lint = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    println!("lintian:\n{report}");
    assert!(
        lint.status.success() && !report.lines().any(|l| l.starts_with("E: ")),
        "{report}"
    );
}
