//! Unit tests of the unpacker, with hostile tars built here.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use sha2::Sha256;

use super::*;

/// A tar entry whose name and link name are written raw (no sanitising by the tar crate).
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

struct Dirs {
    _t: tempfile::TempDir,
    layer: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer");
    let outside = t.path().join("outside");
    std::fs::create_dir(&layer).unwrap();
    std::fs::create_dir(&outside).unwrap();
    Dirs {
        layer,
        outside,
        _t: t,
    }
}

fn run(data: &[u8], d: &Dirs) -> Result<Unpacked> {
    unpack(std::io::Cursor::new(data), &d.layer, None, Limits::default())
}

#[test]
fn keeps_types_modes_owners_mtimes() {
    use tar::EntryType as T;
    let data = tar_of(|b| {
        raw(b, "./", T::Directory, "", b"", 0o755);
        raw(b, "bin/", T::Directory, "", b"", 0o755);
        let mut h = tar::Header::new_gnu();
        h.set_path("bin/tool").unwrap();
        h.set_size(5);
        h.set_mode(0o4755);
        h.set_uid(1000);
        h.set_gid(2000);
        h.set_mtime(1_500_000_000);
        h.set_cksum();
        b.append(&h, &b"hello"[..]).unwrap();
        raw(b, "bin/sh", T::Symlink, "/bin/tool", b"", 0o777);
        raw(b, "bin/hard", T::Link, "bin/tool", b"", 0o644);
        raw(b, "deep/er/file", T::Regular, "", b"x", 0o600);
        raw(b, "fifo", T::Fifo, "", b"", 0o640);
        let mut h = tar::Header::new_ustar();
        h.set_path("null").unwrap();
        h.set_entry_type(T::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_mode(0o666);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        raw(b, "ro/", T::Directory, "", b"", 0o555);
    });
    let d = dirs();
    let out = run(&data, &d).unwrap();
    assert_eq!(out.diff_id, sha(&data));
    let l = &d.layer;
    let m = std::fs::metadata(l.join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755, "setuid kept after chown");
    assert_eq!((m.uid(), m.gid()), (1000, 2000));
    assert_eq!(m.mtime(), 1_500_000_000);
    assert_eq!(std::fs::read(l.join("bin/tool")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read_link(l.join("bin/sh")).unwrap(),
        Path::new("/bin/tool")
    );
    assert_eq!(std::fs::metadata(l.join("bin/hard")).unwrap().ino(), m.ino());
    assert_eq!(std::fs::read(l.join("deep/er/file")).unwrap(), b"x");
    assert!(std::fs::metadata(l.join("fifo")).unwrap().file_type().is_fifo());
    let n = std::fs::metadata(l.join("null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
    let ro = std::fs::metadata(l.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o777, 0o555);
    assert_eq!(ro.mtime(), 1_600_000_000, "dir mtimes set last");
    assert!(out.inodes >= 9, "{out:?}");
    assert_eq!(out.bytes, 6);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    use tar::EntryType as T;
    let data = tar_of(|b| {
        raw(b, "etc/", T::Directory, "", b"", 0o755);
        raw(b, "etc/.wh.passwd", T::Regular, "", b"", 0o644);
        raw(b, "var/.wh..wh..opq", T::Regular, "", b"", 0o644);
        raw(b, "var/new", T::Regular, "", b"n", 0o644);
        raw(b, ".wh..wh.plnk", T::Directory, "", b"", 0o700);
    });
    let d = dirs();
    run(&data, &d).unwrap();
    let w = std::fs::symlink_metadata(d.layer.join("etc/passwd")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!(w.rdev(), 0);
    assert!(!d.layer.join("etc/.wh.passwd").exists());
    let mut buf = [0u8; 8];
    let p = std::ffi::CString::new(d.layer.join("var").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 1, "opaque xattr set");
    assert_eq!(buf[0], b'y');
    assert!(d.layer.join("var/new").exists());
    assert!(!d.layer.join(".wh..wh.plnk").exists());
}

#[test]
fn gzip_zstd_and_plain_give_the_same_tree_and_diff_id() {
    use tar::EntryType as T;
    let data = tar_of(|b| raw(b, "a/b", T::Regular, "", &[7u8; 100_000], 0o644));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&data[..], 1).unwrap();
    for blob in [&data, &gz, &zst] {
        let d = dirs();
        let out = unpack(
            std::io::Cursor::new(blob),
            &d.layer,
            Some(&sha(&data)),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(out.diff_id, sha(&data));
        assert_eq!(std::fs::read(d.layer.join("a/b")).unwrap().len(), 100_000);
    }
}

#[test]
fn wrong_diff_id_is_refused() {
    let data = tar_of(|b| raw(b, "a", tar::EntryType::Regular, "", b"x", 0o644));
    let d = dirs();
    let e = unpack(
        std::io::Cursor::new(&data),
        &d.layer,
        Some(&sha(b"other")),
        Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("image config says"), "{e}");
}

fn outside_is_empty(d: &Dirs) {
    let n = std::fs::read_dir(&d.outside).unwrap().count();
    assert_eq!(n, 0, "something was written outside the layer");
    assert!(!d.layer.parent().unwrap().join("evil").exists());
}

#[test]
fn dotdot_paths_are_refused() {
    use tar::EntryType as T;
    for name in ["../evil", "a/../../evil", "../outside/x"] {
        let data = tar_of(|b| {
            raw(b, "a/", T::Directory, "", b"", 0o755);
            raw(b, name, T::Regular, "", b"bad", 0o644);
        });
        let d = dirs();
        let e = run(&data, &d).unwrap_err();
        assert!(
            e.to_string().contains("layer refused") && e.to_string().contains(".."),
            "{name}: {e}"
        );
        outside_is_empty(&d);
    }
}

#[test]
fn absolute_names_and_the_root_entry_resolve_inside_the_layer() {
    use tar::EntryType as T;
    let d = dirs();
    let name = format!("{}/x", d.outside.display());
    let data = tar_of(|b| {
        raw(b, "/", T::Directory, "", b"", 0o755);
        raw(b, "./", T::Directory, "", b"", 0o755);
        raw(b, "/bin/", T::Directory, "", b"", 0o755);
        raw(b, "/bin/tool", T::Regular, "", b"tool", 0o755);
        raw(b, "./bin/../bin/alias", T::Link, "/bin/tool", b"", 0o755);
        raw(b, &name, T::Regular, "", b"inside", 0o644);
    });
    run(&data, &d).unwrap();
    assert_eq!(std::fs::read(d.layer.join("bin/tool")).unwrap(), b"tool");
    let (a, b) = (
        std::fs::metadata(d.layer.join("bin/tool")).unwrap(),
        std::fs::metadata(d.layer.join("bin/alias")).unwrap(),
    );
    assert_eq!(
        a.ino(),
        b.ino(),
        "an absolute hard link target is a member of the layer"
    );
    let inside = d.layer.join(d.outside.strip_prefix("/").unwrap()).join("x");
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    outside_is_empty(&d);
}

#[test]
fn paths_through_a_symlink_are_refused() {
    use tar::EntryType as T;
    let d = dirs();
    let outside = d.outside.display().to_string();
    for (link, entry, kind) in [
        (outside.as_str(), "esc/x", T::Regular),
        ("../outside", "esc/x", T::Regular),
        (outside.as_str(), "esc/sub/", T::Directory),
        (outside.as_str(), "esc/l", T::Symlink),
        (outside.as_str(), "esc/.wh.x", T::Regular),
        (outside.as_str(), "esc/.wh..wh..opq", T::Regular),
    ] {
        let data = tar_of(|b| {
            raw(b, "esc", T::Symlink, link, b"", 0o777);
            raw(b, entry, kind, "/etc", b"", 0o644);
        });
        let layer = d.layer.clone();
        std::fs::remove_dir_all(&layer).unwrap();
        std::fs::create_dir(&layer).unwrap();
        let e = run(&data, &d).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{entry}: {e}");
        outside_is_empty(&d);
    }
}

#[test]
fn hard_links_to_outside_are_refused() {
    use tar::EntryType as T;
    let d = dirs();
    std::fs::write(d.outside.join("secret"), b"s").unwrap();
    let abs = format!("{}/secret", d.outside.display());
    for (pre, target) in [
        (None, "../outside/secret"),
        (None, abs.as_str()),
        (Some(d.outside.display().to_string()), "esc/secret"),
        (None, "missing"),
    ] {
        let data = tar_of(|b| {
            if let Some(p) = &pre {
                raw(b, "esc", T::Symlink, p, b"", 0o777);
            }
            raw(b, "link", T::Link, target, b"", 0o644);
        });
        std::fs::remove_dir_all(&d.layer).unwrap();
        std::fs::create_dir(&d.layer).unwrap();
        let e = run(&data, &d).unwrap_err();
        assert!(e.to_string().contains("layer refused"), "{target}: {e}");
        assert!(!d.layer.join("link").exists());
        assert_eq!(std::fs::metadata(d.outside.join("secret")).unwrap().nlink(), 1);
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    use tar::EntryType as T;
    let data = tar_of(|b| {
        raw(b, "x", T::Regular, "", b"old", 0o644);
        raw(b, "x", T::Regular, "", b"new", 0o644);
        raw(b, "d/f", T::Regular, "", b"f", 0o644);
        raw(b, "d", T::Symlink, "/tmp", b"", 0o777);
    });
    let d = dirs();
    run(&data, &d).unwrap();
    assert_eq!(std::fs::read(d.layer.join("x")).unwrap(), b"new");
    assert!(
        std::fs::symlink_metadata(d.layer.join("d"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn garbage_is_refused() {
    let d = dirs();
    let mut data = tar_of(|b| raw(b, "a", tar::EntryType::Regular, "", b"x", 0o644));
    data[148] ^= 0x55; // checksum field
    assert!(run(&data, &d).is_err());
}

#[test]
fn limits_on_entries_and_unpacked_bytes_name_the_key() {
    use tar::EntryType as T;
    let data = tar_of(|b| {
        for i in 0..10 {
            raw(b, &format!("f{i}"), T::Regular, "", &[7u8; 3000], 0o644);
        }
    });
    let lim = |bytes, entries| Limits { bytes, entries };
    let d = dirs();
    let e = unpack(std::io::Cursor::new(&data), &d.layer, None, lim(u64::MAX, 5)).unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("more than 5 entries (image.max_layer_entries)"),
        "{e}"
    );
    for max in [10_000, 29_999] {
        let d = dirs();
        let e = unpack(std::io::Cursor::new(&data), &d.layer, None, lim(max, 100)).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
        assert!(e.to_string().contains(&format!("more than {max} bytes")), "{e}");
    }
    let d = dirs();
    unpack(
        std::io::Cursor::new(&data),
        &d.layer,
        None,
        lim(data.len() as u64, 10),
    )
    .unwrap();
}
