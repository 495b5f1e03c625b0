//! crustd, a child subreaper, reaps what it adopts: a CNI plugin that leaves a child running in the
//! background hands that child to crustd when it exits, and once the child exits it must not stay a
//! zombie (nothing else would reap it: crustd is its parent now).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::support::*;

/// A chained plugin (python3) that forks a child which sleeps, then exits, and passes the previous
/// result on; the child's pid goes to the file named by `pidFile` in its config.
const FORKER: &str = r#"#!/usr/bin/python3
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND")
if cmd == "ADD":
    pid = os.fork()
    if pid == 0:
        fd = os.open("/dev/null", os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        time.sleep(2.0)
        os._exit(0)
    with open(conf["pidFile"] + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(conf["pidFile"] + ".tmp", conf["pidFile"])
    prev = conf.get("prevResult", {})
    prev["cniVersion"] = conf.get("cniVersion", "1.0.0")
    print(json.dumps(prev))
elif cmd == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}))
"#;

fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    Some((f.next()?.parse().ok()?, state))
}

#[tokio::test]
async fn a_cni_plugins_orphaned_child_is_reaped_by_crustd() {
    let mut c = start_crustd().await;
    let bin = tempfile::tempdir().unwrap();
    let forker = bin.path().join("crust-test-forker");
    std::fs::write(&forker, FORKER).unwrap();
    std::fs::set_permissions(&forker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pid_file = bin.path().join("child.pid");
    let mut conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.cni_conf_dir.join("10-crust-test.conflist")).unwrap(),
    )
    .unwrap();
    conf["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "crust-test-forker", "pidFile": pid_file}));
    std::fs::write(c.cni_conf_dir.join("05-forker.conflist"), conf.to_string()).unwrap();
    std::fs::create_dir_all(c.dir.path().join("crust.d")).unwrap();
    std::fs::write(
        c.dir.path().join("crust.d/60-bin.toml"),
        format!("[cni]\nbin_dirs = [\"/usr/lib/cni\", {:?}]\n", bin.path()),
    )
    .unwrap();
    c.restart().await;
    let crustd = c.pid().unwrap() as i32;

    let id = run(&c, pod("forker")).await.unwrap();
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The plugin has exited: its child, still sleeping, now belongs to crustd.
    let (ppid, state) = ppid_and_state(child).expect("the plugin's child is already gone");
    assert_eq!(
        ppid, crustd,
        "the orphan was not re-parented to crustd (state {state})"
    );
    // Once it exits it is reaped, not left a zombie.
    let mut last = None;
    for _ in 0..100 {
        last = ppid_and_state(child);
        if last.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, None, "the orphan is still there (ppid, state)");

    stop(&c, &id).await.unwrap();
    remove(&c, &id).await.unwrap();
    std::fs::remove_file(c.cni_conf_dir.join("05-forker.conflist")).unwrap();
    assert_clean(&c, &id);
}
