//! CheckpointContainer's answers that need no working CRIU: an unknown container, one not running, a
//! location that is missing, relative or cannot be written; and, on a host where `criu check` fails
//! (this one: Debian's CRIU 3.17 on kernel 6.18), the FailedPrecondition with CRIU's reason for a
//! checkpoint and for a restore, and the same reason in Status (and `crictl info`). The real
//! checkpoint and restore run on the test node (tests/node_systemd_parts/checkpoint.rs).

use std::process::Command;

use super::*;

/// `criu check`'s verdict here: None when it passes, else its output.
fn criu_broken() -> Option<String> {
    let out = Command::new("criu").arg("check").output().ok()?;
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn checkpoint(e: &Env, id: &str, location: &str) -> Result<(), tonic::Status> {
    e.c.runtime()
        .await
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.into(),
            location: location.into(),
            timeout: 0,
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn checkpoint_codes_and_criu_reason() {
    let e = env().await;
    let p = pod(&e, "ckpt").await;
    let running = run(
        &e,
        &p,
        ctr("sleeper", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let exited = run(&e, &p, ctr("done", &e.imgs.busybox.reference, &["true"])).await;
    wait_exited(&e, &exited).await;
    let created = create(&e, &p, ctr("idle", &e.imgs.busybox.reference, &["sleep", "1"]))
        .await
        .unwrap();
    let dir = e.c.dir.path().join("checkpoints");
    std::fs::create_dir_all(&dir).unwrap();
    let at = |n: &str| dir.join(n).display().to_string();

    let err = checkpoint(&e, "no-such-container", &at("a.tar"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for id in [&exited, &created] {
        let err = checkpoint(&e, id, &at("b.tar")).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("not running"), "{}", err.message());
    }
    for bad in ["", "relative/c.tar"] {
        let err = checkpoint(&e, &running, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(err.message().contains("location"), "{}", err.message());
    }
    // A directory that does not exist, and a read-only filesystem (a real tmpfs mounted ro).
    let ro = e.c.dir.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .status()
        .unwrap();
    assert!(mounted.success());
    let unwritable = [at("missing/d.tar"), ro.join("e.tar").display().to_string()];
    let results = futures::future::join_all(unwritable.iter().map(|l| checkpoint(&e, &running, l))).await;
    let _ = Command::new("umount").arg(&ro).status();
    for (l, r) in unwritable.iter().zip(results) {
        let err = r.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{l}: {err:?}");
        assert!(
            err.message().contains("location") && err.message().contains(l),
            "{}",
            err.message()
        );
    }

    let st =
        e.c.runtime()
            .await
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let cond = st
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "CheckpointRestoreReady")
        .expect("a CheckpointRestoreReady condition");
    let Some(criu) = criu_broken() else {
        // CRIU works on this host: the checkpoint is made (the node test checks its contents).
        assert!(cond.status, "{cond:?}");
        checkpoint(&e, &running, &at("ok.tar")).await.unwrap();
        assert!(std::fs::metadata(at("ok.tar")).unwrap().len() > 0);
        return;
    };
    println!("criu check fails here: {}", criu.trim());
    assert!(!cond.status, "{cond:?}");
    assert_eq!(cond.reason, "CRIUNotWorking");
    // The reason is CRIU's own words (here: its vDSO check). Which of its errors comes first varies
    // from one `criu check` to the next (where the kernel put the vDSO), so any of them will do.
    let errors: Vec<&str> = criu
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Error")
                .and_then(|l| l.split_once("): "))
                .map(|x| x.1)
        })
        .collect();
    // The one crustd reports (it runs `criu check` once); later refusals give the same.
    let first = errors
        .iter()
        .copied()
        .find(|e| cond.message.contains(e))
        .unwrap_or("check failed");
    assert!(cond.message.contains(first), "{cond:?} / {criu}");

    let err = checkpoint(&e, &running, &at("f.tar")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(first), "{}", err.message());
    assert!(
        !dir.join("f.tar").exists(),
        "a failed checkpoint leaves no archive"
    );
    assert_eq!(
        status(&e, &running).await.state(),
        ContainerState::ContainerRunning
    );

    // A restore (an archive's path as the image, as CRI-O takes it) says the same.
    std::fs::write(dir.join("g.tar"), b"not used").unwrap();
    let err = create(&e, &p, ctr("restored", &at("g.tar"), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(first), "{}", err.message());

    // A checkpoint image (`crustctl images import-checkpoint`, CRI-O's annotation) is one as well.
    let fake = dir.join("fake.tar");
    fake_archive(&fake, &e.imgs.busybox.reference);
    let out = Command::new(harness::binary("crustctl"))
        .arg("--config")
        .arg(&e.c.config)
        .args(["images", "import-checkpoint"])
        .arg(&fake)
        .arg("localhost/fake-checkpoint:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = create(&e, &p, ctr("from-image", "localhost/fake-checkpoint:1", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(first), "{}", err.message());

    match Command::new("crictl")
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", e.c.socket.display()))
        .arg("info")
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("CheckpointRestoreReady") && text.contains("CRIUNotWorking"),
                "{text}"
            );
        }
        Err(_) => println!("crictl is not on PATH: skipping the crictl part"),
    }
}

/// A checkpoint archive's metadata files (no CRIU images worth restoring) naming `image`.
fn fake_archive(path: &Path, image: &str) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let config = serde_json::json!({"id": "0123", "name": "counter", "rootfsImageName": image});
    let files: [(&str, Vec<u8>); 3] = [
        ("config.dump", serde_json::to_vec(&config).unwrap()),
        ("spec.dump", b"{}".to_vec()),
        ("checkpoint/inventory.img", b"not an image".to_vec()),
    ];
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, name, &data[..]).unwrap();
    }
    tar.finish().unwrap();
}
