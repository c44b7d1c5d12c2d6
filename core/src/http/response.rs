//! Encoding responses into [`Bytes`].
//!
//! A response is encoded once into one contiguous buffer (status line, headers, body) and then
//! only cloned: the fan-out of a publish hands the same `Bytes` to every waiter, and responses
//! that never change (errors, the chat page) live in a [`ResponseCache`].

use std::collections::HashMap;

use bytes::Bytes;

use super::Version;

/// Headers every response carries (DESIGN §2).
const FIXED_HEADERS: &[u8] = b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";

/// Content type of plain-text answers.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// Content type of JSON answers.
pub const APPLICATION_JSON: &str = "application/json";

/// What a response says about the connection it is sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Persist {
    /// HTTP/1.1 default: the connection stays open, no header needed.
    KeepAlive,
    /// The HTTP/1.0 client asked for keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

impl Persist {
    /// How to answer a request with this version and keep-alive wish.
    pub fn for_request(version: Version, keep_alive: bool) -> Persist {
        match (keep_alive, version) {
            (false, _) => Persist::Close,
            (true, Version::Http11) => Persist::KeepAlive,
            (true, Version::Http10) => Persist::KeepAlive10,
        }
    }

    fn header(self) -> &'static [u8] {
        match self {
            Persist::KeepAlive => b"",
            Persist::KeepAlive10 => b"Connection: keep-alive\r\n",
            Persist::Close => b"Connection: close\r\n",
        }
    }
}

/// The reason phrase of the statuses Parlor sends in a [`Response`] (`100 Continue` is the
/// constant [`CONTINUE`]).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One response to encode.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if the response has a body type.
    pub content_type: Option<&'a str>,
    /// Extra header fields, each `(name, value)`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body (its length is always sent as `Content-Length`, even for `HEAD`).
    pub body: &'a [u8],
    /// Whether to leave the body out (an answer to `HEAD`).
    pub head_only: bool,
    /// What to say about the connection.
    pub persist: Persist,
}

impl<'a> Response<'a> {
    /// A response with this status and body and no extra headers.
    pub fn new(status: u16, content_type: Option<&'a str>, body: &'a [u8]) -> Self {
        Response {
            status,
            content_type,
            headers: &[],
            body,
            head_only: false,
            persist: Persist::KeepAlive,
        }
    }

    /// Encodes the whole response into one buffer.
    pub fn encode(&self) -> Bytes {
        // At its exact size: one allocation, and `Bytes::from` then needs no shared header
        // of its own (it allocates one for a vector with spare capacity).
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        self.encode_into(&mut out);
        debug_assert_eq!(out.len(), len, "Response::encoded_len is off");
        Bytes::from(out)
    }

    /// The length of [`encode`](Self::encode)'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        let mut len = b"HTTP/1.1 ".len() + decimal_len(u64::from(self.status));
        len += 1 + reason_phrase(self.status).len() + 2;
        if let Some(ct) = self.content_type {
            len += b"Content-Type: ".len() + ct.len() + 2;
        }
        if self.status != 204 {
            len += b"Content-Length: ".len() + decimal_len(self.body.len() as u64) + 2;
        }
        len += FIXED_HEADERS.len();
        for (name, value) in self.headers {
            len += name.len() + 2 + value.len() + 2;
        }
        len += self.persist.header().len() + 2;
        if !self.head_only && self.status != 204 {
            len += self.body.len();
        }
        len
    }

    /// Appends the encoded response to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_head_into(out, true);
        if !self.head_only && self.status != 204 {
            out.extend_from_slice(self.body);
        }
    }

    /// Appends the head of a response whose body follows in pieces (an event stream): no
    /// `Content-Length`, and the framing header, if any, among `headers`.
    pub fn encode_stream_head_into(&self, out: &mut Vec<u8>) {
        self.encode_head_into(out, false);
    }

    fn encode_head_into(&self, out: &mut Vec<u8>, with_length: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // 204 (and 1xx) must not carry Content-Length (RFC 9110 §8.6).
        if with_length && self.status != 204 {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, self.body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(FIXED_HEADERS);
        for (name, value) in self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(self.persist.header());
        out.extend_from_slice(b"\r\n");
    }
}

/// How many decimal digits `n` has.
pub fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The decimal digits of `n`: `digits[start..]`.
fn decimal_digits(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (digits, i)
}

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let (digits, start) = decimal_digits(n);
    out.extend_from_slice(&digits[start..]);
}

/// Appends the decimal digits of `n` to a string (what `write!(text, "{n}")` writes, without
/// the formatting machinery).
pub fn push_decimal(text: &mut String, n: u64) {
    let (digits, start) = decimal_digits(n);
    text.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// An error answer to encode: `status` with `reason` and a newline as its plain-text body.
#[derive(Clone, Copy, Debug)]
pub struct ErrorAnswer<'a> {
    /// Status code.
    pub status: u16,
    /// A short reason for a person, without the trailing newline.
    pub reason: &'static str,
    /// Extra header fields (`Allow`, `Retry-After`, the CORS headers).
    pub headers: &'a [(&'a str, &'a str)],
    /// The request was `HEAD`: headers only, `Content-Length` still the body's (RFC 9110 §9.3.2).
    pub head_only: bool,
}

