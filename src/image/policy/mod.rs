//! The image trust policy: a `containers-policy.json(5)` file (the format CRI-O and Podman read) that
//! says, per registry, namespace, repository or image, what an image needs before a pull may store it:
//! nothing (`insecureAcceptAnything`), never (`reject`), or a cosign signature made with a given key
//! (`sigstoreSigned`, see `cosign`). `image.signature_policy` names the file; a pod's namespace may
//! have its own under `image.signature_policy_dir` (`<dir>/<namespace>.json`, as CRI-O does). The file
//! is read at each pull, so an edit applies to the next one.

mod cosign;
mod identity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;
use super::registry::Session;
use crate::config::Config;
use crate::{Error, Result};
pub use identity::Identity;

/// The transport whose scopes apply to registry pulls.
const DOCKER: &str = "docker";

/// A parsed policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What applies where no transport scope does.
    pub default: Vec<Requirement>,
    /// Transport name → scope (`""` for the transport's own default) → requirements.
    #[serde(default)]
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement; an image must meet every requirement of its scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SigstoreSigned(Box<Sigstore>),
    /// GPG "simple signing": read so that a policy written for CRI-O loads, but an image whose scope
    /// requires it is refused (crust verifies no GPG signatures).
    SignedBy(serde_json::Map<String, serde_json::Value>),
    /// `signedBaseLayer`: likewise read, and refused where it applies.
    SignedBaseLayer(serde_json::Map<String, serde_json::Value>),
}

/// `sigstoreSigned`: the public keys (exactly one of the four sources) and the identity wanted.
/// Fulcio, PKI and Rekor fields are read so that such a policy loads, but refused where they apply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sigstore {
    pub key_path: Option<PathBuf>,
    pub key_paths: Option<Vec<PathBuf>>,
    /// Base64 of a PEM public key.
    pub key_data: Option<String>,
    pub key_datas: Option<Vec<String>>,
    pub fulcio: Option<serde_json::Value>,
    pub pki: Option<serde_json::Value>,
    pub rekor_public_key_path: Option<serde_json::Value>,
    pub rekor_public_key_paths: Option<serde_json::Value>,
    pub rekor_public_key_data: Option<serde_json::Value>,
    pub rekor_public_key_datas: Option<serde_json::Value>,
    #[serde(default)]
    pub signed_identity: Identity,
}

/// Reads and checks a policy file. Errors name the file.
pub fn load(path: &Path) -> Result<Policy> {
    let bad = |msg: String| Error::FailedPrecondition(format!("signature policy {}: {msg}", path.display()));
    let raw = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let p: Policy = serde_json::from_slice(&raw).map_err(|e| bad(format!("is not a valid policy: {e}")))?;
    p.check().map_err(bad)?;
    Ok(p)
}

impl Policy {
    /// What containers/image refuses at load: an empty requirement list, a `sigstoreSigned` with no
    /// or several key sources, a malformed `docker` scope.
    fn check(&self) -> std::result::Result<(), String> {
        let mut all = vec![("default".to_string(), &self.default)];
        for (t, scopes) in &self.transports {
            for (s, reqs) in scopes {
                if t == DOCKER && !s.is_empty() {
                    check_scope(s).map_err(|m| format!("scope {s:?} of transport {t}: {m}"))?;
                }
                all.push((format!("transports.{t}.{s:?}"), reqs));
            }
        }
        for (at, reqs) in all {
            if reqs.is_empty() {
                return Err(format!("{at}: a requirement list must not be empty"));
            }
            for r in reqs {
                if let Requirement::SigstoreSigned(s) = r {
                    let sources = [
                        s.key_path.is_some(),
                        s.key_paths.is_some(),
                        s.key_data.is_some(),
                        s.key_datas.is_some(),
                        s.fulcio.is_some(),
                        s.pki.is_some(),
                    ];
                    if sources.iter().filter(|x| **x).count() != 1 {
                        return Err(format!(
                            "{at}: sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki"
                        ));
                    }
                    s.signed_identity.check().map_err(|m| format!("{at}: {m}"))?;
                }
            }
        }
        Ok(())
    }

