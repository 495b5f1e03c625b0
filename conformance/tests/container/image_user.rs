//! The image's `User`, read once for ImageStatus and CreateContainer: the uid ImageStatus reports is
//! the uid the container runs as, a name is reported as a name and resolved from the image's own
//! passwd, and a numeric user that is not an exact 32-bit uid is refused at create — even when the
//! image's passwd names a user like it with uid 0 (the class of CVE-2024-40635).

use harness::images::{self, Compression, ImageConfig, ImageSpec as TestImage, Layer, LayerBuilder};

use super::*;

/// One image `User`: what ImageStatus reports (uid, username) and the uid:gid it runs as (None: refused).
type Case<'a> = (&'a str, Option<i64>, &'a str, Option<(u32, u32)>);

#[tokio::test]
async fn image_status_and_the_running_uid_agree_for_every_image_user() {
    let e = env().await;
    let p = pod(&e, "image-user").await;
    let base = LayerBuilder::new().busybox_base().build();
    let etc = LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n4294967296:x:0:0:bypass:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\n4294967296:x:0:\nalice:x:1000:\nstaff:x:50:\n", 0o644)
        .build();
    let layers = vec![
        Layer::new(&base, Compression::Gzip, false),
        Layer::new(&etc, Compression::Gzip, false),
    ];
    let cases: [Case; 5] = [
        ("4294967296", None, "4294967296", None),
        ("1000:4294967296", None, "1000", None),
        ("1000", Some(1000), "", Some((1000, 1000))),
        ("alice", None, "alice", Some((1000, 1000))),
        ("1000:50", Some(1000), "", Some((1000, 50))),
    ];
    for (i, (user, uid, username, runs)) in cases.into_iter().enumerate() {
        let spec = TestImage::new(
            layers.clone(),
            ImageConfig {
                cmd: vec!["id".into()],
                user: user.into(),
                ..Default::default()
            },
        );
        let pushed = images::push_image(&e._reg, "crust-test/image-user", &format!("u{i}"), &spec);
        let image = || {
            Some(cri_api::v1::ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            })
        };
        let mut images = e.c.images().await;
        images
            .pull_image(PullImageRequest {
                image: image(),
                ..Default::default()
            })
            .await
            .unwrap();
        let st = images
            .image_status(ImageStatusRequest {
                image: image(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        assert_eq!(st.uid.map(|v| v.value), uid, "{user}: ImageStatus uid");
        assert_eq!(st.username, username, "{user}: ImageStatus username");

        let name = format!("u{i}");
        let c = ctr(&name, &pushed.reference, &[]);
        match runs {
            None => {
                let err = create(&e, &p, c).await.unwrap_err();
                assert_eq!(err.code(), Code::InvalidArgument, "{user}: {err:?}");
                assert!(
                    err.message().contains("image config User") && err.message().contains(user),
                    "{user}: {}",
                    err.message()
                );
            }
            Some((want_uid, want_gid)) => {
                let id = run(&e, &p, c).await;
                let cs = wait_exited(&e, &id).await;
                let out = stdout_text(&p.log_dir.join(format!("{name}/0.log")).display().to_string());
                assert_eq!(cs.exit_code, 0, "{user}: {cs:?}\n{out}");
                assert!(
                    out.starts_with(&format!("uid={want_uid}("))
                        && out.contains(&format!(" gid={want_gid}(")),
                    "{user}: {out}"
                );
                if let Some(reported) = uid {
                    assert_eq!(
                        reported,
                        i64::from(want_uid),
                        "{user}: ImageStatus and the process disagree"
                    );
                }
            }
        }
    }
    stop_and_remove_pod(&e, &p.id).await;
}
