//! The configuration's values checked after loading: absolute paths, runtime handlers, timeouts, limits,
//! the cgroup driver and addresses that parse but could not work. Each refusal names the dotted key.

use super::Config;

/// Checks values that parse but cannot work. Returns the dotted key and the reason.
pub(super) fn validate(c: &Config) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    for (key, p) in [
        ("root", &c.root),
        ("state", &c.state),
        ("api.socket", &c.api.socket),
        ("runtime.seccomp_profile_root", &c.runtime.seccomp_profile_root),
    ] {
        if !p.is_absolute() {
            return bad(
                key,
                format!("must be an absolute path, got {:?}", p.display().to_string()),
            );
        }
    }
    for (key, p) in [
        ("api.admin_socket", &c.api.admin_socket),
        ("registry.config_path", &c.registry.config_path),
    ] {
        if !p.as_os_str().is_empty() && !p.is_absolute() {
            return bad(
                key,
                format!(
                    "must be empty or an absolute path, got {:?}",
                    p.display().to_string()
                ),
            );
        }
    }
    for (i, d) in c.runtime.cdi_spec_dirs.iter().enumerate() {
        if !d.is_absolute() {
            return bad(
                &format!("runtime.cdi_spec_dirs[{i}]"),
                format!("must be an absolute path, got {:?}", d.display().to_string()),
            );
        }
    }
    if c.root == c.state {
        return bad("state", "must differ from root".into());
    }
    let mode = c.api.socket_mode.trim_start_matches("0o");
    match u32::from_str_radix(mode, 8) {
        Ok(m) if m <= 0o777 => {}
        _ => {
            return bad(
                "api.socket_mode",
                format!(
                    "must be an octal file mode like \"0660\", got {:?}",
                    c.api.socket_mode
                ),
            );
        }
    }
    if tracing_subscriber::EnvFilter::try_new(&c.log_level).is_err() || c.log_level.trim().is_empty() {
        return bad(
            "log_level",
            format!(
                "not a log level (error, warn, info, debug, trace): {:?}",
                c.log_level
            ),
        );
    }
    let driver = match crate::cgroups::driver::resolve(
        &c.runtime.cgroup_driver,
        crate::cgroups::driver::systemd_booted(),
    ) {
        Ok(d) => d,
        Err(e) => return bad("runtime.cgroup_driver", e),
    };
    if !c.runtime.cgroup_parent.is_empty()
        && let Err(e) = crate::cgroups::check_config_parent(driver, &c.runtime.cgroup_parent)
    {
        return bad(
            "runtime.cgroup_parent",
            format!("{e} (cgroup driver {})", driver.as_str()),
        );
    }
    if c.runtime.default_handler != crate::oci::default::AUTO
        && !c.runtime.handlers.contains_key(&c.runtime.default_handler)
    {
        return bad(
            "runtime.default_handler",
            format!(
                "no handler {:?} under [runtime.handlers]",
                c.runtime.default_handler
            ),
        );
    }
    for (name, h) in &c.runtime.handlers {
        if name.is_empty() {
            return bad("runtime.handlers", "a handler name is empty".into());
        }
        if h.path.as_os_str().is_empty() {
            return bad(
                &format!("runtime.handlers.{name}.path"),
                "must name the runtime binary".into(),
            );
        }
    }
    if c.image.max_concurrent_downloads == 0 || c.image.max_concurrent_downloads > 64 {
        return bad(
            "image.max_concurrent_downloads",
            format!("must be 1 to 64, got {}", c.image.max_concurrent_downloads),
        );
    }
    if c.image.stall_timeout_seconds == 0 {
        return bad("image.stall_timeout_seconds", "must be at least 1".into());
    }
    if c.image.request_timeout_seconds == 0 {
        return bad("image.request_timeout_seconds", "must be at least 1".into());
    }
    if c.image.retry_attempts == 0 || c.image.retry_attempts > 100 {
        return bad(
            "image.retry_attempts",
            format!("must be 1 to 100, got {}", c.image.retry_attempts),
        );
    }
    if c.image.retry_max_wait_seconds > 3600 {
        return bad(
            "image.retry_max_wait_seconds",
            format!("must be at most 3600, got {}", c.image.retry_max_wait_seconds),
        );
    }
    if c.image.max_layer_unpacked_bytes == 0 {
        return bad("image.max_layer_unpacked_bytes", "must be at least 1".into());
    }
    if c.image.max_layer_entries == 0 {
        return bad("image.max_layer_entries", "must be at least 1".into());
    }
    for (key, p) in [
        ("image.signature_policy", &c.image.signature_policy),
        ("image.signature_policy_dir", &c.image.signature_policy_dir),
    ] {
        if !p.as_os_str().is_empty() && !p.is_absolute() {
            return bad(key, format!("must be an absolute path, got {}", p.display()));
        }
    }
    if !c.image.platform.is_empty() {
        let parts: Vec<&str> = c.image.platform.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return bad(
                "image.platform",
                format!("must be os/arch[/variant], got {:?}", c.image.platform),
            );
        }
    }
    for (host, m) in &c.registry.mirrors {
        for (i, ep) in m.endpoint.iter().enumerate() {
            let ok = ep.strip_prefix("http://").or_else(|| ep.strip_prefix("https://"));
            match ok {
                Some(rest) if !rest.is_empty() && !rest.contains(' ') => {}
                _ => {
                    return bad(
                        &format!("registry.mirrors.\"{host}\".endpoint[{i}]"),
                        format!("must be an http:// or https:// URL, got {ep:?}"),
                    );
                }
            }
        }
        if m.endpoint.is_empty() && !m.fallback_to_upstream {
            return bad(
                &format!("registry.mirrors.\"{host}\".fallback_to_upstream"),
                "no endpoint and no fallback leaves no way to pull".into(),
            );
        }
    }
    for (host, h) in &c.registry.configs {
        if h.tls.cert_file.as_os_str().is_empty() != h.tls.key_file.as_os_str().is_empty() {
            return bad(
                &format!("registry.configs.\"{host}\".tls"),
                "cert_file and key_file go together".into(),
            );
        }
    }
    if c.cni.bin_dirs.is_empty() {
        return bad("cni.bin_dirs", "must name at least one directory".into());
    }
    if c.runtime.operation_timeout_seconds == 0 {
        return bad("runtime.operation_timeout_seconds", "must be at least 1".into());
    }
    if c.cni.plugin_timeout_seconds == 0 {
        return bad("cni.plugin_timeout_seconds", "must be at least 1".into());
    }
    if c.stream.address.parse::<std::net::IpAddr>().is_err() {
        return bad(
            "stream.address",
            format!("must be an IP address, got {:?}", c.stream.address),
        );
    }
    if c.stream.tls_cert_file.as_os_str().is_empty() != c.stream.tls_key_file.as_os_str().is_empty() {
        return bad(
            "stream.tls_cert_file",
            "tls_cert_file and tls_key_file go together".into(),
        );
    }
    if c.stream.token_timeout_seconds == 0 {
        return bad("stream.token_timeout_seconds", "must be at least 1".into());
    }
    for (key, v) in [
        ("stream.max_sessions", c.stream.max_sessions),
        (
            "stream.max_sessions_per_container",
            c.stream.max_sessions_per_container,
        ),
        (
            "stream.max_streams_per_connection",
            c.stream.max_streams_per_connection,
        ),
        (
            "stream.max_port_forwards_per_connection",
            c.stream.max_port_forwards_per_connection,
        ),
    ] {
        if v == 0 {
            return bad(key, "must be at least 1".into());
        }
    }
    if c.stream.max_streams_per_connection < 5 {
        return bad(
            "stream.max_streams_per_connection",
            "must be at least 5 (an exec or attach opens up to 5 streams)".into(),
        );
    }
    if c.runtime.writable_layer_refresh_seconds == 0 {
        return bad(
            "runtime.writable_layer_refresh_seconds",
            "must be at least 1".into(),
        );
    }
    for (key, v) in [
        (
            "nri.plugin_registration_timeout",
            &c.nri.plugin_registration_timeout,
        ),
        ("nri.plugin_request_timeout", &c.nri.plugin_request_timeout),
    ] {
        if super::parse_duration(v).is_none_or(|d| d.is_zero()) {
            return bad(key, format!("must be a duration such as 2s or 500ms, got {v:?}"));
        }
    }
    if !c.metrics.address.is_empty() && c.metrics.address.parse::<std::net::SocketAddr>().is_err() {
        return bad(
            "metrics.address",
            format!("must be ip:port (or empty: off), got {:?}", c.metrics.address),
        );
    }
    Ok(())
}
