//! Registry credentials and authentication challenges (`WWW-Authenticate: Basic …` / `Bearer realm=…`).

use base64::Engine;

use crate::config::AuthConfig;

/// Credentials for one pull: from the request, else from the per-host configuration.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (docker `identitytoken`).
    pub identity_token: String,
    /// A bearer token to send as is.
    pub registry_token: String,
    /// The registry host these credentials are for (a CRI `AuthConfig.server_address`, normalized by
    /// [`registry_host`]); empty means the image's registry.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, .. }}", self.username)
    }
}

impl Credentials {
    /// From the fields of a CRI `AuthConfig` (`auth` is base64 of `user:password`).
    pub fn from_parts(
        username: &str,
        password: &str,
        auth: &str,
        identity: &str,
        registry: &str,
    ) -> Credentials {
        let mut c = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: identity.to_string(),
            registry_token: registry.to_string(),
            server_address: String::new(),
        };
        if !auth.is_empty()
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.trim())
            && let Ok(s) = String::from_utf8(raw)
            && let Some((u, p)) = s.split_once(':')
        {
            c.username = u.to_string();
            c.password = p.to_string();
        }
        c
    }

    /// From a host's `[registry.configs."host".auth]`.
    pub fn from_config(a: &AuthConfig) -> Credentials {
        Credentials::from_parts(&a.username, &a.password, &a.auth, &a.identitytoken, "")
    }

    /// The same credentials, for the registry `server_address` names (a host, `host:port` or URL).
    pub fn for_server(mut self, server_address: &str) -> Credentials {
        self.server_address = registry_host(server_address);
        self
    }

    /// Whether these credentials, given in a pull of an image of `registry` (its reference's registry
    /// host, `docker.io` for Docker Hub), may go to the endpoint `host`: only when that is the host they
    /// were given for (`server_address`, else the image's registry). A mirror is another host.
    pub fn are_for(&self, registry: &str, host: &str) -> bool {
        let target = if self.server_address.is_empty() {
            registry_host(registry)
        } else {
            self.server_address.clone()
        };
        registry_host(host) == target
    }

    /// Nothing given.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }

    /// `Basic base64(user:password)`.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// A registry host from a `server_address` as docker and kubelet write it (`https://index.docker.io/v1/`,
/// `registry.example.com:5000`, `http://127.0.0.1:5000/`): scheme and path dropped, lowercase, and
/// Docker Hub's names all `docker.io`.
pub fn registry_host(addr: &str) -> String {
    let a = addr.trim();
    let a = a.split_once("://").map(|(_, r)| r).unwrap_or(a);
    let host = a.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (one challenge; the first wins).
pub fn parse_challenge(v: &str) -> Option<Challenge> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `k="v", k2=v2` with quoted values that may contain commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = s[ks..i].trim().to_string();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i.min(b.len());
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i.min(b.len())].trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, val));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        let c = parse_challenge(
            "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\"",
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn auth_field_wins_and_debug_hides_secrets() {
        let c = Credentials::from_parts("x", "y", "dXNlcjpwYTpzcw==", "", "");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"));
        assert_eq!(c.basic(), "Basic dXNlcjpwYTpzcw==");
    }

    #[test]
    fn credentials_go_only_to_their_server() {
        let c = Credentials::from_parts("u", "p", "", "", "");
        assert!(c.are_for("quay.io", "quay.io") && c.are_for("docker.io", "registry-1.docker.io"));
        assert!(!c.are_for("docker.io", "mirror.example:5000"));
        let hub = c.clone().for_server("https://index.docker.io/v1/");
        assert!(hub.are_for("docker.io", "registry-1.docker.io"));
        assert!(!hub.are_for("quay.io", "quay.io"));
        let local = c.for_server("http://127.0.0.1:5000/");
        assert!(local.are_for("docker.io", "127.0.0.1:5000"));
        assert!(!local.are_for("127.0.0.1:5001", "127.0.0.1:5001"));
    }
}
