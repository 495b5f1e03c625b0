//! Protobuf (proto3) encoding written straight from crust's records, for the list responses kubelet asks
//! for every second: a list of 330 containers built as `v1::Container` values costs some 20 allocations
//! per container (cloned strings and maps) before prost encodes and drops them all; written from the
//! records under their lock, it costs one buffer. Since kubelet's questions seldom have new answers,
//! the answers are also kept: each record's entry once encoded (`Frozen`, but for its state), and whole
//! responses while the versions of what they were made from stay the same (`Kept`).
//!
//! The helpers mirror prost's generated code: a scalar or string field equal to its default is left
//! out, a message field is written with its length first (computed by the caller with the `*_len`
//! helpers), map entries leave out default keys and values (prost's own `hash_map` encoder). Each
//! encoder built on them is checked against prost's encoding of the message built field by field.

use std::collections::HashMap;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// A string field: its encoded length (0 when empty: proto3 leaves it out).
pub fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

/// Writes a string field (nothing when empty).
pub fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A varint field (`int64`, `uint32`, an enum): its encoded length (0 when zero).
pub fn varint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

/// Writes a varint field (nothing when zero). Negative `int64`/`int32`/enum values are passed as
/// `v as u64` (their ten-byte two's complement form, as protobuf has it).
pub fn put_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// A `map<string, string>` field: its encoded length.
pub fn map_len(tag: u32, m: &HashMap<String, String>) -> usize {
    use prost::encoding::{hash_map, string};
    hash_map::encoded_len(string::encoded_len, string::encoded_len, tag, m)
}

/// Writes a `map<string, string>` field.
pub fn put_map(tag: u32, m: &HashMap<String, String>, buf: &mut Vec<u8>) {
    use prost::encoding::{hash_map, string};
    hash_map::encode(
        string::encode,
        string::encoded_len,
        string::encode,
        string::encoded_len,
        tag,
        m,
        buf,
    );
}

/// A message field whose body is `body_len` bytes: its encoded length (a set message field is written
/// even when its body is empty).
pub fn msg_len(tag: u32, body_len: usize) -> usize {
    key_len(tag) + encoded_len_varint(body_len as u64) + body_len
}

/// Writes a message field's key and length; its body follows.
pub fn put_msg_head(tag: u32, body_len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body_len as u64, buf);
}

/// A repeated message field whose items are encoded one by one, in any order, and written sorted by
/// `K` (ties keep the order they came in).
pub struct Items<K> {
    scratch: Vec<u8>,
    spans: Vec<(K, usize, usize)>,
}

impl<K: Ord> Items<K> {
    /// Room for about `n` items of `each` bytes.
    pub fn with_capacity(n: usize, each: usize) -> Self {
        Items {
            scratch: Vec::with_capacity(n * each),
            spans: Vec::with_capacity(n),
        }
    }

    /// Adds an item: `encode` writes its body (without key and length).
    pub fn push(&mut self, key: K, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.scratch.len();
        encode(&mut self.scratch);
        self.spans.push((key, start, self.scratch.len()));
    }

    /// The encoded message whose field `tag` holds the items, sorted.
    pub fn into_message(mut self, tag: u32) -> Vec<u8> {
        self.spans.sort_by(|a, b| a.0.cmp(&b.0));
        let total: usize = self.spans.iter().map(|(_, s, e)| msg_len(tag, e - s)).sum();
        let mut out = Vec::with_capacity(total);
        for (_, s, e) in &self.spans {
            put_msg_head(tag, e - s, &mut out);
            out.extend_from_slice(&self.scratch[*s..*e]);
        }
        out
    }
}

/// The most bytes one message of a list stream (`Stream*Response`) carries: kubelet's gRPC client
/// takes 16 MiB, and a stream's point is that no single message comes near it. An item larger than
/// this on its own (a container with megabytes of annotations) goes alone in a message: upstream asks
/// for at least one item per message.
pub const BATCH_LIMIT: usize = 1 << 20;

