//! Unit tests of the `:authority` rewriter: frames and HPACK blocks built here as grpc-core writes them,
//! decoded back as h2 would (a fresh HPACK decoder, as the server's).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const GRPC_CORE_AUTHORITY: &[u8] = b"run%2Fcrust%2Fcrust.sock";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let len = (payload.len() as u32).to_be_bytes();
    f.extend_from_slice(&len[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Literal with incremental indexing, new name (what grpc-core sends for `:authority` and friends).
fn indexed_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x40);
    put_string(out, name);
    put_string(out, value);
}

/// The first request's header block: `:method POST` (static 3), `:scheme http` (static 6), and literals
/// added to the dynamic table (62 is the newest).
fn first_block(authority: &[u8]) -> Vec<u8> {
    let mut b = vec![0x83, 0x86];
    indexed_literal(&mut b, b":path", b"/runtime.v1.RuntimeService/Version");
    indexed_literal(&mut b, b":authority", authority);
    indexed_literal(&mut b, b"content-type", b"application/grpc");
    indexed_literal(&mut b, b"te", b"trailers");
    b
}

/// The next request's block, all from the tables: it only decodes right against the client's state.
fn second_block() -> Vec<u8> {
    // dynamic: 62 te, 63 content-type, 64 :authority, 65 :path
    vec![0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62]
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn expected(authority: &str) -> Fields {
    fields(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/runtime.v1.RuntimeService/Version"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

/// Feeds `input` in pieces of `step` bytes.
fn run(r: &mut Rewriter, input: &[u8], step: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        r.feed(piece, &mut out)?;
    }
    Ok(out)
}

/// A parsed frame: type, flags, stream, payload.
type Parsed = (u8, u8, u32, Vec<u8>);
/// A decoded header block.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits the server's input (after the preface) into frames.
fn parse(mut b: &[u8]) -> Vec<Parsed> {
    assert!(b.starts_with(PREFACE));
    b = &b[PREFACE.len()..];
    let mut frames = Vec::new();
    while !b.is_empty() {
        let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        frames.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    frames
}

/// Decodes the header blocks in `frames` as the server does; checks that none is padded, and that
/// every frame fits the default max frame size, and that the server's dynamic table is never used
/// (literals without indexing only). Returns each block's fields and its HEADERS frame.
fn server_blocks(frames: &[Parsed]) -> Vec<(Fields, Parsed)> {
    let mut dec = Decoder::new();
    let mut blocks = Vec::new();
    let mut open: Option<(Vec<u8>, Parsed)> = None;
    for f in frames {
        assert!(f.3.len() <= MAX_OUT_FRAME);
        match f.0 {
            HEADERS => {
                assert!(open.is_none());
                assert_eq!(f.1 & PADDED, 0, "rewritten frames are not padded");
                let skip = if f.1 & PRIORITY != 0 { 5 } else { 0 };
                open = Some((f.3[skip..].to_vec(), f.clone()));
            }
            CONTINUATION => open.as_mut().unwrap().0.extend_from_slice(&f.3),
            _ => assert!(open.is_none(), "frame inside a header block"),
        }
        if matches!(f.0, HEADERS | CONTINUATION) && f.1 & END_HEADERS != 0 {
            let (frag, head) = open.take().unwrap();
            assert_literals_only(&frag);
            blocks.push((dec.decode(&frag).unwrap(), head));
        }
    }
    assert!(open.is_none());
    blocks
}

/// Every field of `frag` is a literal without indexing with a new name, without Huffman coding.
fn assert_literals_only(mut frag: &[u8]) {
    fn string(b: &[u8]) -> &[u8] {
        assert_eq!(b[0] & 0x80, 0, "no Huffman coding");
        let (mut len, mut i) = (usize::from(b[0]), 1);
        if len == 0x7f {
            let mut shift = 0;
            loop {
                len += usize::from(b[i] & 0x7f) << shift;
                shift += 7;
                i += 1;
                if b[i - 1] & 0x80 == 0 {
                    break;
                }
            }
        }
        &b[i + len..]
    }
    while !frag.is_empty() {
        assert_eq!(frag[0], 0x00, "literal without indexing, new name");
        frag = string(string(&frag[1..]));
    }
}

fn client_connection(authority: &[u8]) -> Vec<u8> {
    let mut c = PREFACE.to_vec();
    c.extend(frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]));
    c.extend(frame(HEADERS, END_HEADERS, 1, &first_block(authority)));
    c.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 2, 0x0a, 0]));
    c.extend(frame(HEADERS, END_HEADERS, 3, &second_block()));
    c.extend(frame(DATA, END_STREAM, 3, &[0, 0, 0, 0, 0]));
    c
}

