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

    let err = exec(&e, &id, &["sleep", "37"], 1).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
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
