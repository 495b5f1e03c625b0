//! crustd answering a gRPC implementation other than tonic: Python's grpcio (gRPC's C core, as used by
//! the C++ and Ruby clients too), over the unix socket, with the `:authority` values such clients send:
//! grpcio's own default for a `unix:` target (`localhost` up to 1.56), the percent-encoded socket path
//! (grpc-core 1.57 and later) and the plain socket path (grpc-java). h2 alone resets the last two with
//! PROTOCOL_ERROR. Skipped, with a message, when `/usr/bin/python3` has no `grpc` module
//! (`make deps` installs python3-grpcio). `CRUST_TEST_PYTHON` names another interpreter (e.g. a venv
//! with a newer grpcio, whose own default is the percent-encoded path).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use harness::{Crustd, CrustdOptions};

/// The interpreter: `$CRUST_TEST_PYTHON`, else Debian's (whose grpcio is python3-grpcio).
fn python() -> String {
    std::env::var("CRUST_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// Calls Version, ListPodSandbox and ListImages once per authority case on a channel of its own, with
/// hand-serialized requests, and prints one JSON line per case.
const CLIENT: &str = r#"
import json, sys, urllib.parse
import grpc

sock = sys.argv[1]

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = varint(b, i)
        elif wire == 2:
            n, i = varint(b, i)
            val, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wire)
        yield num, val

def varint(b, i):
    shift = val = 0
    while True:
        c = b[i]
        i += 1
        val |= (c & 0x7f) << shift
        shift += 7
        if c < 0x80:
            return val, i

def call(ch, method, req):
    return ch.unary_unary(method)(req, timeout=10)

cases = [
    ("grpcio-default", []),
    ("grpc-core-1.57+", [("grpc.default_authority", urllib.parse.quote(sock.lstrip("/"), safe=""))]),
    ("grpc-java", [("grpc.default_authority", sock)]),
]
print(json.dumps({"grpcio": grpc.__version__}))
for name, options in cases:
    with grpc.insecure_channel("unix:" + sock, options=options) as ch:
        try:
            # VersionRequest{version: "v1"}; VersionResponse: 1 version, 2 runtime_name, 3 runtime_version,
            # 4 runtime_api_version.
            v = {n: s.decode() for n, s in fields(call(ch, "/runtime.v1.RuntimeService/Version", b"\x0a\x02v1"))}
            pods = call(ch, "/runtime.v1.RuntimeService/ListPodSandbox", b"")
            images = call(ch, "/runtime.v1.ImageService/ListImages", b"")
            print(json.dumps({
                "case": name,
                "authority": dict(options).get("grpc.default_authority", "(grpcio's default)"),
                "runtime_name": v.get(2), "runtime_api_version": v.get(4),
                "pods": sum(1 for n, _ in fields(pods) if n == 1),
                "images": sum(1 for n, _ in fields(images) if n == 1),
            }))
        except grpc.RpcError as e:
            print(json.dumps({"case": name, "error": "%s: %s" % (e.code(), e.details())}))
"#;

fn python_has_grpc(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn grpcio_calls_succeed_whatever_authority_it_sends() {
    let python = python();
    if !python_has_grpc(&python) {
        println!("skipped: {python} cannot import grpc (install python3-grpcio: make deps)");
        return;
    }
    let d = Crustd::start(CrustdOptions::default()).await;
    let socket = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(CLIENT)
            .arg(&socket)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "python client failed ({}):\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cases: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("case").is_some()).collect();
    assert_eq!(cases.len(), 3, "{stdout}");
    for c in cases {
        assert_eq!(c.get("error"), None, "{c}\ncrustd log:\n{}", d.log());
        assert_eq!(c["runtime_name"], "crust", "{c}");
        assert_eq!(c["runtime_api_version"], "v1", "{c}");
        assert_eq!(c["pods"], 0, "{c}");
        assert_eq!(c["images"], 0, "{c}");
    }
}
