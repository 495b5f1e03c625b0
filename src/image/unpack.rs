//! Safe layer unpacking: one layer tar (gzip, zstd or plain) into its own empty directory, usable as an
//! overlayfs lower dir. OCI whiteouts become overlayfs whiteouts (`.wh.NAME` → char device 0/0) and
//! opaque directories (`.wh..wh..opq` → xattr `trusted.overlay.opaque=y`).
//!
//! A layer is hostile until proven otherwise. Member names are resolved inside the layer root whatever
//! tool wrote them (absolute names and a `/` entry included, as containerd does); a `..` that climbs
//! above the root fails the layer; every entry is then opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from the layer directory, so paths through a symlink the layer made and hard
//! links to outside fail the layer too, and nothing is ever written outside it.
//! The uncompressed stream is hashed on the way and must match the config's diff ID.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use sha2::Digest;

use super::unpack_io::{HashReader, copy_big, copy_sparse, fset_xattr, set_xattr_at};
use crate::{Error, Result};

/// Per-layer bounds (`image.max_layer_unpacked_bytes`, `image.max_layer_entries`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The uncompressed tar stream, and the files' content at full size (holes included).
    pub bytes: u64,
    /// Tar entries.
    pub entries: u64,
}

impl Default for Limits {
    /// No bounds.
    fn default() -> Self {
        Limits {
            bytes: u64::MAX,
            entries: u64::MAX,
        }
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Clone, Default)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Inodes created (files, dirs, links, devices, whiteouts).
    pub inodes: u64,
}

/// The refusal of a hostile or corrupt layer.
fn refused(msg: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("layer refused: {msg}"))
}

/// The refusal of a layer past a per-layer limit.
fn too_large(msg: impl std::fmt::Display) -> Error {
    Error::ResourceExhausted(format!("layer refused: {msg}"))
}

fn over_bytes(max: u64) -> Error {
    too_large(format!(
        "it unpacks to more than {max} bytes (image.max_layer_unpacked_bytes)"
    ))
}

/// Unpacks the layer blob at `blob` into the empty directory `dest`; the uncompressed content must hash
/// to `expected_diff_id` (when given).
pub fn unpack_file(
    blob: &Path,
    dest: &Path,
    expected_diff_id: Option<&str>,
    limits: Limits,
) -> Result<Unpacked> {
    let f = File::open(blob).map_err(|e| Error::io(format!("open {}", blob.display()), e))?;
    unpack(
        BufReader::with_capacity(256 << 10, f),
        dest,
        expected_diff_id,
        limits,
    )
}

/// Unpacks a (possibly compressed) layer stream into the empty directory `dest`, within `limits`.
pub fn unpack<R: BufRead>(
    mut input: R,
    dest: &Path,
    expected_diff_id: Option<&str>,
    limits: Limits,
) -> Result<Unpacked> {
    let magic = input.fill_buf().map_err(|e| Error::io("read layer", e))?.to_vec();
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| Error::io("start zstd decoder", e))?,
        )
    } else {
        Box::new(input)
    };
    let mut hashed = HashReader::new(decoded, limits.bytes);
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {}", dest.display()), e.into()))?;
    let mut u = Unpacker {
        root,
        dest: dest.to_path_buf(),
        dirs: Vec::new(),
        parent_cache: None,
        out: Unpacked::default(),
        buf: vec![0; 256 << 10],
        limits,
        entries: 0,
        content: 0,
    };
    let res = (|| -> Result<()> {
        let mut archive = tar::Archive::new(&mut hashed);
        let entries = archive
            .entries()
            .map_err(|e| refused(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| refused(format!("corrupt tar stream: {e}")))?;
            u.entry(entry)?;
        }
        Ok(())
    })();
    // A read past the byte limit surfaces as whatever the tar reader made of it: say what it was.
    if hashed.over {
        return Err(over_bytes(limits.bytes));
    }
    res.map_err(|e| e.in_dir(dest))?;
    // Hash the rest (tar padding) so that the digest covers the whole stream.
    let rest = std::io::copy(&mut hashed, &mut std::io::sink());
    if hashed.over {
        return Err(over_bytes(limits.bytes));
    }
    rest.map_err(|e| refused(format!("corrupt layer stream: {e}")))?;
    u.finish_dirs();
    u.out.diff_id = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
    if let Some(want) = expected_diff_id
        && want != u.out.diff_id
    {
        return Err(refused(format!(
            "uncompressed content is {} but the image config says {want}",
            u.out.diff_id
        )));
    }
    Ok(u.out)
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    /// Directories and their mtimes, set at the end (entries below change them).
    dirs: Vec<(PathBuf, i64)>,
    /// The last parent directory opened.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    out: Unpacked,
    /// Copy buffer for file contents (large: fewer syscalls).
    buf: Vec<u8>,
    limits: Limits,
    /// Entries seen.
    entries: u64,
    /// File content seen, at full size.
    content: u64,
}