impl ErrorAnswer<'_> {
    /// An error answer without extra headers.
    pub fn new(status: u16, reason: &'static str, head_only: bool) -> ErrorAnswer<'static> {
        ErrorAnswer {
            status,
            reason,
            headers: &[],
            head_only,
        }
    }

    /// Encodes it (through `cache` when it has no extra headers).
    pub fn encode(&self, persist: Persist, cache: &mut ResponseCache) -> Bytes {
        if self.headers.is_empty() {
            cache.error(self.status, self.reason, persist, self.head_only)
        } else {
            encode_error(
                self.status,
                self.reason,
                self.headers,
                persist,
                self.head_only,
            )
        }
    }
}

/// An error answer: `status` with `reason` and a newline as its plain-text body.
pub fn error(status: u16, reason: &str, headers: &[(&str, &str)], persist: Persist) -> Bytes {
    encode_error(status, reason, headers, persist, false)
}

/// [`error`], with the body left out (its length kept) when `head_only`.
fn encode_error(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    persist: Persist,
    head_only: bool,
) -> Bytes {
    let mut body = Vec::with_capacity(reason.len() + 1);
    body.extend_from_slice(reason.as_bytes());
    body.push(b'\n');
    Response {
        headers,
        persist,
        head_only,
        ..Response::new(status, Some(TEXT_PLAIN), &body)
    }
    .encode()
}

/// Responses that never change, encoded on first use and cloned after that.
///
/// Keys are `'static` (reasons and names are constants), so the cache holds at most one entry
/// per distinct constant response and cannot grow with input.
#[derive(Debug, Default)]
pub struct ResponseCache {
    errors: HashMap<(u16, &'static str, Persist), Bytes>,
}

impl ResponseCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The error answer `status` with `reason` (see [`error`]), encoded once; the answer to a
    /// `HEAD` is a slice of the same bytes, without the body.
    pub fn error(
        &mut self,
        status: u16,
        reason: &'static str,
        persist: Persist,
        head_only: bool,
    ) -> Bytes {
        let full = self
            .errors
            .entry((status, reason, persist))
            .or_insert_with(|| error(status, reason, &[], persist));
        if head_only {
            full.slice(..full.len() - (reason.len() + 1))
        } else {
            full.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 7, 9, 10, 99, 100, 4_294_967_296, u64::MAX - 1, u64::MAX] {
            let mut text = String::from("x");
            push_decimal(&mut text, n);
            assert_eq!(text, format!("x{n}"));
            let mut bytes = b"y".to_vec();
            push_u64(&mut bytes, n);
            assert_eq!(bytes, format!("y{n}").into_bytes());
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }

    #[test]
    fn responses_encode_exactly() {
        let bytes = Response {
            headers: &[("Parlor-Cursor", "e-1")],
            ..Response::new(200, Some(TEXT_PLAIN), b"hi")
        }
        .encode();
        assert_eq!(
            &bytes[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
              Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nParlor-Cursor: e-1\r\n\r\nhi"
        );
        let head = Response {
            head_only: true,
            persist: Persist::Close,
            ..Response::new(200, Some("text/html"), b"<p>")
        }
        .encode();
        assert_eq!(
            &head[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\
              Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        );
        let no_content = Response::new(204, None, b"").encode();
        assert_eq!(
            &no_content[..],
            b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"
        );
    }

    #[test]
    fn error_responses_are_plain_text_with_a_reason() {
        let e = error(404, "not found", &[], Persist::KeepAlive10);
        assert_eq!(
            &e[..],
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
              Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: keep-alive\r\n\r\nnot found\n"
        );
    }

    #[test]
    fn constant_responses_are_encoded_once() {
        let mut cache = ResponseCache::new();
        let a = cache.error(400, "malformed request", Persist::Close, false);
        let b = cache.error(400, "malformed request", Persist::Close, false);
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the second answer is a clone of the first"
        );
        let c = cache.error(400, "malformed request", Persist::KeepAlive, false);
        assert_ne!(a, c);
    }

    #[test]
    fn error_answers_to_head_have_no_body() {
        let mut cache = ResponseCache::new();
        let full = cache.error(404, "not found", Persist::KeepAlive, false);
        let head = cache.error(404, "not found", Persist::KeepAlive, true);
        assert_eq!(&full[..head.len()], &head[..]);
        assert!(head.ends_with(b"\r\n\r\n"), "the head, nothing after it");
        assert_eq!(
            &head[..],
            &encode_error(404, "not found", &[], Persist::KeepAlive, true)[..]
        );
        let with_headers = ErrorAnswer {
            headers: &[("Allow", "POST")],
            ..ErrorAnswer::new(405, "method not allowed", true)
        }
        .encode(Persist::Close, &mut cache);
        assert!(with_headers.ends_with(b"Allow: POST\r\nConnection: close\r\n\r\n"));
        assert!(std::str::from_utf8(&with_headers)
            .unwrap()
            .contains("Content-Length: 19\r\n"));
    }
}
