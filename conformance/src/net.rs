//! A CNI network of a test's own: a subnet and bridge name reserved across concurrent test processes
//! (lock files), a conflist (bridge + host-local with its own data dir + portmap, `ipMasq: false`), and
//! removal of the bridge the plugin left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

const RESERVATIONS: &str = "/run/crust-test/subnets";

/// A reserved test network.
pub struct TestNetwork {
    /// 1..=250: the third octet of 10.234.N.0/24.
    pub index: u16,
    /// Bridge interface name.
    pub bridge: String,
    /// `10.234.N.0/24`.
    pub subnet: String,
    /// host-local's data dir (IP leases).
    pub ipam_dir: PathBuf,
    /// The network's name in the conflist.
    pub name: String,
    lock: PathBuf,
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl TestNetwork {
    /// Reserves a free subnet and writes the conflist into `conf_dir`; leases go under `work_dir`.
    pub fn reserve(conf_dir: &Path, work_dir: &Path) -> TestNetwork {
        std::fs::create_dir_all(RESERVATIONS).expect("reservations dir");
        // The bridge needs forwarding between pods and the host.
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        for index in 1..=250u16 {
            let lock = Path::new(RESERVATIONS).join(index.to_string());
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock);
            let mut f = match f {
                Ok(f) => f,
                Err(_) => {
                    // Reclaim a reservation whose process is gone.
                    let owner = std::fs::read_to_string(&lock)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    if owner.is_some_and(|p| !pid_alive(p)) {
                        let _ = std::fs::remove_file(&lock);
                        delete_link(&format!("crtbr{index}"));
                    }
                    continue;
                }
            };
            let _ = write!(f, "{}", std::process::id());
            let n = TestNetwork {
                index,
                bridge: format!("crtbr{index}"),
                subnet: format!("10.234.{index}.0/24"),
                ipam_dir: work_dir.join("ipam"),
                name: format!("crust-test-{index}"),
                lock,
            };
            std::fs::create_dir_all(conf_dir).expect("cni conf dir");
            std::fs::write(conf_dir.join("10-crust-test.conflist"), n.conflist()).expect("write conflist");
            return n;
        }
        panic!("no free test subnet in 10.234.1-250.0/24 (see {RESERVATIONS})");
    }

    /// The gateway (the bridge's address).
    pub fn gateway(&self) -> String {
        format!("10.234.{}.1", self.index)
    }

    fn conflist(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.ipam_dir,
                        "ranges": [[{"subnet": self.subnet, "gateway": self.gateway()}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }))
        .expect("conflist json")
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        delete_link(&self.bridge);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Deletes a network interface if present.
pub fn delete_link(name: &str) {
    if Path::new(&format!("/sys/class/net/{name}")).exists() {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .status();
    }
}
