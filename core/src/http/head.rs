//! The request head: what a parsed request is, and how a complete head becomes one.
//!
//! [`parse_head`] runs once the head's end has been found (see `request.rs`), in three steps:
//! the request line (method, target, version), then the header fields, collected one by one
//! into [`Fields`] (the first field that is itself invalid, in order of arrival, is what the
//! request is refused for; the others are still collected, so the refusal knows the request's
//! `Origin`), then the framing decisions that need all the fields (how the body is delimited,
//! whether the connection stays open).

use super::chunked::Chunk;
use super::{HttpError, Limits, MAX_HEADERS_CAP};
use crate::forwarded::ForwardedHeaders;

/// The request methods Parlor tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// Any other token.
    Other,
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// A short piece of a request head (the target, `Host`, `Content-Type`): kept inline when it
/// fits in 30 bytes, as most do (`text/plain; charset=utf-8` is 25), so a typical request allocates nothing for them; boxed
/// otherwise. Reads as a `&str`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Text(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

/// Longest [`Text`] kept inline (the enum is then 32 bytes, a `String` and a word).
const INLINE: usize = 30;

impl Text {
    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `&str` whole (see `From<&str>`): always valid UTF-8.
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("inline text is copied from a str"),
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Text(Repr::Heap(s.into()))
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The header fields Parlor uses, taken out of a request head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Host`
    pub host: Option<Text>,
    /// `Content-Type`
    pub content_type: Option<Text>,
    /// `Accept` (several fields joined with `, `)
    pub accept: Option<String>,
    /// `Origin`
    pub origin: Option<String>,
    /// `Last-Event-ID`
    pub last_event_id: Option<String>,
    /// `Expect: 100-continue` was present.
    pub expect_continue: bool,
    /// `Forwarded` and `X-Forwarded-*`, believed only from a trusted proxy (`forwarded.rs`);
    /// boxed, as most requests have none.
    pub forwarding: Option<Box<ForwardedHeaders>>,
}

/// One complete request: head and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent (origin form, e.g. `/subscribe?room=a`).
    pub target: Text,
    /// The protocol version.
    pub version: Version,
    /// The header fields Parlor uses.
    pub headers: Headers,
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        let target = self.target.as_str();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.as_str().split_once('?').map(|(_, query)| query)
    }
}

/// How a request body is framed, and how far it has been read.
#[derive(Debug)]
pub(super) enum Body {
    Length(usize),
    Chunked(Chunk),
}

/// Parses a complete head (request line, fields, the empty line) into the request, with an
/// empty body, and the framing of that body. A head that parses but whose body cannot be read
/// (too large, conflicting framing, no `Host`) still yields its request, beside the error, so
/// the error answer can honour its method (`HEAD`) and its origin (CORS).
pub(super) fn parse_head(
    head: &[u8],
    limits: &Limits,
) -> Result<(Request, Result<Body, HttpError>), HttpError> {
    if head.starts_with(b"PRI * HTTP/2") {
        return Err(HttpError::new(505, "HTTP/2 is not supported"));
    }
    // Uninitialised slots: zeroing 256 headers (8 KiB) on every request cost more than parsing.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut storage[..max_headers]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::new(400, "malformed request")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => {
            return Err(HttpError::new(505, "HTTP version not supported"))
        }
        Err(_) => return Err(HttpError::new(400, "malformed request")),
    }
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::new(400, "malformed request"));
    };
    if target.len() > limits.max_uri {
        return Err(HttpError::new(414, "request target too long"));
    }
    let asterisk = target == "*" && method == "OPTIONS";
    let absolute = absolute_form(target)?;
    if !(target.starts_with('/') || asterisk || absolute.is_some()) {
        return Err(HttpError::new(400, "request target must be a path"));
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let mut fields = Fields::default();
    let mut refused = None;
    for h in parsed.headers.iter() {
        if let Err(e) = fields.collect(h.name, h.value, version) {
            refused.get_or_insert(e);
        }
    }
    let framing = match refused {
        Some(e) => Err(e),
        None => fields.framing(version, limits),
    };
    let keep_alive = fields.keep_alive(version);
    let mut headers = fields.headers;
    if matches!(framing, Ok(Body::Length(0))) {
        headers.expect_continue = false;
    }
    // RFC 9112 §3.2.2: of an absolute-form target, the authority replaces `Host`.
    let target = match absolute {
        Some((authority, path)) => {
            headers.host = Some(Text::from(authority));
            Text::from(path.as_str())
        }
        None => Text::from(target),
    };
    let request = Request {
        method: Method::parse(method),
        target,
        version,
        headers,
        keep_alive,
        body: Vec::new(),
    };
    Ok((request, framing))
}

/// Splits an absolute-form target (`http://host:port/path?query`, RFC 9112 §3.2.2) into its
/// authority and its origin-form path and query. `Ok(None)`: not absolute-form.
fn absolute_form(target: &str) -> Result<Option<(&str, String)>, HttpError> {
    const BAD: HttpError = HttpError::new(400, "invalid absolute-form request target");
    // The common case, origin form, without searching it.
    if target.starts_with('/') {
        return Ok(None);
    }
    let Some(i) = target.find("://") else {
        return Ok(None);
    };
    let scheme = &target[..i];
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Ok(None);
    }
    let rest = &target[i + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || path.contains('#') {
        return Err(BAD);
    }
    let path = match path.as_bytes().first() {
        None => "/".to_owned(),
        Some(b'?') => format!("/{path}"),
        Some(_) => path.to_owned(),
    };
    Ok(Some((authority, path)))
}

/// What the header fields of one head say, collected before any decision that needs them all.
#[derive(Default)]
struct Fields {
    /// The fields Parlor hands on with the request.
    headers: Headers,
    /// The `Content-Length`, once every value agreed.
    content_length: Option<u64>,
    /// A `Transfer-Encoding` field was present.
    transfer_encoding: bool,
    /// Its last coding is `chunked`.
    chunked: bool,
    /// `Connection: close` was present.
    close: bool,
    /// `Connection: keep-alive` was present.
    keep_alive: bool,
    /// How many `Host` fields came.
    hosts: usize,
}

impl Fields {
    /// Takes in one header field. Refuses a field whose own value is invalid; what depends on
    /// several fields waits for [`Fields::framing`].
    fn collect(&mut self, name: &str, value: &[u8], version: Version) -> Result<(), HttpError> {
        let headers = &mut self.headers;
        if name.eq_ignore_ascii_case("content-length") {
            self.content_length(value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding(value)?;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            self.hosts += 1;
            headers.host = Some(Text::from(utf8(value)?));
        } else if name.eq_ignore_ascii_case("content-type") {
            headers.content_type = Some(Text::from(utf8(value)?));
        } else if name.eq_ignore_ascii_case("accept") {
            let value = text(value)?;
            headers.accept = Some(match headers.accept.take() {
                Some(prev) => prev + ", " + &value,
                None => value,
            });
        } else if name.eq_ignore_ascii_case("origin") {
            headers.origin = Some(text(value)?);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            headers.last_event_id = Some(text(value)?);
        } else if let Some(field) = forwarding_field(&mut headers.forwarding, name) {
            // A list: several fields are one value joined with commas (RFC 9110 §5.3).
            let value = text(value)?;
            *field = Some(match field.take() {
                Some(prev) => prev + ", " + &value,
                None => value,
            });
        } else if name.eq_ignore_ascii_case("expect") {
            if trim(value).eq_ignore_ascii_case(b"100-continue") {
                headers.expect_continue = version == Version::Http11;
            } else {
                return Err(HttpError::new(417, "unsupported expectation"));
            }
        }
        Ok(())
    }

    /// One `Content-Length` field: a list of equal decimal lengths, equal to any seen before.
    fn content_length(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for part in value.split(|&b| b == b',') {
            let n = parse_content_length(trim(part))?;
            if self.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::new(400, "conflicting Content-Length"));
            }
            self.content_length = Some(n);
        }
        Ok(())
    }

