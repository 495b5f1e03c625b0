//! A layer blob streamed from the registry straight into the unpacker: network chunks go through a small
//! bounded channel to one blocking thread that hashes them (the blob digest), decompresses, hashes again
//! (the diff ID) and unpacks into a temporary directory. A transfer cut short resumes where it stopped
//! (see `registry::fetch_blob`): the unpacker just reads on. The layer is written to disk once and never held
//! whole in memory; it becomes visible (renamed) only after size, digest and diff ID all check out.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::Descriptor;
use super::registry::{Session, check_blob, fetch_blob};
use super::unpack::{self, Unpacked};
use crate::{Error, Result};

/// Chunks from the channel as a `Read`, hashed and counted on the way.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
    hasher: Sha256,
    n: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.hasher.update(&b);
                    self.n += b.len() as u64;
                    self.cur = b;
                }
                None => return Ok(0),
            }
        }
        let k = buf.len().min(self.cur.len());
        buf[..k].copy_from_slice(&self.cur[..k]);
        let _ = self.cur.split_to(k);
        Ok(k)
    }
}

/// Fetches the layer `d` and unpacks it into the empty directory `dest`, checking the blob's size and
/// digest and the uncompressed content's `diff_id`, within the per-layer `limits`.
pub async fn fetch_and_unpack(
    s: &Session,
    d: &Descriptor,
    diff_id: &str,
    dest: &Path,
    limits: unpack::Limits,
) -> Result<Unpacked> {
    let what = format!("blob {}", d.digest);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let dest = dest.to_path_buf();
    let diff = diff_id.to_string();
    let worker = tokio::task::spawn_blocking(move || {
        let mut input = BufReader::with_capacity(
            128 << 10,
            ChannelReader {
                rx,
                cur: bytes::Bytes::new(),
                hasher: Sha256::new(),
                n: 0,
            },
        );
        let res = unpack::unpack(&mut input, &dest, Some(&diff), limits);
        if res.is_err() {
            // Here, not (only) in the caller: this thread may outlive a cancelled caller.
            super::store::remove_any(&dest);
        }
        // Take the rest (trailing bytes, or all of it after a failure) so the digest covers the blob.
        let drained = loop {
            match input.fill_buf() {
                Ok([]) => break Ok(()),
                Ok(b) => {
                    let k = b.len();
                    input.consume(k);
                }
                Err(e) => break Err(e),
            }
        };
        let r = input.into_inner();
        (
            res,
            drained,
            r.n,
            format!("sha256:{}", hex::encode(r.hasher.finalize())),
        )
    });
    let size = Some(d.size).filter(|n| *n > 0);
    let failure = fetch_blob(s, &d.digest, &what, size, None, &tx).await;
    drop(tx);
    let (res, drained, n, got) = worker
        .await
        .map_err(|e| Error::Internal(format!("unpack task: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    drained.map_err(|e| Error::io(format!("read {what}"), e))?;
    check_blob(s, &what, size, n, &got, &d.digest)?;
    res
}
