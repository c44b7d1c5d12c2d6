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
//!
//! Every answer is checked for its framing; on a connection that got only whole template
//! requests (op 2), each answer is also checked against its request, in order: its status for
//! the configuration, the request's flags and whether shutdown began, and the headers that go
//! with it (cursor, reset signal, CORS, `Allow`, `Connection: close`, no body for `HEAD`).
//! [`expect`] holds what each template must get. Raw bytes (op 1), or a template cut short by a
//! read pause, leave the connection to the framing checks only.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use parlor_core::{Config, ConnId, Error, Limits, Output, Server};

/// How many request templates [`request`] has.
const TEMPLATES: u8 = 15;
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
    /// The template requests sent whole and not yet answered, oldest first.
    sent: VecDeque<Sent>,
    /// Raw bytes (op 1) or part of a template went out: answers no longer match templates.
    unchecked: bool,
    /// The request at the front of `sent` got its `100 Continue`.
    continued: bool,
    /// An answer was sent (the only answer without a request is the refusal at accept).
    answered: bool,
}

/// A template request sent whole on a connection, and what its answer depends on.
#[derive(Clone, Debug)]
struct Sent {
    /// The template's number (`template % TEMPLATES`).
    template: u8,
    /// The request's flags byte (see [`request`]).
    flags: u8,
    /// The newest cursor seen when the request was made (`since=` of flags 6 and 7, the
    /// `Last-Event-ID` of template 3).
    cursor: Option<String>,
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
    /// `handle_shutdown` was called: any request may be answered `503`.
    shutdown: bool,
    /// The small configuration (`config_for` with the low bit set).
    small: bool,
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
            shutdown: false,
            small: false,
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
                            let answer = check_response(&data);
                            m.stream = answer.stream;
                            let at = Context {
                                small: self.small,
                                shutdown: self.shutdown,
                                epoch: self.server.epoch(),
                            };
                            if let Err(e) = check_answer(m, &answer, &at) {
                                panic!("{conn:?}: {e}: {:?}", String::from_utf8_lossy(&data));
                            }
                            match answer.stream {
                                Some(_) => answer.events_cursor,
                                None => answer.header("parlor-cursor").map(str::to_owned),
                            }
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

    /// Bytes arriving on `id`, unless it is paused (an adapter does not read then). Returns
    /// how many of the pieces went in.
    fn data(&mut self, id: ConnId, pieces: &[&[u8]]) -> usize {
        for (i, piece) in pieces.iter().enumerate() {
            if self.open[&id].paused {
                return i;
            }
            assert_eq!(self.server.handle_data(id, piece, self.now), Ok(()));
            self.drain();
        }
        pieces.len()
    }

    /// Sends a template request on `id` in `pieces`, expecting its answer unless the
    /// connection is paused before the first piece (nothing was sent) or after it (the rest
    /// was not: the connection's answers no longer match its requests).
    fn send_template(&mut self, id: ConnId, sent: Sent, pieces: &[&[u8]]) {
        let m = self.open.get_mut(&id).expect("picked");
        if m.paused {
            return;
        }
        m.sent.push_back(sent);
        let went = self.data(id, pieces);
        if pieces[went..].iter().any(|p| !p.is_empty()) {
            if let Some(m) = self.open.get_mut(&id) {
                m.unchecked = true;
            }
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
        self.shutdown = true;
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

/// One response as the harness parsed it.
struct Answer<'a> {
    status: u16,
    headers: Vec<(String, String)>,
    /// What followed the head (empty in an answer to `HEAD`).
    body: &'a [u8],
    /// `Content-Length`, if sent.
    length: Option<usize>,
    /// It opens an event stream: `Some(chunked)`.
    stream: Option<bool>,
    /// The last event `id` in the stream's first bytes, if it opens one.
    events_cursor: Option<String>,
}

impl Answer<'_> {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that `data` is one well-framed response (or the head of one, answering `HEAD`), and
/// returns it parsed.
fn check_response(data: &[u8]) -> Answer<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(data) else {
        panic!("not a response: {:?}", String::from_utf8_lossy(data));
    };
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value).expect("a header value that is not UTF-8");
            (h.name.to_owned(), value.to_owned())
        })
        .collect();
    let answer = Answer {
        status,
        body: &data[head_len..],
        length: None,
        headers,
        stream: None,
        events_cursor: None,
    };
    let length = answer
        .header("content-length")
        .map(|v| v.parse::<usize>().expect("Content-Length"));
    if answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        assert_eq!(status, 200);
        assert_eq!(length, None, "Content-Length on an event stream");
        let chunked = answer.header("transfer-encoding") == Some("chunked");
        let events_cursor = check_events(&data[head_len..], chunked);
        return Answer {
            stream: Some(chunked),
            events_cursor,
            ..answer
        };
    }
    let rest = answer.body.len();
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
    Answer { length, ..answer }
}

