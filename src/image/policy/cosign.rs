//! Cosign's key-based signatures: found as the OCI manifest tagged `sha256-<hex>.sig` beside the image
//! (through the same registry session: mirrors, auth and retries as the pull), one simple-signing
//! payload per layer with its ECDSA P-256 / SHA-256 signature (ASN.1 DER, base64) in the layer's
//! `dev.cosignproject.cosign/signature` annotation. A signature counts when it verifies with a key of
//! the policy, names the digest the image reference resolved to, and names an identity the policy's
//! `signedIdentity` accepts.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

use super::{Identity, Sigstore};
use crate::image::reference::Reference;
use crate::image::registry::{self, Session};
use crate::{Error, Result};

/// The media type of a signature layer (its blob is the signed payload).
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Signatures looked at per image, and the largest payload fetched (cosign's are a few hundred bytes).
const MAX_SIGNATURES: usize = 64;
const MAX_PAYLOAD: u64 = 64 << 10;

/// A signature as the registry gave it, not yet verified.
pub struct Untrusted {
    payload: Vec<u8>,
    signature: Option<String>,
}

/// The `.sig` manifest's parts crust reads.
#[derive(Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigLayer {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// The simple-signing payload.
#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: SignedImage,
    identity: SignedIdentity,
}

#[derive(Deserialize)]
struct SignedImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
struct SignedIdentity {
    #[serde(rename = "docker-reference")]
    reference: String,
}

/// The requirement's public keys. Key sources crust cannot check (Fulcio, PKI, Rekor) are refused.
pub fn keys(want: &Sigstore) -> std::result::Result<Vec<VerifyingKey>, String> {
    if want.fulcio.is_some() || want.pki.is_some() {
        return Err(
            "sigstoreSigned with fulcio or pki certificates is not supported by crust (only public keys)"
                .into(),
        );
    }
    if want.rekor_public_key_path.is_some()
        || want.rekor_public_key_paths.is_some()
        || want.rekor_public_key_data.is_some()
        || want.rekor_public_key_datas.is_some()
    {
        return Err("sigstoreSigned with a Rekor public key is not supported by crust".into());
    }
    let mut out = Vec::new();
    let paths = want.key_path.iter().chain(want.key_paths.iter().flatten());
    for p in paths {
        let pem = std::fs::read_to_string(p)
            .map_err(|e| format!("the public key {} cannot be read: {e}", p.display()))?;
        out.push(parse_key(&pem).map_err(|e| format!("the public key {}: {e}", p.display()))?);
    }
    let datas = want.key_data.iter().chain(want.key_datas.iter().flatten());
    for (i, d) in datas.enumerate() {
        let pem = STANDARD
            .decode(d.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("keyData #{} is not base64 of a PEM public key", i + 1))?;
        out.push(parse_key(&pem).map_err(|e| format!("keyData #{}: {e}", i + 1))?);
    }
    Ok(out)
}

fn parse_key(pem: &str) -> std::result::Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
        format!("not a PEM ECDSA P-256 public key (the kind `cosign generate-key-pair` makes): {e}")
    })
}

/// The signatures stored beside the image whose manifest (or index) has digest `top`; none when the
/// registry has no `sha256-<hex>.sig`.
pub async fn fetch(s: &Session, top: &str) -> Result<Vec<Untrusted>> {
    let tag = signature_tag(top);
    let m = match s.manifest(&tag).await {
        Ok(m) => m,
        Err(Error::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.context(format!("the image's signatures ({tag})"))),
    };
    let sm: SigManifest = serde_json::from_slice(&m.body)
        .map_err(|e| Error::FailedPrecondition(format!("the signature manifest {tag} is not valid: {e}")))?;
    let mut out = Vec::new();
    for l in sm.layers.into_iter().filter(|l| l.media_type == SIMPLE_SIGNING) {
        if out.len() == MAX_SIGNATURES {
            tracing::warn!(tag = %tag, "more than {MAX_SIGNATURES} signatures; the rest are not looked at");
            break;
        }
        if !crate::image::reference::is_digest(&l.digest) {
            continue;
        }
        let size = (l.size > 0).then_some(l.size);
        let payload = registry::fetch_small(s, &l.digest, "signature payload", size, MAX_PAYLOAD).await?;
        out.push(Untrusted {
            payload,
            signature: l.annotations.get(SIGNATURE_ANNOTATION).cloned(),
        });
    }
    Ok(out)
}

