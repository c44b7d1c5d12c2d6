//! A raw HTTP/1.1 client: writes exactly the bytes a test gives it, reads responses framed by
//! `Content-Length` (no chunked responses: Parlor never sends them), keeps any bytes past one
//! response for the next (pipelining), and reports timeouts and closes precisely.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default bound on waiting for one response.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a request: request line, `Host`, the given header fields, `Content-Length` when there is
/// a body (or when the method is POST), an empty line and the body.
pub fn request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One parsed response, with the exact bytes it was read from.
#[derive(Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD, 1xx, 204, 304).
    pub body: Vec<u8>,
    /// The response exactly as received: status line, fields, empty line, body.
    pub raw: Vec<u8>,
}

impl Response {
    /// The value of the one field named `name` (case-insensitive); panics if it appears twice.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.headers_named(name);
        assert!(
            all.len() <= 1,
            "header {name} appears {} times in\n{self}",
            all.len()
        );
        all.first().copied()
    }

    /// All values of the fields named `name` (case-insensitive).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The header `name`, which must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in\n{self}"))
    }

    /// The body as UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|_| panic!("body is not UTF-8 in\n{self}"))
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}) in\n{self}"))
    }

    /// The `Parlor-Cursor` header, checked for the form `<epoch>-<seq>`.
    pub fn cursor(&self) -> String {
        let c = self.must_header("Parlor-Cursor");
        crate::split_cursor(c);
        c.to_owned()
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected status {status}, got\n{self}");
        self
    }

    /// Asserts `Content-Type`.
    #[track_caller]
    pub fn assert_type(&self, content_type: &str) -> &Self {
        assert_eq!(
            self.header("Content-Type"),
            Some(content_type),
            "expected Content-Type {content_type}, got\n{self}"
        );
        self
    }

    /// Asserts the headers every dynamic response carries (DESIGN §2): `Cache-Control: no-store`
    /// and `X-Content-Type-Options: nosniff`.
    #[track_caller]
    pub fn assert_dynamic(&self) -> &Self {
        assert_eq!(
            self.header("Cache-Control"),
            Some("no-store"),
            "expected Cache-Control: no-store in\n{self}"
        );
        assert_eq!(
            self.header("X-Content-Type-Options"),
            Some("nosniff"),
            "expected X-Content-Type-Options: nosniff in\n{self}"
        );
        self
    }

    /// Asserts an error answer (docs/HTTP.md): this status, `text/plain; charset=utf-8`, a short
    /// reason ending in a newline, and the dynamic headers.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> &Self {
        self.assert_status(status);
        self.assert_type("text/plain; charset=utf-8");
        self.assert_dynamic();
        assert!(
            self.body.len() > 1 && self.body.ends_with(b"\n"),
            "expected a short reason ending in a newline in\n{self}"
        );
        self
    }

    /// Asserts that the response says the connection closes (`Connection: close`).
    #[track_caller]
    pub fn assert_closes(&self) -> &Self {
        let c = self.header("Connection").unwrap_or("");
        assert!(
            c.eq_ignore_ascii_case("close"),
            "expected Connection: close in\n{self}"
        );
        self
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.raw[..self.raw.len().min(2048)];
        write!(f, "{}", String::from_utf8_lossy(shown))?;
        if self.raw.len() > shown.len() {
            write!(f, "... ({} bytes in all)", self.raw.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why no response could be read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing complete arrived in time; the bytes that did arrive.
    Timeout(Vec<u8>),
    /// The server closed the connection; the bytes of an incomplete response before it.
    Closed(Vec<u8>),
    /// The connection was reset (or another socket error).
    Io(io::Error, Vec<u8>),
    /// The bytes are not an HTTP/1.1 response.
    Malformed(String, Vec<u8>),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, bytes) = match self {
            ReadError::Timeout(b) => ("timed out".to_owned(), b),
            ReadError::Closed(b) => ("connection closed".to_owned(), b),
            ReadError::Io(e, b) => (format!("socket error: {e}"), b),
            ReadError::Malformed(m, b) => (format!("malformed response: {m}"), b),
        };
        write!(
            f,
            "{what}; {} bytes received: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(1024)])
        )
    }
}

