//! Tests of crustd's side of the monitor that need no monitor process.

use super::*;

#[test]
fn liveness_needs_matching_start_time() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!is_alive(tmp.path()));
    let me = std::process::id();
    let start = proc_stat(me).unwrap().start;
    std::fs::write(tmp.path().join(MONITOR_PID_FILE), format!("{me} {start}\n")).unwrap();
    assert!(is_alive(tmp.path()));
    assert_eq!(monitor_pid(tmp.path()), Some(me));
    std::fs::write(tmp.path().join(MONITOR_PID_FILE), format!("{me} {}\n", start + 1)).unwrap();
    assert!(
        !is_alive(tmp.path()),
        "a reused pid must not count as the monitor"
    );
}

#[test]
fn exit_file_parses() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(read_exit(tmp.path()), None);
    std::fs::write(
        tmp.path().join(EXIT_FILE),
        br#"{"exit_code":137,"signal":9,"oom_killed":true,"created_at_ns":5,"started_at_ns":null,"finished_at_ns":7}"#,
    )
    .unwrap();
    let st = read_exit(tmp.path()).unwrap();
    assert_eq!(
        (st.exit_code, st.signal, st.oom_killed, st.finished_at_ns),
        (137, 9, true, 7)
    );
}

/// The first line `pid N` (`--announce-pid`) reaches the caller and is not part of the report; a
/// report without it is read whole, and the caller hears of no pid.
#[tokio::test]
async fn an_announced_pid_is_passed_on_and_left_out_of_the_report() {
    for (written, pid, report) in [
        ("pid 42\nok 42 43\n", Some(42), "ok 42 43\n"),
        (
            "pid 42\nerror 42 no such file\n",
            Some(42),
            "error 42 no such file\n",
        ),
        (
            "error 0 crust-monitor: fork: EAGAIN\n",
            None,
            "error 0 crust-monitor: fork: EAGAIN\n",
        ),
        ("", None, ""),
    ] {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        nix::unistd::write(&w, written.as_bytes()).unwrap();
        drop(w);
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert_eq!(read_report(r, Some(tx)).await.unwrap(), report, "{written:?}");
        assert_eq!(rx.await.ok(), pid, "{written:?}");
    }
}