/// `sha256-<hex>.sig`: where cosign stores the signatures of the manifest with digest `digest`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Whether one of `sigs` is accepted for `image` (resolved to `top`); else why not.
pub fn accept(
    keys: &[VerifyingKey],
    sigs: &[Untrusted],
    image: &Reference,
    top: &str,
    identity: &Identity,
) -> std::result::Result<(), String> {
    if sigs.is_empty() {
        return Err(format!(
            "a signature is required, but the registry has none ({} is absent or holds no signature)",
            signature_tag(top)
        ));
    }
    let mut why = Vec::new();
    for s in sigs {
        match verify(keys, s, image, top, identity) {
            Ok(()) => return Ok(()),
            Err(e) => why.push(e),
        }
    }
    if why.len() == 1 {
        return Err(why.remove(0));
    }
    Err(format!(
        "none of the {} signatures is accepted: {}",
        why.len(),
        why.join("; ")
    ))
}

/// One signature: the cryptography first, then what the (now trusted) payload says.
fn verify(
    keys: &[VerifyingKey],
    s: &Untrusted,
    image: &Reference,
    top: &str,
    identity: &Identity,
) -> std::result::Result<(), String> {
    let b64 = s
        .signature
        .as_deref()
        .ok_or_else(|| format!("the signature layer has no {SIGNATURE_ANNOTATION} annotation"))?;
    let der = STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("the signature is not base64: {e}"))?;
    let sig =
        Signature::from_der(&der).map_err(|e| format!("the signature is not a DER ECDSA signature: {e}"))?;
    // Go's verifier (cosign's, containers/image's) accepts a high S too; its low-S twin is equivalent.
    let sig = sig.normalize_s().unwrap_or(sig);
    if !keys.iter().any(|k| k.verify(&s.payload, &sig).is_ok()) {
        return Err(
            "the signature does not verify with the policy's public key (signed with another key, or its payload was changed)"
                .into(),
        );
    }
    let p: Payload = serde_json::from_slice(&s.payload)
        .map_err(|e| format!("the signed payload is not a cosign simple-signing payload: {e}"))?;
    if p.critical.kind != PAYLOAD_TYPE {
        return Err(format!(
            "the signed payload's type is {:?}, not {PAYLOAD_TYPE:?}",
            p.critical.kind
        ));
    }
    if p.critical.image.digest != top {
        return Err(format!(
            "the signature is for the manifest {}, not {top} (the digest the reference resolved to)",
            p.critical.image.digest
        ));
    }
    let signed = &p.critical.identity.reference;
    if !identity.accepts(image, signed) {
        return Err(format!(
            "the signature names {signed:?}, which the requirement's signedIdentity {} does not accept for this image",
            identity.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_tag_is_cosigns() {
        let d = format!("sha256:{}", "c".repeat(64));
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "c".repeat(64)));
    }

    #[test]
    fn key_sources_crust_cannot_check_are_refused() {
        let s = Sigstore {
            fulcio: Some(serde_json::json!({})),
            ..Default::default()
        };
        assert!(keys(&s).unwrap_err().contains("fulcio"));
        let s = Sigstore {
            key_data: Some(STANDARD.encode("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")),
            ..Default::default()
        };
        assert!(keys(&s).unwrap_err().contains("keyData #1"));
        let s = Sigstore {
            key_path: Some("/nonexistent/cosign.pub".into()),
            ..Default::default()
        };
        assert!(keys(&s).unwrap_err().contains("/nonexistent/cosign.pub"));
    }
}
