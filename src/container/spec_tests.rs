//! Unit tests of the spec builder (pure: no root, no runc).

use std::collections::HashMap;
use std::path::Path;

use cri_api::v1;
use serde_json::Value;

use super::spec::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:alice\n";

fn pod() -> PodInfo {
    PodInfo {
        ctx: crate::sandbox::PodContext {
            id: "pod1".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            netns_path: Some("/run/crust/netns/pod1".into()),
            userns_path: None,
            pause_pid: Some(4242),
            namespace_options: v1::NamespaceOption::default(),
            hostname_path: "/run/crust/pods/pod1/hostname".into(),
            hosts_path: "/run/crust/pods/pod1/hosts".into(),
            resolv_path: "/run/crust/pods/pod1/resolv.conf".into(),
            shm_path: Some("/run/crust/pods/pod1/shm".into()),
            cgroup_parent: "crust/pod1".into(),
            cgroup_slice: None,
            log_directory: String::new(),
            runtime_handler: String::new(),
            ready: true,
            hostname: "web-host".into(),
            privileged: Some(false),
            sysctls: HashMap::new(),
        },
        hostname: "web-host".into(),
        privileged: false,
        sysctls: HashMap::from([("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())]),
    }
}

fn host() -> HostInfo {
    HostInfo {
        apparmor: false,
        seccomp_profile_root: "/nonexistent/seccomp".into(),
        cgroup_v2: false,
        all_caps: super::security::ALL_CAPS.iter().map(|s| s.to_string()).collect(),
        masked_paths: vec![],
        readonly_paths: vec![],
        cdi_spec_dirs: vec![],
        image_volumes: Default::default(),
    }
}

fn image() -> ImageDefaults {
    ImageDefaults {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["cmd-arg".into()],
        env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
        working_dir: "/work".into(),
        user: String::new(),
        stop_signal: "SIGUSR1".into(),
        volumes: vec![],
    }
}

fn cfg() -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

fn build_with(c: &v1::ContainerConfig, p: &PodInfo, img: &ImageDefaults) -> crate::Result<(Value, Built)> {
    let h = host();
    let no_volumes = HashMap::new();
    let no_cdi = Vec::new();
    let b = build(&SpecInput {
        id: "ctr1",
        config: c,
        image: img,
        image_name: "busybox",
        pod: p,
        rootfs: Path::new("/run/crust/containers/ctr1/rootfs"),
        passwd: Some(PASSWD),
        group: Some(GROUP),
        devices: vec![],
        host_devices: vec![HostDevice {
            container_path: "/dev/null".into(),
            kind: 'c',
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: 0,
            gid: 0,
            permissions: "rwm".into(),
        }],
        target_pid: Some(777),
        host: &h,
        idmapped_volumes: &no_volumes,
        cdi: &no_cdi,
        image_volumes: &no_volumes,
        declared_volumes: &[],
    })?;
    Ok((serde_json::to_value(&b.spec).unwrap(), b))
}

fn sec(c: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn mount<'a>(s: &'a Value, dst: &str) -> Option<&'a Value> {
    s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dst)
}

#[test]
fn command_rules_match_kubelet() {
    let img = image();
    let mut c = cfg();
    assert_eq!(command(&c, &img).unwrap(), ["/entry", "cmd-arg"]);
    c.args = vec!["x".into()];
    assert_eq!(command(&c, &img).unwrap(), ["/entry", "x"]);
    c.command = vec!["/bin/sh".into()];
    assert_eq!(command(&c, &img).unwrap(), ["/bin/sh", "x"]);
    c.args.clear();
    assert_eq!(command(&c, &img).unwrap(), ["/bin/sh"]);
    let e = command(&cfg(), &ImageDefaults::default()).unwrap_err();
    assert!(e.to_string().starts_with("config.command"), "{e}");
}

#[test]
fn env_is_merged_image_then_cri() {
    let mut c = cfg();
    c.envs = vec![
        v1::KeyValue {
            key: "B".into(),
            value: b"cri".to_vec(),
        },
        v1::KeyValue {
            key: "C".into(),
            value: b"x=y".to_vec(),
        },
    ];
    let e = env(&c, &image(), "h");
    assert_eq!(e, ["HOSTNAME=h", "PATH=/bin", "A=image", "B=cri", "C=x=y"]);
    let e = env(&cfg(), &ImageDefaults::default(), "");
    assert!(e[0].starts_with("PATH=/usr/local/sbin"), "{e:?}");
}

#[test]
fn defaults_process_namespaces_and_paths() {
    let (s, b) = build_with(&cfg(), &pod(), &image()).unwrap();
    assert_eq!(b.stop_signal, libc::SIGUSR1);
    assert_eq!(s["process"]["cwd"], "/work");
    assert_eq!(s["process"]["user"]["uid"], 0);
    assert_eq!(strs(&s["process"]["capabilities"]["bounding"]).len(), 14);
    assert_eq!(s["linux"]["cgroupsPath"], "/crust/pod1/ctr1");
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    let find = |t: &str| ns.iter().find(|n| n["type"] == t).cloned();
    assert_eq!(find("network").unwrap()["path"], "/run/crust/netns/pod1");
    assert_eq!(find("ipc").unwrap()["path"], "/proc/4242/ns/ipc");
    assert_eq!(find("uts").unwrap()["path"], "/proc/4242/ns/uts");
    assert_eq!(find("pid").unwrap()["path"], "/proc/4242/ns/pid");
    assert!(find("mount").unwrap().get("path").is_none());
    assert!(strs(&s["linux"]["maskedPaths"]).contains(&"/proc/kcore".to_string()));
    assert!(strs(&s["linux"]["readonlyPaths"]).contains(&"/proc/sys".to_string()));
    assert!(
        s["linux"].get("seccomp").is_none(),
        "no profile requested means unconfined"
    );
    assert_eq!(
        mount(&s, "/etc/hosts").unwrap()["source"],
        "/run/crust/pods/pod1/hosts"
    );
    assert_eq!(
        mount(&s, "/dev/shm").unwrap()["source"],
        "/run/crust/pods/pod1/shm"
    );
    assert_eq!(strs(&mount(&s, "/sys").unwrap()["options"]).last().unwrap(), "ro");
    assert_eq!(s["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(s["annotations"]["io.kubernetes.cri.sandbox-id"], "pod1");
    assert_eq!(s["root"]["readonly"], false);
}

#[test]
fn pid_namespace_modes_and_host_network() {
    let mut p = pod();
    p.ctx.netns_path = None;
    p.ctx.namespace_options.ipc = v1::NamespaceMode::Node as i32;
    let mut c = cfg();
    for (mode, want) in [
        (v1::NamespaceMode::Container, Some(None)),
        (v1::NamespaceMode::Node, None),
        (v1::NamespaceMode::Target, Some(Some("/proc/777/ns/pid"))),
    ] {
        sec(&mut c).namespace_options = Some(v1::NamespaceOption {
            pid: mode as i32,
            target_id: "t".into(),
            ..Default::default()
        });
        let (s, _) = build_with(&c, &p, &image()).unwrap();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(
            !types.contains(&"network") && !types.contains(&"uts") && !types.contains(&"ipc"),
            "{types:?}"
        );
        let pid = ns.iter().find(|n| n["type"] == "pid");
        match want {
            None => assert!(pid.is_none()),
            Some(path) => assert_eq!(pid.unwrap().get("path").and_then(|v| v.as_str()), path),
        }
        assert!(
            s["linux"].get("sysctl").is_none(),
            "net sysctls dropped on host network"
        );
        assert_eq!(mount(&s, "/dev/shm").unwrap()["source"], "/dev/shm");
    }
}

#[test]
fn users_and_groups() {
    let mut c = cfg();
    sec(&mut c).run_as_username = "alice".into();
    sec(&mut c).supplemental_groups = vec![4000];
    let (s, b) = build_with(&c, &pod(), &image()).unwrap();
    assert_eq!(s["process"]["user"]["uid"], 1000);
    assert_eq!(b.user.additional_gids, vec![1000, 10, 4000]);
    sec(&mut c).supplemental_groups_policy = v1::SupplementalGroupsPolicy::Strict as i32;
    sec(&mut c).run_as_group = Some(v1::Int64Value { value: 3000 });
    let (s, _) = build_with(&c, &pod(), &image()).unwrap();
    assert_eq!(s["process"]["user"]["gid"], 3000);
    assert_eq!(
        s["process"]["user"]["additionalGids"],
        serde_json::json!([3000, 4000])
    );
}

#[test]
fn mounts_propagation_readonly_and_rro() {
    let mut c = cfg();
    let m = |cp: &str, hp: &str, ro: bool, prop: v1::MountPropagation, rro: bool| v1::Mount {
        container_path: cp.into(),
        host_path: hp.into(),
        readonly: ro,
        propagation: prop as i32,
        recursive_read_only: rro,
        ..Default::default()
    };
    c.mounts = vec![
        m(
            "/data/sub",
            "/tmp/b",
            false,
            v1::MountPropagation::PropagationPrivate,
            false,
        ),
        m(
            "/data",
            "/tmp/a",
            true,
            v1::MountPropagation::PropagationHostToContainer,
            false,
        ),
        m(
            "/ro",
            "/tmp/c",
            true,
            v1::MountPropagation::PropagationPrivate,
            true,
        ),
        m(
            "/etc/hosts",
            "/tmp/myhosts",
            false,
            v1::MountPropagation::PropagationPrivate,
            false,
        ),
    ];
    let (s, _) = build_with(&c, &pod(), &image()).unwrap();
    let dsts: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    let pos = |d: &str| dsts.iter().position(|x| *x == d).unwrap();
    assert!(pos("/data") < pos("/data/sub"), "{dsts:?}");
    assert_eq!(dsts.iter().filter(|d| **d == "/etc/hosts").count(), 1);
    assert_eq!(mount(&s, "/etc/hosts").unwrap()["source"], "/tmp/myhosts");
    assert_eq!(
        strs(&mount(&s, "/data").unwrap()["options"]),
        ["rbind", "rslave", "ro"]
    );
    assert_eq!(
        strs(&mount(&s, "/ro").unwrap()["options"]),
        ["rbind", "rprivate", "ro", "rro"]
    );
    assert_eq!(s["linux"]["rootfsPropagation"], "rslave");
    c.mounts = vec![m(
        "/x",
        "/tmp/x",
        false,
        v1::MountPropagation::PropagationPrivate,
        true,
    )];
    let e = build_with(&c, &pod(), &image()).unwrap_err();
    assert!(
        e.to_string().starts_with("config.mounts[0].recursive_read_only"),
        "{e}"
    );
    c.mounts = vec![m(
        "rel",
        "/tmp/x",
        false,
        v1::MountPropagation::PropagationPrivate,
        false,
    )];
    assert!(
        build_with(&c, &pod(), &image())
            .unwrap_err()
            .to_string()
            .contains("container_path")
    );
}

#[test]
fn privileged_gets_everything_and_no_masks() {
    let mut c = cfg();
    sec(&mut c).privileged = true;
    assert!(
        build_with(&c, &pod(), &image())
            .unwrap_err()
            .to_string()
            .contains("privileged pod")
    );
    let mut p = pod();
    p.privileged = true;
    sec(&mut c).seccomp = Some(v1::SecurityProfile {
        profile_type: 0,
        localhost_ref: String::new(),
    });
    let (s, _) = build_with(&c, &p, &image()).unwrap();
    assert_eq!(
        strs(&s["process"]["capabilities"]["bounding"]).len(),
        super::security::ALL_CAPS.len()
    );
    assert!(
        s["linux"]
            .get("maskedPaths")
            .is_none_or(|v| v.as_array().is_none_or(|a| a.is_empty()))
    );
    assert!(s["linux"].get("seccomp").is_none());
    assert_eq!(s["linux"]["devices"][0]["path"], "/dev/null");
    assert_eq!(s["linux"]["resources"]["devices"][1]["allow"], true);
    assert_eq!(strs(&mount(&s, "/sys").unwrap()["options"]).last().unwrap(), "rw");
}

#[test]
fn security_options() {
    let mut c = cfg();
    {
        let s = sec(&mut c);
        s.readonly_rootfs = true;
        s.no_new_privs = true;
        s.capabilities = Some(v1::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        s.seccomp = Some(v1::SecurityProfile {
            profile_type: v1::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        s.masked_paths = vec!["/proc/custom".into()];
    }
    let (s, _) = build_with(&c, &pod(), &image()).unwrap();
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["process"]["noNewPrivileges"], true);
    assert_eq!(
        strs(&s["process"]["capabilities"]["effective"]),
        ["CAP_SYS_ADMIN"]
    );
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(
        !s["linux"]["seccomp"].to_string().contains("SCMP_CMP_MASKED_EQ"),
        "CAP_SYS_ADMIN: clone unrestricted"
    );
    assert_eq!(strs(&s["linux"]["maskedPaths"]), ["/proc/custom"]);
    assert_eq!(
        strs(&mount(&s, "/etc/resolv.conf").unwrap()["options"])
            .last()
            .unwrap(),
        "ro"
    );

    let d = tempfile::tempdir().unwrap();
    let prof = d.path().join("p.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    sec(&mut c).seccomp = Some(v1::SecurityProfile {
        profile_type: 2,
        localhost_ref: prof.display().to_string(),
    });
    let (s, _) = build_with(&c, &pod(), &image()).unwrap();
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    sec(&mut c).seccomp = Some(v1::SecurityProfile {
        profile_type: 2,
        localhost_ref: "/nonexistent.json".into(),
    });
    let e = build_with(&c, &pod(), &image()).unwrap_err();
    assert!(e.to_string().contains("seccomp.localhost_ref"), "{e}");
}

#[test]
fn resources_oom_and_stop_signal() {
    let mut c = cfg();
    c.linux.get_or_insert_with(Default::default).resources = Some(v1::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        cpu_shares: 256,
        oom_score_adj: -999,
        ..Default::default()
    });
    c.stop_signal = v1::Signal::Sigint as i32;
    let (s, b) = build_with(&c, &pod(), &image()).unwrap();
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 16 << 20);
    assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 256);
    let own = crate::sys::own_oom_score_adj();
    assert_eq!(s["process"]["oomScoreAdj"], own.max(-999));
    assert_eq!(b.stop_signal, libc::SIGINT);
}

#[test]
fn devices_are_resolved() {
    let d = host_devices(
        "config.devices[0]",
        &v1::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        },
    )
    .unwrap();
    assert_eq!((d[0].kind, d[0].major, d[0].minor), ('c', 1, 3));
    let e = host_devices(
        "config.devices[0]",
        &v1::Device {
            container_path: "/x".into(),
            host_path: "/etc/passwd".into(),
            permissions: "".into(),
        },
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("config.devices[0].host_path"), "{e}");
}
