//! Names as kubelet, crictl and critest send them: accepted whatever their length and case; only a value
//! that would forge the network plugins' CNI_ARGS is refused, naming the field and the reason.

use cri_api::v1::*;

use super::support::*;

/// A static pod's name carries the node's name; kubelet's pod names are DNS subdomains of up to 253
/// characters; critest's are mixed case.
fn kubelet_metas() -> Vec<PodSandboxMetadata> {
    vec![
        PodSandboxMetadata {
            name: format!("Create-PodSandbox-For-Container-{}", "AbC9".repeat(42)),
            namespace: "E2E-Tests-ImageService-Xk9Q".into(),
            uid: "6b8e0f44-0b8c-4f5e-9a3d-2f1b4c7d9e10".into(),
            attempt: 0,
        },
        PodSandboxMetadata {
            name: "kube-apiserver-control-plane-1.us-east-1.compute.internal".into(),
            namespace: "kube-system".into(),
            uid: "2b7f1e7d4f3c4a1b9e8d7c6b5a493827".into(),
            attempt: 3,
        },
        PodSandboxMetadata {
            name: format!("{}.{}", "a".repeat(200), "b".repeat(52)),
            namespace: "default".into(),
            uid: "uid-with-dashes-and-MIXED-case".into(),
            attempt: 0,
        },
    ]
}

#[tokio::test]
async fn kubelet_realistic_names_are_accepted_and_reported_back() {
    let c = start_crustd().await;
    let mut ids = Vec::new();
    for m in kubelet_metas() {
        assert!(m.name.len() <= 253);
        let mut cfg = pod("unused");
        cfg.metadata = Some(m.clone());
        cfg.hostname = String::new(); // the hostname then comes from the name, cut to what fits
        let id = run(&c, cfg)
            .await
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", m.name));
        let st = status(&c, &id, false).await.status.unwrap();
        assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(st.metadata.as_ref(), Some(&m), "metadata round-trips exactly");
        let hostname = std::fs::read_to_string(c.state.join("pods").join(&id).join("hostname")).unwrap();
        let want: String = m.name.chars().take(63).collect();
        assert_eq!(hostname.trim_end(), want);
        ids.push(id);
    }
    assert_eq!(leases(&c).len(), 3, "each pod went through CNI ADD");
    for id in &ids {
        stop(&c, id).await.unwrap();
        remove(&c, id).await.unwrap();
    }
    for id in &ids {
        assert_clean(&c, id);
    }
}

#[tokio::test]
async fn a_value_that_would_forge_cni_args_is_refused_and_leaves_nothing() {
    let c = start_crustd().await;
    for (field, edit) in [
        ("config.metadata.uid", 0),
        ("config.metadata.name", 1),
        ("config.metadata.namespace", 2),
    ] {
        let mut m = meta("forge");
        let bad = "x;IP=10.99.0.7".to_string();
        match edit {
            0 => m.uid = bad,
            1 => m.name = bad,
            _ => m.namespace = bad,
        }
        let mut cfg = pod("forge");
        cfg.metadata = Some(m);
        let e = run(&c, cfg).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().starts_with(field), "{}", e.message());
        assert!(
            e.message().contains("CNI_ARGS"),
            "the reason is given: {}",
            e.message()
        );
    }
    assert!(list(&c, None).await.is_empty());
    assert!(leases(&c).is_empty());
    assert!(pod_cgroups(&c).is_empty());
}
