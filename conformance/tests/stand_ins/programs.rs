//! The stand-in programs run from their unpacked roots (in network and mount namespaces of their own)
//! and behave as critest expects.

use super::*;

/// A temporary root for an unpacked image (not under a nosuid mount: nnp is setuid).
fn rootfs() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crust-standin-")
        .tempdir_in(harness::target_dir())
        .unwrap()
}

fn wait_file(p: &Path) -> String {
    harness::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(p).ok().filter(|s| !s.trim().is_empty())
    })
    .unwrap_or_else(|| panic!("{} never written", p.display()))
}

/// `wget` from the host's busybox inside the network namespace of `pid`.
fn http_get_in_netns(pid: u32, port: u16) -> Option<String> {
    // (Debian's busybox wget crashes on -T; `timeout` bounds it instead.)
    let out = Command::new("timeout")
        .args(["10", "nsenter"])
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `cmd` of the unpacked image `root` in new network and mount namespaces (loopback up), in this
/// PID namespace, as the same process all along (unshare and chroot exec).
fn start_in_netns(root: &Path, cmd: &[&str]) -> Running {
    // A container has /dev (ash needs /dev/null for `&`): bind the host's in a mount namespace of its own.
    let mut script = String::from("ip link set lo up && mount --bind /dev \"$0/dev\" && exec chroot \"$0\"");
    for (i, _) in cmd.iter().enumerate() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .arg(root)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap()
}

/// A started stand-in; SIGKILLed with its children (by PID) if the test ends while it runs.
struct Running(std::process::Child);

fn children_of(pid: u32) -> Vec<i32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|c| c.parse().ok()).collect()
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            for c in children_of(self.0.id()) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn terminate(run: &mut Running, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
    let children = children_of(run.0.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), sig).unwrap();
    let st = harness::wait_for(Duration::from_secs(10), || run.0.try_wait().unwrap())
        .unwrap_or_else(|| panic!("the stand-in ignored {sig}"));
    for c in children {
        // Its server must go with it (a zombie waiting for PID 1's reaping counts as gone).
        let gone = harness::wait_for(Duration::from_secs(5), || {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            (stat.is_empty()
                || stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')))
            .then_some(())
        });
        if gone.is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), nix::sys::signal::Signal::SIGKILL);
            panic!("server process {c} outlived the stand-in");
        }
    }
    st
}

#[test]
fn the_stand_in_programs_behave_as_critest_expects() {
    let reg = Registry::start();
    let all = standins::push_all(&reg, None);

    // nginx: a process named nginx (its PID in /var/run/nginx.pid, "master process" in its command
    // line) serving HTTP on :80, stopping on SIGTERM.
    let nginx = find(&all, "registry.k8s.io/e2e-test-images/nginx:1.14-2");
    let root = rootfs();
    unpack(&reg, nginx, root.path());
    let cfg = config(&reg, nginx);
    let cmd: Vec<String> = serde_json::from_value(cfg["config"]["Cmd"].clone()).unwrap();
    let mut child = start_in_netns(root.path(), &cmd.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let pid = child.0.id();
    assert_eq!(
        wait_file(&root.path().join("var/run/nginx.pid")).trim(),
        pid.to_string()
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "nginx"
    );
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned();
    assert!(cmdline.contains("master process"), "{cmdline:?}");
    let page = harness::wait_for(Duration::from_secs(10), || http_get_in_netns(pid, 80))
        .expect("nginx stand-in serves :80");
    assert!(page.contains("nginx"), "{page}");
    assert!(terminate(&mut child, nix::sys::signal::Signal::SIGTERM).success());

    // httpd: "httpd" on stdout, HTTP on :80, stops on its image's stop signal (SIGWINCH).
    let httpd = find(&all, "registry.k8s.io/e2e-test-images/httpd:2.4.39-4");
    let root = rootfs();
    unpack(&reg, httpd, root.path());
    let cfg = config(&reg, httpd);
    assert_eq!(cfg["config"]["StopSignal"], "SIGWINCH");
    assert_eq!(cfg["config"]["Cmd"][0], "httpd-foreground");
    let mut child = start_in_netns(root.path(), &["/usr/local/bin/httpd-foreground"]);
    let pid = child.0.id();
    let page = harness::wait_for(Duration::from_secs(10), || http_get_in_netns(pid, 80))
        .expect("httpd stand-in serves :80");
    assert!(page.contains("It works!"), "{page}");
    assert!(terminate(&mut child, nix::sys::signal::Signal::SIGWINCH).success());
    let mut out = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("httpd"), "{out:?}");

    // nnp: setuid root takes effect for UID 1000, unless no_new_privs is set.
    if let Some(nnp) = all.iter().find(|s| s.repo == "e2e-test-images/nonewprivs") {
        let root = rootfs();
        unpack(&reg, nnp, root.path());
        let run = |nnp_flag: bool| {
            let mut c = Command::new("setpriv");
            if nnp_flag {
                c.arg("--no-new-privs");
            }
            let out = c
                .arg("chroot")
                .arg("--userspec=1000:1000")
                .arg(root.path())
                .arg("/usr/local/bin/nnp")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(false), "Effective uid: 0\n");
        assert_eq!(run(true), "Effective uid: 1000\n");
    }

    // ipcs: lists a segment made in its IPC namespace.
    let busybox = find(&all, "registry.k8s.io/e2e-test-images/busybox:1.29-2");
    let root = rootfs();
    unpack(&reg, busybox, root.path());
    let script = "mount --bind /proc \"$0/proc\" && id=$(ipcmk -M 4096 | sed 's/[^0-9]//g') && echo \"id=$id\" && chroot \"$0\" ipcs -m";
    let out = Command::new("unshare")
        .args([
            "--ipc",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id="))
        .unwrap()
        .trim()
        .to_string();
    assert!(!id.is_empty(), "{text}");
    assert!(
        text.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
        "{text}"
    );
    // The user the RunAsUsername spec asks for.
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("nobody:x:65534:")),
        "{passwd}"
    );
}