/// Owner, mode, mtime and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A tar member name resolved inside the layer root, as containerd and Docker read layers: a leading `/`
/// (absolute names, the `/` entry some tools write for the root) and `.` are dropped, and `a/../b` is
/// `b`. A `..` that would rise above the root refuses the layer: only a hostile tool writes one.
pub fn clean_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(refused(format!(
                        "entry {:?} climbs out of the layer root with \"..\"",
                        p.display().to_string()
                    )));
                }
            }
        }
    }
    Ok(out)
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

fn dir_how() -> OpenHow {
    OpenHow::new()
        // RESOLVE_NO_SYMLINKS covers the last component too (ELOOP, where O_NOFOLLOW would say ENOTDIR).
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(beneath())
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(too_large(format!(
                "it has more than {} entries (image.max_layer_entries)",
                self.limits.entries
            )));
        }
        let raw = e
            .path()
            .map_err(|err| refused(format!("bad entry path: {err}")))?
            .into_owned();
        let rel = clean_path(&raw)?;
        let shown = raw.display().to_string();
        let kind = e.header().entry_type();
        let meta = self.meta(&mut e)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            // "./": the layer root itself.
            if kind.is_dir() {
                self.apply_meta(&self.root_dup()?, OsStr::new("."), &meta, true)?;
                self.dirs.push((PathBuf::new(), meta.mtime));
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_b = name.as_bytes();
        if let Some(hidden) = name_b.strip_prefix(b".wh.") {
            let parent = self.parent(&parent_rel, &shown)?;
            if hidden == b".wh..opq" {
                set_xattr_at(&parent, OsStr::new("."), b"trusted.overlay.opaque", b"y")
                    .map_err(|err| Error::io(format!("mark {shown:?} opaque"), err))?;
            } else if hidden.starts_with(b".wh.") || hidden.is_empty() {
                // Other AUFS metadata (.wh..wh.plnk, ...): not part of the filesystem.
            } else {
                let target = OsStr::from_bytes(hidden);
                self.remove_existing(&parent, &parent_rel.join(target), false)?;
                nix::sys::stat::mknodat(&parent, target, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|err| Error::io(format!("whiteout {shown:?}"), err.into()))?;
                self.out.inodes += 1;
            }
            return Ok(());
        }
        let parent = self.parent(&parent_rel, &shown)?;
        let name = name.as_os_str();
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let keep = self.remove_existing(&parent, &rel, true)?;
                if !keep {
                    nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o700))
                        .map_err(|err| Error::io(format!("mkdir {shown:?}"), err.into()))?;
                    self.out.inodes += 1;
                }
                self.apply_meta(&parent, name, &meta, true)?;
                self.dirs.push((rel, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.remove_existing(&parent, &rel, false)?;
                let fd = nix::fcntl::openat(
                    &parent,
                    name,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| Error::io(format!("create {shown:?}"), err.into()))?;
                let mut f = File::from(fd);
                // Checked before writing: a sparse entry's holes cost reading, not disk.
                let size = e.size();
                self.content = self.content.saturating_add(size);
                if self.content > self.limits.bytes {
                    return Err(over_bytes(self.limits.bytes));
                }
                let n = if kind == T::GNUSparse {
                    copy_sparse(&mut e, &f, size, &mut self.buf)
                } else {
                    copy_big(&mut e, &mut f, &mut self.buf)
                }
                .map_err(|err| {
                    if crate::error::is_no_space(&err) {
                        Error::no_space(&format!("writing {shown:?}"), &err)
                    } else {
                        refused(format!("writing {shown:?}: {err}"))
                    }
                })?;
                self.out.bytes += n;
                self.out.inodes += 1;
                nix::unistd::fchown(&f, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
                    .map_err(|err| Error::io(format!("chown {shown:?}"), err.into()))?;
                nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(meta.mode))
                    .map_err(|err| Error::io(format!("chmod {shown:?}"), err.into()))?;
                for (k, v) in &meta.xattrs {
                    if let Err(err) = fset_xattr(&f, k, v) {
                        tracing::warn!(entry = %shown, xattr = %String::from_utf8_lossy(k), error = %err, "xattr not kept");
                    }
                }
                let t = TimeSpec::new(meta.mtime, 0);
                nix::sys::stat::futimens(&f, &t, &t)
                    .map_err(|err| Error::io(format!("set mtime of {shown:?}"), err.into()))?;
            }
            T::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|err| refused(format!("bad link target of {shown:?}: {err}")))?
                    .ok_or_else(|| refused(format!("symlink {shown:?} has no target")))?
                    .into_owned();
                self.remove_existing(&parent, &rel, false)?;
                nix::unistd::symlinkat(&target, &parent, name)
                    .map_err(|err| Error::io(format!("symlink {shown:?}"), err.into()))?;
                self.out.inodes += 1;
                self.apply_meta(&parent, name, &meta, false)?;
            }
            T::Link => {
                let target = e
                    .link_name()
                    .map_err(|err| refused(format!("bad link target of {shown:?}: {err}")))?
                    .ok_or_else(|| refused(format!("hard link {shown:?} has no target")))?
                    .into_owned();
                let trel = clean_path(&target)
                    .map_err(|err| refused(format!("hard link {shown:?} points outside the layer: {err}")))?;
                let tname = trel
                    .file_name()
                    .ok_or_else(|| refused(format!("hard link {shown:?} points at the layer root")))?
                    .to_os_string();
                let tparent = self.open_dir(trel.parent().unwrap_or(Path::new("")), &shown)?;
                if trel == rel {
                    return Ok(());
                }
                self.remove_existing(&parent, &rel, false)?;
                nix::unistd::linkat(&tparent, tname.as_os_str(), &parent, name, AtFlags::empty()).map_err(
                    |err| {
                        if err == Errno::ENOENT {
                            refused(format!(
                                "hard link {shown:?} points at {:?}, which the layer does not have",
                                target.display().to_string()
                            ))
                        } else {
                            Error::io(format!("hard link {shown:?}"), err.into())
                        }
                    },
                )?;
            }
            T::Char | T::Block | T::Fifo => {
                let (kind_flag, dev) = match kind {
                    T::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = e.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                        let f = if kind == T::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, nix::sys::stat::makedev(major.into(), minor.into()))
                    }
                };
                self.remove_existing(&parent, &rel, false)?;
                nix::sys::stat::mknodat(&parent, name, kind_flag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|err| Error::io(format!("mknod {shown:?}"), err.into()))?;
                self.out.inodes += 1;
                self.apply_meta(&parent, name, &meta, true)?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                tracing::warn!(entry = %shown, kind = ?other, "skipping tar entry of unsupported type");
            }
        }
        Ok(())
    }

    fn root_dup(&self) -> Result<OwnedFd> {
        self.root.try_clone().map_err(|e| Error::io("dup layer dir", e))
    }

    /// Owner, mode, mtime and xattrs, with PAX overrides.
    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let h = e.header();
        let mut m = Meta {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: h.mtime().unwrap_or(0) as i64,
            xattrs: Vec::new(),
        };
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                let key = ext.key_bytes();
                let val = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(val)
                        .ok()
                        .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    b"uid" => m.uid = num().unwrap_or(m.uid as i64) as u32,
                    b"gid" => m.gid = num().unwrap_or(m.gid as i64) as u32,
                    b"mtime" => m.mtime = num().unwrap_or(m.mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            // Overlay's own attributes come only from whiteout conversion, never from a layer.
                            if !name.starts_with(b"trusted.overlay.") {
                                m.xattrs.push((name.to_vec(), val.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    /// Owner, mode (not for symlinks), xattrs and mtime (not for dirs: later) of `parent/name`.
    fn apply_meta(&self, parent: &OwnedFd, name: &OsStr, m: &Meta, chmod: bool) -> Result<()> {
        let shown = || name.to_string_lossy().into_owned();
        nix::unistd::fchownat(
            parent,
            name,
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io(format!("chown {:?}", shown()), e.into()))?;
        if chmod {
            // The entry is ours and not a symlink (we just made it).
            nix::sys::stat::fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(m.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| Error::io(format!("chmod {:?}", shown()), e.into()))?;
        }
        for (k, v) in &m.xattrs {
            if let Err(e) = set_xattr_at(parent, name, k, v) {
                tracing::warn!(entry = %shown(), xattr = %String::from_utf8_lossy(k), error = %e, "xattr not kept");
            }
        }
        let t = TimeSpec::new(m.mtime, 0);
        nix::sys::stat::utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| Error::io(format!("set mtime of {:?}", shown()), e.into()))?;
        Ok(())
    }

    /// Opens an existing directory below the layer root, refusing symlinks anywhere on the way.
    fn open_dir(&self, rel: &Path, shown: &str) -> Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.root_dup();
        }
        nix::fcntl::openat2(&self.root, rel, dir_how()).map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => refused(format!(
                "entry {shown:?} goes through a symlink ({:?})",
                rel.display().to_string()
            )),
            Errno::ENOTDIR => refused(format!(
                "entry {shown:?}: {:?} is not a directory",
                rel.display().to_string()
            )),
            Errno::ENOENT => refused(format!(
                "entry {shown:?}: {:?} does not exist",
                rel.display().to_string()
            )),
            e => Error::io(format!("open {:?}", rel.display().to_string()), e.into()),
        })
    }

    /// The parent directory of an entry, created (0755, root) when the layer omits it.
    fn parent(&mut self, rel: &Path, shown: &str) -> Result<OwnedFd> {
        if let Some((p, fd)) = &self.parent_cache
            && p == rel
        {
            return fd.try_clone().map_err(|e| Error::io("dup dir", e));
        }
        let mut cur = self.root_dup()?;
        let mut sofar = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(c) = c else {
                return Err(refused(format!("entry {shown:?} has a bad path")));
            };
            sofar.push(c);
            let next = match nix::fcntl::openat2(&cur, c, dir_how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    nix::sys::stat::mkdirat(&cur, c, Mode::from_bits_truncate(0o755)).map_err(|e| {
                        Error::io(format!("mkdir {:?}", sofar.display().to_string()), e.into())
                    })?;
                    self.out.inodes += 1;
                    nix::fcntl::openat2(&cur, c, dir_how())
                        .map_err(|e| Error::io(format!("open {:?}", sofar.display().to_string()), e.into()))?
                }
                Err(Errno::ELOOP | Errno::EXDEV) => {
                    return Err(refused(format!(
                        "entry {shown:?} goes through the symlink {:?}",
                        sofar.display().to_string()
                    )));
                }
                Err(Errno::ENOTDIR) => {
                    return Err(refused(format!(
                        "entry {shown:?}: {:?} is not a directory",
                        sofar.display().to_string()
                    )));
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("open {:?}", sofar.display().to_string()),
                        e.into(),
                    ));
                }
            };
            cur = next;
        }
        let dup = cur.try_clone().map_err(|e| Error::io("dup dir", e))?;
        self.parent_cache = Some((rel.to_path_buf(), dup));
        Ok(cur)
    }

    /// Makes room for a new entry at `parent/<last of rel>`: removes what is there, except a directory
    /// when `want_dir` (returns true then: keep it).
    fn remove_existing(&mut self, parent: &OwnedFd, rel: &Path, want_dir: bool) -> Result<bool> {
        let Some(name) = rel.file_name() else {
            return Ok(want_dir);
        };
        let st = match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => {
                return Err(Error::io(
                    format!("stat {:?}", rel.display().to_string()),
                    e.into(),
                ));
            }
        };
        let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        if is_dir && want_dir {
            return Ok(true);
        }
        if is_dir {
            // The path's parents were resolved without symlinks just now, and only we write here.
            self.parent_cache = None;
            std::fs::remove_dir_all(self.dest.join(rel))
                .map_err(|e| Error::io(format!("remove {:?}", rel.display().to_string()), e))?;
        } else {
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| Error::io(format!("remove {:?}", rel.display().to_string()), e.into()))?;
        }
        Ok(false)
    }

    /// Sets directory mtimes, deepest first.
    fn finish_dirs(&mut self) {
        self.parent_cache = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, mtime) in dirs {
            let t = TimeSpec::new(mtime, 0);
            let r = if rel.as_os_str().is_empty() {
                nix::sys::stat::futimens(&self.root, &t, &t)
            } else {
                match nix::fcntl::openat2(&self.root, &rel, dir_how()) {
                    Ok(fd) => nix::sys::stat::futimens(&fd, &t, &t),
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = r {
                tracing::debug!(dir = %rel.display(), error = %e, "mtime not set");
            }
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
