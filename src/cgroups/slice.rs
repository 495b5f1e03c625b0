//! systemd unit names for the systemd cgroup driver, as runc, containerd and CRI-O spell them: slice
//! names and their dash expansion (`a-b-c.slice` is `a.slice/a-b.slice/a-b-c.slice` under the cgroup
//! root), kubelet's pod parents (a slice name, or the expanded path of one), the scope names crust
//! gives its units, and the runtime's `cgroupsPath` (`<slice>:<prefix>:<name>`). Pure functions.

/// The prefix of the scopes the OCI runtime makes for containers (`crust-<id>.scope`), the middle
/// part of `cgroupsPath`.
pub const SCOPE_PREFIX: &str = "crust";

/// The slice a crust-made pod slice goes under when neither the request nor the configuration names
/// a parent.
pub const DEFAULT_SLICE: &str = "crust.slice";

/// The slice the monitors' scopes go in: outside every pod (CRI-O's default for conmon), so a pod's
/// memory limit never reaches the process that records its containers' exits.
pub const MONITOR_SLICE: &str = "system.slice";

/// The longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;

/// Checks a slice unit name: `<stem>.slice`, the stem made of dash-separated non-empty parts of
/// unit-name characters (`[A-Za-z0-9:_.\\]`); the root slice `-.slice` is refused (pods never go
/// there). Returns the stem.
pub fn check_slice(name: &str) -> Result<&str, String> {
    let Some(stem) = name.strip_suffix(".slice") else {
        return Err(format!("{name:?} is not a systemd slice name (<name>.slice)"));
    };
    if name.len() > UNIT_NAME_MAX {
        return Err(format!("{name:?} is longer than a unit name can be"));
    }
    if stem.is_empty() || stem == "-" {
        return Err(format!("{name:?}: the root slice cannot be a pod's parent"));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '-')))
    {
        return Err(format!("{name:?} holds {c:?}, which no unit name can"));
    }
    if stem.split('-').any(str::is_empty) {
        return Err(format!(
            "{name:?}: a slice name's dash-separated parts must not be empty"
        ));
    }
    if stem.split('-').any(|p| p == "." || p == "..") {
        return Err(format!("{name:?} has a '.' or '..' part"));
    }
    Ok(stem)
}

/// The cgroup path of a slice, relative to the cgroup root: `a-b-c.slice` →
/// `a.slice/a-b.slice/a-b-c.slice`.
pub fn expand_slice(name: &str) -> Result<String, String> {
    let stem = check_slice(name)?;
    let mut out = Vec::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// A pod's parent as a request (or the configuration) names it under the systemd driver: a slice
/// name (`kubepods-burstable-pod<uid>.slice`), or the expanded path of one, as kubelet sends it
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`; containerd and CRI-O
/// take its last component). A path must be exactly its last slice's expansion. Returns the slice.
pub fn parse_parent(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Err("\"/\" is the root cgroup, not a pod's slice".into());
    }
    if trimmed.split('/').any(|p| p == ".." || p == ".") {
        return Err(format!("{raw:?} contains '..' or '.'"));
    }
    let leaf = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let expanded = expand_slice(leaf).map_err(|e| format!("with the systemd cgroup driver, {e}"))?;
    if trimmed.contains('/') && trimmed != expanded {
        return Err(format!(
            "{raw:?} is not the cgroup path of slice {leaf:?} (that is /{expanded})"
        ));
    }
    Ok(leaf.to_string())
}

/// The slice crust makes for a pod under `parent` (a checked slice name): `crust.slice` →
/// `crust-pod<id>.slice`.
pub fn pod_slice(parent: &str, pod_id: &str) -> Result<String, String> {
    let stem = check_slice(parent)?;
    let name = format!("{stem}-pod{pod_id}.slice");
    check_slice(&name)?;
    Ok(name)
}

/// The scope the OCI runtime makes for container `id`: `crust-<id>.scope`.
pub fn container_scope(id: &str) -> String {
    format!("{SCOPE_PREFIX}-{id}.scope")
}

/// The pause's scope: `crust-pause-<pod id>.scope`.
pub fn pause_scope(pod_id: &str) -> String {
    format!("{SCOPE_PREFIX}-pause-{pod_id}.scope")
}

/// A monitor's scope: `crust-monitor-<container id>.scope` (the pod ID for the pause's monitor).
pub fn monitor_scope(id: &str) -> String {
    format!("{SCOPE_PREFIX}-monitor-{id}.scope")
}

/// The runtime's `linux.cgroupsPath` for container `id` in `slice` with its systemd driver:
/// `<slice>:crust:<id>` (runc and crun make `crust-<id>.scope` in the slice).
pub fn cgroups_path(slice: &str, id: &str) -> String {
    format!("{slice}:{SCOPE_PREFIX}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(expand_slice("kubepods.slice").unwrap(), "kubepods.slice");
        assert_eq!(
            expand_slice("kubepods-burstable-pod1234_5678.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"
        );
        assert_eq!(
            expand_slice("kubepods-besteffort-podab_cd.slice").unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab_cd.slice"
        );
        for bad in [
            "-.slice",
            ".slice",
            "kubepods",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a b.slice",
            "..slice",
            "a-...slice",
            "a\nb.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad:?} was taken");
        }
        assert!(expand_slice(&format!("{}.slice", "a".repeat(250))).is_err());
    }

    #[test]
    fn kubelet_parents_in_both_forms() {
        let leaf = "kubepods-burstable-pod1234_5678.slice";
        assert_eq!(parse_parent(leaf).unwrap(), leaf);
        assert_eq!(
            parse_parent(&format!("/kubepods.slice/kubepods-burstable.slice/{leaf}")).unwrap(),
            leaf
        );
        assert_eq!(parse_parent("kubepods.slice").unwrap(), "kubepods.slice");
        for bad in [
            "/",
            "",
            "/kubepods/burstable/pod1",
            "kubepods.slice/../x.slice",
            "/system.slice/kubepods-burstable-pod1.slice",
            "crust",
            "-.slice",
        ] {
            assert!(parse_parent(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn unit_names_and_cgroups_path() {
        assert_eq!(pod_slice("crust.slice", "ab12").unwrap(), "crust-podab12.slice");
        assert_eq!(
            pod_slice("kubepods-besteffort.slice", "ab").unwrap(),
            "kubepods-besteffort-podab.slice"
        );
        assert!(pod_slice("x", "ab").is_err());
        assert_eq!(container_scope("c1"), "crust-c1.scope");
        assert_eq!(pause_scope("p1"), "crust-pause-p1.scope");
        assert_eq!(monitor_scope("c1"), "crust-monitor-c1.scope");
        assert_eq!(
            cgroups_path("kubepods-burstable-pod1.slice", "c1"),
            "kubepods-burstable-pod1.slice:crust:c1"
        );
    }
}
