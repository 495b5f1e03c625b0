//! Users and supplemental groups, read-only rootfs, mounts, masked paths, env, and the security
//! context (seccomp, no_new_privs, capabilities) reaching the process.

use super::*;

fn id_output(s: &str) -> (u32, u32, HashSet<u32>) {
    let num = |key: &str| -> u32 {
        let rest = &s[s.find(key).unwrap_or_else(|| panic!("{key} in {s:?}")) + key.len()..];
        rest.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let groups = s
        .split("groups=")
        .nth(1)
        .map(|g| {
            g.trim()
                .split(',')
                .map(|x| {
                    x.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                        .parse()
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    (num("uid="), num("gid="), groups)
}

async fn id_of(
    e: &Env,
    p: &Pod,
    name: &str,
    f: impl FnOnce(&mut LinuxContainerSecurityContext),
) -> (u32, u32, HashSet<u32>) {
    let mut c = ctr(name, &e.imgs.busybox.reference, &["id"]);
    f(sc(&mut c));
    let id = run(e, p, c).await;
    let st = wait_exited(e, &id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let out = stdout_text(&p.log_dir.join(format!("{name}/0.log")).display().to_string());
    let r = id_output(&out);
    let user = st.user.unwrap().linux.unwrap();
    assert_eq!(
        (user.uid as u32, user.gid as u32),
        (r.0, r.1),
        "status.user matches the process"
    );
    r
}

#[tokio::test]
async fn users_and_supplemental_groups() {
    let e = env().await;
    let p = pod(&e, "users").await;
    let set = |v: &[u32]| v.iter().copied().collect::<HashSet<u32>>();
    // run_as_user: primary group from /etc/passwd, groups from /etc/group (Merge), plus supplemental.
    let r = id_of(&e, &p, "uid", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.supplemental_groups = vec![3000];
    })
    .await;
    assert_eq!(r, (1000, 1000, set(&[1000, 2000, 10, 3000])));
    let r = id_of(&e, &p, "username", |s| s.run_as_username = "crust".into()).await;
    assert_eq!(r, (1000, 1000, set(&[1000, 2000, 10])));
    let r = id_of(&e, &p, "strict", |s| {
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.run_as_group = Some(Int64Value { value: 3000 });
        s.supplemental_groups = vec![4000];
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    })
    .await;
    assert_eq!(r, (1000, 3000, set(&[3000, 4000])));
    let r = id_of(&e, &p, "root", |_| {}).await;
    assert_eq!((r.0, r.1), (0, 0));

    let mut c = ctr("ghost", &e.imgs.busybox.reference, &["id"]);
    sc(&mut c).run_as_username = "ghost".into();
    let err = create(&e, &p, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("run_as_username"), "{err:?}");
}

#[tokio::test]
async fn readonly_rootfs_mounts_masked_paths_and_env() {
    let e = env().await;
    let p = pod(&e, "fs").await;
    let ro = e.c.dir.path().join("ro-src");
    let rw = e.c.dir.path().join("rw-src");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("f"), "host file").unwrap();
    let script = "touch /x 2>/dev/null && echo rootfs=rw || echo rootfs=ro; \
                  touch /ro/x 2>/dev/null && echo ro=rw || echo ro=ro; \
                  cat /ro/f; echo; \
                  touch /rw/x && echo rw=rw; \
                  echo timer_list=$( (wc -c < /proc/timer_list) 2>&1 ); \
                  echo firmware=$(ls /sys/firmware | wc -l); \
                  echo ifs=$(touch /proc/sys/kernel/domainname 2>/dev/null && echo rw || echo ro)";
    let mut c = ctr("ro", &e.imgs.busybox.reference, &["sh", "-c", script]);
    sc(&mut c).readonly_rootfs = true;
    c.mounts = vec![
        Mount {
            container_path: "/ro".into(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        Mount {
            container_path: "/rw".into(),
            host_path: rw.display().to_string(),
            ..Default::default()
        },
    ];
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("ro/0.log").display().to_string());
    assert_eq!(st.exit_code, 0, "{st:?}\n{out}");
    for want in [
        "rootfs=ro",
        "ro=ro",
        "host file",
        "rw=rw",
        "timer_list=0",
        "firmware=0",
        "ifs=ro",
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} missing in:\n{out}");
    }
    assert!(rw.join("x").exists() && !ro.join("x").exists());
    assert_eq!(st.mounts.len(), 2);
    assert!(st.mounts.iter().any(|m| m.container_path == "/ro" && m.readonly));

    // Env: the image's, then the CRI's; entrypoint, working dir and user from the image; args replace Cmd.
    let mut c = ctr("env", &e.imgs.configured.reference, &[]);
    c.args = vec!["echo \"$GREETING $EXTRA $PWD $(id -u)\"".into()];
    c.envs = vec![KeyValue {
        key: "EXTRA".into(),
        value: b"more".to_vec(),
    }];
    let id = run(&e, &p, c).await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("env/0.log").display().to_string());
    assert_eq!(out, "hello more /home/crust 1000\n");
    let mut c = ctr("override", &e.imgs.configured.reference, &[]);
    c.envs = vec![KeyValue {
        key: "GREETING".into(),
        value: b"bonjour".to_vec(),
    }];
    let id = run(&e, &p, c).await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("override/0.log").display().to_string());
    assert_eq!(out, "bonjour from /home/crust as 1000\n");
}

#[tokio::test]
async fn security_context_reaches_the_process() {
    let e = env().await;
    let p = pod(&e, "sec").await;
    let script = "grep -E '^(Seccomp|NoNewPrivs|CapBnd|CapEff):' /proc/self/status; \
                  chown 1 /tmp 2>/dev/null && echo chown=yes || echo chown=no";
    let mut c = ctr("locked", &e.imgs.busybox.reference, &["sh", "-c", script]);
    {
        let s = sc(&mut c);
        s.no_new_privs = true;
        s.seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        s.capabilities = Some(Capability {
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
    }
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("locked/0.log").display().to_string());
    assert_eq!(st.exit_code, 0, "{st:?}\n{out}");
    let norm: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "Seccomp: 2",
        "NoNewPrivs: 1",
        "CapBnd: 0000000000000400",
        "CapEff: 0000000000000400",
        "chown=no",
    ] {
        assert!(norm.iter().any(|l| l == want), "{want:?} missing in {norm:?}");
    }

    // The default: containerd's capability set, no seccomp filter unless asked for.
    let id = run(
        &e,
        &p,
        ctr("default", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    wait_exited(&e, &id).await;
    let out = stdout_text(&p.log_dir.join("default/0.log").display().to_string());
    let norm: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in ["Seccomp: 0", "CapBnd: 00000000a80425fb", "chown=yes"] {
        assert!(norm.iter().any(|l| l == want), "{want:?} missing in {norm:?}");
    }
}
