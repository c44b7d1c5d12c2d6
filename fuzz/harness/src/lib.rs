//! The logic of parlor-core's fuzz targets, with the invariants they check.
//!
//! Each function takes the fuzzer's raw bytes, decodes what it needs from them and panics on a
//! violated invariant; the targets in `fuzz/fuzz_targets/` only call them. This crate builds on
//! stable in the main workspace, where `tests/corpus.rs` replays every committed corpus file
//! through the same functions, so the invariants run in CI without a fuzzer. It uses the core's
//! public API plus its hidden `__private` module (the request reader, the response encoder) and
//! `Server::check_invariants`.
//!
//! * [`parse`]: arbitrary bytes into a [`RequestReader`]; every outcome is a request or an
//!   error with a status, nothing comes out after an error, buffering stays within the caps.
//! * [`split`]: the same bytes fed whole and split at fuzzer-chosen points give the same
//!   requests, errors and encoded responses.
//! * [`machine`]: a decoded sequence of adapter inputs against a [`Server`](parlor_core::Server),
//!   with its invariants checked after every step (see the `machine` module).

use parlor_core::__private::{self as http, HttpError, Method, Persist, ReadEvent, Request};
use parlor_core::__private::{RequestReader, Response, Version};
use parlor_core::Limits;

mod machine;
pub use machine::{config_for, machine};

/// Longest chunk-size line the reader buffers (`MAX_CHUNK_LINE` in core's `http/chunked.rs`).
const CHUNK_LINE: usize = 1024;

/// The statuses the reader may answer with (see [`HttpError::status`]).
const READER_STATUSES: [u16; 7] = [400, 413, 414, 417, 431, 501, 505];

/// One outcome of the reader: a request or the error that ended the connection.
pub type Outcome = Result<Request, HttpError>;

/// The limits the fuzzer chooses with the low two bits of `selector`: the defaults and three
/// small sets, so that every cap is reachable with short inputs.
pub fn limits_for(selector: u8) -> Limits {
    match selector & 3 {
        0 => Limits::default(),
        1 => Limits {
            max_head: 64,
            max_headers: 2,
            max_uri: 16,
            max_body: 8,
        },
        2 => Limits {
            max_head: 256,
            max_headers: 8,
            max_uri: 32,
            max_body: 64,
        },
        _ => Limits {
            max_head: 40,
            max_headers: 1,
            max_uri: 1,
            max_body: 0,
        },
    }
}

/// A reader with the bookkeeping needed to check it after every push.
struct Checked {
    reader: RequestReader,
    limits: Limits,
    /// Bytes pushed so far.
    pushed: usize,
    /// Whether a `Continue` came for the request now being read.
    continued: bool,
    /// Requests and the error, in order (`Continue` left out: it depends on arrival).
    outcomes: Vec<Outcome>,
}

impl Checked {
    fn new(limits: Limits) -> Self {
        Checked {
            reader: RequestReader::new(),
            limits,
            pushed: 0,
            continued: false,
            outcomes: Vec::new(),
        }
    }

    fn failed(&self) -> bool {
        matches!(self.outcomes.last(), Some(Err(_)))
    }

    /// Pushes `data` and takes every event out, checking each.
    fn feed(&mut self, data: &[u8]) {
        self.reader.push(data);
        self.pushed += data.len();
        if self.failed() {
            assert_eq!(
                self.reader.next_event(&self.limits),
                None,
                "an event after an error"
            );
            assert_eq!(self.reader.buffered(), 0, "bytes kept after an error");
            return;
        }
        // Every request consumes at least one byte, and each has at most one `Continue`.
        let mut budget = 2 * self.pushed + 2;
        while let Some(event) = self.reader.next_event(&self.limits) {
            budget = budget
                .checked_sub(1)
                .expect("the reader yields events forever");
            match event {
                Ok(ReadEvent::Continue) => {
                    assert!(!self.continued, "two Continue for one request");
                    self.continued = true;
                }
                Ok(ReadEvent::Request(request)) => {
                    check_request(&request, &self.limits, self.continued);
                    self.continued = false;
                    self.outcomes.push(Ok(request));
                }
                Err(e) => {
                    assert!(
                        READER_STATUSES.contains(&e.status),
                        "unexpected status {e:?}"
                    );
                    assert!(self.reader.is_failed(), "an error without failing");
                    assert!(!self.reader.in_request(), "a failed reader in a request");
                    assert_eq!(self.reader.buffered(), 0, "bytes kept after an error");
                    assert_eq!(
                        self.reader.next_event(&self.limits),
                        None,
                        "an event after an error"
                    );
                    self.outcomes.push(Err(e));
                    return;
                }
            }
            assert!(
                self.reader.buffered() <= self.pushed,
                "buffered {} of {} pushed",
                self.reader.buffered(),
                self.pushed
            );
        }
        // Waiting for more: what is buffered is the unfinished part of one request, which the
        // caps bound (a head, a partial Content-Length body, a chunk-size or trailer line).
        assert!(!self.reader.is_failed(), "failed without an error");
        let cap = self
            .limits
            .max_head
            .max(self.limits.max_body)
            .max(CHUNK_LINE);
        assert!(
            self.reader.buffered() <= cap,
            "{} bytes buffered while waiting, over the caps {:?}",
            self.reader.buffered(),
            self.limits
        );
    }
}

