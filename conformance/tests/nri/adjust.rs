//! Adjustments beyond the first round, asked for by the device injector's annotations and the `rdt`
//! plugin: a CDI device resolved from the node's CDI specs; I/O priority, a scheduler policy and a
//! network device, written into the spec where the OCI runtime honours them and refused naming the
//! plugin where it would ignore them (runc 1.1 knows runtime-spec 1.0.2 only); RDT refused on a node
//! without resctrl.

use tonic::Code;

use super::{env, optional_plugin, plugin_dir, preinstalled, runc_features};

#[tokio::test]
async fn the_device_injector_puts_a_cdi_device_in_the_container() {
    let Some(dir) = plugin_dir() else { return };
    let specs = tempfile::tempdir().unwrap();
    std::fs::write(
        specs.path().join("nri-test.yaml"),
        "cdiVersion: \"0.6.0\"\nkind: crust.test/nri\ndevices:\n  - name: null0\n    containerEdits:\n      \
         env: [CDI_FROM_NRI=null0]\n      deviceNodes:\n        - path: /dev/nri-cdi0\n          hostPath: /dev/null\n",
    )
    .unwrap();
    let e = env(
        dir,
        &format!(
            "[runtime]\ncdi_spec_dirs = [{:?}]\n",
            specs.path().display().to_string()
        ),
    )
    .await;
    let _dev = e.plugin("device-injector", "10", &[]).await;
    let key = "cdi-devices.noderesource.dev/container.c1";
    let pod = e.pod("cdi", &[(key, "- crust.test/nri=null0\n")]).await;
    let id = e.run(&pod, "c1").await;
    let out = e
        .sh(
            &id,
            "stat -c '%F %t,%T' /dev/nri-cdi0; echo $CDI_FROM_NRI; echo x > /dev/nri-cdi0 && echo wrote",
        )
        .await;
    assert_eq!(out, "character special file 1,3\nnull0\nwrote\n");
    // A device no CDI spec declares fails the creation, naming the plugin and the device.
    let pod = e.pod("cdi-unknown", &[(key, "- crust.test/nri=absent\n")]).await;
    let err = e.create(&pod, "c1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("10-device-injector") && err.message().contains("crust.test/nri=absent"),
        "{err:?}"
    );
}

#[tokio::test]
async fn io_priority_scheduler_and_network_devices_go_where_the_runtime_honours_them() {
    let Some(dir) = plugin_dir() else { return };
    let f = runc_features();
    let max = f["ociVersionMax"].as_str().unwrap_or("1.0.0").to_string();
    let knows_1_1 = !max.starts_with("1.0");
    let net = f["linux"]["netDevices"]["enabled"] == true;
    println!("runc features: ociVersionMax {max}, netDevices {net}");
    let e = env(dir, "").await;
    let _dev = e.plugin("device-injector", "10", &[]).await;
    let cases = [
        (
            "io-priority.noderesource.dev/container.c1",
            "class: IOPRIO_CLASS_BE\npriority: 4\n",
            knows_1_1,
            "I/O priority",
            "/process/ioPriority",
            serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 4}),
        ),
        (
            "scheduling-policy.noderesource.dev/container.c1",
            "policy: SCHED_BATCH\nnice: 5\n",
            knows_1_1,
            "scheduler policy",
            "/process/scheduler",
            serde_json::json!({"policy": "SCHED_BATCH", "nice": 5, "priority": 0}),
        ),
        (
            "network-devices.noderesource.dev/container.c1",
            "- hostIf: nri-dummy0\n  name: eth1\n",
            net,
            "network devices",
            "/linux/netDevices",
            serde_json::json!({"nri-dummy0": {"name": "eth1"}}),
        ),
    ];
    for (i, (key, value, honoured, what, pointer, want)) in cases.into_iter().enumerate() {
        let pod = e.pod(&format!("p{i}"), &[(key, value)]).await;
        let r = e.create(&pod, "c1").await;
        if honoured {
            // Created only: the spec is what is checked (starting would move a host interface).
            let id = r.unwrap();
            assert_eq!(e.bundle(&id).pointer(pointer), Some(&want), "{key}");
        } else {
            let err = r.unwrap_err();
            println!("{key}: {}", err.message());
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("10-device-injector"), "{err:?}");
            assert!(err.message().contains(what), "{what}: {err:?}");
        }
    }
}

#[tokio::test]
async fn rdt_settings_are_refused_on_a_node_without_resctrl() {
    let Some(dir) = plugin_dir() else { return };
    let Some(rdt) = optional_plugin(&dir, "rdt") else {
        return;
    };
    let resctrl = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("resctrl"));
    if resctrl {
        eprintln!("SKIP: this node has resctrl mounted; the refusal is for nodes without it");
        return;
    }
    // The rdt plugin takes no socket flag: it runs pre-installed, on the socket crustd hands it.
    let (_plugins, toml) = preinstalled(&[(&rdt, "10-rdt", None)]);
    let e = env(dir, &toml).await;
    assert!(
        e.connected().await.contains(&"10-rdt".to_string()),
        "{}",
        e.c.log()
    );
    let pod = e
        .pod("rdt", &[("closid.rdt.noderesource.dev/container.c1", "gold")])
        .await;
    let err = e.create(&pod, "c1").await.unwrap_err();
    println!("{}", err.message());
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("10-rdt") && err.message().contains("resctrl"),
        "{err:?}"
    );
    // Without the annotation the plugin asks for nothing and the container is made.
    let pod = e.pod("no-rdt", &[]).await;
    e.run(&pod, "c1").await;
}
