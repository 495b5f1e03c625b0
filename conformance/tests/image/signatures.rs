//! The image trust policy (`image.signature_policy`, `image.signature_policy_dir`): stand-in images
//! signed in the test the way cosign signs with a key (a P-256 key made here, the simple-signing payload
//! as a layer of the `sha256-<hex>.sig` manifest, the DER signature in its annotation), pushed to the
//! loopback registry. Each refusal is FAILED_PRECONDITION naming the policy file, the scope and the
//! reason, leaves nothing in the store, and is printed (run with --nocapture to read them).

use super::*;
use harness::images::{media, push_blob, push_manifest};
use harness::registry::base64_encode::encode as b64;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use rand::RngCore;
use serde_json::json;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

fn new_key() -> SigningKey {
    loop {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        if let Ok(k) = SigningKey::from_slice(&b) {
            return k;
        }
    }
}

fn public_pem(k: &SigningKey) -> String {
    k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
}

/// Cosign's simple-signing payload for `identity` (a docker reference) and manifest `digest`.
fn payload(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// One signature layer: the payload stored, and the signature made over `signed` (the payload, unless
/// the test tampers with it afterwards).
struct Sig {
    stored: Vec<u8>,
    signed: Vec<u8>,
    key: SigningKey,
}

/// Pushes `sigs` as the `sha256-<hex>.sig` manifest of `digest` in `repo`.
fn push_signatures(reg: &Registry, repo: &str, digest: &str, sigs: &[Sig]) {
    let config = br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(reg, repo, config);
    let layers: Vec<_> = sigs
        .iter()
        .map(|s| {
            let d = push_blob(reg, repo, &s.stored);
            let sig: Signature = s.key.sign(&s.signed);
            json!({
                "mediaType": SIMPLE_SIGNING,
                "digest": d,
                "size": s.stored.len(),
                "annotations": {"dev.cosignproject.cosign/signature": b64(sig.to_der().as_bytes())},
            })
        })
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    push_manifest(
        reg,
        repo,
        &tag,
        media::OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    );
}

async fn pull_in(d: &Crustd, image: &str, namespace: &str) -> Result<String, tonic::Status> {
    d.images()
        .await
        .pull_image(PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "p".into(),
                    uid: "u".into(),
                    namespace: namespace.into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// The pull was refused as FAILED_PRECONDITION naming each of `names`; prints the message.
fn refused(case: &str, r: Result<String, tonic::Status>, names: &[&str]) {
    let e = match r {
        Ok(id) => panic!("{case}: the pull was accepted ({id})"),
        Err(e) => e,
    };
    assert_eq!(e.code(), Code::FailedPrecondition, "{case}: {e:?}");
    for n in names {
        assert!(
            e.message().contains(n),
            "{case}: the message does not name {n:?}: {}",
            e.message()
        );
    }
    println!("REFUSED {case}: {}", e.message());
}

/// Nothing stored: no image, blob or layer, and `crustctl check` finds nothing wrong.
fn store_empty(d: &Crustd) {
    let r = d.check_store();
    assert_eq!(r["problems"], json!([]), "{r}");
    assert_eq!(
        (r["images"].as_u64(), r["blobs"].as_u64(), r["layers"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_are_held_to_the_signature_policy() {
    let reg = Registry::start();
    let host = reg.host();
    let key = new_key();
    let other_key = new_key();
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("cosign.pub");
    std::fs::write(&key_file, public_pem(&key)).unwrap();

    let img = arch_image("amd64", "signed stand-in");
    let other = arch_image("amd64", "another image");
    let repos = [
        "sig/good",
        "sig/unsigned",
        "sig/otherdigest",
        "sig/wrongkey",
        "sig/tampered",
    ];
    let mut pushed = std::collections::HashMap::new();
    for repo in repos
        .iter()
        .chain(&["cosign/app", "open/app", "closed/app", "elsewhere/app"])
    {
        pushed.insert(*repo, images::push_image(&reg, repo, "v1", &img));
    }
    let digest = pushed["sig/good"].manifest_digest.clone();
    let other_digest = images::push_image(&reg, "sig/otherdigest", "other", &other).manifest_digest;
    let sign = |repo: &str, k: &SigningKey| {
        let p = payload(&format!("{host}/{repo}:v1"), &digest);
        Sig {
            stored: p.clone(),
            signed: p,
            key: k.clone(),
        }
    };
    // Two signatures, one by another key: one accepted signature is enough.
    push_signatures(
        &reg,
        "sig/good",
        &digest,
        &[sign("sig/good", &other_key), sign("sig/good", &key)],
    );
    let p = payload(&format!("{host}/sig/otherdigest:v1"), &other_digest);
    push_signatures(
        &reg,
        "sig/otherdigest",
        &digest,
        &[Sig {
            stored: p.clone(),
            signed: p,
            key: key.clone(),
        }],
    );
    push_signatures(&reg, "sig/wrongkey", &digest, &[sign("sig/wrongkey", &other_key)]);
    let mut t = sign("sig/tampered", &key);
    t.stored = String::from_utf8(t.stored)
        .unwrap()
        .replace("\"optional\":null", "\"optional\":{\"note\":\"changed\"}")
        .into_bytes();
    assert_ne!(t.stored, t.signed);
    push_signatures(&reg, "sig/tampered", &digest, &[t]);
    // What cosign itself writes: the repository alone as the identity.
    let c = payload(&format!("{host}/cosign/app"), &digest);
    push_signatures(
        &reg,
        "cosign/app",
        &digest,
        &[Sig {
            stored: c.clone(),
            signed: c,
            key: key.clone(),
        }],
    );

    let keyed = json!({"type": "sigstoreSigned", "keyPath": key_file});
    let policy = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{host}/sig"): [keyed],
            format!("{host}/cosign/app"): [{"type": "sigstoreSigned", "keyPath": key_file,
                "signedIdentity": {"type": "matchRepository"}}],
            format!("{host}/open"): [{"type": "insecureAcceptAnything"}],
            format!("{host}/closed/app:v1"): [{"type": "reject"}],
        }}
    });
    let policy_file = tmp.path().join("policy.json");
    std::fs::write(&policy_file, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    let ns_dir = tmp.path().join("policies");
    std::fs::create_dir(&ns_dir).unwrap();
    std::fs::write(
        ns_dir.join("trusted.json"),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    std::fs::write(ns_dir.join("broken.json"), "{\"default\": [").unwrap();
    let d = Crustd::start(CrustdOptions {
        extra_toml: format!(
            "[image]\nsignature_policy = {:?}\nsignature_policy_dir = {:?}\n",
            policy_file.display().to_string(),
            ns_dir.display().to_string()
        ),
        ..with_registry(&reg)
    })
    .await;
    let pf = policy_file.display().to_string();

    // Refusals first, each leaving the store empty: (case, image, pod namespace, what the message names).
    images::push_image(&reg, "sig/good", "v2", &img);
    let scope = |s: &str| format!("transports.docker \"{host}/{s}\"");
    let broken = ns_dir.join("broken.json").display().to_string();
    let cases: Vec<(&str, String, &str, Vec<String>)> = vec![
        (
            "unsigned",
            "sig/unsigned:v1".into(),
            "",
            vec![scope("sig"), "signature is required".into()],
        ),
        (
            "signature for another digest",
            "sig/otherdigest:v1".into(),
            "",
            vec![other_digest.clone(), digest.clone()],
        ),
        (
            "wrong key",
            "sig/wrongkey:v1".into(),
            "",
            vec!["does not verify".into()],
        ),
        (
            "tampered payload",
            "sig/tampered:v1".into(),
            "",
            vec!["does not verify".into()],
        ),
        (
            "signed for another tag (v1 signed, v2 pulled)",
            "sig/good:v2".into(),
            "",
            vec![
                "none of the 2 signatures".into(),
                "does not verify".into(),
                "does not accept".into(),
            ],
        ),
        (
            "reject scope",
            "closed/app:v1".into(),
            "",
            vec![scope("closed/app:v1"), "rejects every image".into()],
        ),
        (
            "default (no scope matches)",
            "elsewhere/app:v1".into(),
            "",
            vec!["scope default".into()],
        ),
        (
            "namespace without a policy of its own falls back to the global one",
            "closed/app:v1".into(),
            "other",
            vec!["rejects every image".into()],
        ),
        (
            "unparsable per-namespace policy",
            "open/app:v1".into(),
            "broken",
            vec![broken, "not a valid policy".into()],
        ),
    ];
    for (case, image, ns, mut names) in cases {
        if ns != "broken" {
            names.push(pf.clone());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        refused(case, pull_in(&d, &format!("{host}/{image}"), ns).await, &names);
    }
    store_empty(&d);
    // No signature was fetched for the reject and default scopes.
    assert_eq!(reg.count_gets(&format!("closed/app/manifests/{}", "sha256-")), 0);

    // Accepted: signed by tag, the same by digest, cosign's repository identity under matchRepository,
    // an insecureAcceptAnything scope under a rejecting default, and a namespace's own policy.
    let by_tag = pull(&d, &format!("{host}/sig/good:v1"), None).await.unwrap();
    assert_eq!(by_tag, pushed["sig/good"].id);
    remove(&d, &by_tag).await;
    pull(&d, &format!("{host}/sig/good@{digest}"), None)
        .await
        .unwrap();
    pull(&d, &format!("{host}/cosign/app:v1"), None).await.unwrap();
    pull(&d, &format!("{host}/open/app:v1"), None).await.unwrap();
    pull_in(&d, &format!("{host}/closed/app:v1"), "trusted")
        .await
        .unwrap();
    let r = d.check_store();
    assert_eq!(r["problems"], json!([]), "{r}");
    println!(
        "ACCEPTED signed by tag, by digest, cosign identity (matchRepository), insecureAcceptAnything scope, namespace policy"
    );

    // An unreadable global policy: every pull fails naming it (crustd said so at start-up too).
    std::fs::write(&policy_file, "not json").unwrap();
    refused(
        "unparsable global policy",
        pull(&d, &format!("{host}/open/app:v1"), None).await,
        &[&pf, "not a valid policy"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_policy_is_reported_at_start_up() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let policy_file = tmp.path().join("policy.json");
    std::fs::write(&policy_file, r#"{"default": []}"#).unwrap();
    let d = Crustd::start(CrustdOptions {
        extra_toml: format!(
            "[image]\nsignature_policy = {:?}\n",
            policy_file.display().to_string()
        ),
        ..with_registry(&reg)
    })
    .await;
    let log = d.log();
    assert!(
        log.contains(&policy_file.display().to_string()) && log.contains("must not be empty"),
        "{log}"
    );
    let p = images::push_image(&reg, "any/app", "v1", &arch_image("amd64", "x"));
    refused(
        "empty requirement list",
        pull(&d, &p.reference, None).await,
        &["must not be empty"],
    );
    store_empty(&d);
}
