//! `multipart`: a STOW-RS request: the first line is the Content-Type header
//! (`dicomweb::multipart::parse_content_type`), the next byte seeds the chunk sizes, the rest is
//! the body, read by `MultipartReader` once whole and once in those chunks. Both readings must
//! agree: where both succeed they give the same parts, and where the whole body reads, the
//! chunked one fails only on a limit that depends on what is buffered.

use std::convert::Infallible;

use bytes::Bytes;
use radstream::dicomweb::multipart::{parse_content_type, MultipartError, MultipartReader};

type Parts = Vec<(Vec<(String, String)>, Vec<u8>)>;

pub fn run(data: &[u8]) {
    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(content_type) = std::str::from_utf8(&data[..nl]) else {
        return;
    };
    let Ok(related) = parse_content_type(content_type) else {
        return;
    };
    let Some((&seed, body)) = data[nl + 1..].split_first() else {
        return;
    };
    let whole = read(vec![Bytes::copy_from_slice(body)], &related.boundary);
    let chunked = read(chunks(body, seed), &related.boundary);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the chunking changed the parts read"),
        (Ok(_), Err(MultipartError::Malformed(m)))
            if m.contains("16 KiB") || m.contains("at the start of the body") => {}
        (Ok(_), Err(e)) => panic!("the whole body reads, in chunks it fails: {e}"),
        _ => {}
    }
}

/// Splits `body` into chunks of 1 to 64 bytes (a pseudo-random sequence from `seed`), or
/// seed 0: one byte each.
fn chunks(body: &[u8], seed: u8) -> Vec<Bytes> {
    let mut state = u32::from(seed) | 0x9E37_0000;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = if seed == 0 {
            1
        } else {
            1 + (state % 64) as usize
        };
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(Bytes::copy_from_slice(head));
        rest = tail;
    }
    out
}

fn read(chunks: Vec<Bytes>, boundary: &str) -> Result<Parts, MultipartError> {
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let mut reader = MultipartReader::new(stream, boundary, usize::MAX);
    futures::executor::block_on(async {
        let mut parts = Parts::new();
        while let Some(headers) = reader.next_part().await? {
            let mut content = Vec::new();
            while let Some(c) = reader.chunk().await? {
                content.extend_from_slice(&c);
            }
            parts.push((headers.0, content));
        }
        Ok(parts)
    })
}
