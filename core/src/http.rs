//! The incremental HTTP/1.1 request reader (RFC 9112), with no I/O.
//!
//! A [`RequestReader`] belongs to one connection. The owner pushes the bytes that arrive
//! ([`RequestReader::push`]) and then takes events out ([`RequestReader::next_event`]) until it
//! answers `None` ("read more"). Events are complete requests (head and body), the interim
//! `100 Continue` signal, or an [`HttpError`] carrying the status to answer before closing.
//!
//! Theory of operation:
//! * The head is handed to httparse only once its end (an empty line) has arrived. The reader
//!   remembers how far the search for that end got, so a head that trickles in one byte at a time
//!   costs O(bytes), not O(bytes²) (h11's receive buffer does the same).
//! * Limits are checked before more work is done: a head that grows past the cap is `431` (or
//!   `414` when it is the request line that is too long) without ever being parsed, and a declared
//!   body over the cap is `413` decided from the header alone, before any body byte is read.
//! * Bytes of a pipelined next request are never consumed by the current one: the reader consumes
//!   exactly the head, then exactly the framed body, and leaves the rest in its buffer.
//! * After an error the reader is failed: it yields nothing more and the connection must close.
//!   No input can make it panic.

use std::fmt;

/// The limits of one request, each with the status the reader answers when it is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request head (request line and header fields), in bytes: `431` past it.
    pub max_head: usize,
    /// Most header fields in one request: `431` past it. At most [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
    /// Longest request target, in bytes: `414` past it.
    pub max_uri: usize,
    /// Largest request body, in bytes: `413` past it.
    pub max_body: usize,
}

/// The hard upper bound for [`Limits::max_headers`] (the header array lives on the stack).
pub const MAX_HEADERS_CAP: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_uri: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// A request the reader refused: the status to answer and a short plain-text reason.
///
/// Every such error ends the connection after the answer is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The status code to answer with (400, 413, 414, 417, 431, 501 or 505).
    pub status: u16,
    /// A short reason for a person, without a trailing newline.
    pub reason: &'static str,
}

impl HttpError {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

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

/// The header fields Parlor uses, taken out of a request head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Host`
    pub host: Option<String>,
    /// `Content-Type`
    pub content_type: Option<String>,
    /// `Accept` (several fields joined with `, `)
    pub accept: Option<String>,
    /// `Origin`
    pub origin: Option<String>,
    /// `Last-Event-ID`
    pub last_event_id: Option<String>,
    /// `Expect: 100-continue` was present.
    pub expect_continue: bool,
}

/// One complete request: head and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent (origin form, e.g. `/subscribe?room=a`).
    pub target: String,
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
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.find('?').map(|i| &self.target[i + 1..])
    }
}

/// What the reader has for its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadEvent {
    /// The head asked for `Expect: 100-continue` and its body has not all arrived: send the
    /// interim `100 Continue` now. Yielded at most once per request, before its `Request`.
    Continue,
    /// A complete request.
    Request(Request),
}

/// How a request body is framed, and how far it has been read.
#[derive(Debug)]
enum Body {
    Length(usize),
    Chunked(Chunk),
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer fields; the number counts trailer bytes so far.
    Trailer(usize),
}

#[derive(Debug)]
enum State {
    /// Looking for the end of a head; `searched` bytes (from the read position) hold none, and
    /// the request line ends at `line_end` once its newline has been seen.
    Head {
        searched: usize,
        line_end: Option<usize>,
    },
    /// The head is parsed; reading its body.
    Body {
        request: Box<Request>,
        framing: Body,
        continue_sent: bool,
    },
    /// An error was returned; nothing more is read.
    Failed,
}

/// Largest empty buffer kept between two requests of a connection.
const KEEP_BUFFER_BYTES: usize = 4096;
/// Longest chunk-size line (size, extensions, CRLF) the reader accepts.
const MAX_CHUNK_LINE: usize = 1024;
/// How far past the URI limit the request line may go (method, spaces, version).
const REQUEST_LINE_SLACK: usize = 64;

/// The incremental reader of one connection's requests. See the [module docs](self).
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
    buf: Vec<u8>,
    /// Read position in `buf`: bytes before it are consumed.
    pos: usize,
    state: State,
}