/// One message of a list stream: a repeated message field `tag`, filled item by item up to
/// [`BATCH_LIMIT`]. Each item is encoded into `scratch` first and copied in when it fits.
pub struct Batch {
    tag: u32,
    buf: Vec<u8>,
    /// Room promised to items added later (`reserve`).
    reserved: usize,
    /// The item being encoded.
    pub scratch: Vec<u8>,
}

impl Batch {
    /// An empty message whose items go in field `tag`.
    pub fn new(tag: u32) -> Self {
        Batch {
            tag,
            buf: Vec::new(),
            reserved: 0,
            scratch: Vec::new(),
        }
    }

    /// Whether an item of `body_len` bytes fits (an empty message takes any item).
    fn fits(&self, body_len: usize) -> bool {
        let used = self.buf.len() + self.reserved;
        used == 0 || used + msg_len(self.tag, body_len) <= BATCH_LIMIT
    }

    /// Promises room for an item of at most `body_len` bytes, added later with `take_reserved`;
    /// `false` when it does not fit.
    pub fn reserve(&mut self, body_len: usize) -> bool {
        let fits = self.fits(body_len);
        if fits {
            self.reserved += msg_len(self.tag, body_len);
        }
        fits
    }

    /// Adds the item in `scratch` in the room `reserve(body_len)` promised (or gives the room back
    /// when `scratch` is empty: the item is not listed after all).
    pub fn take_reserved(&mut self, body_len: usize) {
        self.reserved = self.reserved.saturating_sub(msg_len(self.tag, body_len));
        if !self.scratch.is_empty() {
            put_msg_head(self.tag, self.scratch.len(), &mut self.buf);
            self.buf.extend_from_slice(&self.scratch);
            self.scratch.clear();
        }
    }

    /// Adds the item encoded in `scratch` if it fits (or the message is empty); `false` leaves both
    /// as they were, the message full.
    pub fn take_scratch(&mut self) -> bool {
        if !self.fits(self.scratch.len()) {
            return false;
        }
        put_msg_head(self.tag, self.scratch.len(), &mut self.buf);
        self.buf.extend_from_slice(&self.scratch);
        self.scratch.clear();
        true
    }

    /// Adds the message `m` if it fits (or the message is empty); `false` when full.
    pub fn push_message(&mut self, m: &impl prost::Message) -> bool {
        self.scratch.clear();
        m.encode_raw(&mut self.scratch);
        let taken = self.take_scratch();
        self.scratch.clear();
        taken
    }

    /// Whether no item is in yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded message.
    pub fn finish(self) -> bytes::Bytes {
        self.buf.into()
    }
}

/// A list stream's messages, each made by `batch(from)` when the one before it has been taken:
/// the message of the items after the cursor `from` (`None`: from the start), and the cursor after
/// them (`None`: no item left). An empty message ends the stream unsent.
pub fn batches<F>(batch: F) -> impl futures::Stream<Item = crate::Result<bytes::Bytes>> + Send
where
    F: FnMut(Option<&str>) -> (Batch, Option<String>) + Send,
{
    futures::stream::unfold((Some(None::<String>), batch), |(from, mut batch)| async move {
        let (message, next) = batch(from?.as_deref());
        (!message.is_empty()).then(|| (Ok(message.finish()), (next.map(Some), batch)))
    })
}

