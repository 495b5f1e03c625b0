//! The image index (`<root>/images/index.json`): every image's ID, tags, digests, size, user and layers,
//! plus the disk usage of each unpacked layer. Written atomically; lookups by ID, ID prefix, tag or digest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::reference::Reference;

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    /// The (compressed) blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The chain ID (`sha256:`): the key of the unpacked layer directory.
    pub chain_id: String,
    /// The blob's size.
    pub size: u64,
}

/// One image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// `sha256:` of the config.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Config plus compressed layers, in bytes.
    pub size: u64,
    /// `config.User`.
    #[serde(default)]
    pub user: String,
    /// Lowest first.
    pub layers: Vec<LayerRef>,
    /// When it was (last) pulled, ns since the epoch.
    #[serde(default)]
    pub pulled_at: i64,
}

/// Disk usage of one unpacked layer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The whole index.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Index {
    /// The index's format (`crate::state::format`).
    #[serde(default)]
    pub format: crate::state::format::Format<{ crate::state::format::IMAGE_INDEX }>,
    pub images: Vec<ImageRecord>,
    /// Chain ID hex → usage.
    #[serde(default)]
    pub layers: BTreeMap<String, Usage>,
}

/// How a lookup matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// By ID, ID prefix or digest: the image as a whole.
    Image(usize),
    /// By tag: the image and the tag.
    Tag(usize, String),
}

impl Index {
    /// Loads the index; a missing file is an empty index.
    pub fn load(path: &Path) -> std::io::Result<Index> {
        match crate::state::read_json(path) {
            Ok(i) => Ok(i),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e),
        }
    }

    /// Finds an image by full ID (with or without `sha256:`), unique ID prefix (3+ hex digits), tag or
    /// digest reference (normalised).
    pub fn find(&self, s: &str) -> Option<Match> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let hexpart = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = !hexpart.is_empty()
            && hexpart
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex && hexpart.len() == 64 {
            let id = format!("sha256:{hexpart}");
            if let Some(i) = self.images.iter().position(|r| r.id == id) {
                return Some(Match::Image(i));
            }
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = &r.digest {
                let want = r.with_digest(d);
                if let Some(i) = self.images.iter().position(|x| x.repo_digests.contains(&want)) {
                    return Some(Match::Image(i));
                }
            } else if let Some(t) = r.tagged()
                && let Some(i) = self.images.iter().position(|x| x.repo_tags.contains(&t))
            {
                return Some(Match::Tag(i, t));
            }
        }
        if is_hex && hexpart.len() >= 3 {
            let p = format!("sha256:{hexpart}");
            let mut hits = self
                .images
                .iter()
                .enumerate()
                .filter(|(_, r)| r.id.starts_with(&p));
            if let (Some((i, _)), None) = (hits.next(), hits.next()) {
                return Some(Match::Image(i));
            }
        }
        None
    }

    /// The image a lookup finds.
    pub fn get(&self, s: &str) -> Option<&ImageRecord> {
        match self.find(s)? {
            Match::Image(i) | Match::Tag(i, _) => self.images.get(i),
        }
    }

    /// Adds a pulled image (or merges it into the record with its ID). Its tags move here from any other
    /// image that had them.
    pub fn add(&mut self, rec: ImageRecord) {
        for other in self.images.iter_mut().filter(|r| r.id != rec.id) {
            other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
        }
        match self.images.iter_mut().find(|r| r.id == rec.id) {
            Some(r) => {
                for t in rec.repo_tags {
                    if !r.repo_tags.contains(&t) {
                        r.repo_tags.push(t);
                    }
                }
                for d in rec.repo_digests {
                    if !r.repo_digests.contains(&d) {
                        r.repo_digests.push(d);
                    }
                }
                r.pulled_at = rec.pulled_at;
            }
            None => self.images.push(rec),
        }
    }

    /// Removes what `s` names: one tag of an image that has others, else the whole image. Returns the
    /// removed image's ID when a whole image went.
    pub fn remove(&mut self, s: &str) -> Option<String> {
        match self.find(s)? {
            Match::Tag(i, tag) if self.images[i].repo_tags.len() > 1 => {
                self.images[i].repo_tags.retain(|t| t != &tag);
                None
            }
            Match::Image(i) | Match::Tag(i, _) => Some(self.images.remove(i).id),
        }
    }

    /// Blob digests and layer chain IDs (hex) still used by some image.
    pub fn referenced(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for r in &self.images {
            blobs.insert(hex_of(&r.id).to_string());
            for l in &r.layers {
                blobs.insert(hex_of(&l.digest).to_string());
                layers.insert(hex_of(&l.chain_id).to_string());
            }
        }
        (blobs, layers)
    }
}

/// The hex part of `sha256:<hex>`.
pub fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: char, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size: 1,
            user: String::new(),
            layers: vec![],
            pulled_at: 0,
        }
    }

    #[test]
    fn lookups_by_id_prefix_tag_and_digest() {
        let dg = format!("sha256:{}", "c".repeat(64));
        let mut ix = Index::default();
        ix.add(rec(
            'a',
            &["docker.io/library/busybox:latest"],
            &[&format!("docker.io/library/busybox@{dg}")],
        ));
        ix.add(rec('b', &["127.0.0.1:5000/x/y:1"], &[]));
        let a = ix.images[0].id.clone();
        assert_eq!(ix.get(&a).unwrap().id, a);
        assert_eq!(ix.get(&a[7..]).unwrap().id, a);
        assert_eq!(ix.get("aaaa").unwrap().id, a);
        assert_eq!(ix.get("busybox").unwrap().id, a);
        assert_eq!(ix.get(&format!("busybox@{dg}")).unwrap().id, a);
        assert_eq!(
            ix.get("127.0.0.1:5000/x/y:1").unwrap().repo_tags[0],
            "127.0.0.1:5000/x/y:1"
        );
        assert!(ix.get("busybox:2").is_none());
        assert!(ix.get("zz").is_none());
    }

    #[test]
    fn tags_move_and_remove_one_tag_at_a_time() {
        let mut ix = Index::default();
        ix.add(rec('a', &["docker.io/r/a:1", "docker.io/r/a:2"], &[]));
        ix.add(rec('b', &["docker.io/r/a:2"], &[]));
        assert_eq!(
            ix.images[0].repo_tags,
            vec!["docker.io/r/a:1"],
            "the tag moved to the new image"
        );
        let a = ix.images[0].id.clone();
        assert_eq!(ix.remove("r/a:1"), Some(a), "its last tag: the image goes");
        assert_eq!(ix.images.len(), 1);
        ix.add(rec('b', &["docker.io/r/a:3"], &[]));
        assert_eq!(ix.images[0].repo_tags.len(), 2);
        assert_eq!(
            ix.remove("docker.io/r/a:3"),
            None,
            "one of two tags: only the tag goes"
        );
        assert_eq!(ix.images[0].repo_tags, vec!["docker.io/r/a:2"]);
        assert!(ix.remove("nothing").is_none());
    }
}
