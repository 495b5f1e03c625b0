//! Request validation shared by the handlers and the core: every refusal names the request field.
//!
//! The policy is the peers' (containerd, CRI-O): accept whatever kubelet, crictl and critest send, and
//! refuse only what is unsafe, saying why. Names, namespaces and uids never become path components, so
//! their length and case are free; what they do reach is the network plugins' `CNI_ARGS`.

use crate::{Error, Result};

/// A required string field.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(value)
    }
}

/// A required message field.
pub fn present<'a, T>(field: &str, value: &'a Option<T>) -> Result<&'a T> {
    value.as_ref().ok_or_else(|| Error::invalid(field, "must be set"))
}

/// The most bytes a value passed to the network plugins in `CNI_ARGS` may hold: the environment of a
/// plugin is bounded by the kernel (128 KiB per string), and no Kubernetes name comes near this.
pub const CNI_ARG_MAX: usize = 16 * 1024;

/// A pod's name, namespace or uid: any non-empty string kubelet can produce (DNS subdomains of up to 253
/// characters, mixed case from critest, uids with dashes), refusing only what would let the value forge
/// other `CNI_ARGS` pairs (a `;` could add `IP=` and pick the pod's address through host-local IPAM),
/// break the pair apart (the plugins refuse a pair with a second `=`, at ADD and at DEL alike, so such a
/// pod could never be torn down) or cut the plugin's environment short (NUL).
pub fn cni_arg(field: &str, value: &str) -> Result<()> {
    required(field, value)?;
    if value.contains(';') {
        return Err(Error::invalid(
            field,
            format!("{value:?} holds a ';', which would forge extra CNI_ARGS pairs for the network plugins"),
        ));
    }
    if value.contains('=') {
        return Err(Error::invalid(
            field,
            format!("{value:?} holds a '=', which the network plugins refuse in a CNI_ARGS value"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(
            field,
            "holds a NUL byte, which cannot be passed to the network plugins",
        ));
    }
    if value.len() > CNI_ARG_MAX {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; the network plugins' CNI_ARGS take at most {CNI_ARG_MAX}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A non-negative timeout in seconds.
pub fn non_negative(field: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::invalid(field, format!("must not be negative, got {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_names_are_accepted() {
        // A static pod's name carries the node's name; DNS subdomains run to 253 characters.
        let static_pod = format!("kube-apiserver-{}", "node-1.example.com");
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let mixed = format!("Create-PodSandbox-For-Container-{}", "X".repeat(170));
        for v in [
            static_pod.as_str(),
            long.as_str(),
            mixed.as_str(),
            "6b8e0f44-0b8c-4f5e-9a3d-2f1b4c7d9e10",
            "Default",
        ] {
            cni_arg("config.metadata.name", v).unwrap();
        }
    }

    #[test]
    fn unsafe_values_are_refused_with_the_reason() {
        let e = cni_arg("config.metadata.uid", "u;IP=10.0.0.9").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("config.metadata.uid:"), "{s}");
        assert!(s.contains("CNI_ARGS"), "{s}");
        assert!(cni_arg("f", "a\0b").is_err());
        assert!(cni_arg("f", "a=b").unwrap_err().to_string().contains("CNI_ARGS"));
        assert!(cni_arg("f", "").is_err());
        assert!(cni_arg("f", &"a".repeat(CNI_ARG_MAX + 1)).is_err());
    }
}
