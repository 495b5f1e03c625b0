//! A real registry (Debian's `docker-registry`, the CNCF distribution) on a free 127.0.0.1 port with
//! temporary storage, optionally behind htpasswd Basic auth. Stopped (by PID) and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64_encode::encode as b64;

use crate::http;

/// A running registry.
pub struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    /// `None` for a registry started by someone else (`Registry::external`): never stopped here.
    child: Option<Child>,
    auth: Option<(String, String)>,
    /// `host:port` of an external registry.
    external: Option<String>,
}

impl Registry {
    /// Starts an open registry.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// An already-running open registry at `host` (`127.0.0.1:5000`), e.g. the one the critest runner
    /// uses. Nothing is started, and nothing is stopped on drop; `storage()` and `log()` tell nothing.
    pub fn external(host: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("crust-registry-ext-")
            .tempdir()
            .expect("tempdir");
        let port = host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(80);
        Registry {
            port,
            dir,
            child: None,
            auth: None,
            external: Some(host.to_string()),
        }
    }

    /// Starts a registry that requires Basic auth with `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("crust-registry-")
            .tempdir()
            .expect("tempdir");
        let bin = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} missing: apt-get install docker-registry"
        );
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: crust-test\n",
                dir.path().join("data").display()
            );
            if let Some((u, p)) = &auth {
                let hash = bcrypt::hash(p, 5).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{u}:{hash}\n")).expect("write htpasswd");
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: crust-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let mut child = Command::new(bin)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY")
                .spawn()
                .expect("spawn docker-registry");
            // Its own log line, not just an answer on the port: another test's registry may have taken
            // the port between `free_port` and this start.
            let listening = format!("listening on 127.0.0.1:{port}");
            let log_path = dir.path().join("registry.log");
            let up = crate::wait_for(Duration::from_secs(15), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if !log.contains(&listening) {
                    return None;
                }
                http::request(&format!("127.0.0.1:{port}"), "GET", "/v2/", &[], b"")
                    .ok()
                    .map(|_| true)
            });
            if up == Some(true) {
                return Registry {
                    port,
                    dir,
                    child: Some(child),
                    auth,
                    external: None,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_err = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        }
        panic!("docker-registry did not start:\n{last_err}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        if let Some(h) = &self.external {
            return h.clone();
        }
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Registry storage dir.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log so far (access log lines included), e.g. to count blob GETs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many `GET` requests for `path_part` (e.g. `/blobs/sha256:…`) the access log shows.
    pub fn count_gets(&self, path_part: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(path_part))
            .count()
    }

    /// Headers that authenticate to this registry (empty when it is open).
    pub fn auth_headers(&self) -> Vec<(String, String)> {
        match &self.auth {
            Some((u, p)) => vec![(
                "Authorization".into(),
                format!("Basic {}", b64(format!("{u}:{p}").as_bytes())),
            )],
            None => Vec::new(),
        }
    }

    /// One request to the registry with its credentials.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> http::Response {
        let auth = self.auth_headers();
        let mut all: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(headers);
        http::request(&self.host(), method, path, &all, body).expect("registry request")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Standard base64 (for Basic auth), small enough to keep here instead of a dependency.
pub mod base64_encode {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes `data` with padding.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(encode(b"a"), "YQ==");
        assert_eq!(encode(b"ab"), "YWI=");
    }
}
