//! Streaming a blob to a file: chunks go from the network to a blocking writer thread that hashes and
//! writes them, so no blob is ever held whole in memory; size and digest are checked at the end. A
//! transfer cut short is resumed from the bytes already passed on (`Range`), so the hash that is being
//! computed goes on over the rest; a registry that ignores the range sends the whole blob again and the
//! bytes already passed on are skipped (containerd does the same).

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Session;
use super::retry::{Failure, Tries};
use crate::{Error, Result};

/// Downloads `digest` into the new file `path` (which must not exist) and verifies it. Returns its size.
/// More than `max` bytes (when given) is refused whether or not the size is declared.
/// On error the (partial) file may be left for the caller to remove.
pub async fn download_to(
    s: &Session,
    digest: &str,
    what: &str,
    size: Option<u64>,
    max: Option<u64>,
    path: &Path,
) -> Result<u64> {
    let what = format!("{what} {digest}");
    if let (Some(n), Some(m)) = (size, max)
        && n > m
    {
        return Err(too_large(s, &what, m));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    // Created here, not in the writer, so that a cancelled pull never leaves a file its guard missed.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut w = std::io::BufWriter::with_capacity(256 << 10, f);
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(b) = rx.blocking_recv() {
            h.update(&b);
            w.write_all(&b)?;
            n += b.len() as u64;
        }
        w.flush()?;
        Ok((n, format!("sha256:{}", hex::encode(h.finalize()))))
    });
    let failure = fetch_blob(s, digest, &what, size, max, &tx).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::Internal(format!("blob writer: {e}")))?
        .map_err(|e| Error::io(format!("write {}", path.display()), e));
    if let Some(e) = failure {
        return Err(e);
    }
    let (n, got) = written?;
    check_blob(s, &what, size, n, &got, digest)?;
    Ok(n)
}

/// A small blob (at most `max` bytes) whole in memory, verified: a signature payload.
pub async fn fetch_small(
    s: &Session,
    digest: &str,
    what: &str,
    size: Option<u64>,
    max: u64,
) -> Result<Vec<u8>> {
    let what = format!("{what} {digest}");
    if size.is_some_and(|n| n > max) {
        return Err(too_large(s, &what, max));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let w = what.as_str();
    // The sender moves into the fetch, so the collector ends when the fetch does.
    let fetch = async move { fetch_blob(s, digest, w, size, Some(max), &tx).await };
    let collect = async {
        let mut body = Vec::new();
        while let Some(b) = rx.recv().await {
            body.extend_from_slice(&b);
        }
        body
    };
    let (failure, body) = tokio::join!(fetch, collect);
    if let Some(e) = failure {
        return Err(e);
    }
    let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    check_blob(s, &what, size, body.len() as u64, &got, digest)?;
    Ok(body)
}

/// The refusal of a blob larger than crust accepts.
fn too_large(s: &Session, what: &str, max: u64) -> Error {
    Error::ResourceExhausted(format!(
        "{what} from {} is larger than {max} bytes",
        s.endpoint.base
    ))
}

/// How one try at a blob ended, short of a failure.
enum End {
    /// The body ended (with all the bytes the manifest says, when it says).
    Whole,
    /// The body ended cleanly before the size the manifest says.
    Short,
    /// The consumer went away (its own error tells why).
    Gone,
}

/// Streams blob `digest` (`what`) into `tx` from its first byte to its last, trying again after
/// transient failures as the session's `retry` allows, each try from the first byte not yet passed on.
/// Refuses more bytes than `size` (when known) or `max` (when given). Returns the failure, if any.
pub(crate) async fn fetch_blob(
    s: &Session,
    digest: &str,
    what: &str,
    size: Option<u64>,
    max: Option<u64>,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Option<Error> {
    let want = Want {
        digest,
        what,
        size,
        max,
    };
    let mut sent = 0u64;
    let mut tries = Tries::new(s.retry);
    // A body that ended short of the size: reported if trying again fails for good (a registry that
    // holds a truncated blob refuses the rest with 416).
    let mut short: Option<Error> = None;
    loop {
        let before = sent;
        let res = try_blob(s, &want, tx, &mut sent).await;
        if sent > before {
            tries.progress();
            short = None;
        }
        let f = match res {
            Ok(End::Whole) | Ok(End::Gone) => return None,
            Ok(End::Short) => {
                let e = Error::DataLoss(format!(
                    "{what} from {}: got {sent} bytes, the manifest says {}",
                    s.host(),
                    size.unwrap_or(0)
                ));
                let f = Failure::transient(e.duplicate(), "short_body");
                short = Some(e);
                f
            }
            // Cut after its last byte: whether those bytes are the blob, the digest will tell.
            Err(f) if f.again && size == Some(sent) => return None,
            Err(f) => f,
        };
        let again = f.again;
        if let Err(e) = tries.again(f, what).await {
            return Some(match short.take() {
                Some(short) if !again => short,
                _ => e,
            });
        }
    }
}

/// The blob asked for: its digest, its name in messages, its size (when known), the most accepted.
struct Want<'a> {
    digest: &'a str,
    what: &'a str,
    size: Option<u64>,
    max: Option<u64>,
}

/// One try at the blob from byte `sent` on, counting the bytes passed on into `sent`.
async fn try_blob(
    s: &Session,
    w: &Want<'_>,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    sent: &mut u64,
) -> Result<End, Failure> {
    let Want {
        digest,
        what,
        size,
        max,
    } = *w;
    let (mut resp, start) = s.blob(digest, *sent).await?;
    if let Some(m) = max
        && resp.content_length().is_some_and(|n| start + n > m)
    {
        return Err(too_large(s, what, m).into());
    }
    // A whole blob sent again: the bytes already passed on are skipped.
    let mut skip = *sent - start;
    while let Some(mut c) = s.chunk(&mut resp, what).await? {
        if skip > 0 {
            let k = skip.min(c.len() as u64);
            c = c.slice(k as usize..);
            skip -= k;
            if c.is_empty() {
                continue;
            }
        }
        let received = *sent + c.len() as u64;
        if let Some(m) = max
            && received > m
        {
            return Err(too_large(s, what, m).into());
        }
        if let Some(want) = size
            && received > want
        {
            return Err(Error::DataLoss(format!(
                "{what} from {}: more than the {want} bytes the manifest says",
                s.host()
            ))
            .into());
        }
        if tx.send(c).await.is_err() {
            return Ok(End::Gone);
        }
        *sent = received;
    }
    if size.is_some_and(|want| *sent < want) {
        return Ok(End::Short);
    }
    Ok(End::Whole)
}

/// Checks what was received (`n` bytes with digest `got`) against the manifest's `size` (when known)
/// and `digest`.
pub(crate) fn check_blob(
    s: &Session,
    what: &str,
    size: Option<u64>,
    n: u64,
    got: &str,
    digest: &str,
) -> Result<()> {
    if let Some(want) = size
        && n != want
    {
        return Err(Error::DataLoss(format!(
            "{what} from {}: got {n} bytes, the manifest says {want}",
            s.host()
        )));
    }
    if got != digest {
        return Err(Error::DataLoss(format!(
            "{what} from {}: content has digest {got}, refused",
            s.host()
        )));
    }
    Ok(())
}
