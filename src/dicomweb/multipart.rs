//! A streaming reader for `multipart/related` bodies (RFC 2387 over RFC 2046 framing), and
//! [`related`], the writer for small in-memory answers (frames, bulk data).
//!
//! STOW-RS bodies can be gigabytes, so parts are handed out chunk by chunk as they arrive and
//! memory stays bounded by the largest read plus the boundary length. axum's `Multipart`
//! (multer) is built for `multipart/form-data`; this reader needs no Content-Disposition.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Longest header block of one part and longest preamble before the first boundary.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Why a multipart body cannot be read further.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// The body ended before the closing delimiter.
    #[error("the body ended before the closing boundary")]
    Truncated,
    /// The framing is wrong (no boundary, headers too long, bad header line).
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// The body is larger than allowed.
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    /// Reading the body failed.
    #[error("reading the body failed: {0}")]
    Body(String),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: either `--` (the end) or CRLF and a part's headers.
    AfterDelimiter,
    /// Inside a part's content.
    Body,
    Done,
}

/// Reads parts from a body stream: [`next_part`](Self::next_part) for the headers, then
/// [`chunk`](Self::chunk) until it returns `None`.
pub struct MultipartReader<S> {
    stream: S,
    buf: BytesMut,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    state: State,
    read: usize,
    limit: usize,
}

/// The headers of one part, names lower-cased.
#[derive(Debug, Default, Clone)]
pub struct PartHeaders(pub Vec<(String, String)>);

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(stream: S, boundary: &str, limit: usize) -> Self {
        let mut buf = BytesMut::new();
        // The first delimiter may start the body without a CRLF before it.
        buf.extend_from_slice(b"\r\n");
        MultipartReader {
            stream,
            buf,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            state: State::Preamble,
            read: 0,
            limit,
        }
    }

    /// Reads more of the body; `false` at its end.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        match self.stream.next().await {
            None => Ok(false),
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("length limit") {
                    Err(MultipartError::TooLarge(self.limit))
                } else {
                    Err(MultipartError::Body(text))
                }
            }
            Some(Ok(b)) => {
                self.read += b.len();
                if self.read > self.limit {
                    return Err(MultipartError::TooLarge(self.limit));
                }
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
        }
    }

    fn find(&self, needle: &[u8]) -> Option<usize> {
        memchr::memmem::find(&self.buf, needle)
    }

    /// Skips to the next part and returns its headers; `None` after the closing delimiter.
    /// Unread content of the current part is skipped.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Body => while self.chunk().await?.is_some() {},
                State::Preamble => loop {
                    if let Some(i) = self.find(&self.delimiter.clone()) {
                        self.buf.advance(i + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                        break;
                    }
                    if self.buf.len() > MAX_HEADER_BYTES {
                        return Err(MultipartError::Malformed(
                            "no boundary delimiter found at the start of the body".into(),
                        ));
                    }
                    if !self.fill().await? {
                        return Err(MultipartError::Malformed(
                            "no boundary delimiter found in the body".into(),
                        ));
                    }
                },
                State::AfterDelimiter => {
                    while self.buf.len() < 2 {
                        if !self.fill().await? {
                            return Err(MultipartError::Truncated);
                        }
                    }
                    if &self.buf[..2] == b"--" {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    let end = loop {
                        if let Some(i) = self.find(b"\r\n\r\n") {
                            break i;
                        }
                        // A part without headers: the CRLF after the delimiter is followed
                        // directly by the blank line.
                        if self.buf.starts_with(b"\r\n\r\n") {
                            break 0;
                        }
                        if self.buf.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::Malformed(
                                "part headers longer than 16 KiB".into(),
                            ));
                        }
                        if !self.fill().await? {
                            return Err(MultipartError::Truncated);
                        }
                    };
                    let block = self.buf.split_to(end + 4);
                    let text = std::str::from_utf8(&block).map_err(|_| {
                        MultipartError::Malformed("part headers are not text".into())
                    })?;
                    // Transport padding after the delimiter, then CRLF.
                    let text = text.trim_start_matches([' ', '\t']);
                    let text = text.strip_prefix("\r\n").ok_or_else(|| {
                        MultipartError::Malformed("no line break after a boundary delimiter".into())
                    })?;
                    let mut headers = PartHeaders::default();
                    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                        let (name, value) = line.split_once(':').ok_or_else(|| {
                            MultipartError::Malformed(format!("bad part header line '{line}'"))
                        })?;
                        headers
                            .0
                            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                    }
                    self.state = State::Body;
                    return Ok(Some(headers));
                }
            }
        }
    }

    /// The next piece of the current part's content; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if self.state != State::Body {
            return Ok(None);
        }
        let keep = self.delimiter.len() - 1;
        // Bytes before `from` were searched already (no delimiter starts there).
        let mut from = 0;
        loop {
            if let Some(i) = memchr::memmem::find(&self.buf[from..], &self.delimiter) {
                let i = from + i;
                if i > 0 {
                    return Ok(Some(self.buf.split_to(i).freeze()));
                }
                self.buf.advance(self.delimiter.len());
                self.state = State::AfterDelimiter;
                return Ok(None);
            }
            // Everything but a possible start of the delimiter can go out.
            if self.buf.len() > keep && self.buf.len() >= 64 * 1024 {
                let n = self.buf.len() - keep;
                return Ok(Some(self.buf.split_to(n).freeze()));
            }
            from = self.buf.len().saturating_sub(keep);
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
    }
}