impl RequestReader {
    /// A reader with these limits.
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            limits,
            buf: Vec::new(),
            pos: 0,
            state: State::Head {
                searched: 0,
                line_end: None,
            },
        }
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed) || data.is_empty() {
            return;
        }
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Frees the buffer if nothing is in it: a connection about to wait (a held poll, an idle
    /// keep-alive) then costs no buffer memory.
    pub fn release(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Bytes received but not yet consumed by a returned request.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether a request has begun (some of its bytes arrived) and is not complete yet.
    pub fn in_request(&self) -> bool {
        match self.state {
            State::Head { .. } => self.buffered() > 0,
            State::Body { .. } => true,
            State::Failed => false,
        }
    }

    /// Whether the reader returned an error and stopped.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// The next event, or `None` when more bytes are needed (or the reader failed).
    pub fn next_event(&mut self) -> Option<Result<ReadEvent, HttpError>> {
        let result = self.step();
        match &result {
            Some(Err(_)) => {
                self.state = State::Failed;
                self.buf = Vec::new();
                self.pos = 0;
            }
            Some(Ok(ReadEvent::Request(_))) if self.pos == self.buf.len() => {
                // Nothing of the next request is here: keep the (small) buffer for the next
                // request on this connection; `release` gives it back when the connection
                // settles into a long wait.
                self.buf.clear();
                self.pos = 0;
                if self.buf.capacity() > KEEP_BUFFER_BYTES {
                    self.buf = Vec::new();
                }
            }
            _ => {}
        }
        result
    }

    fn step(&mut self) -> Option<Result<ReadEvent, HttpError>> {
        match self.state {
            State::Failed => None,
            State::Head { .. } => match self.read_head()? {
                Err(e) => Some(Err(e)),
                Ok(()) => self.read_body(),
            },
            State::Body { .. } => self.read_body(),
        }
    }

    /// Finds and parses a head. `None`: more bytes needed. `Ok`: the state is now `Body`.
    fn read_head(&mut self) -> Option<Result<(), HttpError>> {
        let State::Head { searched, line_end } = &mut self.state else {
            return None;
        };
        if *searched == 0 {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\r' | b'\n') {
                self.pos += 1;
            }
        }
        let data = &self.buf[self.pos..];
        let found = find_head_end(data, searched, line_end);
        // Which cap is passed must not depend on how the bytes arrived. Byte by byte, the request
        // line passes its cap at byte `max_line + 1` and the head its cap at byte `max_head + 1`:
        // when both are passed, the one passed first is reported, and a request line over its
        // cap is refused even when the whole head arrived at once.
        let line_len = line_end.unwrap_or(data.len());
        let max_line = self.limits.max_uri + REQUEST_LINE_SLACK;
        let line_over = line_len > max_line;
        let head_over = found.unwrap_or(data.len()) > self.limits.max_head;
        if line_over && (!head_over || max_line <= self.limits.max_head) {
            return Some(Err(HttpError::new(414, "request target too long")));
        }
        if head_over {
            return Some(Err(HttpError::new(431, "request head too large")));
        }
        let end = found?;
        match parse_head(&data[..end], &self.limits) {
            Err(e) => Some(Err(e)),
            Ok((request, framing)) => {
                self.pos += end;
                self.state = State::Body {
                    request: Box::new(request),
                    framing,
                    continue_sent: false,
                };
                Some(Ok(()))
            }
        }
    }

    /// Reads as much body as has arrived. `None`: more bytes needed.
    fn read_body(&mut self) -> Option<Result<ReadEvent, HttpError>> {
        let State::Body {
            request,
            framing,
            continue_sent,
        } = &mut self.state
        else {
            return None;
        };
        let done = match framing {
            Body::Length(n) => {
                let n = *n;
                if self.buf.len() - self.pos >= n {
                    request.body = self.buf[self.pos..self.pos + n].to_vec();
                    self.pos += n;
                    true
                } else {
                    false
                }
            }
            Body::Chunked(chunk) => {
                match read_chunks(
                    &self.buf,
                    &mut self.pos,
                    chunk,
                    &mut request.body,
                    &self.limits,
                ) {
                    Err(e) => return Some(Err(e)),
                    Ok(done) => done,
                }
            }
        };
        if done {
            let State::Body { request, .. } = std::mem::replace(
                &mut self.state,
                State::Head {
                    searched: 0,
                    line_end: None,
                },
            ) else {
                unreachable!("state was checked above")
            };
            return Some(Ok(ReadEvent::Request(*request)));
        }
        if request.headers.expect_continue && !*continue_sent {
            *continue_sent = true;
            return Some(Ok(ReadEvent::Continue));
        }
        None
    }
}

/// Where the head in `data` ends (just past its empty line), continuing the search from
/// `*searched` and recording how far it got, and where the first line ends.
fn find_head_end(data: &[u8], searched: &mut usize, line_end: &mut Option<usize>) -> Option<usize> {
    // A terminator may straddle the old end: step back over the longest partial one.
    let mut from = searched.saturating_sub(3);
    while let Some(i) = memchr::memchr(b'\n', &data[from..]) {
        let nl = from + i;
        line_end.get_or_insert(nl);
        match data.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') => match data.get(nl + 2) {
                Some(b'\n') => return Some(nl + 3),
                Some(_) => {}
                None => break,
            },
            Some(_) => {}
            None => break,
        }
        from = nl + 1;
    }
    *searched = data.len();
    None
}

