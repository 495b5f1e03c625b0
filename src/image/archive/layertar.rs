//! An unpacked layer directory back into a layer tar, deterministically: entries in byte order of
//! their names, parents before children, GNU headers (long names as GNU long-name entries), owner,
//! mode and mtime as on disk, no user or group names, xattrs (except overlay's own) as PAX
//! `SCHILY.xattr.*` records, the second and later names of a hard-linked file as links to the first.
//! Overlay whiteouts (character device 0/0) become `.wh.NAME` entries and an opaque directory
//! (`trusted.overlay.opaque=y`) gets a `.wh..wh..opq` entry. The same directory always gives the same
//! bytes, but not, in general, the bytes of the tar it was unpacked from (tools differ in header
//! formats, padding and order), so an exported layer has a diff ID of its own.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// What writing a layer tar produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// `sha256:` of the tar.
    pub diff_id: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the layer in `dir` as a tar to `out`.
pub fn write_layer<W: Write>(dir: &Path, out: W) -> Result<Written> {
    let mut b = tar::Builder::new(Hashing {
        inner: out,
        hasher: Sha256::new(),
        size: 0,
    });
    b.follow_symlinks(false);
    let mut links = HashMap::new();
    walk(dir, Path::new(""), &mut b, &mut links)?;
    let mut h = b
        .into_inner()
        .map_err(|e| Error::io(format!("write the layer tar of {}", dir.display()), e))?;
    h.inner
        .flush()
        .map_err(|e| Error::io(format!("write the layer tar of {}", dir.display()), e))?;
    Ok(Written {
        diff_id: format!("sha256:{}", hex::encode(h.hasher.finalize())),
        size: h.size,
    })
}

fn io_err(what: &Path, e: std::io::Error) -> Error {
    Error::io(format!("tar {}", what.display()), e)
}

fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| io_err(&dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| io_err(&dir, e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        let full = root.join(&r);
        let m = std::fs::symlink_metadata(&full).map_err(|e| io_err(&full, e))?;
        let ft = m.file_type();
        let mut h = header_of(&m);
        if ft.is_char_device() && m.rdev() == 0 {
            // Fixed metadata: the unpacker does not keep a whiteout's (its mtime is when it was made).
            let wh = rel.join(format!(".wh.{}", name.to_string_lossy()));
            b.append_data(&mut marker(), &wh, std::io::empty())
                .map_err(|e| io_err(&full, e))?;
            continue;
        }
        let xattrs = xattrs_of(&full)?;
        let opaque = xattrs
            .iter()
            .any(|(k, v)| k == b"trusted.overlay.opaque" && v == b"y");
        let kept: Vec<_> = xattrs
            .iter()
            .filter(|(k, _)| !k.starts_with(b"trusted.overlay."))
            .collect();
        if !kept.is_empty() {
            let keys: Vec<String> = kept
                .iter()
                .map(|(k, _)| format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)))
                .collect();
            b.append_pax_extensions(
                keys.iter()
                    .zip(&kept)
                    .map(|(k, (_, v))| (k.as_str(), v.as_slice())),
            )
            .map_err(|e| io_err(&full, e))?;
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, &r, std::io::empty())
                .map_err(|e| io_err(&full, e))?;
            if opaque {
                b.append_data(&mut marker(), r.join(".wh..wh..opq"), std::io::empty())
                    .map_err(|e| io_err(&full, e))?;
            }
            walk(root, &r, b, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| io_err(&full, e))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &r, &target).map_err(|e| io_err(&full, e))?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &r, first).map_err(|e| io_err(&full, e))?;
                    continue;
                }
                links.insert(key, r.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = File::open(&full).map_err(|e| io_err(&full, e))?;
            b.append_data(&mut h, &r, f).map_err(|e| io_err(&full, e))?;
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                // Sockets are not part of an image.
                continue;
            };
            h.set_entry_type(kind);
            h.set_size(0);
            if kind != tar::EntryType::Fifo {
                let dev = m.rdev();
                h.set_device_major(libc::major(dev))
                    .map_err(|e| io_err(&full, e))?;
                h.set_device_minor(libc::minor(dev))
                    .map_err(|e| io_err(&full, e))?;
            }
            b.append_data(&mut h, &r, std::io::empty())
                .map_err(|e| io_err(&full, e))?;
        }
    }
    Ok(())
}