/// The `boundary` and `type` parameters of a `multipart/related` Content-Type.
#[derive(Debug, PartialEq, Eq)]
pub struct RelatedType {
    pub boundary: String,
    pub root_type: Option<String>,
}

/// A 200 `multipart/related; type="<media>"` answer with one part per item, each with
/// `part_type` as its Content-Type.
pub fn related(media: &str, part_type: &str, parts: Vec<Vec<u8>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let boundary = format!("radstream-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {part_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        axum::http::StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media}\"; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

/// Parses `multipart/related; type="application/dicom"; boundary=…`; the error names what is
/// wrong.
pub fn parse_content_type(raw: &str) -> Result<RelatedType, String> {
    let mut parts = split_params(raw).into_iter();
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    if media != "multipart/related" {
        return Err(format!(
            "'{media}' is not supported; send multipart/related; type=\"application/dicom\""
        ));
    }
    let mut boundary = None;
    let mut root_type = None;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "boundary" => boundary = Some(v),
            "type" => root_type = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    let boundary = boundary
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or("the boundary parameter is missing or longer than 70 characters")?;
    Ok(RelatedType {
        boundary,
        root_type,
    })
}

/// Splits on `;` outside quotes.
pub fn split_params(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(
        body: &[u8],
        chunk: usize,
    ) -> MultipartReader<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        MultipartReader::new(futures::stream::iter(chunks), "XyZ", 1 << 20)
    }

    async fn parts(
        body: &[u8],
        chunk: usize,
    ) -> Result<Vec<(PartHeaders, Vec<u8>)>, MultipartError> {
        let mut r = reader(body, chunk);
        let mut out = Vec::new();
        while let Some(h) = r.next_part().await? {
            let mut data = Vec::new();
            while let Some(c) = r.chunk().await? {
                data.extend_from_slice(&c);
            }
            out.push((h, data));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn parts_come_out_whole_whatever_the_chunking() {
        let big = vec![b'-'; 200_000];
        let mut body = b"preamble\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\ncontent-type: text/plain\r\n\r\n".to_vec();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n--XyZ--\r\nepilogue");
        for chunk in [1, 3, 7, 100, 65536, body.len()] {
            let p = parts(&body, chunk).await.unwrap();
            assert_eq!(p.len(), 2, "chunk {chunk}");
            assert_eq!(p[0].0.get("content-type"), Some("application/dicom"));
            assert_eq!(p[0].1, b"first");
            assert_eq!(p[1].0.get("content-type"), Some("text/plain"));
            assert_eq!(p[1].1, big);
        }
    }

    #[tokio::test]
    async fn body_starting_with_the_delimiter_and_empty_part() {
        let body = b"--XyZ\r\n\r\n\r\n--XyZ--";
        let p = parts(body, 2).await.unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].1.is_empty());
    }

    #[tokio::test]
    async fn truncated_and_unframed_bodies_are_errors() {
        let e = parts(b"--XyZ\r\n\r\nabc", 4).await.unwrap_err();
        assert!(matches!(e, MultipartError::Truncated), "{e}");
        let e = parts(b"no boundary here", 4).await.unwrap_err();
        assert!(matches!(e, MultipartError::Malformed(_)), "{e}");
    }

    #[tokio::test]
    async fn limit_is_enforced_while_reading() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..3).map(|_| Ok(Bytes::from(vec![0u8; 600]))).collect();
        let mut r = MultipartReader::new(futures::stream::iter(chunks), "b", 1000);
        assert!(matches!(
            r.next_part().await.unwrap_err(),
            MultipartError::TooLarge(1000)
        ));
    }

    #[test]
    fn content_type_parameters() {
        let t =
            parse_content_type("multipart/related; type=\"application/dicom\"; boundary=\"a;b\"")
                .unwrap();
        assert_eq!(t.boundary, "a;b");
        assert_eq!(t.root_type.as_deref(), Some("application/dicom"));
        assert!(parse_content_type("application/dicom").is_err());
        assert!(parse_content_type("multipart/related; type=application/dicom").is_err());
    }
}
