//! Manifests and indexes, Docker schema 2 and OCI alike, and platform selection from multi-platform
//! images (OS, architecture, variant).

use serde::Deserialize;

use crate::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A manifest list or OCI index.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Whether a media type is a manifest list / index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a media type is a single-image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Parses JSON, naming what it is in the error.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::FailedPrecondition(format!("{what} is not valid: {e}")))
}

/// The platform wanted: `os/arch[/variant]` from the configuration, else this host's.
pub fn wanted(configured: &str) -> Platform {
    if !configured.is_empty() {
        let mut parts = configured.split('/');
        return Platform {
            os: parts.next().unwrap_or("linux").to_string(),
            architecture: parts.next().unwrap_or("amd64").to_string(),
            variant: parts.next().map(str::to_string),
        };
    }
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.map(str::to_string),
    }
}

/// Picks the index entry for `want`: OS and architecture must match; a variant, when wanted, must
/// match too (arm64's empty variant counts as `v8`); an exact variant match beats an entry without one.
pub fn select<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor> {
    let norm = |arch: &str, v: Option<&str>| -> Option<String> {
        match (arch, v) {
            ("arm64", None | Some("")) => Some("v8".into()),
            (_, None | Some("")) => None,
            (_, Some(v)) => Some(v.to_string()),
        }
    };
    let want_v = norm(&want.architecture, want.variant.as_deref());
    let mut best: Option<(&Descriptor, u8)> = None;
    for d in &index.manifests {
        let Some(p) = &d.platform else { continue };
        if p.os != want.os || p.architecture != want.architecture || !is_manifest_or_unknown(&d.media_type) {
            continue;
        }
        let have_v = norm(&p.architecture, p.variant.as_deref());
        let score = match (&want_v, &have_v) {
            (Some(w), Some(h)) if w == h => 2,
            (Some(_), Some(_)) => continue,
            (_, None) => 1,
            (None, Some(_)) => 1,
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((d, score));
        }
    }
    best.map(|(d, _)| d).ok_or_else(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
                _ => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        let w = match &want.variant {
            Some(v) => format!("{}/{}/{v}", want.os, want.architecture),
            None => format!("{}/{}", want.os, want.architecture),
        };
        Error::NotFound(format!(
            "no image for platform {w} (the index has: {})",
            have.join(", ")
        ))
    })
}

fn is_manifest_or_unknown(m: &str) -> bool {
    m.is_empty() || is_manifest(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> Index {
        Index {
            manifests: entries
                .iter()
                .enumerate()
                .map(|(i, (os, arch, v))| Descriptor {
                    media_type: OCI_MANIFEST.into(),
                    digest: format!("d{i}"),
                    size: 1,
                    platform: Some(Platform {
                        os: os.to_string(),
                        architecture: arch.to_string(),
                        variant: v.map(str::to_string),
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn picks_the_wanted_platform() {
        let i = index(&[
            ("linux", "arm64", Some("v8")),
            ("linux", "amd64", None),
            ("windows", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
        ]);
        assert_eq!(select(&i, &wanted("linux/amd64")).unwrap().digest, "d1");
        assert_eq!(select(&i, &wanted("linux/arm64")).unwrap().digest, "d0");
        assert_eq!(select(&i, &wanted("linux/arm/v7")).unwrap().digest, "d4");
        assert_eq!(select(&i, &wanted("windows/amd64")).unwrap().digest, "d2");
        let e = select(&i, &wanted("linux/s390x")).unwrap_err();
        assert!(
            e.to_string().contains("linux/s390x") && e.to_string().contains("linux/amd64"),
            "{e}"
        );
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(wanted(""), wanted("linux/amd64"));
        }
    }
}
