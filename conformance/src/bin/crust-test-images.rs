//! `crust-test-images`: builds the stand-ins for the images critest pulls (see `harness::standins`) from
//! a static busybox (`conformance/busybox.sh`, or `$CRUST_TEST_BUSYBOX`) and crust's own small static
//! programs, and pushes them to a local registry under the upstream repository paths, so that crust's
//! mirrors for registry.k8s.io, k8s.gcr.io and gcr.io serve them, and the harness's own
//! `crust-test/…:1` images beside them. Nothing is pulled from anywhere.
//!
//! Usage: `crust-test-images [--registry http://127.0.0.1:5000] [--pause PATH]`
//! (`--registry` defaults to `$CRUST_TEST_REGISTRY`, then `http://127.0.0.1:5000`; `--pause` to the
//! static `crust-pause` built by `make pause`, else a busybox stand-in.)

use std::path::PathBuf;
use std::process::ExitCode;

use harness::Registry;
use harness::standins::{self, Kind};

const USAGE: &str = "usage: crust-test-images [--registry http://HOST:PORT] [--pause PATH]";

fn main() -> ExitCode {
    let mut registry =
        std::env::var("CRUST_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let mut pause: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--registry" => match value() {
                Some(v) => registry = v,
                None => return usage("--registry needs a URL"),
            },
            "--pause" => match value() {
                Some(v) => pause = Some(v.into()),
                None => return usage("--pause needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => return usage(&format!("unknown argument {a:?}")),
        }
    }
    let Some(host) = registry
        .strip_prefix("http://")
        .map(|h| h.trim_end_matches('/').to_string())
    else {
        return usage(&format!(
            "the registry must be a plain http:// URL (a local registry), got {registry:?}"
        ));
    };
    if host.is_empty() || host.contains('/') {
        return usage(&format!(
            "the registry URL must be http://HOST:PORT, got {registry:?}"
        ));
    }
    match harness::http::request(&host, "GET", "/v2/", &[], b"") {
        Ok(r) if r.status == 200 => {}
        Ok(r) => {
            eprintln!(
                "crust-test-images: {registry}/v2/ answered {} (an open registry is needed)",
                r.status
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("crust-test-images: no registry answers at {registry}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let pause = pause.or_else(default_pause);
    match &pause {
        Some(p) if !p.exists() => {
            eprintln!("crust-test-images: pause binary {} does not exist", p.display());
            return ExitCode::FAILURE;
        }
        Some(p) => println!("pause:3.9 stand-in runs {}", p.display()),
        None => println!(
            "pause:3.9 stand-in runs a busybox loop (no static crust-pause found: `make pause` builds it)"
        ),
    }

    let reg = Registry::external(&host);
    let pushed = standins::push_all(&reg, pause.as_deref());
    println!(
        "crust-test-images: pushed {} stand-ins to {registry}:",
        pushed.len()
    );
    for s in &pushed {
        let kind = match s.kind {
            Kind::DockerList => "docker manifest list",
            Kind::OciIndex => "OCI index",
            Kind::DockerManifest => "docker manifest",
        };
        println!("  {} -> {host}/{}:{}", s.upstream.join(", "), s.repo, s.tag);
        println!(
            "      {} ({kind}; {}); {}",
            s.digest,
            s.platforms.join(" "),
            s.what
        );
    }
    // The harness's own images (`crust-test/busybox:1` and the rest), which the node's steps and
    // tests pull whether or not a test that pushes them ran first.
    let std = harness::images::push_standard(&reg);
    for p in [&std.busybox, &std.configured, &std.layered, &std.uncompressed] {
        println!("  {}", p.reference);
    }
    println!("critest references no stand-in can serve:");
    for (r, why) in standins::NOT_SERVABLE {
        println!("  {r}\n      {why}");
    }
    ExitCode::SUCCESS
}

/// The static crust-pause beside this binary's target dir (`make pause`), or one installed beside it.
fn default_pause() -> Option<PathBuf> {
    harness::pause_binary().or_else(|| {
        let exe = std::env::current_exe().ok()?;
        let beside = exe.parent()?.join("crust-pause");
        beside.exists().then_some(beside)
    })
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("crust-test-images: {msg}\n{USAGE}");
    ExitCode::from(2)
}
