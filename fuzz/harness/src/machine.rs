//! The `machine` target: a decoded sequence of operations against a [`Server`], driven the way
//! an adapter drives it, with the invariants checked after every step.
//!
//! Input: `[config, op, args..., op, args..., ...]`. The first byte picks a [`Config`]
//! ([`config_for`]); then each operation is one byte (its value modulo the number of
//! operations) followed by its arguments, read as needed (missing bytes read as zero):
//!
//! | op | arguments | what |
//! |----|-----------|------|
//! | 0 | peer | accept a connection (at most 8 open) |
//! | 1 | conn, len, bytes | raw bytes on a connection |
//! | 2 | conn, template, room, flags | one well-formed request ([`request`]), maybe in two reads |
//! | 3 | conn | end of file |
//! | 4 | conn, amount | some of what was sent reached the socket |
//! | 5 | conn | the socket is gone: `handle_closed` |
//! | 6 | step | time passes: by a fixed step, or (step % 8 = 7) to the next deadline |
//! | 7 | | graceful shutdown |
//! | 8 | which, call | an input naming a closed or unknown connection |
//! | 9 | | the adapter finishes every close it was asked for |
//!
//! A connection is chosen among the open ones by index. The harness behaves like a correct
//! adapter: it reads nothing from a paused connection and reports no more flushed bytes than
//! were sent. At the end it shuts the server down and lets time run until every connection is
//! gone, which also checks that every connection has a deadline.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parlor_core::{Config, ConnId, Error, Limits, Output, Server};

/// Most connections the harness keeps open at once.
const MAX_OPEN: usize = 8;
/// Wall-clock start handed to the server (dates messages and names the epoch).
const EPOCH_MS: u64 = 1_700_000_000_000;
/// Fixed time steps for op 6 (its eighth choice jumps to the next deadline instead).
const STEPS: [Duration; 7] = [
    Duration::from_millis(1),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(26),
    Duration::from_secs(65),
    Duration::ZERO,
];

/// The configurations the fuzzer chooses from with the low bit of `selector`: the defaults with
/// small connection caps, and tiny caps everywhere so that each is reachable in a few steps.
pub fn config_for(selector: u8) -> Config {
    let base = Config {
        max_connections: 6,
        max_connections_per_ip: 4,
        ..Config::default()
    };
    let config = match selector & 1 {
        0 => base,
        _ => Config {
            max_connections: 4,
            max_connections_per_ip: 3,
            limits: Limits {
                max_head: 256,
                max_headers: 8,
                max_uri: 64,
                max_body: 96,
            },
            max_pipeline_bytes: 128,
            max_unsent_bytes: 2048,
            poll_timeout: Duration::from_secs(2),
            head_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            max_rooms: 2,
            room_idle: Duration::from_secs(30),
            history_messages: 3,
            history_bytes: 24,
            batch_messages: 2,
            max_message_bytes: 12,
            publish_rate: 1,
            publish_burst: 2,
            allow_origins: vec!["http://ok.example".into()],
            sse_retry: Duration::from_millis(500),
            sse_heartbeat: Duration::from_secs(1),
            sse_max_age: Duration::from_secs(2),
            // One of the fuzzer's peers (127.0.0.3) is a trusted proxy, so forwarding headers
            // in the fuzzed requests are parsed and believed.
            trusted_proxies: vec!["127.0.0.3".parse().expect("an address")],
            allow_hosts: vec!["h".into()],
            listen_loopback: true,
            ..Config::default()
        },
    };
    assert_eq!(config.validate(), Ok(()), "the harness's config is invalid");
    config
}

/// Reads the fuzzer's bytes; past the end every byte is zero.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// What the harness knows of one open connection, from the outputs it drained.
#[derive(Debug, Default)]
struct Model {
    /// `Close` was emitted.
    closing: bool,
    /// `Abort` was emitted.
    aborted: bool,
    /// Bytes sent and not yet reported flushed.
    unsent: usize,
    /// Reading is paused.
    paused: bool,
    /// The connection carries an event stream: `Some(chunked)`. Every later send is events.
    stream: Option<bool>,
}

