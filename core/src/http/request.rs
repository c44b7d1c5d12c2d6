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
//! * A complete head is parsed in `head.rs`, a chunked body decoded in `chunked.rs`; this file
//!   holds the buffer and the states between them.

use std::fmt;

use super::chunked::read_chunks;
use super::head::{parse_head, Body, Method, Request};

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

/// What the reader has for its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
// A `Request` keeps its short head values inline (`Text`): the event is larger than the unit
// `Continue`, but it is only ever moved out and consumed, and boxing it would bring back the
// allocation per request that inline values save.
#[allow(clippy::large_enum_variant)]
pub enum ReadEvent {
    /// The head asked for `Expect: 100-continue` and its body has not all arrived: send the
    /// interim `100 Continue` now. Yielded at most once per request, before its `Request`.
    Continue,
    /// A complete request.
    Request(Request),
}

#[derive(Debug)]
enum State {
    /// Looking for the end of a head; `searched` bytes (from the read position) hold none, and
    /// the request line ends at `line_end` once its newline has been seen.
    /// (`NO_LINE_END` until then). `begun`: empty lines were skipped before the request line,
    /// so a request has begun (its head deadline runs) though nothing of it is buffered.
    Head {
        searched: usize,
        line_end: usize,
        begun: bool,
    },
    /// The head is parsed; reading its body (boxed: most requests arrive whole and never get
    /// here, and every connection's reader is as large as its largest state).
    Body(Box<Reading>),
    /// An error was returned; nothing more is read. `head`: the refused request was a `HEAD`
    /// (its answer has no body); `origin`: its `Origin`, if its head was parsed (CORS headers).
    Failed {
        head: bool,
        origin: Option<Box<str>>,
    },
}

/// A request whose body is being read.
#[derive(Debug)]
struct Reading {
    request: Request,
    framing: Body,
    continue_sent: bool,
}

/// `State::Head`'s `line_end` before the request line's newline has been seen.
const NO_LINE_END: usize = usize::MAX;

impl State {
    const FRESH_HEAD: State = State::Head {
        searched: 0,
        line_end: NO_LINE_END,
        begun: false,
    };
}

/// Largest empty buffer kept between two requests of a connection.
const KEEP_BUFFER_BYTES: usize = 4096;
/// How far past the URI limit the request line may go (method, spaces, version).
const REQUEST_LINE_SLACK: usize = 64;

/// The incremental reader of one connection's requests (its theory of operation heads
/// `http/request.rs`).
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Read position in `buf`: bytes before it are consumed.
    pos: usize,
    state: State,
}

impl Default for RequestReader {
    fn default() -> Self {
        RequestReader::new()
    }
}

impl RequestReader {
    /// A reader. The limits come with each [`next_event`](Self::next_event) call: they are
    /// the server's, and a copy per connection would cost every held poll 32 bytes.
    pub fn new() -> Self {
        RequestReader {
            buf: Vec::new(),
            pos: 0,
            state: State::FRESH_HEAD,
        }
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed { .. }) || data.is_empty() {
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

    /// Whether a request has begun (some of its bytes arrived, leading empty lines included)
    /// and is not complete yet.
    pub fn in_request(&self) -> bool {
        match self.state {
            State::Head { begun, .. } => begun || self.buffered() > 0,
            State::Body(_) => true,
            State::Failed { .. } => false,
        }
    }

    /// Whether the request being read (or the one refused, once the reader failed) is a
    /// `HEAD`, as far as its bytes tell: its answer, even an error, must have no body.
    pub fn is_head(&self) -> bool {
        match &self.state {
            State::Head { .. } => self.buf[self.pos..].starts_with(b"HEAD "),
            State::Body(reading) => reading.request.method == Method::Head,
            State::Failed { head, .. } => *head,
        }
    }

    /// The `Origin` of the request the reader refused, when its head was parsed.
    pub fn failed_origin(&self) -> Option<&str> {
        match &self.state {
            State::Failed { origin, .. } => origin.as_deref(),
            _ => None,
        }
    }

    /// Whether a request's head has been read and its body has not arrived in full.
    pub fn head_complete(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Whether the reader returned an error and stopped.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed { .. })
    }

