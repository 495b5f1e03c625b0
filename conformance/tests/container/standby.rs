//! The standby monitor (`runtime.monitor_standby`, on by default): one `crust-monitor --standby`, a
//! child of crustd, waits for the next start; a start takes it (it is gone, a new one waits), and
//! the container's monitor shows its container's arguments in `/proc/<pid>/cmdline` as any monitor
//! does; a standby killed meanwhile costs nothing but itself; crustd's stop ends it; off, there is
//! none, and containers start as before; a `monitor_path` whose standbys end at once (an older
//! monitor) turns it off after a few.

use super::*;

/// The arguments of `pid` as `/proc/<pid>/cmdline` shows them (trailing NULs dropped).
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw).to_vec();
    let text = String::from_utf8_lossy(&raw).trim_end_matches('\0').to_string();
    text.split('\0').map(str::to_string).collect()
}

/// The standby monitors waiting under crustd `crustd`.
fn standbys(crustd: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let args = cmdline(pid);
        if args.len() >= 2
            && args[0].ends_with("crust-monitor")
            && args[1] == "--standby"
            && crust::sys::proc_stat(pid).is_some_and(|st| st.ppid == crustd)
        {
            out.push(pid);
        }
    }
    out
}

async fn one_standby(crustd: u32) -> u32 {
    for _ in 0..100 {
        if let [pid] = standbys(crustd)[..] {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no single standby monitor under crustd {crustd}: {:?}",
        standbys(crustd)
    );
}

/// The monitor of container `id` (its pid file).
fn monitor_of(e: &Env, id: &str) -> u32 {
    crust::monitor::monitor_pid(&e.c.state.join("containers").join(id)).unwrap()
}

#[tokio::test]
async fn each_start_takes_the_standby_monitor_and_a_new_one_waits() {
    let mut e = env().await;
    let crustd = e.c.pid().unwrap();
    let busybox = e.imgs.busybox.reference.clone();
    // The pod's pause monitor was the first spawn: a standby waits after it.
    let p = pod(&e, "standby").await;
    let first = one_standby(crustd).await;
    let a = run(&e, &p, ctr("a", &busybox, &["sleep", "3600"])).await;
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "the standby {first} is still there after a start"
    );
    let second = one_standby(crustd).await;
    assert_ne!(first, second);
    // The container's monitor shows what it runs, the container's ID among it.
    let args = cmdline(monitor_of(&e, &a));
    assert!(args[0].ends_with("crust-monitor"), "{args:?}");
    assert!(
        args.windows(2).any(|w| w[0] == "--id" && w[1] == a),
        "the monitor of {a} shows {args:?}"
    );
    assert!(!args.iter().any(|x| x == "--standby"), "{args:?}");
    assert_eq!(
        status(&e, &a).await.state,
        ContainerState::ContainerRunning as i32
    );

    // A standby killed meanwhile: the next start starts its monitor itself.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    // crustd's child: a zombie until the next start finds it gone and reaps it.
    wait_until(second, "dead", |st| st.is_none_or(|st| st.state == 'Z')).await;
    let b = run(&e, &p, ctr("b", &busybox, &["sleep", "3600"])).await;
    assert_eq!(
        status(&e, &b).await.state,
        ContainerState::ContainerRunning as i32
    );
    assert!(
        !Path::new(&format!("/proc/{second}")).exists(),
        "the killed standby {second} was not reaped by the next start"
    );
    let third = one_standby(crustd).await;

    // crustd stopped: the standby ends with it; the containers run on.
    e.c.terminate();
    wait_until(third, "gone", |st| st.is_none()).await;
    for id in [&a, &b] {
        let m = monitor_of(&e, id);
        assert!(
            Path::new(&format!("/proc/{m}")).exists(),
            "the monitor of {id} ended with crustd"
        );
    }
    e.c.restart().await;
    for id in [&a, &b] {
        stop(&e, id, 0).await.unwrap();
        remove(&e, id).await.unwrap();
    }
    stop_and_remove_pod(&e, &p.id).await;
}

#[tokio::test]
async fn off_no_standby_waits_and_containers_start() {
    let e = env_with("[runtime]\nmonitor_standby = false\n").await;
    let crustd = e.c.pid().unwrap();
    let p = pod(&e, "no-standby").await;
    let id = run(&e, &p, ctr("a", &e.imgs.busybox.reference, &["sleep", "3600"])).await;
    assert_eq!(
        status(&e, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standbys(crustd), Vec::<u32>::new());
    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop_and_remove_pod(&e, &p.id).await;
}

#[tokio::test]
async fn a_monitor_that_ends_as_a_standby_turns_the_standby_off() {
    // An older crust-monitor knows no --standby and exits at once: this wrapper does so, and runs
    // this build's monitor for anything else. It counts the standbys it was started as.
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("standbys");
    let wrapper = dir.path().join("old-monitor");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --standby ]; then echo x >> {count:?}; exit 0; fi\nexec {monitor:?} \"$@\"\n",
            monitor = harness::bin_dir().join("crust-monitor"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = env_with(&format!("[runtime]\nmonitor_path = {wrapper:?}\n")).await;
    let started_as_standby = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // The pod's pause monitor: a standby is started after it, and ends.
    let p = pod(&e, "old-monitor").await;
    let busybox = e.imgs.busybox.reference.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        // Each start before the standby is off finds the one started after the previous spawn
        // ended; the wait keeps a start from handing its arguments to one not yet ended.
        let want = (i + 1).min(crust::monitor::standby::MAX_MISSES as usize);
        for _ in 0..100 {
            if started_as_standby() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = run(&e, &p, ctr(&format!("c{i}"), &busybox, &["sleep", "3600"])).await;
        assert_eq!(
            status(&e, &id).await.state,
            ContainerState::ContainerRunning as i32
        );
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One standby per spawn until the third was found gone; none after: before, one per start.
    assert_eq!(
        started_as_standby(),
        crust::monitor::standby::MAX_MISSES as usize,
        "standbys started for 6 spawns"
    );
    assert!(
        e.c.log().contains("the standby is off until crustd restarts"),
        "crustd does not say why the standby is off"
    );
    for id in &ids {
        stop(&e, id, 0).await.unwrap();
        remove(&e, id).await.unwrap();
    }
    stop_and_remove_pod(&e, &p.id).await;
}

/// Until `pid`'s /proc entry (`None` once it is reaped) satisfies `done`, for at most 5 s.
async fn wait_until(pid: u32, what: &str, done: impl Fn(Option<crust::sys::ProcStat>) -> bool) {
    for _ in 0..100 {
        if done(crust::sys::proc_stat(pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} not {what} after 5 s");
}
