//! The identity a container runs as: `/etc/passwd` and `/etc/group` read from the image layers (topmost
//! first, honouring whiteouts), and the resolution of CRI `run_as_user` / `run_as_username` /
//! `run_as_group` / supplemental groups (policy Merge or Strict) and of the image's `User`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses `/etc/passwd` text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses `/etc/group` text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `etc/<name>` from the image layers (`layers` lowest first), looking top-down: the first layer
/// that has the file wins; a whiteout (`.wh.<name>` file, or a 0/0 character device as overlayfs keeps
/// it) or an opaque `etc` hides the lower ones. Symlinks are not followed (they would resolve on the
/// host), so a symlinked `etc` or file reads as absent.
pub fn read_image_file(layers: &[PathBuf], name: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    for layer in layers.iter().rev() {
        let etc = layer.join("etc");
        if layer.join(".wh.etc").exists() {
            return None;
        }
        let Ok(meta) = std::fs::symlink_metadata(&etc) else {
            continue;
        };
        if !meta.is_dir() {
            return None;
        }
        let file = etc.join(name);
        if let Ok(m) = std::fs::symlink_metadata(&file) {
            let ft = m.file_type();
            if ft.is_file() {
                return std::fs::read_to_string(&file).ok();
            }
            if ft.is_char_device() || ft.is_symlink() || ft.is_dir() {
                return None;
            }
        }
        if etc.join(format!(".wh.{name}")).exists() || etc.join(".wh..wh..opq").exists() {
            return None;
        }
        if is_opaque(&etc) {
            return None;
        }
    }
    None
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and `buf` is valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// What the container asks for (CRI security context and the image's `User`).
#[derive(Debug, Clone, Default)]
pub struct UserRequest {
    pub run_as_user: Option<i64>,
    pub run_as_username: String,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// SupplementalGroupsPolicy Strict: no groups from the image's `/etc/group`.
    pub strict: bool,
    /// The image config's `User` (`name`, `uid`, `name:group`, `uid:gid`).
    pub image_user: String,
}

/// The resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary gid first (as containerd does).
    pub additional_gids: Vec<u32>,
    /// The user name when known (for `HOME` and group membership).
    pub name: Option<String>,
    pub home: Option<String>,
}

fn to_id(field: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(field, format!("{v} is not a valid id")))
}

/// Resolves the identity from the request and the image's `/etc/passwd` and `/etc/group` texts.
pub fn resolve(req: &UserRequest, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_group).unwrap_or_default();
    let sc = "config.linux.security_context";
    if req.run_as_group.is_some() && req.run_as_user.is_none() && req.run_as_username.is_empty() {
        // As the peers: a group alone would pair with whatever user the image names, which the pod
        // author did not choose.
        return Err(Error::invalid(
            format!("{sc}.run_as_group"),
            "is set without run_as_user or run_as_username",
        ));
    }
    let (uid, mut gid, entry) = if let Some(u) = req.run_as_user {
        let uid = to_id(&format!("{sc}.run_as_user"), u)?;
        let e = users.iter().find(|e| e.uid == uid).cloned();
        (uid, e.as_ref().map(|e| e.gid).unwrap_or(0), e)
    } else if !req.run_as_username.is_empty() {
        let e = users
            .iter()
            .find(|e| e.name == req.run_as_username)
            .cloned()
            .ok_or_else(|| {
                Error::invalid(
                    format!("{sc}.run_as_username"),
                    format!(
                        "user {:?} not found in the image's /etc/passwd",
                        req.run_as_username
                    ),
                )
            })?;
        (e.uid, e.gid, Some(e))
    } else {
        image_user(&req.image_user, &users, &groups)?
    };
    if let Some(g) = req.run_as_group {
        gid = to_id(&format!("{sc}.run_as_group"), g)?;
    }
    let mut additional = vec![gid];
    if !req.strict
        && let Some(e) = &entry
    {
        for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
            additional.push(g.gid);
        }
    }
    for g in &req.supplemental_groups {
        additional.push(to_id(&format!("{sc}.supplemental_groups"), *g)?);
    }
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        name: entry.as_ref().map(|e| e.name.clone()),
        home: entry.map(|e| e.home),
    })
}

/// One part (user or group) of an image config's `User`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    /// All digits: exactly this id.
    Id(u32),
    /// Anything else: a name, looked up only in the image's own `/etc/passwd` or `/etc/group`.
    Name(String),
}

