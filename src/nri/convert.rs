//! What NRI plugins are shown: pods from their records, containers from their records and OCI spec
//! (the bundle's `config.json` for existing containers, the spec being built at creation).

use nri_api::nri as api;
use nri_api::protobuf;
use serde_json::Value;

use crate::container::ContainerRecord;
use crate::sandbox::PodRecord;

/// A pod as plugins see it.
pub fn pod(r: &PodRecord) -> api::PodSandbox {
    let mut p = api::PodSandbox::new();
    p.id = r.id.clone();
    p.name = r.name.clone();
    p.uid = r.uid.clone();
    p.namespace = r.namespace.clone();
    p.labels = r.labels.clone().into_iter().collect();
    p.annotations = r.annotations.clone().into_iter().collect();
    p.runtime_handler = r.runtime_handler.clone();
    p.pid = r.pause_pid;
    p.ips = r.ips.clone();
    let mut linux = api::LinuxPodSandbox::new();
    linux.cgroups_path = r.cgroup.clone().unwrap_or_default();
    if let Some(net) = &r.netns {
        let mut ns = api::LinuxNamespace::new();
        ns.type_ = "network".into();
        ns.path = net.display().to_string();
        linux.namespaces.push(ns);
    }
    p.linux = protobuf::MessageField::some(linux);
    p
}

/// A container as plugins see it: its record, and its OCI spec when there is one.
pub fn container(r: &ContainerRecord, spec: Option<&Value>) -> api::Container {
    let mut c = api::Container::new();
    c.id = r.id.clone();
    c.pod_sandbox_id = r.pod_id.clone();
    c.name = r.name.clone();
    c.state = protobuf::EnumOrUnknown::new(state(r));
    c.labels = r.labels.clone().into_iter().collect();
    c.annotations = r.annotations.clone().into_iter().collect();
    c.pid = r.pid;
    c.created_at = r.created_at;
    c.started_at = r.started_at;
    c.finished_at = r.finished_at;
    c.exit_code = r.exit_code;
    c.status_reason = r.reason.clone();
    c.status_message = r.message.clone();
    if let Some(s) = spec {
        fill_from_spec(&mut c, s);
    }
    c
}