/// What every template's expectation may depend on besides the request.
struct Context<'a> {
    /// The small configuration (`config_for(1)`): tiny caps, two rooms, a rate limit, one
    /// allow-listed origin.
    small: bool,
    /// Shutdown has begun: every request may be answered `503`.
    shutdown: bool,
    /// The server's epoch tag.
    epoch: &'a str,
}

/// Checks one answer on connection `m` against the request it answers, the oldest template
/// request not yet answered (unless the connection is unchecked: then only the framing counts).
fn check_answer(m: &mut Model, answer: &Answer<'_>, at: &Context<'_>) -> Result<(), String> {
    let first = !m.answered;
    m.answered = true;
    if m.unchecked {
        return Ok(());
    }
    if answer.status == 100 {
        return match m.sent.front() {
            Some(sent) if interim_allowed(sent) && !m.continued => {
                m.continued = true;
                Ok(())
            }
            _ => Err("an unexpected 100 Continue".into()),
        };
    }
    m.continued = false;
    let Some(sent) = m.sent.pop_front() else {
        // No request: only the refusal at accept (over a cap, or shutting down).
        return match (first, answer.status) {
            (true, 503) => Ok(()),
            (_, status) => Err(format!("{status} without a request")),
        };
    };
    // Flag 0x08 adds `Connection: close` to the templates that have a `{close}`.
    if sent.flags & 0x08 != 0 && !matches!(sent.template, 3 | 7 | 10) {
        // The request asked to close: so does every answer to it.
        if answer.header("connection") != Some("close") {
            return Err(format!("template {sent:?}: no Connection: close"));
        }
    }
    expect(&sent, answer, at).map_err(|e| format!("template {sent:?}: {e}"))
}

/// Whether the request may get a `100 Continue` before its answer (it sends
/// `Expect: 100-continue`; the server sends it when the head came without all of the body).
fn interim_allowed(sent: &Sent) -> bool {
    sent.template == 7
}