fn parse_head(head: &[u8], limits: &Limits) -> Result<(Request, Body), HttpError> {
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
    if !(target.starts_with('/') || asterisk) {
        return Err(HttpError::new(400, "request target must be a path"));
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };

    let mut headers = Headers::default();
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut hosts = 0usize;
    for h in parsed.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(|&b| b == b',') {
                let n = parse_content_length(trim(part))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(HttpError::new(400, "conflicting Content-Length"));
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                if chunked {
                    // Anything after `chunked` (even another `chunked`) breaks the framing.
                    return Err(HttpError::new(
                        400,
                        "chunked must be the last transfer coding",
                    ));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(HttpError::new(501, "transfer coding not implemented"));
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            headers.host = Some(text(value)?);
        } else if name.eq_ignore_ascii_case("content-type") {
            headers.content_type = Some(text(value)?);
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
        } else if name.eq_ignore_ascii_case("expect") {
            if trim(value).eq_ignore_ascii_case(b"100-continue") {
                headers.expect_continue = version == Version::Http11;
            } else {
                return Err(HttpError::new(417, "unsupported expectation"));
            }
        }
    }
    if version == Version::Http11 && hosts != 1 {
        return Err(HttpError::new(400, "exactly one Host header is required"));
    }
    if transfer_encoding && !chunked {
        return Err(HttpError::new(
            400,
            "chunked must be the last transfer coding",
        ));
    }
    if transfer_encoding && content_length.is_some() {
        return Err(HttpError::new(
            400,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if transfer_encoding && version == Version::Http10 {
        return Err(HttpError::new(
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let framing = if chunked {
        Body::Chunked(Chunk::Size)
    } else {
        let n = content_length.unwrap_or(0);
        if n > limits.max_body as u64 {
            return Err(HttpError::new(413, "request body too large"));
        }
        Body::Length(n as usize)
    };
    if matches!(framing, Body::Length(0)) {
        headers.expect_continue = false;
    }
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    let request = Request {
        method: Method::parse(method),
        target: target.to_owned(),
        version,
        headers,
        keep_alive,
        body: Vec::new(),
    };
    Ok((request, framing))
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    const INVALID: HttpError = HttpError::new(400, "invalid Content-Length");
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(INVALID);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
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
    std::str::from_utf8(v)
        .map(str::to_owned)
        .map_err(|_| HttpError::new(400, "header value is not valid UTF-8"))
}

/// Decodes chunked body bytes from `buf[*pos..]` into `body`. `Ok(true)`: the body (with its
/// trailers) is complete. `Ok(false)`: more bytes are needed.
fn read_chunks(
    buf: &[u8],
    pos: &mut usize,
    chunk: &mut Chunk,
    body: &mut Vec<u8>,
    limits: &Limits,
) -> Result<bool, HttpError> {
    loop {
        let data = &buf[*pos..];
        match *chunk {
            Chunk::Size => {
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    if data.len() > MAX_CHUNK_LINE {
                        return Err(HttpError::new(400, "chunk size line too long"));
                    }
                    return Ok(false);
                };
                if nl > MAX_CHUNK_LINE {
                    return Err(HttpError::new(400, "chunk size line too long"));
                }
                let size = parse_chunk_size(&data[..nl], limits.max_body)?;
                if body.len() + size > limits.max_body {
                    return Err(HttpError::new(413, "request body too large"));
                }
                *pos += nl + 1;
                *chunk = if size == 0 {
                    Chunk::Trailer(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if data.is_empty() {
                    return Ok(false);
                }
                let n = left.min(data.len());
                body.extend_from_slice(&data[..n]);
                *pos += n;
                *chunk = if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                };
            }
            Chunk::DataEnd => match data {
                [b'\r', b'\n', ..] => {
                    *pos += 2;
                    *chunk = Chunk::Size;
                }
                [b'\n', ..] => {
                    *pos += 1;
                    *chunk = Chunk::Size;
                }
                [] | [b'\r'] => return Ok(false),
                _ => return Err(HttpError::new(400, "chunk data not followed by CRLF")),
            },
            Chunk::Trailer(seen) => {
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    if seen + data.len() > limits.max_head {
                        return Err(HttpError::new(431, "trailer section too large"));
                    }
                    return Ok(false);
                };
                if seen + nl > limits.max_head {
                    return Err(HttpError::new(431, "trailer section too large"));
                }
                let line = &data[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                *pos += nl + 1;
                if line.is_empty() {
                    return Ok(true);
                }
                if !line.contains(&b':') {
                    return Err(HttpError::new(400, "malformed trailer field"));
                }
                *chunk = Chunk::Trailer(seen + nl + 1);
            }
        }
    }
}

/// Parses a chunk-size line (without its `\n`): hex digits, then optional whitespace and
/// `;`-extensions, which are ignored.
fn parse_chunk_size(line: &[u8], max: usize) -> Result<usize, HttpError> {
    const INVALID: HttpError = HttpError::new(400, "invalid chunk size");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(INVALID);
    }
    let rest = trim(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(INVALID);
    }
    let mut size: usize = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as usize;
        size = match size.checked_mul(16).and_then(|s| s.checked_add(v)) {
            Some(s) if s <= max => s,
            _ => return Err(HttpError::new(413, "request body too large")),
        };
    }
    Ok(size)
}