#[test]
fn a_valid_authority_passes_the_connection_through_unchanged() {
    for authority in [&b"localhost"[..], b"127.0.0.1:1234", b"[::1]"] {
        let input = client_connection(authority);
        for step in [1, 7, input.len()] {
            let mut r = Rewriter::new();
            assert_eq!(run(&mut r, &input, step).unwrap(), input);
            assert!(r.passing());
        }
    }
}

#[test]
fn a_block_without_authority_passes_through() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x83, 0x86, 0x84]));
    let mut r = Rewriter::new();
    assert_eq!(run(&mut r, &c, 3).unwrap(), c);
    assert!(r.passing());
}

#[test]
fn grpc_core_and_grpc_java_authorities_become_localhost_on_every_block() {
    for authority in [GRPC_CORE_AUTHORITY, b"/run/crust/crust.sock", b"a b"] {
        let input = client_connection(authority);
        for step in [1, 5, 64, input.len()] {
            let mut r = Rewriter::new();
            let out = run(&mut r, &input, step).unwrap();
            assert!(!r.passing());
            let frames = parse(&out);
            let blocks = server_blocks(&frames);
            assert_eq!(blocks.len(), 2);
            for (f, _) in &blocks {
                assert_eq!(f, &expected("localhost"));
            }
            // Everything else is as sent, in order.
            let kinds: Vec<(u8, u8, u32)> = frames.iter().map(|f| (f.0, f.1, f.2)).collect();
            assert_eq!(
                kinds,
                [
                    (SETTINGS, 0, 0),
                    (HEADERS, END_HEADERS, 1),
                    (DATA, END_STREAM, 1),
                    (HEADERS, END_HEADERS, 3),
                    (DATA, END_STREAM, 3)
                ]
            );
            assert_eq!(frames[2].3, [0, 0, 0, 0, 2, 0x0a, 0]);
        }
    }
}

#[test]
fn a_block_split_over_continuation_frames_and_reads_is_joined() {
    let block = first_block(GRPC_CORE_AUTHORITY);
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(20);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_STREAM, 1, a));
    input.extend(frame(CONTINUATION, 0, 1, b));
    input.extend(frame(CONTINUATION, 0, 1, &[]));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second_block()));
    for step in [1, 2, 9, 10, 33] {
        let mut r = Rewriter::new();
        let frames = parse(&run(&mut r, &input, step).unwrap());
        assert_eq!(frames.len(), 2, "one frame per rewritten block");
        assert_eq!(frames[0].1, END_STREAM | END_HEADERS);
        let blocks = server_blocks(&frames);
        assert_eq!(blocks[0].0, expected("localhost"));
        assert_eq!(blocks[1].0, expected("localhost"));
    }
}

#[test]
fn padding_is_stripped_and_priority_kept() {
    let block = first_block(GRPC_CORE_AUTHORITY);
    let prio = [0x80, 0, 0, 0, 15];
    let mut payload = vec![4];
    payload.extend_from_slice(&prio);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 4]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 1, &payload));
    let mut r = Rewriter::new();
    let frames = parse(&run(&mut r, &input, 3).unwrap());
    assert_eq!(frames[0].1, END_HEADERS | PRIORITY);
    assert_eq!(frames[0].3[..5], prio);
    assert_eq!(server_blocks(&frames)[0].0, expected("localhost"));
}

#[test]
fn padding_longer_than_the_frame_is_left_to_h2_or_closes_a_rewritten_connection() {
    let bad = frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x83]);
    let mut input = PREFACE.to_vec();
    input.extend(&bad);
    let mut r = Rewriter::new();
    assert_eq!(run(&mut r, &input, 4).unwrap(), input);
    assert!(r.passing());

    let mut input = client_connection(GRPC_CORE_AUTHORITY);
    input.extend(&bad);
    let mut r = Rewriter::new();
    assert!(matches!(
        run(&mut r, &input, 100),
        Err(FrameError::BadPadding { stream: 1 })
    ));
}

#[test]
fn a_large_block_is_split_into_continuation_frames_of_16k() {
    let mut block = first_block(GRPC_CORE_AUTHORITY);
    let big = "x".repeat(40_000);
    indexed_literal(&mut block, b"x-big", big.as_bytes()); // too big for the table: not added
    let mut input = PREFACE.to_vec();
    for (i, chunk) in block.chunks(16_384).enumerate() {
        let last = (i + 1) * 16_384 >= block.len();
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
    }
    let mut r = Rewriter::new();
    let frames = parse(&run(&mut r, &input, 1000).unwrap());
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].3.len(), MAX_OUT_FRAME);
    assert_eq!(frames[1].3.len(), MAX_OUT_FRAME);
    assert_eq!(frames[0].1, 0);
    assert_eq!(frames[2].1, END_HEADERS);
    let mut want = expected("localhost");
    want.push((b"x-big".to_vec(), big.into_bytes()));
    assert_eq!(server_blocks(&frames)[0].0, want);
}