/// A GNU header with the owner, mode and mtime of `m` (and no names).
fn header_of(m: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(m.mtime().max(0) as u64);
    h
}

/// The header of a whiteout or opaque marker: an empty root-owned file, mode 0644, mtime 0.
fn marker() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The extended attributes of `p` (not following a symlink), sorted by name.
fn xattrs_of(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Internal("NUL in a path".into()))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: c is a valid C string; buf is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(Error::io(format!("list xattrs of {}", p.display()), e)),
        };
    }
    buf.truncate(n as usize);
    let mut out = Vec::new();
    for name in buf.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).map_err(|_| Error::Internal("NUL in an xattr name".into()))?;
        let mut val = vec![0u8; 65536];
        // SAFETY: both strings are valid; val is writable for its length.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(
                format!(
                    "read xattr {} of {}",
                    OsStr::from_bytes(name).to_string_lossy(),
                    p.display()
                ),
                e,
            ));
        }
        val.truncate(n as usize);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::{Limits, unpack};

    #[test]
    fn a_layer_round_trips_and_retars_to_the_same_bytes() {
        let mut src = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => src.append_link(&mut h, path, l).unwrap(),
                None => src.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("a/", tar::EntryType::Directory, b"", None);
        add("a/f", tar::EntryType::Regular, b"hello", None);
        add("a/g", tar::EntryType::Link, b"", Some("a/f"));
        add("a/s", tar::EntryType::Symlink, b"", Some("f"));
        add("a/.wh.gone", tar::EntryType::Regular, b"", None);
        add("o/", tar::EntryType::Directory, b"", None);
        add("o/.wh..wh..opq", tar::EntryType::Regular, b"", None);
        let t = tempfile::tempdir().unwrap();
        let one = t.path().join("1");
        let two = t.path().join("2");
        std::fs::create_dir(&one).unwrap();
        std::fs::create_dir(&two).unwrap();
        let orig = src.into_inner().unwrap();
        if unpack(&orig[..], &one, None, Limits::default()).is_err() {
            // Whiteouts need root (mknod) and opaque dirs trusted xattrs.
            return;
        }
        let mut first = Vec::new();
        let w1 = write_layer(&one, &mut first).unwrap();
        assert_eq!(w1.size, first.len() as u64);
        // A second later: nothing time-dependent (a whiteout's mtime is when it was made) may show.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let u = unpack(&first[..], &two, Some(&w1.diff_id), Limits::default()).unwrap();
        assert_eq!(u.diff_id, w1.diff_id);
        let mut second = Vec::new();
        let w2 = write_layer(&two, &mut second).unwrap();
        assert_eq!(w1.diff_id, w2.diff_id, "re-tarring is deterministic");
        let mut names = Vec::new();
        for e in tar::Archive::new(&first[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((e.path().unwrap().display().to_string(), e.header().entry_type()));
        }
        let want = [
            ("a", tar::EntryType::Directory),
            ("a/f", tar::EntryType::Regular),
            ("a/g", tar::EntryType::Link),
            ("a/.wh.gone", tar::EntryType::Regular),
            ("a/s", tar::EntryType::Symlink),
            ("o", tar::EntryType::Directory),
            ("o/.wh..wh..opq", tar::EntryType::Regular),
        ];
        let got: Vec<_> = names.iter().map(|(n, k)| (n.trim_end_matches('/'), *k)).collect();
        assert_eq!(got, want);
    }
}