/// Checks an answer against what template `sent` must get (see [`request`] for the templates).
fn expect(sent: &Sent, a: &Answer<'_>, at: &Context<'_>) -> Result<(), String> {
    let status = a.status;
    let flags = sent.flags;
    // Any request may meet a shutdown; a request naming a room may find no room left (the
    // small configuration has two, and the templates name four).
    let busy = |room: bool| at.shutdown || (room && at.small);
    let allowed = |ok: &[u16], room: bool| {
        if ok.contains(&status) || (status == 503 && busy(room)) {
            Ok(())
        } else {
            Err(format!("status {status}, expected one of {ok:?}"))
        }
    };
    if sent.template != 10 && a.length.is_some_and(|n| a.body.len() != n) {
        return Err("the body is cut short (only answers to HEAD leave it out)".into());
    }
    match sent.template {
        0..=3 => {
            let since = flags % 8;
            let cursor = sent.cursor.as_deref();
            // The cursor a 204 repeats: the one the poll resumed from (`None`: the room's
            // newest, which the harness does not track).
            let (ok, repeated): (&[u16], Option<String>) = match (sent.template, since) {
                (3, _) => (&[200, 204, 400], Some(cursor.unwrap_or("0").to_owned())),
                // Ahead of the room, unless the room came back in a new epoch (then a reset).
                (_, 4) => (&[200, 204, 400], None),
                // `since=x`: not a cursor, refused before the room is looked up.
                (_, 6 | 7) if cursor.is_none() => return allowed(&[400], false),
                // A cursor of another room may be ahead of this one.
                (_, 6 | 7) => (&[200, 204, 400], sent.cursor.clone()),
                (_, 2) => (&[200, 204], Some("0".to_owned())),
                (_, 3 | 5) => (&[200, 204], Some(format!("{}-0", at.epoch))),
                _ => (&[200, 204], None),
            };
            allowed(ok, true)?;
            // A cursor of another epoch resets: `zz-5` always; a cursor of this run when its
            // room was freed and came back in a new epoch (room churn) may; none without one.
            let reset = match a.header("parlor-reset") {
                None => false,
                Some("1") => true,
                Some(v) => return Err(format!("Parlor-Reset: {v}")),
            };
            let must = sent.template != 3 && since == 5;
            let may = must || sent.template == 3 || matches!(since, 3 | 4 | 6 | 7);
            if matches!(status, 200 | 204) && (if reset { !may } else { must }) {
                return Err(format!("reset {reset}, expected {must} (or either: {may})"));
            }
            if sent.template != 3 && since == 4 && matches!(status, 200 | 204) && !reset {
                return Err("a cursor ahead of the room, not refused nor reset".into());
            }
            let got = a.header("parlor-cursor");
            // Every cursor of this run starts with its epoch (a room's new epoch extends it).
            let of_run = |g: &str| g.starts_with(at.epoch) && g.contains('-');
            match status {
                200 if a.body.is_empty() || got.is_none() => {
                    Err("a 200 without a message or a cursor".into())
                }
                204 => match (&repeated, got) {
                    (Some(c), Some(g)) if c == g => Ok(()),
                    // After a reset the poll waits after 0 in the room's own epoch.
                    (_, Some(g)) if reset && of_run(g) && g.ends_with("-0") => Ok(()),
                    (None, Some(g)) if !reset && of_run(g) => Ok(()),
                    _ => Err(format!("a 204 with cursor {got:?}, expected {repeated:?}")),
                },
                _ => Ok(()),
            }
        }
        4..=7 => {
            let origin = (flags >> 4) % 4;
            let allow_listed = at.small && origin == 2;
            if a.header("access-control-allow-origin")
                != allow_listed.then_some("http://ok.example")
                || (allow_listed && a.header("vary") != Some("Origin"))
            {
                return Err("wrong CORS headers".into());
            }
            if origin == 3 || (origin == 2 && !at.small) {
                // Refused before the room is looked up.
                return allowed(&[403], false);
            }
            let long_text = sent.template != 7 && usize::from(flags >> 6) % 3 == 2;
            if at.small && long_text {
                return allowed(&[413], true);
            }
            if at.small {
                allowed(&[200, 429], true)?;
            } else {
                allowed(&[200], true)?;
            }
            if status == 200 && (a.body.is_empty() || a.header("parlor-cursor").is_none()) {
                return Err("a published message's answer without its cursor".into());
            }
            Ok(())
        }
        8 | 9 | 12 => allowed(&[200], false),
        10 => {
            allowed(&[200], false)?;
            if !a.body.is_empty() || a.length.is_none() {
                return Err("an answer to HEAD with a body or without Content-Length".into());
            }
            if a.header("connection") != Some("close") {
                return Err("an HTTP/1.0 request without keep-alive, not closed".into());
            }
            Ok(())
        }
        11 => {
            allowed(&[405], false)?;
            if status == 405 && a.header("allow") != Some("POST") {
                return Err(format!("Allow: {:?}", a.header("allow")));
            }
            Ok(())
        }
        // An event stream opens (`200`, its events then checked for framing only) or is refused:
        // a bad or stale cursor, a refused origin (13 sends one).
        13 | 14 => allowed(&[200, 400, 403], true),
        t => Err(format!(
            "template {t} has no expectation: add its arm to `expect`"
        )),
    }
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
    let r = match template % TEMPLATES {
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
    let selector = input.byte();
    let config = config_for(selector);
    let mut h = Harness::new(config, origin);
    h.small = selector & 1 == 1;
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
                    if !h.open[&id].paused {
                        h.open.get_mut(&id).expect("picked").unchecked = true;
                    }
                    h.data(id, &[bytes]);
                }
            }
            2 => {
                let (conn, template, room, flags) =
                    (input.byte(), input.byte(), input.byte(), input.byte());
                if let Some(id) = h.pick(conn) {
                    let r = request(template, room, flags, &h.cursors, h.server.epoch());
                    let sent = Sent {
                        template: template % TEMPLATES,
                        flags,
                        cursor: h.cursors.last().cloned(),
                    };
                    if template & 0x80 != 0 {
                        // In two reads, cut inside the head or the body.
                        let cut = usize::from(room) % (r.len() + 1);
                        h.send_template(id, sent, &[&r[..cut], &r[cut..]]);
                    } else {
                        h.send_template(id, sent, &[&r]);
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
                h.shutdown = true;
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
