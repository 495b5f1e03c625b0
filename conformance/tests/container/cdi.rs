//! CDI devices: specs of the test's own (YAML and JSON) in a directory named by a configuration
//! drop-in; a device node under another name, environment variables and a mount, asked for through
//! `cdi_devices` and a `cdi.k8s.io/*` annotation; unknown and malformed names refused naming the field.

use super::*;

#[tokio::test]
async fn cdi_devices_edit_the_container() {
    let specs = tempfile::tempdir().unwrap();
    let shared = specs.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), "from the host\n").unwrap();
    std::fs::write(
        specs.path().join("crust-test.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: crust.test/dev
containerEdits:
  env: [CDI_SPEC=spec-level]
devices:
  - name: null0
    containerEdits:
      env: [CDI_DEVICE=null0]
      deviceNodes:
        - path: /dev/crust-test0
          hostPath: /dev/null
      mounts:
        - hostPath: {}
          containerPath: /cdi-mount
          options: [ro, bind]
"#,
            shared.display()
        ),
    )
    .unwrap();
    std::fs::write(
        specs.path().join("other.json"),
        r#"{"cdiVersion":"1.0.0","kind":"crust.test/other","devices":[{"name":"one","containerEdits":{"env":["CDI_OTHER=one"]}}]}"#,
    )
    .unwrap();
    let e = env_with(&format!(
        "[runtime]\ncdi_spec_dirs = [{:?}]\n",
        specs.path().display().to_string()
    ))
    .await;
    let p = pod(&e, "cdi").await;
    let mut c = ctr("cdi", &e.imgs.busybox.reference, &["sleep", "1000"]);
    c.cdi_devices = vec![CdiDevice {
        name: "crust.test/dev=null0".into(),
    }];
    c.annotations
        .insert("cdi.k8s.io/test".into(), "crust.test/other=one".into());
    let id = run(&e, &p, c).await;
    let script = "stat -c '%F %t,%T' /dev/crust-test0; echo $CDI_SPEC $CDI_DEVICE $CDI_OTHER; \
                  cat /cdi-mount/hello; echo x > /dev/crust-test0 && echo wrote; \
                  touch /cdi-mount/new 2>/dev/null || echo read-only";
    let r = exec(&e, &id, &["sh", "-c", script], 10).await.unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    assert_eq!(
        out,
        "character special file 1,3\nspec-level null0 one\nfrom the host\nwrote\nread-only\n",
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );

    for (name, code) in [
        ("crust.test/dev=nope", Code::NotFound),
        ("crust.test/absent=x", Code::NotFound),
        ("not-a-cdi-name", Code::InvalidArgument),
    ] {
        let mut c = ctr("cdi-bad", &e.imgs.busybox.reference, &["true"]);
        c.cdi_devices = vec![
            CdiDevice {
                name: "crust.test/dev=null0".into(),
            },
            CdiDevice { name: name.into() },
        ];
        let err = create(&e, &p, c).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains("config.cdi_devices[1]"), "{err:?}");
    }
    // A malformed spec: the device it might declare is refused, naming the file.
    std::fs::write(specs.path().join("broken.yaml"), "cdiVersion: [\n").unwrap();
    let mut c = ctr("cdi-bad", &e.imgs.busybox.reference, &["true"]);
    c.annotations
        .insert("cdi.k8s.io/x".into(), "crust.test/broken=a".into());
    let err = create(&e, &p, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("cdi.k8s.io/x") && err.message().contains("broken.yaml"),
        "{err:?}"
    );
    stop_and_remove_pod(&e, &p.id).await;
}