    /// The requirements for an image pulled from a registry and the scope they come from: the most
    /// specific `docker` scope (the image, its repository, each parent namespace, its host, then
    /// `*.domain` wildcards), else the transport's `""`, else `default` (containers/image's order).
    pub fn requirements_for(&self, r: &Reference) -> (String, &[Requirement]) {
        if let Some(scopes) = self.transports.get(DOCKER) {
            for s in std::iter::once(image_identity(r)).chain(namespaces(r)) {
                if let Some(reqs) = scopes.get(&s) {
                    return (format!("transports.docker {s:?}"), reqs);
                }
            }
            if let Some(reqs) = scopes.get("") {
                return ("transports.docker \"\"".into(), reqs);
            }
        }
        ("default".into(), &self.default)
    }
}

/// A `docker` scope: a host, namespace, repository or image in full form, or `*.domain`.
fn check_scope(s: &str) -> std::result::Result<(), String> {
    if let Some(domain) = s.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['*', '/', ':']) {
            return Err("a wildcard scope is *.domain, without port or path".into());
        }
        return Ok(());
    }
    if s.contains('*') {
        return Err("a wildcard may only begin the scope, as *.domain".into());
    }
    let host = s.split('/').next().unwrap_or("");
    if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err("must begin with a registry host (fully expanded: docker.io/library/busybox)".into());
    }
    if s.contains('/') {
        let full = if s.contains('@') || s.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            s.to_string()
        } else {
            format!("{s}:latest")
        };
        let r = Reference::parse(&full).map_err(|e| e.to_string())?;
        if r.registry != host {
            return Err("must be in fully expanded form".into());
        }
    }
    Ok(())
}

/// The image's own scope: `name:tag`, or `name@digest` when pulled by digest (a tag beside a digest is
/// dropped: the digest is what is pulled).
pub fn image_identity(r: &Reference) -> String {
    match (&r.digest, &r.tag) {
        (Some(d), _) => r.with_digest(d),
        (None, Some(t)) => format!("{}:{t}", r.name()),
        (None, None) => r.name(),
    }
}

/// The wider scopes of an image, most specific first: its repository, each parent namespace up to the
/// host (with its port), then `*.` and each parent domain of the host without its port.
fn namespaces(r: &Reference) -> Vec<String> {
    let mut out = Vec::new();
    let mut name = r.name();
    loop {
        out.push(name.clone());
        match name.rfind('/') {
            Some(i) => name.truncate(i),
            None => break,
        }
    }
    let mut host = match name.find(':') {
        Some(i) => &name[..i],
        None => &name[..],
    };
    while let Some(i) = host.find('.') {
        host = &host[i + 1..];
        out.push(format!("*.{host}"));
    }
    out
}