#[test]
fn an_oversized_block_is_left_to_h2_while_deciding_and_closes_a_rewritten_connection() {
    let huge = frame(HEADERS, 0, 1, &vec![0x83; MAX_BLOCK]);
    let mut input = PREFACE.to_vec();
    input.extend(&huge);
    let mut r = Rewriter::new();
    assert_eq!(run(&mut r, &input, 4096).unwrap(), input);
    assert!(r.passing());

    let mut input = client_connection(GRPC_CORE_AUTHORITY);
    input.extend(frame(HEADERS, 0, 5, &vec![0x83; MAX_BLOCK / 2]));
    input.extend(frame(CONTINUATION, 0, 5, &vec![0x83; MAX_BLOCK / 2]));
    let mut r = Rewriter::new();
    assert!(matches!(
        run(&mut r, &input, 4096),
        Err(FrameError::BlockTooLarge { stream: 5 })
    ));
}

#[test]
fn blocks_decoding_to_more_than_the_limit_close_a_rewritten_connection() {
    // 4 KiB in the table, then 300 one-byte references to it: 1.2 MB decoded from 300 bytes.
    let mut input = client_connection(GRPC_CORE_AUTHORITY);
    let mut b = Vec::new();
    indexed_literal(&mut b, b"x", &[b'y'; 4000]);
    input.extend(frame(HEADERS, END_HEADERS, 5, &b));
    input.extend(frame(HEADERS, END_HEADERS, 7, &[0x80 | 62; 300]));
    let mut r = Rewriter::new();
    assert!(matches!(
        run(&mut r, &input, 4096),
        Err(FrameError::BlockTooLarge { stream: 7 })
    ));
}

#[test]
fn a_frame_inside_a_header_block_is_left_to_h2_or_closes_a_rewritten_connection() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, 0, 1, &first_block(GRPC_CORE_AUTHORITY)));
    input.extend(frame(DATA, 0, 1, b"x"));
    let mut r = Rewriter::new();
    assert_eq!(run(&mut r, &input, 5).unwrap(), input);

    let mut input = client_connection(GRPC_CORE_AUTHORITY);
    input.extend(frame(HEADERS, 0, 5, &second_block()));
    input.extend(frame(CONTINUATION, END_HEADERS, 7, &[]));
    let mut r = Rewriter::new();
    assert!(matches!(
        run(&mut r, &input, 5),
        Err(FrameError::ExpectedContinuation {
            frame_type: CONTINUATION,
            stream: 7,
            block: 5
        })
    ));
}

#[test]
fn bad_hpack_is_left_to_h2_or_closes_a_rewritten_connection() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
    let mut r = Rewriter::new();
    assert_eq!(run(&mut r, &input, 5).unwrap(), input);
    assert!(r.passing());

    let mut input = client_connection(GRPC_CORE_AUTHORITY);
    input.extend(frame(HEADERS, END_HEADERS, 5, &[0x80 | 70]));
    let mut r = Rewriter::new();
    assert!(matches!(
        run(&mut r, &input, 5),
        Err(FrameError::Hpack { stream: 5, .. })
    ));
}

#[test]
fn put_string_writes_hpack_integers() {
    let mut out = Vec::new();
    put_string(&mut out, &[b'a'; 126]);
    assert_eq!(out[0], 126);
    for (len, prefix) in [(127, &[0x7f, 0][..]), (1337, &[0x7f, 0xba, 0x09])] {
        let mut out = Vec::new();
        put_string(&mut out, &vec![b'a'; len]);
        assert_eq!(&out[..prefix.len()], prefix);
        assert_eq!(out.len(), prefix.len() + len);
    }
}

#[tokio::test]
async fn the_stream_rewrites_then_passes_through_and_writes_untouched() {
    for authority in [GRPC_CORE_AUTHORITY, b"localhost"] {
        let (client, server) = tokio::io::duplex(64);
        let mut fixed = AuthorityFix::new(server);
        let input = client_connection(authority);
        let (mut cr, mut cw) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            for piece in input.chunks(11) {
                cw.write_all(piece).await.unwrap();
            }
            cw.shutdown().await.unwrap();
            cw
        });
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        let _cw = writer.await.unwrap();
        if authority == GRPC_CORE_AUTHORITY {
            let blocks = server_blocks(&parse(&got));
            assert_eq!(blocks[0].0, expected("localhost"));
            assert_eq!(blocks[1].0, expected("localhost"));
        } else {
            assert_eq!(got, client_connection(authority));
            assert!(fixed.fix.is_none(), "a passing connection drops the rewriter");
        }
        fixed.write_all(b"server bytes").await.unwrap();
        fixed.flush().await.unwrap();
        let mut back = [0; 12];
        cr.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"server bytes");
    }
}