/// A list stream's messages (field `tag` of each) made from pages of items: `page(after)` gives the
/// items after the cursor `after` (`None`: from the start) and the cursor after them, `None` at the
/// end. Pages are asked for only as messages are taken, so no more than a page and a message of
/// items is ever held; an item that does not fit waits for the next message.
pub fn paged<M, F, Fut>(tag: u32, page: F) -> impl futures::Stream<Item = crate::Result<bytes::Bytes>> + Send
where
    M: prost::Message + Send + 'static,
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (Vec<M>, Option<String>)> + Send,
{
    struct Pages<M, F> {
        page: F,
        items: std::collections::VecDeque<M>,
        /// Where the next page starts; `None` once the last page was read.
        next: Option<Option<String>>,
    }
    let start = Pages {
        page,
        items: std::collections::VecDeque::new(),
        next: Some(None),
    };
    futures::stream::unfold(start, move |mut p| async move {
        let mut batch = Batch::new(tag);
        loop {
            while let Some(m) = p.items.front() {
                if !batch.push_message(m) {
                    return Some((Ok(batch.finish()), p));
                }
                p.items.pop_front();
            }
            let Some(after) = p.next.take() else {
                return (!batch.is_empty()).then(|| (Ok(batch.finish()), p));
            };
            let (items, next) = (p.page)(after).await;
            p.items.extend(items);
            p.next = next.map(Some);
        }
    })
}

/// A listed record's message body, encoded on its first list and kept, but for one varint field
/// written at each use: its state. Every other field of a listed container or pod is fixed once it
/// is created, so a relist copies bytes instead of walking each record's strings and maps again.
/// A cache, not part of the record: not saved, and equal to any other.
#[derive(Clone, Default)]
pub struct Frozen(std::sync::OnceLock<(std::sync::Arc<[u8]>, usize)>);

impl Frozen {
    /// Writes the body with the varint field `tag` = `v` in its place: `head` writes the fields
    /// numbered before `tag`, `tail` those after (both only on the first use).
    pub fn put(
        &self,
        tag: u32,
        v: u64,
        buf: &mut Vec<u8>,
        head: impl FnOnce(&mut Vec<u8>),
        tail: impl FnOnce(&mut Vec<u8>),
    ) {
        let (bytes, at) = self.0.get_or_init(|| {
            let mut b = Vec::new();
            head(&mut b);
            let at = b.len();
            tail(&mut b);
            (b.into(), at)
        });
        buf.extend_from_slice(&bytes[..*at]);
        put_varint(tag, v, buf);
        buf.extend_from_slice(&bytes[*at..]);
    }
}

impl PartialEq for Frozen {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Frozen {}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Frozen")
    }
}

/// The versions of a record table and of its set of watched monitors (`crate::state::Versioned`).
pub type Versions = (u64, u64);

/// Responses kept while what they were made from stays as it was: the versions (`V`) of the records
/// and of the watched monitors (`crate::state::Versioned`), one response per key `K` (a list's state
/// filter: kubelet relists everything every second, and only what is running or ready every few; a
/// pod's ID for its status, asked for every pod every second). Only a response made from those alone
/// is kept: none that read an exit from a file. Versions only grow, so a response kept at older ones
/// is dropped when one at newer ones comes.
#[derive(Debug)]
pub struct Kept<K, V>(std::sync::Mutex<Vec<(K, V, bytes::Bytes)>>);

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept(std::sync::Mutex::new(Vec::new()))
    }
}

