//! A CRI request fuzzer: random and mutated requests against a real crustd (CNI, registry, runc) for a
//! bounded number of requests. It checks that crustd never panics or hangs, answers every malformed
//! request with a client error code (never Internal or Unknown, outside the runtime's own failures at
//! start and exec), and that a refused request leaves nothing behind: no pod, container, netns, IP
//! lease or cgroup beyond what the accepted requests made, all of which go away with their removal.
//!
//! Reproducible: the seed is printed; `CRUST_FUZZ_SEED` replays one, `CRUST_FUZZ_REQUESTS` sets the
//! budget (default 1500, about 15 s here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

/// Strings that break naive handling: empty, separators, NUL, traversal, non-ASCII.
const NASTY: &[&str] = &[
    "",
    "a",
    "Mixed-Case.Name",
    "x;IP=10.0.0.9",
    "nul\0byte",
    "new\nline",
    "../../etc/passwd",
    "/abs/path",
    "with space",
    "ünïcödé",
    "%2Frun%2Fx",
    ".",
    "-",
    "*",
    "a=b",
    "0",
    "-1",
    "4294967296",
];

/// One of [`NASTY`], or a huge string.
fn nasty(r: &mut StdRng) -> String {
    match r.random_range(0..10) {
        0 => "z".repeat(r.random_range(60..300)),
        1 => "q".repeat(70_000),
        _ => NASTY[r.random_range(0..NASTY.len())].to_string(),
    }
}

fn maybe(r: &mut StdRng) -> bool {
    r.random_bool(0.3)
}

fn int(r: &mut StdRng) -> i64 {
    let pool = [
        0,
        1,
        -1,
        2,
        100,
        i64::MAX,
        i64::MIN,
        1 << 32,
        65535,
        65536,
        1_000_000,
    ];
    pool[r.random_range(0..pool.len())]
}

fn mode(r: &mut StdRng) -> i32 {
    r.random_range(-1..6)
}

fn pod_config(r: &mut StdRng, n: usize) -> PodSandboxConfig {
    let mut c = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("fuzz-{n}"),
            uid: format!("uid-{n}"),
            namespace: "fuzz".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let md = c.metadata.as_mut().unwrap();
    if maybe(r) {
        md.name = nasty(r);
    }
    if maybe(r) {
        md.uid = nasty(r);
    }
    if maybe(r) {
        md.namespace = nasty(r);
    }
    if maybe(r) {
        md.attempt = r.random();
    }
    if maybe(r) {
        c.hostname = nasty(r);
    }
    if maybe(r) {
        c.log_directory = nasty(r);
    }
    if maybe(r) {
        c.dns_config = Some(DnsConfig {
            servers: vec![nasty(r)],
            searches: vec![nasty(r)],
            options: vec![nasty(r)],
        });
    }
    if maybe(r) {
        c.port_mappings = vec![PortMapping {
            protocol: mode(r),
            container_port: int(r) as i32,
            host_port: int(r) as i32,
            host_ip: nasty(r),
        }];
    }
    if maybe(r) {
        c.annotations = [(nasty(r), nasty(r))].into();
    }
    if maybe(r) {
        let mut linux = LinuxPodSandboxConfig {
            cgroup_parent: if maybe(r) { nasty(r) } else { String::new() },
            sysctls: if maybe(r) {
                [(nasty(r), nasty(r))].into()
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let mut ns = NamespaceOption {
            network: mode(r),
            pid: mode(r),
            ipc: mode(r),
            target_id: nasty(r),
            ..Default::default()
        };
        if maybe(r) {
            let m = IdMapping {
                host_id: int(r) as u32,
                container_id: int(r) as u32,
                length: int(r) as u32,
            };
            ns.userns_options = Some(UserNamespace {
                mode: mode(r),
                uids: vec![m; r.random_range(0..3)],
                gids: vec![m; r.random_range(0..3)],
            });
        }
        linux.security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            run_as_user: maybe(r).then(|| Int64Value { value: int(r) }),
            privileged: false,
            ..Default::default()
        });
        c.linux = Some(linux);
    }
    c
}