struct Harness {
    server: Server,
    config: Config,
    now: Instant,
    open: BTreeMap<ConnId, Model>,
    accepted: usize,
    closed: usize,
    /// Ids reported closed and not handed out again since.
    gone: Vec<ConnId>,
    /// The last cursors seen in `Parlor-Cursor` headers.
    cursors: Vec<String>,
}

impl Harness {
    fn new(config: Config, now: Instant) -> Self {
        Harness {
            server: Server::new(config.clone(), EPOCH_MS, now),
            config,
            now,
            open: BTreeMap::new(),
            accepted: 0,
            closed: 0,
            gone: Vec::new(),
            cursors: Vec::new(),
        }
    }

    /// The open connection chosen by `index`, if any is open.
    fn pick(&self, index: u8) -> Option<ConnId> {
        if self.open.is_empty() {
            return None;
        }
        self.open
            .keys()
            .nth(usize::from(index) % self.open.len())
            .copied()
    }

    /// Drains every output, checking each against what came before, then checks the whole.
    fn drain(&mut self) {
        let mut budget = 10_000usize;
        while let Some(output) = self.server.poll_output() {
            budget = budget.checked_sub(1).expect("the server outputs forever");
            let conn = match &output {
                Output::Send { conn, .. }
                | Output::Close { conn }
                | Output::Abort { conn }
                | Output::PauseRead { conn }
                | Output::ResumeRead { conn } => *conn,
            };
            let Some(m) = self.open.get_mut(&conn) else {
                panic!("{output:?} names a connection that is not open");
            };
            match output {
                Output::Send { data, .. } => {
                    assert!(!m.closing && !m.aborted, "Send after Close or Abort");
                    m.unsent += data.len();
                    let cursor = match m.stream {
                        Some(chunked) => check_events(&data, chunked),
                        None => {
                            let (cursor, stream) = check_response(&data);
                            m.stream = stream;
                            cursor
                        }
                    };
                    if let Some(cursor) = cursor {
                        if self.cursors.len() == 4 {
                            self.cursors.remove(0);
                        }
                        self.cursors.push(cursor);
                    }
                }
                Output::Close { .. } => {
                    assert!(!m.closing && !m.aborted, "Close twice, or after Abort");
                    m.closing = true;
                }
                Output::Abort { .. } => {
                    assert!(!m.aborted, "Abort twice");
                    // Abort ends a Close that did not finish in time, or cuts off a client
                    // whose unsent bytes passed the cap: nothing else.
                    assert!(
                        m.closing || m.unsent > self.config.max_unsent_bytes,
                        "Abort without Close, with {} bytes unsent",
                        m.unsent
                    );
                    m.aborted = true;
                }
                Output::PauseRead { .. } => {
                    assert!(!m.paused, "PauseRead while paused");
                    m.paused = true;
                }
                Output::ResumeRead { .. } => {
                    assert!(m.paused, "ResumeRead while reading");
                    m.paused = false;
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        assert_eq!(self.open.len(), self.accepted - self.closed);
        assert_eq!(
            self.server.connection_count(),
            self.open.len(),
            "open connections: server and harness disagree"
        );
        if let Err(e) = self.server.check_invariants() {
            panic!("server invariant: {e}");
        }
        // Every connection not cut off waits on a deadline (head, idle, poll or closing), so
        // with any such connection open there is a next deadline.
        if self.open.values().any(|m| !m.aborted) {
            assert!(
                self.server.poll_timeout().is_some(),
                "open connections and no deadline"
            );
        }
        for (id, m) in &self.open {
            if !m.aborted {
                assert!(
                    m.unsent <= self.config.max_unsent_bytes,
                    "{id:?}: {} bytes unsent and not cut off",
                    m.unsent
                );
            }
        }
    }

    fn accept(&mut self, peer: u8) {
        if self.open.len() >= MAX_OPEN {
            return;
        }
        let peer = match peer % 4 {
            3 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            n => IpAddr::V4(Ipv4Addr::new(127, 0, 0, n + 1)),
        };
        let id = self.server.handle_accept(peer, self.now);
        assert!(
            self.open.insert(id, Model::default()).is_none(),
            "{id:?} handed out while open"
        );
        self.accepted += 1;
        self.gone.retain(|&g| g != id);
        self.drain();
    }

    /// Bytes arriving on `id`, unless it is paused (an adapter does not read then).
    fn data(&mut self, id: ConnId, pieces: &[&[u8]]) {
        for piece in pieces {
            if self.open[&id].paused {
                return;
            }
            assert_eq!(self.server.handle_data(id, piece, self.now), Ok(()));
            self.drain();
        }
    }

    fn closed(&mut self, id: ConnId) {
        assert_eq!(self.server.handle_closed(id, self.now), Ok(()));
        self.open.remove(&id);
        self.closed += 1;
        self.gone.push(id);
        self.drain();
        // The id is gone now: every input naming it is an adapter bug, answered with an error.
        self.stale(id, 0);
        self.stale(id, 1);
    }

    /// An input naming `id`, which is not open: an `Err`, no output, no change.
    fn stale(&mut self, id: ConnId, call: u8) {
        assert!(!self.open.contains_key(&id));
        let unknown = Err(Error::UnknownConnection(id));
        let result = match call % 4 {
            0 => self
                .server
                .handle_data(id, b"GET / HTTP/1.1\r\n\r\n", self.now),
            1 => self.server.handle_eof(id, self.now),
            2 => self.server.handle_flushed(id, 1, self.now),
            _ => self.server.handle_closed(id, self.now),
        };
        assert_eq!(result, unknown);
        assert_eq!(self.server.poll_output(), None, "output for a stale id");
        self.check();
    }

    fn advance(&mut self, step: u8) {
        let next = self.server.poll_timeout();
        match (step % 8, next) {
            (7, Some(t)) => self.now = self.now.max(t),
            (7, None) => {}
            (i, _) => self.now += STEPS[usize::from(i)],
        }
        self.timeout();
    }

    fn timeout(&mut self) {
        self.server.handle_timeout(self.now);
        self.drain();
        if let Some(t) = self.server.poll_timeout() {
            assert!(
                t > self.now,
                "a deadline at or before now survived handle_timeout"
            );
        }
        // Calling it again is harmless: nothing more happens.
        self.server.handle_timeout(self.now);
        assert_eq!(
            self.server.poll_output(),
            None,
            "a second handle_timeout did something"
        );
    }

    /// Closes every connection the server asked to close or abort, as an adapter would.
    fn finish_closes(&mut self) {
        let ending: Vec<ConnId> = self
            .open
            .iter()
            .filter(|(_, m)| m.closing || m.aborted)
            .map(|(&id, _)| id)
            .collect();
        for id in ending {
            self.closed(id);
        }
    }

    /// Shuts down and lets time run: every connection must be gone after a bounded number of
    /// deadlines, so none can be left without one.
    fn wind_down(&mut self) {
        self.server.handle_shutdown(self.now);
        self.drain();
        for _ in 0..4 * MAX_OPEN + 8 {
            self.finish_closes();
            if self.open.is_empty() {
                break;
            }
            let Some(t) = self.server.poll_timeout() else {
                panic!("open connections {:?} and no deadline", self.open);
            };
            self.now = self.now.max(t);
            self.timeout();
        }
        assert!(
            self.open.is_empty(),
            "connections outlive shutdown: {:?}",
            self.open
        );
        assert_eq!(self.server.connection_count(), 0);
    }
}

/// Checks that `data` is whole events of a stream: whole chunks of whole events when
/// `chunked` (the terminating chunk ends it), else whole events. Returns the last `id`, if any.
fn check_events(data: &[u8], chunked: bool) -> Option<String> {
    let mut body = Vec::new();
    if chunked {
        let mut rest = data;
        while !rest.is_empty() {
            let line = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk size line");
            let size = std::str::from_utf8(&rest[..line])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
                .expect("a hex chunk size");
            rest = &rest[line + 2..];
            if size == 0 {
                assert_eq!(rest, b"\r\n", "bytes after the last chunk");
                break;
            }
            assert!(rest.len() >= size + 2, "a chunk cut short");
            assert!(
                rest[..size].ends_with(b"\n\n"),
                "a chunk that is not whole events"
            );
            body.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
    } else {
        assert!(data.ends_with(b"\n\n"), "a send that is not whole events");
        body.extend_from_slice(data);
    }
    let text = std::str::from_utf8(&body).expect("events are UTF-8");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
}

/// Checks that `data` is one well-framed response (or the head of one, answering `HEAD`), and
/// returns its `Parlor-Cursor`, if any, and whether it opens an event stream (`Some(chunked)`).
fn check_response(data: &[u8]) -> (Option<String>, Option<bool>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(data) else {
        panic!("not a response: {:?}", String::from_utf8_lossy(data));
    };
    let status = parsed.code.unwrap_or(0);
    let rest = data.len() - head_len;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let length = header("content-length").map(|v| v.parse::<usize>().expect("Content-Length"));
    if header("content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
        assert_eq!(status, 200);
        assert_eq!(length, None, "Content-Length on an event stream");
        let chunked = header("transfer-encoding").as_deref() == Some("chunked");
        let cursor = check_events(&data[head_len..], chunked);
        return (cursor, Some(chunked));
    }
    match status {
        100 | 204 => {
            assert_eq!(rest, 0, "a body on a {status}");
            assert_eq!(length, None, "Content-Length on a {status}");
        }
        200..=599 => {
            let length = length.expect("a response without Content-Length");
            assert!(
                rest == length || rest == 0,
                "{rest} body bytes, {length} declared"
            );
        }
        _ => panic!("status {status}"),
    }
    (header("parlor-cursor"), None)
}

/// The well-formed request `template` for `room`, with a cursor from those seen.
fn request(template: u8, room: u8, flags: u8, cursors: &[String], epoch: &str) -> Vec<u8> {
    // More names than the tiny config's two rooms: rooms are created, evicted and recreated.
    let room = match room % 8 {
        0 => "room=a&",
        1 => "room=b&",
        2 => "",
        3 => "room=c&",
        4 => "room=d&",
        5 => "room=e&",
        6 => "room=f&",
        _ => "room=g&",
    };
    let since = match flags % 8 {
        0 | 1 => String::new(),
        2 => "since=0&".into(),
        3 => format!("since={epoch}-0&"),
        4 => format!("since={epoch}-99999&"),
        5 => "since=zz-5&".into(),
        _ => match cursors.last() {
            Some(c) => format!("since={c}&"),
            None => "since=x&".into(),
        },
    };
    let close = if flags & 0x08 != 0 {
        "Connection: close\r\n"
    } else {
        ""
    };
    let origin = match (flags >> 4) % 4 {
        1 => "Origin: http://h\r\n",
        2 => "Origin: http://ok.example\r\n",
        3 => "Origin: http://evil.example\r\n",
        _ => "",
    };
    let post = |content_type: &str, body: &str| {
        format!(
            "POST /publish?{room} HTTP/1.1\r\nHost: h\r\n{origin}{close}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let text = [
        "hi",
        "hello there",
        "a much longer message, over the tiny cap",
    ][usize::from(flags >> 6) % 3];
    let id = flags >> 6;
    let r = match template % 15 {
        0 => format!("GET /subscribe?{room}{since} HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        1 => format!(
            "GET /subscribe?{room}{since} HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n{close}\r\n"
        ),
        2 => format!("GET /subscribe?{room}{since}format=json HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        3 => format!(
            "GET /subscribe?{room} HTTP/1.0\r\nConnection: keep-alive\r\nLast-Event-ID: {}\r\n\r\n",
            cursors.last().map_or("0", String::as_str)
        ),
        4 => post("text/plain; charset=utf-8", text),
        5 => post("application/json", &format!("{{\"message\":\"{text}\",\"id\":\"k{id}\"}}")),
        6 => post(
            "application/x-www-form-urlencoded",
            &format!("message={}&id=f{id}", text.replace(' ', "+")),
        ),
        7 => format!(
            "POST /publish?{room} HTTP/1.1\r\nHost: h\r\n{origin}Expect: 100-continue\r\n\
             Transfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n"
        ),
        8 => format!("GET / HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        9 => format!("GET /metrics HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        10 => "HEAD /healthz HTTP/1.0\r\n\r\n".into(),
        11 => format!("DELETE /publish HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        12 => format!("GET http://h/chat.css HTTP/1.1\r\nHost: h\r\n{close}\r\n"),
        13 => format!("GET /events?{room}{since} HTTP/1.1\r\nHost: h\r\n{origin}{close}\r\n"),
        _ => format!(
            "GET /events?{room}format=json HTTP/1.0\r\nLast-Event-ID: {}\r\n\r\n",
            cursors.last().map_or("0", String::as_str)
        ),
    };
    r.into_bytes()
}

/// Runs the decoded operations (the table heading `machine.rs`), checking after every step.
/// `origin` is any instant: the run only adds fixed steps to it (the core reads no clock, so
/// the caller, a fuzz target or a test, supplies it).
pub fn machine(data: &[u8], origin: Instant) {
    let mut input = Input { data };
    let config = config_for(input.byte());
    let mut h = Harness::new(config, origin);
    h.drain();
    // Each operation reads at least its own byte: the loop ends with the input.
    while !input.data.is_empty() {
        let op = input.byte() % 10;
        match op {
            0 => h.accept(input.byte()),
            1 => {
                let (conn, len) = (input.byte(), input.byte());
                let bytes = input.take(usize::from(len % 128));
                if let Some(id) = h.pick(conn) {
                    h.data(id, &[bytes]);
                }
            }
            2 => {
                let (conn, template, room, flags) =
                    (input.byte(), input.byte(), input.byte(), input.byte());
                if let Some(id) = h.pick(conn) {
                    let r = request(template, room, flags, &h.cursors, h.server.epoch());
                    if template & 0x80 != 0 {
                        // In two reads, cut inside the head or the body.
                        let cut = usize::from(room) % (r.len() + 1);
                        h.data(id, &[&r[..cut], &r[cut..]]);
                    } else {
                        h.data(id, &[&r]);
                    }
                }
            }
            3 => {
                if let Some(id) = h.pick(input.byte()) {
                    assert_eq!(h.server.handle_eof(id, h.now), Ok(()));
                    h.drain();
                }
            }
            4 => {
                let (conn, amount) = (input.byte(), input.byte());
                if let Some(id) = h.pick(conn) {
                    let m = h.open.get_mut(&id).expect("picked");
                    let n = if amount == 255 {
                        m.unsent
                    } else {
                        m.unsent.min(usize::from(amount) * 16)
                    };
                    m.unsent -= n;
                    assert_eq!(h.server.handle_flushed(id, n, h.now), Ok(()));
                    h.drain();
                }
            }
            5 => {
                if let Some(id) = h.pick(input.byte()) {
                    h.closed(id);
                }
            }
            6 => h.advance(input.byte()),
            7 => {
                h.server.handle_shutdown(h.now);
                h.drain();
            }
            8 => {
                let (which, call) = (input.byte(), input.byte());
                let id = if h.gone.is_empty() {
                    // Never handed out: past every slot the harness can have open.
                    ConnId(1000 + usize::from(which))
                } else {
                    h.gone[usize::from(which) % h.gone.len()]
                };
                h.stale(id, call);
            }
            _ => h.finish_closes(),
        }
    }
    h.wind_down();
}