fn state(r: &ContainerRecord) -> api::ContainerState {
    use cri_api::v1::ContainerState as S;
    match crate::container::record::cri_state(r) {
        S::ContainerCreated => api::ContainerState::CONTAINER_CREATED,
        S::ContainerRunning => api::ContainerState::CONTAINER_RUNNING,
        S::ContainerExited => api::ContainerState::CONTAINER_STOPPED,
        S::ContainerUnknown => api::ContainerState::CONTAINER_UNKNOWN,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn string(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The spec's annotations, args, environment, mounts, hooks, rlimits and Linux part.
pub fn fill_from_spec(c: &mut api::Container, s: &Value) {
    if let Some(a) = s["annotations"].as_object() {
        c.annotations = a.iter().map(|(k, v)| (k.clone(), string(v))).collect();
    }
    let process = &s["process"];
    c.args = strings(&process["args"]);
    c.env = strings(&process["env"]);
    c.rlimits = process["rlimits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut l = api::POSIXRlimit::new();
            l.type_ = string(&r["type"]);
            l.hard = r["hard"].as_u64().unwrap_or_default();
            l.soft = r["soft"].as_u64().unwrap_or_default();
            l
        })
        .collect();
    if let Some(u) = process.get("user") {
        let mut user = api::User::new();
        user.uid = u["uid"].as_u64().unwrap_or_default() as u32;
        user.gid = u["gid"].as_u64().unwrap_or_default() as u32;
        user.additional_gids = u["additionalGids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_u64().map(|g| g as u32))
            .collect();
        c.user = protobuf::MessageField::some(user);
    }
    c.mounts = s["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut n = api::Mount::new();
            n.destination = string(&m["destination"]);
            n.type_ = string(&m["type"]);
            n.source = string(&m["source"]);
            n.options = strings(&m["options"]);
            n
        })
        .collect();
    if let Some(h) = s["hooks"].as_object() {
        let mut hooks = api::Hooks::new();
        let list = |k: &str| -> Vec<api::Hook> {
            h.get(k)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .map(|x| {
                    let mut hk = api::Hook::new();
                    hk.path = string(&x["path"]);
                    hk.args = strings(&x["args"]);
                    hk.env = strings(&x["env"]);
                    if let Some(t) = x["timeout"].as_i64() {
                        let mut o = api::OptionalInt::new();
                        o.value = t;
                        hk.timeout = protobuf::MessageField::some(o);
                    }
                    hk
                })
                .collect()
        };
        hooks.prestart = list("prestart");
        hooks.create_runtime = list("createRuntime");
        hooks.create_container = list("createContainer");
        hooks.start_container = list("startContainer");
        hooks.poststart = list("poststart");
        hooks.poststop = list("poststop");
        c.hooks = protobuf::MessageField::some(hooks);
    }
    let l = &s["linux"];
    let mut linux = api::LinuxContainer::new();
    linux.namespaces = l["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let mut ns = api::LinuxNamespace::new();
            ns.type_ = string(&n["type"]);
            ns.path = string(&n["path"]);
            ns
        })
        .collect();
    linux.devices = l["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let mut dev = api::LinuxDevice::new();
            dev.path = string(&d["path"]);
            dev.type_ = string(&d["type"]);
            dev.major = d["major"].as_i64().unwrap_or_default();
            dev.minor = d["minor"].as_i64().unwrap_or_default();
            if let Some(m) = d["fileMode"].as_u64() {
                let mut o = api::OptionalFileMode::new();
                o.value = m as u32;
                dev.file_mode = protobuf::MessageField::some(o);
            }
            dev
        })
        .collect();
    linux.cgroups_path = string(&l["cgroupsPath"]);
    if let Some(adj) = process["oomScoreAdj"].as_i64() {
        let mut o = api::OptionalInt::new();
        o.value = adj;
        linux.oom_score_adj = protobuf::MessageField::some(o);
    }
    linux.resources = protobuf::MessageField::some(resources(&l["resources"]));
    c.linux = protobuf::MessageField::some(linux);
}

/// OCI `linux.resources` as NRI's `LinuxResources`.
pub fn resources(r: &Value) -> api::LinuxResources {
    let mut out = api::LinuxResources::new();
    let i64o = |v: &Value| {
        v.as_i64().map(|x| {
            let mut o = api::OptionalInt64::new();
            o.value = x;
            o
        })
    };
    let u64o = |v: &Value| {
        v.as_u64().map(|x| {
            let mut o = api::OptionalUInt64::new();
            o.value = x;
            o
        })
    };
    let m = &r["memory"];
    if m.is_object() {
        let mut mem = api::LinuxMemory::new();
        mem.limit = i64o(&m["limit"]).into();
        mem.reservation = i64o(&m["reservation"]).into();
        mem.swap = i64o(&m["swap"]).into();
        mem.swappiness = u64o(&m["swappiness"]).into();
        out.memory = protobuf::MessageField::some(mem);
    }
    let c = &r["cpu"];
    if c.is_object() {
        let mut cpu = api::LinuxCPU::new();
        cpu.shares = u64o(&c["shares"]).into();
        cpu.quota = i64o(&c["quota"]).into();
        cpu.period = u64o(&c["period"]).into();
        cpu.cpus = string(&c["cpus"]);
        cpu.mems = string(&c["mems"]);
        out.cpu = protobuf::MessageField::some(cpu);
    }
    out.hugepage_limits = r["hugepageLimits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let mut l = api::HugepageLimit::new();
            l.page_size = string(&h["pageSize"]);
            l.limit = h["limit"].as_u64().unwrap_or_default();
            l
        })
        .collect();
    if let Some(u) = r["unified"].as_object() {
        out.unified = u.iter().map(|(k, v)| (k.clone(), string(v))).collect();
    }
    if let Some(p) = r["pids"]["limit"].as_i64() {
        let mut pids = api::LinuxPids::new();
        pids.limit = p;
        out.pids = protobuf::MessageField::some(pids);
    }
    out
}
