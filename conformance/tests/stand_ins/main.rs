//! The critest image stand-ins (`harness::standins`, pushed by `crust-test-images`): every reference critest
//! pulls resolves in a real registry (indexes offering this host's platform), the images are what critest
//! needs (users, tags, distinct or shared IDs), and the programs in them behave as critest expects when
//! run from their unpacked root: the nginx and httpd stand-ins serve HTTP, nnp honours setuid and
//! no_new_privs, ipcs lists a segment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::Registry;
use harness::images::media;
use harness::standins::{self, Kind, StandIn};
use serde_json::Value;

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

fn get_json(reg: &Registry, path: &str) -> (Value, String) {
    let r = reg.request("GET", path, &[("Accept", ACCEPT)], b"");
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    let ct = r.header("Content-Type").unwrap_or_default().to_string();
    (serde_json::from_slice(&r.body).expect("json"), ct)
}

/// The host platform's manifest of a stand-in (through its index when it has one).
fn host_manifest(reg: &Registry, s: &StandIn) -> Value {
    let (doc, ct) = get_json(reg, &format!("/v2/{}/manifests/{}", s.repo, s.tag));
    assert_eq!(ct, s.media_type, "{}:{}", s.repo, s.tag);
    if s.kind == Kind::DockerManifest {
        return doc;
    }
    let entries = doc["manifests"].as_array().expect("manifests");
    let arch = standins::host_arch();
    let host: Vec<&Value> = entries
        .iter()
        .filter(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .collect();
    assert_eq!(
        host.len(),
        1,
        "{}:{} has one linux/{arch} entry: {doc}",
        s.repo,
        s.tag
    );
    assert!(
        entries.len() >= 2,
        "{}:{} offers another platform too",
        s.repo,
        s.tag
    );
    let digest = host[0]["digest"].as_str().unwrap();
    get_json(reg, &format!("/v2/{}/manifests/{digest}", s.repo)).0
}

fn config(reg: &Registry, s: &StandIn) -> Value {
    let m = host_manifest(reg, s);
    let d = m["config"]["digest"].as_str().unwrap();
    assert_eq!(d, s.id);
    get_json(reg, &format!("/v2/{}/blobs/{d}", s.repo)).0
}

fn find<'a>(all: &'a [StandIn], upstream: &str) -> &'a StandIn {
    all.iter()
        .find(|s| s.upstream.iter().any(|u| u == upstream))
        .unwrap_or_else(|| panic!("no stand-in for {upstream}"))
}

/// Unpacks the host platform's layers of `s`, lowest first, into `dir` (modes and owners kept).
fn unpack(reg: &Registry, s: &StandIn, dir: &Path) {
    let m = host_manifest(reg, s);
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let blob = reg.request("GET", &format!("/v2/{}/blobs/{d}", s.repo), &[], b"");
        assert_eq!(blob.status, 200);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob.body[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_overwrite(true);
        a.unpack(dir).unwrap();
    }
}

mod in_crustd;
mod programs;
mod references;