fn container_config(r: &mut StdRng, image: &str, n: usize, scratch: &std::path::Path) -> ContainerConfig {
    let mut c = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: format!("c-{n}"),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["true".into()],
        log_path: format!("c-{n}.log"),
        ..Default::default()
    };
    if maybe(r) {
        c.metadata.as_mut().unwrap().name = nasty(r);
    }
    if maybe(r) {
        c.image.as_mut().unwrap().image = nasty(r);
    }
    if maybe(r) {
        c.command = vec![nasty(r)];
        c.args = vec![nasty(r)];
    }
    if maybe(r) {
        c.working_dir = nasty(r);
    }
    if maybe(r) {
        c.log_path = nasty(r);
    }
    if maybe(r) {
        c.envs = vec![KeyValue {
            key: nasty(r),
            value: nasty(r).into(),
        }];
    }
    if maybe(r) {
        c.mounts = vec![Mount {
            container_path: nasty(r),
            host_path: scratch.join(r.random::<u32>().to_string()).display().to_string(),
            propagation: mode(r),
            readonly: r.random(),
            recursive_read_only: r.random(),
            ..Default::default()
        }];
    }
    if maybe(r) {
        c.devices = vec![Device {
            container_path: nasty(r),
            host_path: nasty(r),
            permissions: nasty(r),
        }];
    }
    if maybe(r) {
        let sc = LinuxContainerSecurityContext {
            run_as_user: maybe(r).then(|| Int64Value { value: int(r) }),
            run_as_group: maybe(r).then(|| Int64Value { value: int(r) }),
            run_as_username: if maybe(r) { nasty(r) } else { String::new() },
            supplemental_groups: if maybe(r) { vec![int(r)] } else { vec![] },
            capabilities: maybe(r).then(|| Capability {
                add_capabilities: vec![nasty(r)],
                drop_capabilities: vec![nasty(r)],
                add_ambient_capabilities: vec![nasty(r)],
            }),
            seccomp: maybe(r).then(|| SecurityProfile {
                profile_type: mode(r),
                localhost_ref: nasty(r),
            }),
            apparmor: maybe(r).then(|| SecurityProfile {
                profile_type: mode(r),
                localhost_ref: nasty(r),
            }),
            masked_paths: if maybe(r) { vec![nasty(r)] } else { vec![] },
            readonly_paths: if maybe(r) { vec![nasty(r)] } else { vec![] },
            namespace_options: maybe(r).then(|| NamespaceOption {
                network: mode(r),
                pid: mode(r),
                ipc: mode(r),
                target_id: nasty(r),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resources = maybe(r).then(|| LinuxContainerResources {
            cpu_period: int(r),
            cpu_quota: int(r),
            cpu_shares: int(r),
            memory_limit_in_bytes: int(r),
            oom_score_adj: int(r),
            cpuset_cpus: nasty(r),
            cpuset_mems: nasty(r),
            ..Default::default()
        });
        c.linux = Some(LinuxContainerConfig {
            resources,
            security_context: Some(sc),
        });
    }
    c
}

/// Codes a malformed request may get. Internal and Unknown are crust's own failures.
fn client_code(c: Code) -> bool {
    matches!(
        c,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::Unimplemented
    )
}

#[tokio::test]
async fn random_and_mutated_requests_get_client_errors_and_leave_nothing() {
    let seed: u64 = std::env::var("CRUST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let budget: usize = std::env::var("CRUST_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    println!("fuzz seed {seed} (CRUST_FUZZ_SEED={seed} replays it), {budget} requests");
    let parents_before = nasty_parents();
    let mut r = StdRng::seed_from_u64(seed);
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let mut rt = c.runtime().await;
    let mut im = c.images().await;
    let image = imgs.busybox.reference.clone();
    im.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // One good pod the container requests go to; mounts' host paths (which crust makes when missing,
    // as containerd does) stay in the test's own directory.
    let scratch = c.dir.path().join("fuzz-mounts");
    let base_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "fuzz-0".into(),
            uid: "uid-0".into(),
            namespace: "fuzz".into(),
            attempt: 0,
        }),
        log_directory: c.dir.path().join("fuzz-logs").display().to_string(),
        ..Default::default()
    };
    let base = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(base_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;

    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut pods = vec![base.clone()];
    let mut containers: Vec<String> = Vec::new();
    let deadline = Duration::from_secs(60);
    for n in 1..=budget {
        let pick = r.random_range(0..10);
        let (rpc, res): (&str, Result<(), tonic::Status>) = match pick {
            0..=2 => {
                let before = rt
                    .list_pod_sandbox(ListPodSandboxRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .items
                    .len();
                let req = RunPodSandboxRequest {
                    config: Some(pod_config(&mut r, n)),
                    runtime_handler: if maybe(&mut r) {
                        nasty(&mut r)
                    } else {
                        String::new()
                    },
                };
                let res = tokio::time::timeout(deadline, rt.run_pod_sandbox(req))
                    .await
                    .expect("RunPodSandbox hung");
                let after = rt
                    .list_pod_sandbox(ListPodSandboxRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .items
                    .len();
                match &res {
                    Ok(resp) => pods.push(resp.get_ref().pod_sandbox_id.clone()),
                    Err(_) => assert_eq!(before, after, "a refused RunPodSandbox left a pod (seed {seed})"),
                }
                ("RunPodSandbox", res.map(drop))
            }
            3..=5 => {
                let before = rt
                    .list_containers(ListContainersRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .containers
                    .len();
                let req = CreateContainerRequest {
                    pod_sandbox_id: if maybe(&mut r) {
                        nasty(&mut r)
                    } else {
                        base.clone()
                    },
                    config: Some(container_config(&mut r, &image, n, &scratch)),
                    sandbox_config: Some(base_config.clone()),
                };
                let res = tokio::time::timeout(deadline, rt.create_container(req))
                    .await
                    .expect("CreateContainer hung");
                let after = rt
                    .list_containers(ListContainersRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .containers
                    .len();
                match &res {
                    Ok(resp) => containers.push(resp.get_ref().container_id.clone()),
                    Err(_) => assert_eq!(
                        before, after,
                        "a refused CreateContainer left a container (seed {seed})"
                    ),
                }
                ("CreateContainer", res.map(drop))
            }
            6 if !containers.is_empty() => {
                let id = containers[r.random_range(0..containers.len())].clone();
                let res = tokio::time::timeout(
                    deadline,
                    rt.start_container(StartContainerRequest { container_id: id }),
                )
                .await
                .expect("StartContainer hung");
                // The runtime's own refusals (a command that does not exist) are Internal/StartError.
                match res {
                    Err(s) if !client_code(s.code()) => ("StartContainer(runtime)", Ok(())),
                    other => ("StartContainer", other.map(drop)),
                }
            }
            _ => {
                let id = match r.random_range(0..4) {
                    0 if !containers.is_empty() => containers[r.random_range(0..containers.len())].clone(),
                    1 => base[..r.random_range(0..base.len())].to_string(),
                    _ => nasty(&mut r),
                };
                let res = match r.random_range(0..7) {
                    0 => rt
                        .container_status(ContainerStatusRequest {
                            container_id: id,
                            verbose: r.random(),
                        })
                        .await
                        .map(drop),
                    1 => rt
                        .pod_sandbox_status(PodSandboxStatusRequest {
                            pod_sandbox_id: id,
                            verbose: r.random(),
                        })
                        .await
                        .map(drop),
                    2 => rt
                        .update_container_resources(UpdateContainerResourcesRequest {
                            container_id: id,
                            linux: Some(LinuxContainerResources {
                                cpu_quota: int(&mut r),
                                memory_limit_in_bytes: int(&mut r),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    3 => rt
                        .reopen_container_log(ReopenContainerLogRequest { container_id: id })
                        .await
                        .map(drop),
                    4 => im
                        .image_status(ImageStatusRequest {
                            image: Some(ImageSpec {
                                image: id,
                                ..Default::default()
                            }),
                            verbose: true,
                        })
                        .await
                        .map(drop),
                    5 => im
                        .remove_image(RemoveImageRequest {
                            image: Some(ImageSpec {
                                image: format!("{id}-x"),
                                ..Default::default()
                            }),
                        })
                        .await
                        .map(drop),
                    _ => rt
                        .list_containers(ListContainersRequest {
                            filter: Some(ContainerFilter {
                                id,
                                pod_sandbox_id: nasty(&mut r),
                                ..Default::default()
                            }),
                        })
                        .await
                        .map(drop),
                };
                ("other", res)
            }
        };
        let key = match &res {
            Ok(()) => format!("{rpc}: OK"),
            Err(s) => format!("{rpc}: {:?}", s.code()),
        };
        *codes.entry(key).or_default() += 1;
        if let Err(s) = &res
            && !client_code(s.code())
        {
            bad.push(format!(
                "{rpc}: {:?} {}",
                s.code(),
                s.message().chars().take(300).collect::<String>()
            ));
        }
    }
    println!("answers: {codes:#?}");
    assert!(
        bad.is_empty(),
        "crust's own failures (seed {seed}):\n{}",
        bad.join("\n")
    );
    // Still up, and everything the accepted requests made goes away with them.
    rt.version(VersionRequest::default())
        .await
        .expect("crustd is still up");
    c.remove_everything().await.unwrap();
    assert!(
        rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );
    assert!(
        rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
    for d in ["netns", "userns"] {
        let left: Vec<_> = std::fs::read_dir(c.state.join(d))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d} pins left: {left:?} (seed {seed})");
    }
    let leases: Vec<_> = {
        let net = c.network.as_ref().unwrap();
        std::fs::read_dir(net.ipam_dir.join(&net.name))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(leases.is_empty(), "IP leases left: {leases:?} (seed {seed})");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .filter_map(|h| std::fs::read_dir(h.path().join(&c.cgroup_parent)).ok())
        .flat_map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
        })
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?} (seed {seed})");
    // The nasty cgroup parents are kubelet's to make and remove, not crust's: the test removes those
    // its pods made (empty by now; rmdir refuses a cgroup that is not).
    for dir in nasty_parents().difference(&parents_before) {
        harness::crustd::remove_cgroup_tree(dir);
    }
}

/// The cgroups at the top of each v1 hierarchy (and the v2 one) named as [`nasty`] names parents.
fn nasty_parents() -> std::collections::BTreeSet<std::path::PathBuf> {
    // "/abs/path" makes `abs` at the top; the huge strings are runs of `z`.
    let named = |n: &str| NASTY.contains(&n) || n == "abs" || (!n.is_empty() && n.chars().all(|c| c == 'z'));
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && named(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}
