//! The Linux part of NRI adjustments, mapped onto OCI spec JSON.

use std::path::Path;

use nri_api::nri as api;
use nri_api::protobuf::{EnumOrUnknown, MessageField};
use serde_json::json;

use super::adjust::{Host, Owners, apply};
use crate::oci::features::{Features, remember};

fn host(runtime: &str, oci: &str, net: bool) -> Host {
    remember(
        Path::new(runtime),
        Features::parse(&json!({"ociVersionMax": oci, "linux": {"netDevices": {"enabled": net}}})),
    );
    Host {
        runtime: runtime.into(),
        cdi_spec_dirs: Vec::new(),
    }
}

fn adj(l: api::LinuxContainerAdjustment) -> api::ContainerAdjustment {
    let mut a = api::ContainerAdjustment::new();
    a.linux = MessageField::some(l);
    a
}

fn spec() -> serde_json::Value {
    json!({"process": {"args": ["sh"]}, "linux": {"namespaces": [
        {"type": "pid"}, {"type": "network", "path": "/var/run/netns/pod"}, {"type": "ipc"}
    ]}})
}

#[test]
fn io_priority_and_scheduler_go_into_the_process_for_a_runtime_spec_1_1_runtime() {
    let h = host("/test/runc-1.2", "1.2.0", false);
    let mut l = api::LinuxContainerAdjustment::new();
    let mut io = api::LinuxIOPriority::new();
    io.class = EnumOrUnknown::new(api::IOPrioClass::IOPRIO_CLASS_BE);
    io.priority = 5;
    l.io_priority = MessageField::some(io);
    let mut s = api::LinuxScheduler::new();
    s.policy = EnumOrUnknown::new(api::LinuxSchedulerPolicy::SCHED_BATCH);
    s.nice = 7;
    s.flags = vec![EnumOrUnknown::new(
        api::LinuxSchedulerFlag::SCHED_FLAG_RESET_ON_FORK,
    )];
    l.scheduler = MessageField::some(s);
    let mut sp = spec();
    apply(&mut sp, &adj(l), "10-a", &mut Owners::default(), &h).unwrap();
    assert_eq!(
        sp["process"]["ioPriority"],
        json!({"class": "IOPRIO_CLASS_BE", "priority": 5})
    );
    assert_eq!(
        sp["process"]["scheduler"],
        json!({"policy": "SCHED_BATCH", "nice": 7, "priority": 0, "flags": ["SCHED_FLAG_RESET_ON_FORK"]})
    );
}

#[test]
fn io_priority_is_refused_naming_the_plugin_for_a_runtime_spec_1_0_runtime() {
    let h = host("/test/runc-1.1", "1.0.2-dev", false);
    let mut l = api::LinuxContainerAdjustment::new();
    l.io_priority = MessageField::some(api::LinuxIOPriority::new());
    let e = apply(&mut spec(), &adj(l), "10-a", &mut Owners::default(), &h).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("\"10-a\"") && m.contains("runtime-spec 1.1") && m.contains("1.0.2-dev"),
        "{m}"
    );
}

#[test]
fn namespaces_are_replaced_added_and_removed_by_type() {
    let h = host("/test/runc-x", "1.0.2", false);
    let mut l = api::LinuxContainerAdjustment::new();
    for (t, p) in [("network", "/var/run/netns/other"), ("-ipc", ""), ("cgroup", "")] {
        let mut n = api::LinuxNamespace::new();
        n.type_ = t.into();
        n.path = p.into();
        l.namespaces.push(n);
    }
    let mut sp = spec();
    apply(&mut sp, &adj(l), "10-a", &mut Owners::default(), &h).unwrap();
    assert_eq!(
        sp["linux"]["namespaces"],
        json!([{"type": "pid"}, {"type": "network", "path": "/var/run/netns/other"}, {"type": "cgroup"}])
    );
    let mut l = api::LinuxContainerAdjustment::new();
    let mut n = api::LinuxNamespace::new();
    n.type_ = "netns".into();
    l.namespaces.push(n);
    let e = apply(&mut spec(), &adj(l), "10-a", &mut Owners::default(), &h).unwrap_err();
    assert!(e.to_string().contains("unknown namespace type"), "{e}");
}

#[test]
fn a_seccomp_policy_replaces_the_containers() {
    let h = host("/test/runc-x", "1.0.2", false);
    let mut p = api::LinuxSeccomp::new();
    p.default_action = "SCMP_ACT_ERRNO".into();
    p.architectures = vec!["SCMP_ARCH_X86_64".into()];
    let mut sc = api::LinuxSyscall::new();
    sc.names = vec!["read".into(), "write".into()];
    sc.action = "SCMP_ACT_ALLOW".into();
    let mut arg = api::LinuxSeccompArg::new();
    arg.index = 0;
    arg.value = 1;
    arg.op = "SCMP_CMP_EQ".into();
    sc.args.push(arg);
    p.syscalls.push(sc);
    let mut l = api::LinuxContainerAdjustment::new();
    l.seccomp_policy = MessageField::some(p);
    let mut sp = spec();
    sp["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"});
    apply(&mut sp, &adj(l.clone()), "10-a", &mut Owners::default(), &h).unwrap();
    assert_eq!(
        sp["linux"]["seccomp"],
        json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}
        ]})
    );
    let mut owners = Owners::default();
    apply(&mut spec(), &adj(l.clone()), "10-a", &mut owners, &h).unwrap();
    let e = apply(&mut spec(), &adj(l), "20-b", &mut owners, &h).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"10-a\" and \"20-b\" both tried to set seccomp policy"),
        "{e}"
    );
}

#[test]
fn net_devices_need_a_runtime_that_injects_them() {
    let mut l = api::LinuxContainerAdjustment::new();
    let mut d = api::LinuxNetDevice::new();
    d.name = "eth1".into();
    l.net_devices.insert("dummy0".into(), d);
    let h = host("/test/runc-1.3", "1.2.1", true);
    let mut sp = spec();
    apply(&mut sp, &adj(l.clone()), "10-a", &mut Owners::default(), &h).unwrap();
    assert_eq!(sp["linux"]["netDevices"], json!({"dummy0": {"name": "eth1"}}));
    let h = host("/test/runc-1.2", "1.2.0", false);
    let e = apply(&mut spec(), &adj(l), "10-a", &mut Owners::default(), &h).unwrap_err();
    assert!(e.to_string().contains("does not inject network devices"), "{e}");
}

#[test]
fn a_cgroups_path_is_refused_saying_why() {
    let mut l = api::LinuxContainerAdjustment::new();
    l.cgroups_path = "/elsewhere".into();
    let h = host("/test/runc-x", "1.0.2", false);
    let e = apply(&mut spec(), &adj(l), "10-a", &mut Owners::default(), &h).unwrap_err();
    assert!(e.to_string().contains("pod's cgroup"), "{e}");
}
