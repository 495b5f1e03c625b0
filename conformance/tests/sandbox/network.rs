//! The pod's network: addresses from the CNI subnet that reach each other, a host port on loopback, a
//! pod on the node's network, and the DNS config and hostname files.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::time::Duration;

use cri_api::v1::*;

use super::support::*;

#[tokio::test]
async fn pods_get_ips_in_the_subnet_and_reach_each_other_over_tcp() {
    let c = start_crustd().await;
    let a = run(&c, pod("pod-a")).await.unwrap();
    let b = run(&c, pod("pod-b")).await.unwrap();
    let sa = status(&c, &a, false).await.status.unwrap();
    assert_eq!(sa.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(sa.labels.get("app").map(String::as_str), Some("pod-a"));
    assert_eq!(sa.annotations.get("note").map(String::as_str), Some("kept"));
    assert!(sa.created_at > 0);
    let ip_a: IpAddr = sa.network.unwrap().ip.parse().unwrap();
    let ip_b: IpAddr = status(&c, &b, false)
        .await
        .status
        .unwrap()
        .network
        .unwrap()
        .ip
        .parse()
        .unwrap();
    let prefix = format!("10.234.{}.", c.network.as_ref().unwrap().index);
    assert!(
        ip_a.to_string().starts_with(&prefix) && ip_b.to_string().starts_with(&prefix),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(leases(&c).len(), 2);

    // A listener inside pod A's netns; a client inside pod B's netns connects to A's IP.
    let listener = in_netns(&netns_path(&c, &a), || TcpListener::bind("0.0.0.0:8080").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong!").unwrap();
        (peer.ip(), buf)
    });
    let reply = in_netns(&netns_path(&c, &b), move || {
        let mut s = TcpStream::connect_timeout(&(ip_a, 8080).into(), Duration::from_secs(10)).unwrap();
        s.write_all(b"ping!").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let (peer, got) = server.join().unwrap();
    assert_eq!(&got, b"ping!");
    assert_eq!(&reply, b"pong!");
    assert_eq!(peer, ip_b, "the connection came from pod B's address");

    for id in [&a, &b] {
        stop(&c, id).await.unwrap();
        remove(&c, id).await.unwrap();
        assert!(!netns_path(&c, id).exists());
    }
    assert_clean(&c, &a);
}

#[tokio::test]
async fn host_port_on_loopback_reaches_the_pod() {
    let c = start_crustd().await;
    let host_port = harness::free_port();
    let mut cfg = pod("web");
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8081,
        host_port: host_port as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let id = run(&c, cfg).await.unwrap();
    let listener = in_netns(&netns_path(&c, &id), || {
        TcpListener::bind("0.0.0.0:8081").unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello from the pod").unwrap();
    });
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], host_port).into(), Duration::from_secs(10))
        .expect("connect to the host port");
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    server.join().unwrap();
    assert_eq!(got, "hello from the pod");
    stop(&c, &id).await.unwrap();
    // After stop the mapping is gone: portmap's DEL removed its chain.
    let nat = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(
        !nat.contains(&format!("--dport {host_port} ")),
        "DNAT rule left:\n{nat}"
    );
    remove(&c, &id).await.unwrap();
}

#[tokio::test]
async fn host_network_pod_has_the_host_interfaces() {
    let c = start_crustd().await;
    let hostnet = with_ns(
        pod("hostnet"),
        NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    // A hostname for a pod sharing the node's UTS namespace is refused (containerd fails it too),
    // before anything is made.
    let err = run(&c, hostnet.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("config.hostname"), "{err:?}");
    assert_refused_left_nothing(&c).await;
    let id = run(
        &c,
        PodSandboxConfig {
            hostname: String::new(),
            ..hostnet
        },
    )
    .await
    .unwrap();
    assert!(
        !netns_path(&c, &id).exists(),
        "a host-network pod has no netns pin"
    );
    let st = status(&c, &id, false).await.status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(
        st.linux.unwrap().namespaces.unwrap().options.unwrap().network,
        NamespaceMode::Node as i32
    );
    let pid = pause_pid(&c, &id).await;
    // The hostname file is the host's hostname.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        std::fs::read_to_string(c.state.join("pods").join(&id).join("hostname")).unwrap(),
        host_name
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
            .collect();
        v.sort();
        v
    };
    let host = names("/proc/self/net/dev");
    assert!(host.len() > 1, "{host:?}");
    assert_eq!(names(&format!("/proc/{pid}/net/dev")), host);
    assert!(leases(&c).is_empty(), "no CNI for a host-network pod");
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
}

#[tokio::test]
async fn dns_config_lands_in_resolv_conf_and_hostname_file() {
    let c = start_crustd().await;
    let mut cfg = pod("dns");
    cfg.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["crust-test.svc.cluster.local".into(), "cluster.local".into()],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let id = run(&c, cfg).await.unwrap();
    let dir = c.state.join("pods").join(&id);
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10\n"), "{resolv}");
    assert!(
        resolv.contains("search crust-test.svc.cluster.local cluster.local\n"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5 timeout:2\n"), "{resolv}");
    assert_eq!(std::fs::read_to_string(dir.join("hostname")).unwrap(), "dns\n");
    // The pod's /dev/shm is a tmpfs of its own.
    let st = nix::sys::statfs::statfs(&dir.join("shm")).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    assert!(!dir.exists());
}