/// One TCP connection to a server.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr`; `Host` is `addr` too.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        Client {
            stream,
            buf: Vec::new(),
            host: addr.to_string(),
            timeout: READ_TIMEOUT,
        }
    }

    /// The value this client sends as `Host`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// How long `read_response` waits for one response (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Writes these exact bytes.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes: {e}", bytes.len()));
    }

    /// Writes these bytes, returning the error instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes a request built by [`request`] with this client's `Host`.
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let bytes = request(method, target, &self.host, headers, body);
        self.send(&bytes);
    }

    /// Sends a request and reads its response.
    #[track_caller]
    pub fn exchange(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, target, headers, body);
        if method == "HEAD" {
            self.read_head_response()
        } else {
            self.read_response()
        }
    }

    /// `GET target` and its response.
    #[track_caller]
    pub fn get(&mut self, target: &str) -> Response {
        self.exchange("GET", target, &[], b"")
    }

    /// Reads one response (panics with what arrived if none does in time).
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("no response: {e}"))
    }

    /// Reads one response to a HEAD request (no body, whatever `Content-Length` says).
    #[track_caller]
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("no response: {e}"))
    }

    /// Reads one response; `head`: it answers a HEAD request.
    pub fn try_read_response(&mut self, head: bool) -> Result<Response, ReadError> {
        let deadline = Instant::now() + self.timeout;
        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(deadline)?;
        };
        let head_text = match std::str::from_utf8(&self.buf[..head_end - 4]) {
            Ok(t) => t.to_owned(),
            Err(_) => return Err(self.malformed("head is not UTF-8")),
        };
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let Some(rest) = status_line.strip_prefix("HTTP/1.1 ") else {
            return Err(self.malformed("status line does not start with HTTP/1.1"));
        };
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = match code.parse() {
            Ok(s) if code.len() == 3 => s,
            _ => return Err(self.malformed("bad status code")),
        };
        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(self.malformed("header line without a colon"));
            };
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(self.malformed("bad header name"));
            }
            headers.push((name.to_owned(), value.trim_matches([' ', '\t']).to_owned()));
        }
        let lengths: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str())
            .collect();
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        {
            return Err(self.malformed("Transfer-Encoding in a response (Parlor never sends it)"));
        }
        let no_body = head || status / 100 == 1 || status == 204 || status == 304;
        if (status / 100 == 1 || status == 204) && !lengths.is_empty() {
            return Err(self.malformed("Content-Length in a 1xx or 204 response"));
        }
        let body_len = if no_body {
            0
        } else {
            match lengths.as_slice() {
                [one] => match one.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => return Err(self.malformed("bad Content-Length")),
                },
                [] => return Err(self.malformed("no Content-Length")),
                _ => return Err(self.malformed("several Content-Length fields")),
            }
        };
        while self.buf.len() < head_end + body_len {
            self.fill(deadline)?;
        }
        let raw: Vec<u8> = self.buf.drain(..head_end + body_len).collect();
        Ok(Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: raw[head_end..].to_vec(),
            raw,
        })
    }

    fn malformed(&self, what: &str) -> ReadError {
        ReadError::Malformed(what.to_owned(), self.buf.clone())
    }

    /// Reads once more into the buffer, before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::Timeout(self.buf.clone()));
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("read timeout");
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadError::Closed(self.buf.clone())),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if is_timeout(&e) => Err(ReadError::Timeout(self.buf.clone())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(ReadError::Io(e, self.buf.clone())),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `quiet`.
    #[track_caller]
    pub fn expect_nothing(&mut self, quiet: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.fill(Instant::now() + quiet) {
            Err(ReadError::Timeout(_)) => {}
            Ok(()) => panic!(
                "expected nothing for {quiet:?}, got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected the connection to stay open for {quiet:?}: {e}"),
        }
    }

    /// Asserts that the server closes the connection (EOF or reset) within `within`, sending
    /// nothing more.
    #[track_caller]
    pub fn expect_closed(&mut self, within: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.fill(Instant::now() + within) {
            Err(ReadError::Closed(_)) => {}
            Err(ReadError::Io(e, _)) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(()) => panic!(
                "expected a close, got bytes {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected a close within {within:?}: {e}"),
        }
    }

    /// Reads and discards everything until the connection ends (EOF or reset) or `within` passes.
    /// Returns the number of bytes read and whether the connection ended.
    pub fn drain(&mut self, within: Duration) -> (usize, bool) {
        let mut total = self.buf.len();
        self.buf.clear();
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline) {
                Ok(()) => {
                    total += self.buf.len();
                    self.buf.clear();
                }
                Err(ReadError::Timeout(_)) => return (total, false),
                Err(_) => return (total, true),
            }
        }
    }

    /// Shuts down the sending side (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
