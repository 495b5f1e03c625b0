use serde_json::json;

use super::*;

const YAML: &str = r#"
cdiVersion: "0.6.0"
kind: example.com/gpu
containerEdits:
  env: ["SPEC_LEVEL=1"]
devices:
  - name: gpu0
    containerEdits:
      env: ["GPU=0", "SPEC_LEVEL=2"]
      deviceNodes:
        - path: /dev/crust-gpu0
          hostPath: /dev/null
          permissions: rw
      mounts:
        - hostPath: /tmp
          containerPath: /opt/gpu
          options: [ro, bind]
      hooks:
        - hookName: createContainer
          path: /bin/true
          args: ["true", "x"]
      additionalGIDs: [0, 44]
"#;

fn req(name: &str) -> Request {
    Request {
        name: name.into(),
        field: "config.cdi_devices[0].name".into(),
    }
}

#[test]
fn names_are_checked() {
    assert_eq!(parse_name("nvidia.com/gpu=0").unwrap(), ("nvidia.com/gpu", "0"));
    assert_eq!(parse_name("a.b/c-d=all").unwrap(), ("a.b/c-d", "all"));
    for bad in [
        "gpu0",
        "nvidia.com=0",
        "nvidia.com/gpu=",
        "/gpu=0",
        "x/y=-a",
        "a/b/c=0",
    ] {
        assert!(parse_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn requests_come_from_field_and_annotations() {
    let mut cfg = cri_api::v1::ContainerConfig {
        cdi_devices: vec![cri_api::v1::CdiDevice {
            name: "a.com/x=1".into(),
        }],
        ..Default::default()
    };
    cfg.annotations
        .insert("cdi.k8s.io/plugin".into(), "a.com/x=1, a.com/x=2".into());
    cfg.annotations.insert("other".into(), "a.com/x=3".into());
    let r = requests(&cfg);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].field, "config.cdi_devices[0].name");
    assert_eq!(r[1].name, "a.com/x=2");
    assert_eq!(r[1].field, "config.annotations[\"cdi.k8s.io/plugin\"]");
}

#[test]
fn yaml_and_json_specs_resolve_and_apply() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("gpu.yaml"), YAML).unwrap();
    std::fs::write(
        d.path().join("other.json"),
        r#"{"cdiVersion":"1.0.0","kind":"example.com/net","devices":[{"name":"n","containerEdits":{"env":["NET=1"]}}]}"#,
    )
    .unwrap();
    std::fs::write(d.path().join("broken.json"), "{").unwrap();
    let dirs = vec![d.path().to_path_buf()];
    let r = resolve(&dirs, &[req("example.com/gpu=gpu0"), req("example.com/net=n")]).unwrap();
    assert_eq!(r.len(), 4, "each spec's edits once, before its first device's");
    let node = &r[1].1.device_nodes[0];
    assert_eq!(
        (node.kind.as_deref(), node.major, node.minor),
        (Some("c"), Some(1), Some(3))
    );

    let mut spec = json!({
        "process": {"env": ["PATH=/bin", "SPEC_LEVEL=0"], "user": {"uid": 0, "gid": 0, "additionalGids": [44]}},
        "mounts": [{"destination": "/opt/gpu/deeper", "type": "bind", "source": "/x", "options": []}],
        "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}},
    });
    apply(&mut spec, &r).unwrap();
    assert_eq!(
        spec["process"]["env"],
        json!(["PATH=/bin", "SPEC_LEVEL=2", "GPU=0", "NET=1"])
    );
    assert_eq!(spec["process"]["user"]["additionalGids"], json!([44]));
    assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/crust-gpu0");
    assert_eq!(spec["linux"]["devices"][0]["major"], 1);
    assert_eq!(spec["linux"]["resources"]["devices"][1]["access"], "rw");
    assert_eq!(spec["mounts"][0]["destination"], "/opt/gpu", "parents first");
    assert_eq!(spec["mounts"][0]["options"], json!(["ro", "bind"]));
    assert_eq!(spec["hooks"]["createContainer"][0]["path"], "/bin/true");
}

#[test]
fn unknown_devices_and_broken_specs_name_the_field() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("gpu.yaml"), YAML).unwrap();
    let dirs = vec![d.path().to_path_buf()];
    let e = resolve(&dirs, &[req("example.com/gpu=gpu9")]).unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("config.cdi_devices[0]")),
        "{e}"
    );
    let e = resolve(&dirs, &[req("gpu9")]).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { field, .. } if field == "config.cdi_devices[0].name"));
    std::fs::write(
        d.path().join("bad.yaml"),
        "cdiVersion: 9.0.0\nkind: example.com/x\n",
    )
    .unwrap();
    let e = resolve(&dirs, &[req("example.com/x=a")]).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { msg, .. } if msg.contains("bad.yaml") && msg.contains("cdiVersion")),
        "{e}"
    );
    std::fs::write(
        d.path().join("nodev.yaml"),
        "cdiVersion: 0.5.0\nkind: example.com/y\ndevices:\n- name: a\n  containerEdits:\n    deviceNodes:\n    - path: /dev/crust-nonexistent\n",
    )
    .unwrap();
    let e = resolve(&dirs, &[req("example.com/y=a")]).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn later_dirs_win() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec = |v: &str| {
        format!(
            r#"{{"cdiVersion":"0.3.0","kind":"v.io/c","devices":[{{"name":"d","containerEdits":{{"env":["V={v}"]}}}}]}}"#
        )
    };
    std::fs::write(a.path().join("s.json"), spec("etc")).unwrap();
    std::fs::write(b.path().join("s.json"), spec("run")).unwrap();
    let r = resolve(&[a.path().into(), b.path().into()], &[req("v.io/c=d")]).unwrap();
    assert_eq!(r[1].1.env, vec!["V=run"]);
}
