//! ExecSync: output, exit code, timeout (the timed-out process is killed and holds nothing back).

use super::*;

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    let e = env().await;
    let p = pod(&e, "execs").await;
    let id = run(
        &e,
        &p,
        ctr("sleeper", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let r = exec(&e, &id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 0)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 5)
    );

    // Several times: a runtime killed before it reaped the process left a zombie only now and then.
    for _ in 0..5 {
        let err = exec(&e, &id, &["sleep", "37"], 1).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    }
    // Reaped (by the runtime, or by crustd's fallback): no zombie of crustd (a child subreaper) from
    // the container's pid namespace is left to hold it.
    let crustd = e.c.pid().unwrap();
    let reaped = harness::wait_for(Duration::from_secs(10), || {
        nested_zombies_of(crustd).is_empty().then_some(())
    });
    assert!(
        reaped.is_some(),
        "zombie children of crustd from a container: {:?}",
        nested_zombies_of(crustd)
    );
    let ps = exec(&e, &id, &["ps", "-o", "args"], 10).await.unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        ps.contains("sleep 1000") && !ps.contains("sleep 37"),
        "the timed-out process was killed:\n{ps}"
    );
    let err = exec(&e, &id, &[], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{err:?}");
    stop(&e, &id, 0).await.unwrap();
    let err = exec(&e, &id, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // The killed exec left nothing that holds the pod's pid namespace: the pod stops.
    remove(&e, &id).await.unwrap();
    e.c.runtime()
        .await
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap();
}

/// Zombie children of `parent` that lived in a nested pid namespace, as their `/proc/<pid>/stat` lines.
fn nested_zombies_of(parent: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(e.path().join("stat")),
            std::fs::read_to_string(e.path().join("status")),
        ) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_ascii_whitespace();
        let zombie_child = f.next() == Some("Z") && f.next() == Some(parent.to_string().as_str());
        let nested = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|v| v.split_ascii_whitespace().count() > 1);
        if zombie_child && nested {
            found.push(stat.trim().to_string());
        }
    }
    found
}

/// A timed-out ExecSync answers within its timeout (plus about 0.1 s: runc exits as soon as the tree
/// it ran is killed) and kills every process the command started: a shell's background jobs (its
/// process group) and a child that made a session of its own (a descendant).
#[tokio::test]
async fn a_timed_out_exec_kills_all_it_started_and_answers_in_time() {
    let e = env().await;
    let p = pod(&e, "exectree").await;
    let id = run(&e, &p, ctr("host", &e.imgs.busybox.reference, &["sleep", "3600"])).await;
    let script = "sleep 1001 & setsid sleep 1003 & sleep 1002";
    let t0 = std::time::Instant::now();
    let err = exec(&e, &id, &["sh", "-c", script], 2).await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took < Duration::from_secs(4),
        "ExecSync with a 2 s timeout answered after {took:?}"
    );
    eprintln!("timed-out ExecSync (timeout 2 s) answered after {took:?}");
    // Seen from inside the container's pid namespace: only the container's own sleep is left (the
    // kills are sent before the answer; a moment is allowed for the container's init to reap).
    let mut ps = String::new();
    for _ in 0..50 {
        let out = exec(&e, &id, &["ps", "-o", "args"], 10).await.unwrap();
        ps = String::from_utf8_lossy(&out.stdout).to_string();
        if !["sleep 1001", "sleep 1002", "sleep 1003"]
            .iter()
            .any(|s| ps.contains(s))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in ["sleep 1001", "sleep 1002", "sleep 1003"] {
        assert!(
            !ps.contains(s),
            "{s}, started by the timed-out exec, still runs:\n{ps}"
        );
    }
    assert!(ps.contains("sleep 3600"), "{ps}");
    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop_and_remove_pod(&e, &p.id).await;
}