/// An image config's `User` (`""`, `user`, `user:group`, each part an id or a name), parsed. The one
/// reading of it that both ImageStatus (what kubelet checks `runAsNonRoot` against) and
/// CreateContainer (what the container runs as) use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// `None`: the image names no user (root).
    pub user: Option<IdSpec>,
    pub group: Option<IdSpec>,
}

/// The field image-user refusals name.
const IMAGE_USER: &str = "image config User";

fn id_spec(spec: &str, part: &str, what: &str) -> Result<IdSpec> {
    if part.is_empty() {
        return Err(Error::invalid(
            IMAGE_USER,
            format!("{spec:?} has an empty {what}"),
        ));
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(IdSpec::Name(part.to_string()));
    }
    // A numeric part is an id or nothing: never a name to look up (a passwd entry named
    // "4294967296" with uid 0 must not turn an out-of-range uid into root).
    part.parse::<u32>().map(IdSpec::Id).map_err(|_| {
        Error::invalid(
            IMAGE_USER,
            format!("{spec:?}: {part:?} is not a valid {what} id (a numeric {what} is 0 to 4294967295)"),
        )
    })
}

/// Parses an image config's `User`. A part made of digits only must be an exact 32-bit id; anything
/// else is a name. An empty part around `:` is refused.
pub fn parse_image_user(spec: &str) -> Result<ImageUser> {
    if spec.is_empty() {
        return Ok(ImageUser::default());
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    Ok(ImageUser {
        user: Some(id_spec(spec, u, "user")?),
        group: g.map(|g| id_spec(spec, g, "group")).transpose()?,
    })
}

/// What ImageStatus reports for an image config's `User`: the uid the container will run as when the
/// image gives it, else the user name (crust does not resolve names there: kubelet refuses
/// `runAsNonRoot` for a name it cannot check, and critest expects the name with no uid). An unusable
/// `User` is reported as a name too, never as a uid: CreateContainer refuses it.
pub fn image_user_status(spec: &str) -> (Option<u32>, String) {
    match parse_image_user(spec) {
        Ok(ImageUser { user: None, .. }) => (None, String::new()),
        Ok(ImageUser {
            user: Some(IdSpec::Id(uid)),
            ..
        }) => (Some(uid), String::new()),
        Ok(ImageUser {
            user: Some(IdSpec::Name(name)),
            ..
        }) => (None, name),
        Err(_) => (None, spec.split(':').next().unwrap_or("").to_string()),
    }
}

/// The image config's `User` resolved against the image's `/etc/passwd` and `/etc/group`.
fn image_user(
    spec: &str,
    users: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<(u32, u32, Option<PasswdEntry>)> {
    let parsed = parse_image_user(spec)?;
    let (uid, entry) = match &parsed.user {
        None => (0, users.iter().find(|e| e.uid == 0).cloned()),
        Some(IdSpec::Id(uid)) => (*uid, users.iter().find(|e| e.uid == *uid).cloned()),
        Some(IdSpec::Name(u)) => {
            let e = users.iter().find(|e| &e.name == u).cloned().ok_or_else(|| {
                Error::invalid(
                    IMAGE_USER,
                    format!("user {u:?} not found in the image's /etc/passwd"),
                )
            })?;
            (e.uid, Some(e))
        }
    };
    let gid = match &parsed.group {
        None => entry.as_ref().map(|e| e.gid).unwrap_or(0),
        Some(IdSpec::Id(gid)) => *gid,
        Some(IdSpec::Name(g)) => groups
            .iter()
            .find(|e| &e.name == g)
            .map(|e| e.gid)
            .ok_or_else(|| {
                Error::invalid(
                    IMAGE_USER,
                    format!("group {g:?} not found in the image's /etc/group"),
                )
            })?,
    };
    Ok((uid, gid, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\nstaff:x:50:bob\naudio:x:63:alice\n";

    fn req() -> UserRequest {
        UserRequest::default()
    }

    #[test]
    fn run_as_user_takes_gid_from_passwd_and_merges_groups() {
        let r = resolve(
            &UserRequest {
                run_as_user: Some(1000),
                supplemental_groups: vec![4000],
                ..req()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![1000, 10, 63, 4000]);
        assert_eq!(r.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn strict_policy_ignores_etc_group() {
        let r = resolve(
            &UserRequest {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                supplemental_groups: vec![4000],
                strict: true,
                ..req()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        assert_eq!((r.uid, r.gid), (1000, 3000));
        assert_eq!(r.additional_gids, vec![3000, 4000]);
    }

    #[test]
    fn run_as_group_alone_is_refused_naming_the_field() {
        let e = resolve(
            &UserRequest {
                run_as_group: Some(3000),
                image_user: "alice".into(),
                ..req()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("config.linux.security_context.run_as_group:"),
            "{s}"
        );
        let with_name = UserRequest {
            run_as_group: Some(3000),
            run_as_username: "alice".into(),
            ..req()
        };
        assert_eq!(resolve(&with_name, Some(PASSWD), Some(GROUP)).unwrap().gid, 3000);
    }

    #[test]
    fn unknown_uid_has_gid_zero() {
        let r = resolve(
            &UserRequest {
                run_as_user: Some(4242),
                ..req()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids.clone()), (4242, 0, vec![0]));
    }

    #[test]
    fn run_as_username_resolves_and_unknown_names_fail() {
        let r = resolve(
            &UserRequest {
                run_as_username: "nobody".into(),
                ..req()
            },
            Some(PASSWD),
            Some(GROUP),
        )
        .unwrap();
        assert_eq!((r.uid, r.gid), (65534, 65534));
        let e = resolve(
            &UserRequest {
                run_as_username: "mallory".into(),
                ..req()
            },
            Some(PASSWD),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("run_as_username"), "{e}");
    }

    #[test]
    fn image_user_forms() {
        let r = |u: &str| {
            resolve(
                &UserRequest {
                    image_user: u.into(),
                    ..req()
                },
                Some(PASSWD),
                Some(GROUP),
            )
        };
        assert_eq!(r("").unwrap().uid, 0);
        assert_eq!((r("alice").unwrap().uid, r("alice").unwrap().gid), (1000, 1000));
        assert_eq!((r("1000:50").unwrap().uid, r("1000:50").unwrap().gid), (1000, 50));
        assert_eq!(r("alice:wheel").unwrap().gid, 10);
        assert_eq!(r("7:7").unwrap().additional_gids, vec![7]);
        assert!(r("bob").is_err());
        assert!(r("alice:nogroup").is_err());
    }

    #[test]
    fn a_numeric_user_is_an_exact_uid_never_a_name() {
        // CVE-2024-40635's class: a passwd entry named like an out-of-range uid, with uid 0.
        let passwd = format!("{PASSWD}4294967296:x:0:0::/root:/bin/sh\n");
        let group = format!("{GROUP}4294967296:x:0:\n");
        let r = |u: &str| {
            resolve(
                &UserRequest {
                    image_user: u.into(),
                    ..req()
                },
                Some(&passwd),
                Some(&group),
            )
        };
        for bad in ["4294967296", "99999999999999999999", "1000:4294967296"] {
            let e = r(bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument { field, .. } if field == "image config User"),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains(bad.split(':').next_back().unwrap()), "{e}");
        }
        assert_eq!(r("4294967295").unwrap().uid, u32::MAX);
        assert!(r(":50").is_err() && r("1000:").is_err());
        // "+1000" is not all digits: a name, absent from passwd.
        assert!(r("+1000").is_err());
    }

    #[test]
    fn image_status_reports_what_create_runs() {
        assert_eq!(image_user_status(""), (None, String::new()));
        assert_eq!(image_user_status("1000"), (Some(1000), String::new()));
        assert_eq!(image_user_status("1000:50"), (Some(1000), String::new()));
        assert_eq!(image_user_status("alice"), (None, "alice".into()));
        assert_eq!(image_user_status("www-data:1004"), (None, "www-data".into()));
        assert_eq!(image_user_status("4294967296"), (None, "4294967296".into()));
        assert_eq!(image_user_status("4294967296:0"), (None, "4294967296".into()));
    }

    #[test]
    fn layers_are_read_top_down_with_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let l0 = d.path().join("0");
        let l1 = d.path().join("1");
        let l2 = d.path().join("2");
        for l in [&l0, &l1, &l2] {
            std::fs::create_dir_all(l.join("etc")).unwrap();
        }
        std::fs::write(l0.join("etc/passwd"), "low").unwrap();
        std::fs::write(l0.join("etc/group"), "g").unwrap();
        std::fs::write(l1.join("etc/passwd"), "mid").unwrap();
        std::fs::write(l2.join("etc/.wh.group"), "").unwrap();
        let layers = vec![l0.clone(), l1.clone(), l2.clone()];
        assert_eq!(read_image_file(&layers, "passwd").as_deref(), Some("mid"));
        assert_eq!(read_image_file(&layers, "group"), None);
        assert_eq!(read_image_file(&layers[..1], "group").as_deref(), Some("g"));
        std::os::unix::fs::symlink("/etc/passwd", l2.join("etc/passwd")).unwrap();
        assert_eq!(read_image_file(&layers, "passwd"), None);
    }
}