/// What a complete request must satisfy whatever bytes made it.
fn check_request(r: &Request, limits: &Limits, continued: bool) {
    assert!(r.body.len() <= limits.max_body, "body over the cap");
    assert!(r.target.len() <= limits.max_uri, "target over the cap");
    assert!(
        r.target.starts_with('/') || (r.target == "*" && r.method == Method::Options),
        "target {:?} is not origin-form",
        r.target
    );
    if continued {
        assert!(
            r.headers.expect_continue,
            "Continue for a request without Expect"
        );
    }
    if r.headers.expect_continue {
        assert_eq!(r.version, Version::Http11, "100-continue for HTTP/1.0");
    }
}

/// Arbitrary bytes into a reader. The first byte picks the [`Limits`] ([`limits_for`]); the rest
/// is pushed twice (the second copy continues the stream), draining events after each push.
pub fn parse(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let mut checked = Checked::new(limits_for(selector));
    checked.feed(input);
    checked.feed(input);
}

/// A decoded [`split`] input.
#[derive(Debug)]
pub struct Split<'a> {
    /// The reader's limits.
    pub limits: Limits,
    /// The stream, cut into the pieces to push one after the other.
    pub chunks: Vec<&'a [u8]>,
    /// The whole stream.
    pub stream: &'a [u8],
}

/// How [`split`] decodes its input: `[selector, cuts, cut points..., stream...]`.
///
/// The selector picks the limits. The low four bits of `cuts` are the number of cut points,
/// each two bytes (little-endian, taken modulo the stream's length plus one); with the high bit
/// set the stream is instead fed one byte at a time.
pub fn split_chunks(data: &[u8]) -> Option<Split<'_>> {
    let [selector, cuts, rest @ ..] = data else {
        return None;
    };
    let limits = limits_for(*selector);
    if cuts & 0x80 != 0 {
        return Some(Split {
            limits,
            chunks: rest.chunks(1).collect(),
            stream: rest,
        });
    }
    let n = usize::from(cuts & 0x0f).min(rest.len() / 2);
    let (points, stream) = rest.split_at(2 * n);
    let mut points: Vec<usize> = points
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(n + 1);
    let mut last = 0;
    for p in points {
        chunks.push(&stream[last..p]);
        last = p;
    }
    chunks.push(&stream[last..]);
    Some(Split {
        limits,
        chunks,
        stream,
    })
}

/// The same stream fed whole and split ([`split_chunks`]) gives identical requests, errors and
/// responses, and leaves the reader in the same state.
pub fn split(data: &[u8]) {
    let Some(Split {
        limits,
        chunks,
        stream,
    }) = split_chunks(data)
    else {
        return;
    };
    let mut whole = Checked::new(limits);
    whole.feed(stream);
    let mut parts = Checked::new(limits);
    for chunk in &chunks {
        parts.feed(chunk);
    }
    assert_eq!(whole.outcomes, parts.outcomes, "split differs from whole");
    assert_eq!(whole.reader.buffered(), parts.reader.buffered());
    assert_eq!(whole.reader.in_request(), parts.reader.in_request());
    assert_eq!(whole.reader.is_failed(), parts.reader.is_failed());
    let encoded_whole: Vec<_> = whole.outcomes.iter().map(respond).collect();
    let encoded_parts: Vec<_> = parts.outcomes.iter().map(respond).collect();
    assert_eq!(encoded_whole, encoded_parts, "responses differ");
}

/// Encodes an answer to one outcome (an echo of the body, or the error) and checks that it is a
/// well-formed response whose `Content-Length` frames exactly its body.
fn respond(outcome: &Outcome) -> bytes::Bytes {
    let (encoded, status, body_len, head_only) = match outcome {
        Ok(r) => {
            let head_only = r.method == Method::Head;
            let response = Response {
                head_only,
                persist: Persist::for_request(r.version, r.keep_alive),
                ..Response::new(200, Some(http::TEXT_PLAIN), &r.body)
            };
            (response.encode(), 200, r.body.len(), head_only)
        }
        Err(e) => {
            let encoded = http::error(e.status, e.reason, &[], Persist::Close);
            assert_ne!(http::reason_phrase(e.status), "Unknown");
            (encoded, e.status, e.reason.len() + 1, false)
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&encoded) else {
        panic!("unparseable response {encoded:?}");
    };
    assert_eq!(parsed.code, Some(status));
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        });
    assert_eq!(length, Some(body_len), "Content-Length of {encoded:?}");
    let sent = if head_only { 0 } else { body_len };
    assert_eq!(encoded.len(), head_len + sent, "framing of {encoded:?}");
    encoded
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_decoding() {
        let split = super::split_chunks(b"\x00\x02\x03\x00\x01\x00abcdef").unwrap();
        assert_eq!(split.stream, b"abcdef");
        assert_eq!(split.chunks, [&b"a"[..], b"bc", b"def"]);
        let split = super::split_chunks(b"\x00\x80abc").unwrap();
        assert_eq!(split.chunks, [&b"a"[..], b"b", b"c"]);
    }
}
