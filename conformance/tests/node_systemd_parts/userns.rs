//! User namespaces on the node, by kernel: on bookworm-backports' 6.12 (`make node-test`'s default)
//! Status says pods can have them (critest's user-namespace specs then run against it); on the stock
//! 6.1 (`NODE_KERNEL=6.1`), whose overlayfs refuses idmapped layers, Status says they cannot and why
//! (`crictl info`'s `userNamespaces`), and such a pod is refused with FailedPrecondition before
//! anything is made.

use super::*;

/// The running kernel's (major, minor).
fn kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r.trim().split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[tokio::test]
#[ignore = "runs on the test node: make node-test"]
async fn user_namespaces_are_offered_by_kernel_and_refused_with_a_reason() {
    if !on_node() {
        return;
    }
    let st = rt()
        .await
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("userNamespaces").expect("userNamespaces")).unwrap();
    let offered = st
        .runtime_handlers
        .iter()
        .all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces));
    let k = kernel();
    println!("node-userns: kernel {}.{}: {info}", k.0, k.1);
    if k >= (6, 3) {
        assert!(
            offered && info["supported"] == true,
            "{info} {:?}",
            st.runtime_handlers
        );
        return;
    }
    assert!(!offered && info["supported"] == false, "{info}");
    let why = info["reason"].as_str().unwrap_or_default();
    assert!(!why.is_empty(), "{info}");
    let uid = format!("{:08x}-node-userns", std::process::id());
    let ids = vec![IdMapping {
        container_id: 0,
        host_id: 300_000,
        length: 65536,
    }];
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "userns".into(),
            uid,
            namespace: "node-test".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                // The pod's own network (a user-namespaced pod may not share the node's): the
                // refusal comes before CNI is called.
                namespace_options: Some(NamespaceOption {
                    userns_options: Some(UserNamespace {
                        mode: NamespaceMode::Pod as i32,
                        uids: ids.clone(),
                        gids: ids,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = rt()
        .await
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a user-namespaced pod accepted on a kernel without idmapped overlay layers");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(why), "{} / {why}", err.message());
}