impl<K: PartialEq, V: PartialEq + Copy> Kept<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(K, V, bytes::Bytes)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The response kept for `key`, if it was made at `versions`.
    pub fn get<Q: PartialEq<K> + ?Sized>(&self, key: &Q, versions: V) -> Option<bytes::Bytes> {
        self.lock()
            .iter()
            .find(|(k, v, _)| key == k && *v == versions)
            .map(|(_, _, b)| b.clone())
    }

    /// Keeps `response`, made for `key` at `versions`.
    pub fn put(&self, key: K, versions: V, response: bytes::Bytes) {
        let mut kept = self.lock();
        kept.retain(|(k, v, _)| *k != key && *v == versions);
        kept.push((key, versions, response));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1;
    use prost::Message;

    #[test]
    fn fields_as_prost_writes_them() {
        let labels: HashMap<String, String> = [("a".into(), "1".into()), ("".into(), "".into())].into();
        let meta = v1::ContainerMetadata {
            name: "n".into(),
            attempt: 0,
        };
        let want = v1::Container {
            id: "x".repeat(200),
            metadata: Some(meta.clone()),
            state: 2,
            created_at: -5,
            labels: labels.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let body = str_len(1, "n") + varint_len(2, 0);
        let len = str_len(1, &"x".repeat(200))
            + str_len(2, "")
            + msg_len(3, body)
            + varint_len(6, 2)
            + varint_len(7, -5i64 as u64)
            + map_len(8, &labels);
        let mut got = Vec::new();
        put_str(1, &"x".repeat(200), &mut got);
        put_str(2, "", &mut got);
        put_msg_head(3, body, &mut got);
        put_str(1, "n", &mut got);
        put_varint(2, 0, &mut got);
        put_varint(6, 2, &mut got);
        put_varint(7, -5i64 as u64, &mut got);
        put_map(8, &labels, &mut got);
        assert_eq!(got.len(), len);
        assert_eq!(got.len(), want.len());
        assert_eq!(
            v1::Container::decode(&got[..]).unwrap(),
            v1::Container::decode(&want[..]).unwrap()
        );
    }

    #[test]
    fn kept_per_state_filter_and_versions() {
        let kept = Kept::<Option<i32>, (u64, u64)>::default();
        kept.put(None, (1, 1), bytes::Bytes::from_static(b"all"));
        kept.put(Some(1), (1, 1), bytes::Bytes::from_static(b"running"));
        assert_eq!(kept.get(&None, (1, 1)).as_deref(), Some(&b"all"[..]));
        assert_eq!(kept.get(&Some(1), (1, 1)).as_deref(), Some(&b"running"[..]));
        assert_eq!(kept.get(&Some(2), (1, 1)), None);
        assert_eq!(kept.get(&None, (2, 1)), None, "records changed");
        assert_eq!(kept.get(&None, (1, 2)), None, "watched monitors changed");
        kept.put(None, (2, 1), bytes::Bytes::from_static(b"all2"));
        assert_eq!(kept.get(&None, (1, 1)), None, "replaced");
        assert_eq!(kept.get(&None, (2, 1)).as_deref(), Some(&b"all2"[..]));
        assert_eq!(
            kept.get(&Some(1), (1, 1)),
            None,
            "dropped: made at older versions"
        );
        let by_id = Kept::<String, u64>::default();
        by_id.put("a".into(), 1, bytes::Bytes::from_static(b"x"));
        assert_eq!(by_id.get("a", 1).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn items_sorted_by_key_ties_in_order() {
        let mut items = Items::with_capacity(3, 8);
        for (k, id) in [(2, "c"), (1, "a"), (2, "d"), (1, "b")] {
            items.push(k, |b| put_str(1, id, b));
        }
        let msg = v1::ListContainersResponse::decode(&items.into_message(1)[..]).unwrap();
        let ids: Vec<_> = msg.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn batches_stay_under_the_limit_and_take_one_oversized_item_alone() {
        let mut b = Batch::new(1);
        let item = v1::Container {
            id: "x".repeat(1000),
            ..Default::default()
        };
        let mut n = 0;
        while b.push_message(&item) {
            n += 1;
        }
        let msg = b.finish();
        assert!(msg.len() <= BATCH_LIMIT, "{}", msg.len());
        assert!(msg.len() + 1006 > BATCH_LIMIT);
        assert_eq!(
            v1::StreamContainersResponse::decode(&msg[..])
                .unwrap()
                .containers
                .len(),
            n
        );
        let big = v1::Container {
            id: "x".repeat(BATCH_LIMIT + 1),
            ..Default::default()
        };
        let mut b = Batch::new(1);
        assert!(b.push_message(&big), "an empty message takes any item");
        assert!(!b.push_message(&item));
        assert_eq!(
            v1::StreamContainersResponse::decode(&b.finish()[..])
                .unwrap()
                .containers,
            [big]
        );
    }
}