    /// One `Transfer-Encoding` field: only `chunked` is implemented, and it must come last.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), HttpError> {
        self.transfer_encoding = true;
        for coding in value.split(|&b| b == b',') {
            let coding = trim(coding);
            if coding.is_empty() {
                continue;
            }
            if self.chunked {
                // Anything after `chunked` (even another `chunked`) breaks the framing.
                return Err(HttpError::new(
                    400,
                    "chunked must be the last transfer coding",
                ));
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked = true;
            } else {
                return Err(HttpError::new(501, "transfer coding not implemented"));
            }
        }
        Ok(())
    }

    /// How the body is delimited (RFC 9112 §6.3), refusing the heads whose framing is
    /// ambiguous, and a declared length over the cap before any body byte is read.
    fn framing(&self, version: Version, limits: &Limits) -> Result<Body, HttpError> {
        if version == Version::Http11 && self.hosts != 1 {
            return Err(HttpError::new(400, "exactly one Host header is required"));
        }
        if self.transfer_encoding && !self.chunked {
            return Err(HttpError::new(
                400,
                "chunked must be the last transfer coding",
            ));
        }
        if self.transfer_encoding && self.content_length.is_some() {
            return Err(HttpError::new(
                400,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if self.transfer_encoding && version == Version::Http10 {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if self.chunked {
            return Ok(Body::Chunked(Chunk::Size));
        }
        let n = self.content_length.unwrap_or(0);
        if n > limits.max_body as u64 {
            return Err(HttpError::new(413, "request body too large"));
        }
        Ok(Body::Length(n as usize))
    }

    /// Whether the connection stays open after the response.
    fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive && !self.close,
        }
    }
}

/// The slot of a forwarding header field, if `name` is one.
fn forwarding_field<'a>(
    f: &'a mut Option<Box<ForwardedHeaders>>,
    name: &str,
) -> Option<&'a mut Option<String>> {
    let x = name
        .get(..12)
        .is_some_and(|p| p.eq_ignore_ascii_case("x-forwarded-"));
    if !x && !name.eq_ignore_ascii_case("forwarded") {
        return None;
    }
    let f = f.get_or_insert_with(Box::default);
    if !x {
        return Some(&mut f.forwarded);
    }
    let rest = &name[12..];
    [
        ("for", &mut f.x_for),
        ("proto", &mut f.x_proto),
        ("host", &mut f.x_host),
        ("port", &mut f.x_port),
    ]
    .into_iter()
    .find(|(n, _)| rest.eq_ignore_ascii_case(n))
    .map(|(_, slot)| slot)
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    const INVALID: HttpError = HttpError::new(400, "invalid Content-Length");
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(INVALID);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `v` without leading and trailing spaces and tabs.
pub(super) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

fn text(v: &[u8]) -> Result<String, HttpError> {
    utf8(v).map(str::to_owned)
}

/// A header value as text, borrowed (`400` if it is not UTF-8).
fn utf8(v: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(v).map_err(|_| HttpError::new(400, "header value is not valid UTF-8"))
}

#[cfg(test)]
mod text_tests {
    use super::{Repr, Text, INLINE};

    #[test]
    fn short_text_is_inline_and_long_text_boxed_and_both_read_back() {
        let short = "x".repeat(INLINE);
        let long = "y".repeat(INLINE + 1);
        for (s, inline) in [("", true), ("/", true), (&*short, true), (&*long, false)] {
            let t = Text::from(s);
            assert_eq!(matches!(t.0, Repr::Inline { .. }), inline, "{s:?}");
            assert_eq!(t.as_str(), s);
            assert_eq!(t, s);
            assert_eq!(format!("{t:?}"), format!("{s:?}"));
        }
        // Multi-byte characters stay whole.
        assert_eq!(Text::from("é/ü"), "é/ü");
        assert_eq!(std::mem::size_of::<Text>(), 32);
    }
}
