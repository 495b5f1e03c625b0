//! `signedIdentity`: which image name written in a signature (its `docker-reference`) is accepted for
//! the image being pulled, with containers/image's six rules.

use serde::Deserialize;

use crate::image::reference::Reference;

/// How the signed name must relate to the pulled one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Identity {
    /// The same name and tag (or digest).
    MatchExact,
    /// Pulled by tag: the same name and tag; pulled by digest: the same repository (the digest itself
    /// is checked against the signed one anyway). containers/image's default.
    #[default]
    MatchRepoDigestOrExact,
    /// The same repository, whatever the tag (cosign signs the repository alone, so only this and
    /// `exactRepository` accept cosign's own signatures).
    MatchRepository,
    /// This name and tag or digest, whatever is pulled.
    #[serde(rename_all = "camelCase")]
    ExactReference { docker_reference: String },
    /// This repository, whatever is pulled.
    #[serde(rename_all = "camelCase")]
    ExactRepository { docker_repository: String },
    /// The pulled name with `prefix` replaced by `signed_prefix`, then `matchRepoDigestOrExact`.
    #[serde(rename_all = "camelCase")]
    RemapIdentity { prefix: String, signed_prefix: String },
}

/// A name as a signature or a policy writes it, normalised (`busybox` → `docker.io/library/busybox`).
#[derive(Debug)]
struct Named {
    name: String,
    /// Neither tag nor digest was written.
    name_only: bool,
    /// The full form: `name:tag`, `name@digest`, or both.
    full: String,
}

fn named(s: &str) -> Option<Named> {
    let name_only = !s.contains('@') && !s.rsplit('/').next().is_some_and(|last| last.contains(':'));
    let r = Reference::parse(s).ok()?;
    Some(Named {
        name: r.name(),
        name_only,
        full: r.to_string(),
    })
}

/// A prefix of `remapIdentity`: a host, namespace or repository without tag or digest.
fn is_prefix(s: &str) -> bool {
    if !s.contains('/') {
        return !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    }
    named(s).is_some_and(|n| n.name_only && n.name == s)
}

impl Identity {
    /// The rule's name as a policy writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Identity::MatchExact => "matchExact",
            Identity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            Identity::MatchRepository => "matchRepository",
            Identity::ExactReference { .. } => "exactReference",
            Identity::ExactRepository { .. } => "exactRepository",
            Identity::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// What containers/image refuses at load.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            Identity::ExactReference { docker_reference } => match named(docker_reference) {
                Some(n) if !n.name_only => Ok(()),
                _ => Err(format!(
                    "dockerReference {docker_reference:?} must be a name with a tag or digest"
                )),
            },
            Identity::ExactRepository { docker_repository } => match named(docker_repository) {
                Some(n) if n.name_only => Ok(()),
                _ => Err(format!(
                    "dockerRepository {docker_repository:?} must be a repository name"
                )),
            },
            Identity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                if is_prefix(prefix) && is_prefix(signed_prefix) {
                    Ok(())
                } else {
                    Err(format!(
                        "remapIdentity's prefix {prefix:?} and signedPrefix {signed_prefix:?} must be a host, namespace or repository in full form"
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// Whether a signature naming `signed` is accepted for the pulled `image`.
    pub fn accepts(&self, image: &Reference, signed: &str) -> bool {
        let Some(sig) = named(signed) else { return false };
        let intended = super::image_identity(image);
        match self {
            Identity::MatchExact => !sig.name_only && sig.full == intended,
            Identity::MatchRepoDigestOrExact => repo_digest_or_exact(image, &image.name(), &intended, &sig),
            Identity::MatchRepository => sig.name == image.name(),
            Identity::ExactReference { docker_reference } => {
                named(docker_reference).is_some_and(|want| !sig.name_only && sig.full == want.full)
            }
            Identity::ExactRepository { docker_repository } => {
                named(docker_repository).is_some_and(|want| sig.name == want.name)
            }
            Identity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let name = image.name();
                let remapped = match name.strip_prefix(prefix.as_str()) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        format!("{signed_prefix}{rest}")
                    }
                    _ => name,
                };
                let intended = match (&image.digest, &image.tag) {
                    (Some(d), _) => format!("{remapped}@{d}"),
                    (None, Some(t)) => format!("{remapped}:{t}"),
                    (None, None) => remapped.clone(),
                };
                repo_digest_or_exact(image, &remapped, &intended, &sig)
            }
        }
    }
}

/// `matchRepoDigestOrExact` for the pulled image known as `name` / `intended`.
fn repo_digest_or_exact(image: &Reference, name: &str, intended: &str, sig: &Named) -> bool {
    if sig.name_only {
        return false;
    }
    if image.digest.is_some() {
        sig.name == name
    } else {
        sig.full == intended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_rules() {
        let d = format!("sha256:{}", "b".repeat(64));
        let tagged = Reference::parse("reg.example.com/team/app:v1").unwrap();
        let digested = Reference::parse(&format!("reg.example.com/team/app@{d}")).unwrap();
        let def = Identity::default();
        assert!(def.accepts(&tagged, "reg.example.com/team/app:v1"));
        assert!(!def.accepts(&tagged, "reg.example.com/team/app:v2"));
        assert!(
            !def.accepts(&tagged, "reg.example.com/team/app"),
            "cosign's repository-only name"
        );
        assert!(def.accepts(&digested, "reg.example.com/team/app:v9"));
        assert!(!def.accepts(&digested, "reg.example.com/team/other:v1"));
        assert!(!def.accepts(&digested, "reg.example.com/team/app"));
        let exact = Identity::MatchExact;
        assert!(exact.accepts(&tagged, "reg.example.com/team/app:v1"));
        assert!(!exact.accepts(&digested, "reg.example.com/team/app:v1"));
        assert!(exact.accepts(&digested, &format!("reg.example.com/team/app@{d}")));
        let repo = Identity::MatchRepository;
        assert!(repo.accepts(&tagged, "reg.example.com/team/app"));
        assert!(repo.accepts(&digested, "reg.example.com/team/app:v3"));
        assert!(!repo.accepts(&tagged, "reg.example.com/team/app2"));
        let busybox = Reference::parse("busybox:1.36").unwrap();
        assert!(def.accepts(&busybox, "docker.io/library/busybox:1.36"));
        let er = Identity::ExactReference {
            docker_reference: "quay.io/x/y:1".into(),
        };
        assert!(er.accepts(&tagged, "quay.io/x/y:1"));
        assert!(!er.accepts(&tagged, "quay.io/x/y"));
        let erepo = Identity::ExactRepository {
            docker_repository: "quay.io/x/y".into(),
        };
        assert!(erepo.accepts(&tagged, "quay.io/x/y"));
        assert!(erepo.accepts(&tagged, "quay.io/x/y:7"));
        let remap = Identity::RemapIdentity {
            prefix: "reg.example.com/team".into(),
            signed_prefix: "quay.io/upstream".into(),
        };
        assert!(remap.accepts(&tagged, "quay.io/upstream/app:v1"));
        assert!(!remap.accepts(&tagged, "reg.example.com/team/app:v1"));
        assert!(remap.check().is_ok());
        let bad = Identity::RemapIdentity {
            prefix: "reg.example.com/team:v1".into(),
            signed_prefix: "quay.io".into(),
        };
        assert!(bad.check().is_err());
    }
}