    /// The next event, or `None` when more bytes are needed (or the reader failed).
    pub fn next_event(&mut self, limits: &Limits) -> Option<Result<ReadEvent, HttpError>> {
        let result = self.step(limits);
        match &result {
            Some(Err(_)) => {
                if !self.is_failed() {
                    let head = self.is_head();
                    let origin = match &mut self.state {
                        State::Body(reading) => reading.request.headers.origin.take(),
                        _ => None,
                    };
                    self.state = State::Failed {
                        head,
                        origin: origin.map(String::into_boxed_str),
                    };
                }
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

    fn step(&mut self, limits: &Limits) -> Option<Result<ReadEvent, HttpError>> {
        match self.state {
            State::Failed { .. } => None,
            State::Head { .. } => match self.read_head(limits)? {
                Err(e) => Some(Err(e)),
                Ok(Some(request)) => Some(Ok(ReadEvent::Request(request))),
                Ok(None) => self.read_body(limits),
            },
            State::Body(_) => self.read_body(limits),
        }
    }

    /// Finds and parses a head. `None`: more bytes needed. `Ok(Some)`: the whole request, its
    /// body of known length already buffered (the state is `Head` again: no `Body` state, no
    /// boxed request on the common path). `Ok(None)`: the state is now `Body`.
    fn read_head(&mut self, limits: &Limits) -> Option<Result<Option<Request>, HttpError>> {
        let State::Head {
            searched,
            line_end,
            begun,
        } = &mut self.state
        else {
            return None;
        };
        if *searched == 0 {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\r' | b'\n') {
                self.pos += 1;
                *begun = true;
            }
        }
        let data = &self.buf[self.pos..];
        let mut line = (*line_end != NO_LINE_END).then_some(*line_end);
        let found = find_head_end(data, searched, &mut line);
        *line_end = line.unwrap_or(NO_LINE_END);
        // Which cap is passed must not depend on how the bytes arrived. Byte by byte, the request
        // line passes its cap at byte `max_line + 1` and the head its cap at byte `max_head + 1`:
        // when both are passed, the one passed first is reported, and a request line over its
        // cap is refused even when the whole head arrived at once.
        let line_len = line.unwrap_or(data.len());
        let max_line = limits.max_uri + REQUEST_LINE_SLACK;
        let line_over = line_len > max_line;
        let head_over = found.unwrap_or(data.len()) > limits.max_head;
        if line_over && (!head_over || max_line <= limits.max_head) {
            return Some(Err(HttpError::new(414, "request target too long")));
        }
        if head_over {
            return Some(Err(HttpError::new(431, "request head too large")));
        }
        let end = found?;
        match parse_head(&data[..end], limits) {
            Err(e) => Some(Err(e)),
            Ok((request, Err(e))) => {
                self.state = State::Failed {
                    head: request.method == Method::Head,
                    origin: request.headers.origin.map(String::into_boxed_str),
                };
                Some(Err(e))
            }
            Ok((mut request, Ok(framing))) => {
                self.pos += end;
                if let Body::Length(n) = framing {
                    if self.buf.len() - self.pos >= n {
                        request.body = self.buf[self.pos..self.pos + n].to_vec();
                        self.pos += n;
                        self.state = State::FRESH_HEAD;
                        return Some(Ok(Some(request)));
                    }
                }
                self.state = State::Body(Box::new(Reading {
                    request,
                    framing,
                    continue_sent: false,
                }));
                Some(Ok(None))
            }
        }
    }

    /// Reads as much body as has arrived. `None`: more bytes needed.
    fn read_body(&mut self, limits: &Limits) -> Option<Result<ReadEvent, HttpError>> {
        let State::Body(reading) = &mut self.state else {
            return None;
        };
        let Reading {
            request,
            framing,
            continue_sent,
        } = &mut **reading;
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
                match read_chunks(&self.buf, &mut self.pos, chunk, &mut request.body, limits) {
                    Err(e) => return Some(Err(e)),
                    Ok(done) => done,
                }
            }
        };
        if done {
            let State::Body(reading) = std::mem::replace(&mut self.state, State::FRESH_HEAD) else {
                unreachable!("state was checked above")
            };
            return Some(Ok(ReadEvent::Request(reading.request)));
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

#[cfg(test)]
mod tests;
