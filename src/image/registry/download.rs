//! Streaming a blob to a file: chunks go from the network to a blocking writer thread that hashes and
//! writes them, so no blob is ever held whole in memory; size and digest are checked at the end.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Session;
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
    let mut resp = s.blob(digest).await?;
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
    let failure = pump(s, &mut resp, &what, size, max, &tx).await;
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

/// The refusal of a blob larger than crust accepts.
fn too_large(s: &Session, what: &str, max: u64) -> Error {
    Error::ResourceExhausted(format!(
        "{what} from {} is larger than {max} bytes",
        s.endpoint.base
    ))
}

/// Feeds the blob's chunks from `resp` into `tx` until the end, a network error, more bytes than `size`
/// (when known) or `max` (when given), or a consumer that went away (its own error tells why).
/// Returns the failure, if any.
pub(crate) async fn pump(
    s: &Session,
    resp: &mut reqwest::Response,
    what: &str,
    size: Option<u64>,
    max: Option<u64>,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Option<Error> {
    let mut received = 0u64;
    if let Some(m) = max
        && resp.content_length().is_some_and(|n| n > m)
    {
        return Some(too_large(s, what, m));
    }
    loop {
        match s.chunk(resp, what).await {
            Ok(Some(c)) => {
                received += c.len() as u64;
                if let Some(m) = max
                    && received > m
                {
                    return Some(too_large(s, what, m));
                }
                if let Some(want) = size
                    && received > want
                {
                    return Some(Error::FailedPrecondition(format!(
                        "{what} from {}: more than the {want} bytes the manifest says",
                        s.host()
                    )));
                }
                if tx.send(c).await.is_err() {
                    return None; // the consumer failed: its error tells why
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
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
        return Err(Error::FailedPrecondition(format!(
            "{what} from {}: got {n} bytes, the manifest says {want}",
            s.host()
        )));
    }
    if got != digest {
        return Err(Error::FailedPrecondition(format!(
            "{what} from {}: content has digest {got}, refused",
            s.host()
        )));
    }
    Ok(())
}