/// The policy file for a pull: the pod namespace's own (`<signature_policy_dir>/<namespace>.json`) when
/// it exists, else `image.signature_policy`; none when neither is set (every image accepted).
pub fn path_for(cfg: &Config, namespace: &str) -> Result<Option<PathBuf>> {
    let dir = &cfg.image.signature_policy_dir;
    if !dir.as_os_str().is_empty() && !namespace.is_empty() {
        // The namespace names a file: only a plain name (Kubernetes namespaces are DNS labels).
        if namespace == "." || namespace == ".." || namespace.contains(['/', '\0']) {
            return Err(Error::invalid(
                "sandbox_config.metadata.namespace",
                format!("{namespace:?} cannot name a policy file under image.signature_policy_dir"),
            ));
        }
        let p = dir.join(format!("{namespace}.json"));
        match std::fs::metadata(&p) {
            Ok(_) => return Ok(Some(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // CRI-O fails the pull too when the namespace's file cannot be looked at.
            Err(e) => {
                return Err(Error::FailedPrecondition(format!(
                    "signature policy {}: cannot be read: {e}",
                    p.display()
                )));
            }
        }
    }
    let global = &cfg.image.signature_policy;
    Ok((!global.as_os_str().is_empty()).then(|| global.clone()))
}

/// Logs, at start-up and reload, a configured policy file that cannot be used (pulls then fail naming
/// it, as CRI-O's do; crustd still starts).
pub fn warn_if_unusable(cfg: &Config) {
    let p = &cfg.image.signature_policy;
    if p.as_os_str().is_empty() {
        return;
    }
    match load(p) {
        Ok(_) => tracing::info!(policy = %p.display(), "image signature policy in effect"),
        Err(e) => tracing::error!(error = %e, "every pull will fail until the signature policy is fixed"),
    }
}

/// Checks an image about to be pulled (`top`: the digest the reference resolved to, index or manifest)
/// against the policy file `path`. Runs before anything of the image is stored; a refusal is
/// `FailedPrecondition` naming the file, the scope and the reason.
pub async fn check(path: &Path, r: &Reference, s: &Session, top: &str) -> Result<()> {
    let policy = load(path)?;
    let (scope, reqs) = policy.requirements_for(r);
    let refuse = |why: String| {
        Error::FailedPrecondition(format!(
            "refused by the signature policy {} (scope {scope}): {why}",
            path.display()
        ))
    };
    let mut signatures = None;
    for req in reqs {
        match req {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => return Err(refuse("the scope rejects every image".into())),
            Requirement::SignedBy(_) => {
                return Err(refuse(
                    "signedBy (GPG) signatures are not supported by crust".into(),
                ));
            }
            Requirement::SignedBaseLayer(_) => {
                return Err(refuse("signedBaseLayer is not supported by crust".into()));
            }
            Requirement::SigstoreSigned(want) => {
                let keys = cosign::keys(want).map_err(refuse)?;
                if signatures.is_none() {
                    signatures = Some(cosign::fetch(s, top).await?);
                }
                let sigs = signatures.as_deref().unwrap_or_default();
                cosign::accept(&keys, sigs, r, top, &want.signed_identity).map_err(refuse)?;
            }
        }
    }
    tracing::debug!(image = %r, policy = %path.display(), scope = %scope, "accepted by the signature policy");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> std::result::Result<Policy, String> {
        let p: Policy = serde_json::from_str(json).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    #[test]
    fn the_most_specific_docker_scope_wins() {
        let p = policy(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "":[{"type":"reject"}],
                "reg.example.com:5000":[{"type":"insecureAcceptAnything"}],
                "reg.example.com:5000/team":[{"type":"reject"}],
                "reg.example.com:5000/team/app":[{"type":"insecureAcceptAnything"}],
                "reg.example.com:5000/team/app:v1":[{"type":"reject"}],
                "*.example.com":[{"type":"insecureAcceptAnything"}]
            }}}"#,
        )
        .unwrap();
        let scope = |s: &str| p.requirements_for(&Reference::parse(s).unwrap()).0;
        assert_eq!(
            scope("reg.example.com:5000/team/app:v1"),
            "transports.docker \"reg.example.com:5000/team/app:v1\""
        );
        assert_eq!(
            scope("reg.example.com:5000/team/app:v2"),
            "transports.docker \"reg.example.com:5000/team/app\""
        );
        assert_eq!(
            scope("reg.example.com:5000/team/other"),
            "transports.docker \"reg.example.com:5000/team\""
        );
        assert_eq!(
            scope("reg.example.com:5000/x"),
            "transports.docker \"reg.example.com:5000\""
        );
        assert_eq!(
            scope("other.example.com/x"),
            "transports.docker \"*.example.com\""
        );
        assert_eq!(scope("busybox"), "transports.docker \"\"");
        let d = format!("reg.example.com:5000/team/app@sha256:{}", "a".repeat(64));
        assert_eq!(scope(&d), "transports.docker \"reg.example.com:5000/team/app\"");
        let p = policy(r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        assert_eq!(
            p.requirements_for(&Reference::parse("busybox").unwrap()).0,
            "default"
        );
    }

    #[test]
    fn malformed_policies_are_refused() {
        for (json, want) in [
            (r#"{}"#, "missing field `default`"),
            (r#"{"default":[]}"#, "must not be empty"),
            (r#"{"default":[{"type":"bogus"}]}"#, "unknown variant"),
            (r#"{"default":[{"type":"reject"}],"extra":1}"#, "unknown field"),
            (r#"{"default":[{"type":"sigstoreSigned"}]}"#, "exactly one of"),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"eA=="}]}"#,
                "exactly one of",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"busybox":[{"type":"reject"}]}}}"#,
                "registry host",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a*.com":[{"type":"reject"}]}}}"#,
                "wildcard",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactReference"}}]}"#,
                "dockerReference",
            ),
        ] {
            let e = policy(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
        let ok = r#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "docker.io/library/busybox:1.36":[{"type":"sigstoreSigned","keyPath":"/k",
                "signedIdentity":{"type":"matchRepository"}}],
            "quay.io":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/g"}]},
            "docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}"#;
        policy(ok).unwrap();
    }
}
