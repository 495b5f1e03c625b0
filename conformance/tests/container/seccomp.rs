//! Seccomp measured from inside: crust's static probe (`conformance/probes/seccomp_probe.c`) makes the
//! syscalls the `RuntimeDefault` profile decides on, as uid 1000, and prints each result; `Localhost`
//! profiles come from `runtime.seccomp_profile_root` or an absolute path, and bad references are refused
//! naming the field.

use std::collections::HashMap;

use super::*;

/// An env with the probe image pulled (and `extra_toml` as a config drop-in); the probe's reference.
async fn probe_env(extra_toml: String) -> (Env, String) {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let probe = harness::probes::push_probe_image(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        extra_toml,
        ..Default::default()
    })
    .await;
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: probe.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    (Env { c, imgs, _reg: reg }, probe.reference)
}

fn profile(kind: security_profile::ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost_ref.into(),
    })
}

/// Runs the probe to its end; its report as syscall → `ok` or the errno's name.
async fn probe(
    e: &Env,
    p: &Pod,
    image: &str,
    name: &str,
    f: impl FnOnce(&mut LinuxContainerSecurityContext),
) -> HashMap<String, String> {
    let mut c = ctr(name, image, &[]);
    f(sc(&mut c));
    let id = run(e, p, c).await;
    let st = wait_exited(e, &id).await;
    let out = stdout_text(&p.log_dir.join(format!("{name}/0.log")).display().to_string());
    assert_eq!(st.exit_code, 0, "{st:?}\n{out}");
    let report: HashMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    eprintln!("probe {name}:\n{out}");
    report
}

fn expect(report: &HashMap<String, String>, want: &[(&str, &str)], what: &str) {
    for (call, result) in want {
        assert_eq!(
            report.get(*call).map(String::as_str),
            Some(*result),
            "{what}: {call}; whole report: {report:?}"
        );
    }
}

#[tokio::test]
async fn runtime_default_seccomp_refuses_namespaces_io_uring_and_kernel_apis() {
    use security_profile::ProfileType;
    let (e, image) = probe_env(String::new()).await;
    let p = pod(&e, "seccomp-default").await;

    let r = probe(&e, &p, &image, "uid1000", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.seccomp = profile(ProfileType::RuntimeDefault, "");
    })
    .await;
    expect(
        &r,
        &[
            // Ordinary calls work: a fork through clone without namespace flags, the personality query.
            ("getpid", "ok"),
            ("clone", "ok"),
            ("personality_query", "ok"),
            ("socket_unix", "ok"),
            ("mkdir", "ok"),
            // Namespaces: clone's flags are checked; clone3's cannot be, so ENOSYS sends libc to clone.
            ("clone_newuser_newnet", "EPERM"),
            ("clone3_newuser", "ENOSYS"),
            ("unshare_newuser", "EPERM"),
            ("setns", "EPERM"),
            // Kernel-global interfaces.
            ("io_uring_setup", "EPERM"),
            ("keyctl", "EPERM"),
            ("request_key", "EPERM"),
            ("bpf", "EPERM"),
            ("perf_event_open", "EPERM"),
            ("userfaultfd", "EPERM"),
            ("personality_addr_no_randomize", "EPERM"),
            ("socket_alg", "EPERM"),
        ],
        "RuntimeDefault as uid 1000",
    );

    // CAP_SYS_ADMIN (not privileged) opens the namespace calls, nothing else.
    let r = probe(&e, &p, &image, "sysadmin", |s| {
        s.seccomp = profile(ProfileType::RuntimeDefault, "");
        s.capabilities = Some(Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        });
    })
    .await;
    expect(
        &r,
        &[
            ("clone_newuser_newnet", "ok"),
            ("clone3_newuser", "ok"),
            ("unshare_newuser", "ok"),
            ("io_uring_setup", "EPERM"),
            ("keyctl", "EPERM"),
            ("userfaultfd", "EPERM"),
        ],
        "RuntimeDefault with CAP_SYS_ADMIN",
    );

    // The probe can tell: unconfined, the same calls get the kernel's own answers.
    let r = probe(&e, &p, &image, "unconfined", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.seccomp = profile(ProfileType::Unconfined, "");
    })
    .await;
    expect(
        &r,
        &[("getpid", "ok"), ("personality_addr_no_randomize", "ok")],
        "Unconfined",
    );
    assert_ne!(
        r.get("clone3_newuser").map(String::as_str),
        Some("ENOSYS"),
        "{r:?}"
    );
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "0") {
        expect(&r, &[("io_uring_setup", "ok")], "Unconfined");
    }
    stop_and_remove_pod(&e, &p.id).await;
}

#[tokio::test]
async fn localhost_seccomp_profiles_from_the_profile_root() {
    use security_profile::ProfileType;
    let profiles = tempfile::tempdir().unwrap();
    let root = profiles.path().join("root");
    std::fs::create_dir_all(root.join("team")).unwrap();
    let block_mkdir = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
    std::fs::write(root.join("team/no-mkdir.json"), block_mkdir).unwrap();
    std::fs::write(profiles.path().join("outside.json"), block_mkdir).unwrap();
    std::fs::write(
        root.join("broken.json"),
        r#"{"defaultAction":"SCMP_ACT_SOMETIMES"}"#,
    )
    .unwrap();
    let toml = format!(
        "[runtime]\nseccomp_profile_root = {:?}\n",
        root.display().to_string()
    );
    let (e, image) = probe_env(toml).await;
    let p = pod(&e, "seccomp-localhost").await;

    // Relative to the profile root, and absolute as kubelet sends it.
    let abs = profiles.path().join("outside.json").display().to_string();
    for (name, reference) in [("relative", "team/no-mkdir.json"), ("absolute", abs.as_str())] {
        let r = probe(&e, &p, &image, name, |s| {
            s.run_as_user = Some(Int64Value { value: 1000 });
            s.seccomp = profile(ProfileType::Localhost, reference);
        })
        .await;
        expect(
            &r,
            &[
                ("mkdir", "EACCES"),
                ("getpid", "ok"),
                ("personality_addr_no_randomize", "ok"),
            ],
            reference,
        );
    }

    let field = "seccomp.localhost_ref";
    for (reference, code) in [
        ("missing.json", Code::NotFound),
        ("../outside.json", Code::InvalidArgument),
        ("team/../../outside.json", Code::InvalidArgument),
        ("broken.json", Code::InvalidArgument),
    ] {
        let mut c = ctr("refused", &image, &[]);
        sc(&mut c).seccomp = profile(ProfileType::Localhost, reference);
        let err = create(&e, &p, c).await.unwrap_err();
        assert_eq!(err.code(), code, "{reference}: {err:?}");
        assert!(err.message().contains(field), "{reference}: {err:?}");
    }
    stop_and_remove_pod(&e, &p.id).await;
}
