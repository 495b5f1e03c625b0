//! CRI `LinuxContainerResources` → OCI `linux.resources` (CPU, memory, hugepages, unified), for the
//! spec at create time and for `UpdateContainerResources`.

use cri_api::v1;
use oci_spec::runtime::LinuxResources;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// Whether the host's cgroup hierarchy is pure v2 (unified keys only apply there).
pub fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The OCI resources object for `r` (unset CRI values, i.e. zero, are left out). `field` prefixes
/// errors (e.g. `config.linux.resources`).
pub fn to_json(r: &v1::LinuxContainerResources, v2: bool, field: &str) -> Result<Value> {
    super::resource_checks::check(r, v2, field)?;
    let mut out = Map::new();
    let mut cpu = Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    let mut mem = Map::new();
    // -1 (no limit) is passed on as containerd passes it: runc and the kernel take it so.
    if r.memory_limit_in_bytes != 0 {
        mem.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !mem.is_empty() {
        out.insert("memory".into(), Value::Object(mem));
    }
    if !r.hugepage_limits.is_empty() {
        let hp: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        out.insert("hugepageLimits".into(), Value::Array(hp));
    }
    if !r.unified.is_empty() {
        out.insert("unified".into(), json!(r.unified));
    }
    Ok(Value::Object(out))
}

/// The typed OCI resources for `r` (for `OciRuntime::update`).
pub fn to_oci(r: &v1::LinuxContainerResources, field: &str) -> Result<LinuxResources> {
    serde_json::from_value(to_json(r, cgroup_v2(), field)?)
        .map_err(|e| Error::invalid(field, format!("not valid OCI resources: {e}")))
}

/// Merges `update` (a [`to_json`] object: only the values set) into a spec's `linux.resources`: each
/// section's keys replace those in the spec, the rest (devices, unset values) stay. For containers not
/// started yet, whose runtime has not seen the spec.
pub fn merge_into_spec(spec: &mut Value, update: &Value) {
    let Some(update) = update.as_object() else {
        return;
    };
    let res = &mut spec["linux"]["resources"];
    if !res.is_object() {
        *res = json!({});
    }
    for (k, v) in update {
        match (res.get_mut(k), v.as_object()) {
            (Some(Value::Object(cur)), Some(new)) => {
                for (nk, nv) in new {
                    cur.insert(nk.clone(), nv.clone());
                }
            }
            _ => res[k] = v.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_what_the_update_leaves_unset() {
        let mut spec = json!({"linux": {"resources": {
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 100, "swap": 100},
            "cpu": {"shares": 2}
        }}});
        merge_into_spec(&mut spec, &json!({"memory": {"limit": 200}, "cpu": {"quota": 5}}));
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"], json!({"limit": 200, "swap": 100}));
        assert_eq!(r["cpu"], json!({"shares": 2, "quota": 5}));
        assert_eq!(r["devices"][0]["access"], "rwm");
        let mut bare = json!({"linux": {}});
        merge_into_spec(&mut bare, &json!({"memory": {"limit": 1}}));
        assert_eq!(bare["linux"]["resources"]["memory"]["limit"], 1);
    }

    #[test]
    fn zero_values_are_unset() {
        let v = to_json(&v1::LinuxContainerResources::default(), false, "r").unwrap();
        assert_eq!(v, json!({}));
    }

    #[test]
    fn full_resources() {
        let r = v1::LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 16 << 20,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![v1::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        };
        let v = to_json(&r, true, "r").unwrap();
        assert_eq!(v["cpu"]["shares"], 512);
        assert_eq!(v["cpu"]["quota"], 50000);
        assert_eq!(v["memory"]["limit"], 16 << 20);
        assert_eq!(v["hugepageLimits"][0]["pageSize"], "2MB");
        assert_eq!(v["unified"]["memory.high"], "1000000");
        let typed: LinuxResources = serde_json::from_value(v).unwrap();
        assert_eq!(typed.memory().unwrap().limit(), Some(16 << 20));
        let e = to_json(&r, false, "r").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { field, .. } if field == "r.unified"),
            "{e}"
        );
        let bad = v1::LinuxContainerResources {
            memory_limit_in_bytes: -2,
            ..Default::default()
        };
        let e = to_json(&bad, false, "config.linux.resources").unwrap_err();
        assert!(e.to_string().contains("memory_limit_in_bytes"), "{e}");
    }
}
