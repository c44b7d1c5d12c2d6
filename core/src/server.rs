//! The chat state machine: connections, routing, rooms, held polls and timers.
//!
//! # Theory of operation
//!
//! Every connection is a slot in a slab, named by its [`ConnId`], in one of three states; all
//! transitions are in this file:
//!
//! ```text
//!            accept
//!              │
//!              ▼        request is a long-poll that must wait
//!   ┌───────► Open ─────────────────────────────────────────► Held
//!   │          │  ▲                                            │
//!   │          │  └──── answered: publish, poll timeout ───────┘
//!   │          │ error, Connection: close, timeout, EOF, shutdown, write cap passed
//!   │          ▼
//!   │       Closing ──── handle_closed ────► slot freed
//!   └─ (pipelined requests are read only in Open)
//! ```
//!
//! * **Open**: requests are read and answered in order. Pipelined bytes wait in the
//!   connection's [`RequestReader`].
//! * **Held**: a `GET /subscribe` is waiting in its room's slab of waiters. Bytes that arrive
//!   meanwhile are buffered, up to `max_pipeline_bytes`; past that the adapter is told to pause
//!   reading. Answering the poll returns the connection to Open and reads what was buffered.
//! * **Closing**: `Close` or `Abort` was emitted; only `handle_closed` frees the slot.
//!
//! Each connection has at most one deadline, whose kind follows its state (head read, idle
//! keep-alive, poll, closing). Deadlines live in one ordered set keyed by `(deadline, conn)`, so
//! arming, disarming and finding the next one are O(log n) and a timeout never scans. A deadline
//! that only moves later (the idle clock of a keep-alive connection after each request) keeps
//! its entry and records the new due time; when the entry fires early it re-files itself.
//!
//! A publish answers every waiter of its room. All waiters of one representation (plain or JSON,
//! times the three connection headers) get clones of one encoded `Bytes`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use core::net::IpAddr;
use slab::Slab;

use crate::config::Config;
use crate::form::{self, push_json_string};
use crate::http::{HttpError, Method, ReadEvent, Request, RequestReader};
use crate::response::{self, push_u64, Persist, Response, ResponseCache};
use crate::room::{self, Room, Since, Waiter};

/// A connection's id: its slot in the server's slab. Adapters map it to their own handles
/// (a mio `Token(id.0)`, a channel in a map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// What the adapter must do. Drain with [`Server::poll_output`] after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes on the connection, after everything queued for it before.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes (often a clone shared with many connections).
        data: Bytes,
    },
    /// Close the connection once everything queued for it is written, then call
    /// [`Server::handle_closed`]. Close gracefully: write what is queued, shut down the sending
    /// side, and read and discard until the peer closes (or the core's closing deadline turns
    /// into an `Abort`), so unread request bytes do not make the kernel reset the connection
    /// and destroy the answer in flight.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Close the connection now, dropping what is unsent (a client that stopped reading), then
    /// call [`Server::handle_closed`].
    Abort {
        /// The connection.
        conn: ConnId,
    },
    /// Stop reading from the connection until `ResumeRead`: its buffered requests reached the cap.
    PauseRead {
        /// The connection.
        conn: ConnId,
    },
    /// Read from the connection again.
    ResumeRead {
        /// The connection.
        conn: ConnId,
    },
}

impl Output {
    /// The connection this output is for.
    pub fn conn(&self) -> ConnId {
        match *self {
            Output::Send { conn, .. }
            | Output::Close { conn }
            | Output::Abort { conn }
            | Output::PauseRead { conn }
            | Output::ResumeRead { conn } => conn,
        }
    }
}

/// An adapter bug: never caused by what a peer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The id names no open connection (never accepted, or already reported closed).
    UnknownConnection(ConnId),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownConnection(id) => write!(f, "unknown connection {}", id.0),
        }
    }
}

impl std::error::Error for Error {}

/// Which deadline a connection has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// A request (head or body) is incomplete, or nothing has arrived on a new connection.
    Head,
    /// Keep-alive: waiting for the next request.
    Idle,
    /// A held poll.
    Poll,
    /// Waiting for the adapter to finish closing.
    Closing,
}

#[derive(Clone, Copy, Debug)]
struct Hold {
    room: usize,
    slot: usize,
    /// The cursor answered with on timeout: the sequence number the poll waits after, or `0`
    /// itself when the poll asked for `since=0`.
    after: u64,
    since_all: bool,
    persist: Persist,
    /// Index of the request's allow-listed cross-origin `Origin`, if any (CORS headers).
    cors: Option<u16>,
}

#[derive(Debug)]
enum State {
    Open,
    Held(Hold),
    Closing,
}

#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    reader: RequestReader,
    state: State,
    /// Bytes handed to the adapter and not yet reported flushed.
    unsent: usize,
    /// The connection's entry in the timer set, and its kind.
    timer: Option<(Instant, TimerKind)>,
    /// When the timer is really due: later than its entry when a keep-alive or head deadline
    /// was pushed back without touching the set (the entry then re-files itself when it fires).
    due: Instant,
    /// A request completed since the deadline was last set: the next one starts afresh.
    rearm: bool,
    paused: bool,
    eof: bool,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Metrics {
    accepted: u64,
    requests: u64,
    published: u64,
    delivered: u64,
    bytes_sent: u64,
    held: usize,
    /// Requests answered with an error, by status.
    rejected: HashMap<u16, u64>,
}

/// A constant response in its three connection variants, with the length of its head (for HEAD).
#[derive(Debug)]
struct Asset {
    variants: [Bytes; 3],
    head_len: [usize; 3],
}

impl Asset {
    fn new(content_type: &str, body: &[u8], csp: bool) -> Asset {
        let headers: &[(&str, &str)] = if csp {
            &[(
                "Content-Security-Policy",
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            )]
        } else {
            &[]
        };
        let build = |persist| {
            let full = Response {
                headers,
                persist,
                ..Response::new(200, Some(content_type), body)
            }
            .encode();
            let head = full.len() - body.len();
            (full, head)
        };
        let [a, b, c] = [Persist::KeepAlive, Persist::KeepAlive10, Persist::Close].map(build);
        Asset {
            variants: [a.0, b.0, c.0],
            head_len: [a.1, b.1, c.1],
        }
    }

    fn get(&self, persist: Persist, head_only: bool) -> Bytes {
        let i = persist_index(persist);
        if head_only {
            self.variants[i].slice(..self.head_len[i])
        } else {
            self.variants[i].clone()
        }
    }
}

fn persist_index(p: Persist) -> usize {
    match p {
        Persist::KeepAlive => 0,
        Persist::KeepAlive10 => 1,
        Persist::Close => 2,
    }
}

/// What tells two answers to the same poll apart: JSON or plain, the connection header, and the
/// allow-listed origin (CORS headers).
type Representation = (bool, Persist, Option<u16>);

/// The headers of a poll or publish answer: its cursor, the gap if any, and the CORS headers
/// for an allow-listed cross-origin caller.
fn poll_headers<'a>(
    cursor: &'a str,
    gap: u64,
    gap_text: &'a str,
    origin: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut headers = Vec::with_capacity(5);
    headers.push(("Parlor-Cursor", cursor));
    if gap > 0 {
        headers.push(("Parlor-Gap", gap_text));
    }
    if let Some(origin) = origin {
        headers.extend([
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", "Parlor-Cursor, Parlor-Gap"),
            ("Vary", "Origin"),
        ]);
    }
    headers
}

/// The chat page and its files, compiled in.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const CHAT_JS: &str = include_str!("../assets/chat.js");
const CHAT_CSS: &str = include_str!("../assets/chat.css");

/// How long a client told to come back (503, 429) is asked to wait, at least.
const RETRY_AFTER_SECS: &str = "2";
/// Longest client-chosen publish id.
const MAX_ID_BYTES: usize = 128;
/// Most tracked addresses for the publish rate limit before full buckets are forgotten.
const MAX_RATE_ENTRIES: usize = 65_536;

/// The Parlor server as a pure state machine: feed it inputs, drain its outputs.
///
/// # Driving it
///
/// 1. Create it with [`Server::new`] from a validated [`Config`], the wall-clock time of the
///    start (milliseconds since the Unix epoch: it dates messages and tells cursors of this run
///    from older ones) and the current `Instant`.
/// 2. Feed every event with the current time: [`handle_accept`](Self::handle_accept),
///    [`handle_data`](Self::handle_data), [`handle_eof`](Self::handle_eof),
///    [`handle_flushed`](Self::handle_flushed), [`handle_closed`](Self::handle_closed),
///    [`handle_timeout`](Self::handle_timeout), [`handle_shutdown`](Self::handle_shutdown).
/// 3. After **every** input, drain [`poll_output`](Self::poll_output) until it returns `None`,
///    carrying out each [`Output`] in order.
/// 4. Wait for I/O until [`poll_timeout`](Self::poll_timeout) at the latest, then call
///    `handle_timeout`. Calling it early or twice is harmless.
///
/// A connection's slot is freed only by `handle_closed`; after `Close` or `Abort` the adapter
/// must call it once the socket is gone. Using an id that is not open is an adapter bug and
/// returns [`Error::UnknownConnection`]. Nothing a peer sends can make the server panic.
#[derive(Debug)]
pub struct Server {
    config: Config,
    epoch_ms: u64,
    epoch: String,
    start: Instant,
    conns: Slab<Conn>,
    rooms: Vec<Room>,
    room_index: HashMap<Box<str>, usize>,
    timers: BTreeSet<(Instant, ConnId)>,
    outputs: VecDeque<Output>,
    cache: ResponseCache,
    page: Asset,
    script: Asset,
    style: Asset,
    per_ip: HashMap<IpAddr, usize>,
    rate: HashMap<IpAddr, Bucket>,
    metrics: Metrics,
    shutting_down: bool,
    /// Connections whose held poll was just answered: their buffered requests are read next.
    /// A work list rather than recursion, so a chain of pipelined publishes cannot grow the stack.
    ready: Vec<ConnId>,
}

impl Server {
    /// A server with this configuration (see [`Config::validate`]), started at wall-clock time
    /// `epoch_ms` (ms since the Unix epoch) and monotonic time `now`.
    pub fn new(config: Config, epoch_ms: u64, now: Instant) -> Server {
        debug_assert!(
            config.validate().is_ok(),
            "Server::new needs a validated Config"
        );
        Server {
            epoch: room::epoch_tag(epoch_ms),
            epoch_ms,
            start: now,
            conns: Slab::new(),
            rooms: Vec::new(),
            room_index: HashMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            cache: ResponseCache::new(),
            page: Asset::new("text/html; charset=utf-8", INDEX_HTML.as_bytes(), true),
            script: Asset::new("text/javascript; charset=utf-8", CHAT_JS.as_bytes(), true),
            style: Asset::new("text/css; charset=utf-8", CHAT_CSS.as_bytes(), true),
            per_ip: HashMap::new(),
            rate: HashMap::new(),
            metrics: Metrics::default(),
            shutting_down: false,
            ready: Vec::new(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The epoch tag that starts every cursor of this run.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Open connections (accepted and not yet reported closed).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Polls currently held.
    pub fn held_count(&self) -> usize {
        self.metrics.held
    }

    /// Whether [`handle_shutdown`](Self::handle_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The next output for the adapter, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// A connection from `peer` was accepted. Over the connection caps, or while shutting down,
    /// it gets a ready `503` and a `Close`.
    pub fn handle_accept(&mut self, peer: IpAddr, now: Instant) -> ConnId {
        self.metrics.accepted += 1;
        let id = ConnId(self.conns.insert(Conn {
            peer,
            reader: RequestReader::new(self.config.limits),
            state: State::Open,
            unsent: 0,
            timer: None,
            due: now,
            rearm: false,
            paused: false,
            eof: false,
        }));
        let count = self.per_ip.entry(peer).or_insert(0);
        *count += 1;
        let per_ip_over =
            self.config.max_connections_per_ip > 0 && *count > self.config.max_connections_per_ip;
        let refusal = if self.shutting_down {
            Some("server is shutting down")
        } else if self.conns.len() > self.config.max_connections {
            Some("too many connections")
        } else if per_ip_over {
            Some("too many connections from this address")
        } else {
            None
        };
        match refusal {
            Some(reason) => self.refuse(id, 503, reason, now),
            None => self.set_timer(id, Some((now + self.config.head_timeout, TimerKind::Head))),
        }
        id
    }

    /// Bytes arrived on `conn`.
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now: Instant) -> Result<(), Error> {
        let c = self.conn_mut(conn)?;
        if matches!(c.state, State::Closing) || c.eof {
            return Ok(());
        }
        c.reader.push(data);
        if matches!(c.state, State::Open) {
            self.advance(conn, now);
        } else {
            self.settle(conn, now);
        }
        self.run_ready(now);
        Ok(())
    }

    /// The peer closed its side (a read returned 0). Requests already complete have been
    /// answered; a held poll is dropped (its client is gone); the connection closes.
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant) -> Result<(), Error> {
        let c = self.conn_mut(conn)?;
        c.eof = true;
        if !matches!(c.state, State::Closing) {
            self.close(conn, now);
        }
        Ok(())
    }

    /// `n` bytes of what was sent on `conn` were written to its socket. It never produces
    /// outputs, so an adapter may batch these reports, as long as it makes them before its next
    /// other input for the connection.
    pub fn handle_flushed(&mut self, conn: ConnId, n: usize, _now: Instant) -> Result<(), Error> {
        let c = self.conn_mut(conn)?;
        c.unsent = c.unsent.saturating_sub(n);
        Ok(())
    }

    /// `conn` is gone: its socket is closed. Frees its slot (the id may be reused after this).
    pub fn handle_closed(&mut self, conn: ConnId, _now: Instant) -> Result<(), Error> {
        self.conn_mut(conn)?;
        self.release_hold(conn);
        self.set_timer(conn, None);
        let c = self.conns.remove(conn.0);
        if let Some(count) = self.per_ip.get_mut(&c.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&c.peer);
            }
        }
        Ok(())
    }

    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            let timer = self
                .conns
                .get(id.0)
                .and_then(|c| c.timer.map(|t| (t.1, c.due)));
            self.set_timer(id, None);
            if let Some((kind, due)) = timer {
                if due > now {
                    // Pushed back meanwhile: file the entry again at its real deadline.
                    self.set_timer(id, Some((due, kind)));
                    continue;
                }
            }
            match timer.map(|t| t.0) {
                Some(TimerKind::Poll) => self.answer_timeout(id, now),
                Some(TimerKind::Head) => {
                    if self.conns[id.0].reader.in_request() {
                        self.refuse(id, 408, "request not received in time", now);
                    } else {
                        self.close(id, now);
                    }
                }
                Some(TimerKind::Idle) => self.close(id, now),
                Some(TimerKind::Closing) => self.outputs.push_back(Output::Abort { conn: id }),
                None => {}
            }
        }
        self.run_ready(now);
    }

    /// Reads the buffered requests of connections whose poll was answered.
    fn run_ready(&mut self, now: Instant) {
        while let Some(id) = self.ready.pop() {
            self.advance(id, now);
        }
    }

    /// Begin a graceful shutdown: held polls are answered `503` with `Retry-After` and closed,
    /// idle connections close, and every new connection or request gets `503`. The adapter stops
    /// accepting and waits until [`connection_count`](Self::connection_count) is zero.
    pub fn handle_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.iter().map(|(k, _)| ConnId(k)).collect();
        for id in ids {
            let c = &self.conns[id.0];
            match c.state {
                State::Held(_) => {
                    self.release_hold(id);
                    self.refuse(id, 503, "server is shutting down", now);
                }
                State::Open if !c.reader.in_request() => self.close(id, now),
                State::Open | State::Closing => {}
            }
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Result<&mut Conn, Error> {
        self.conns.get_mut(id.0).ok_or(Error::UnknownConnection(id))
    }

    /// Reads and answers requests while the connection is Open, then settles its timer and
    /// read state.
    fn advance(&mut self, id: ConnId, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(id.0) else {
                return;
            };
            if !matches!(c.state, State::Open) {
                break;
            }
            let Some(event) = c.reader.next_event() else {
                break;
            };
            match event {
                Ok(ReadEvent::Continue) => self.send(id, Bytes::from_static(response::CONTINUE)),
                Ok(ReadEvent::Request(request)) => {
                    self.metrics.requests += 1;
                    // A new request restarts the idle (or next head) clock once answered.
                    c.rearm = true;
                    self.handle_request(id, request, now);
                }
                Err(HttpError { status, reason }) => self.refuse(id, status, reason, now),
            }
        }
        self.settle(id, now);
    }

    /// Puts the connection's deadline and read state in line with its state.
    fn settle(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id.0) else {
            return;
        };
        let pause = match c.state {
            State::Open => {
                if c.eof {
                    self.close(id, now);
                    return;
                }
                let kind = if c.reader.in_request() {
                    TimerKind::Head
                } else {
                    TimerKind::Idle
                };
                if c.rearm || c.timer.map(|t| t.1) != Some(kind) {
                    c.rearm = false;
                    let after = match kind {
                        TimerKind::Head => self.config.head_timeout,
                        _ => self.config.idle_timeout,
                    };
                    self.push_back_timer(id, kind, now + after);
                }
                false
            }
            State::Held(_) => c.reader.buffered() >= self.config.max_pipeline_bytes,
            State::Closing => false,
        };
        let c = &mut self.conns[id.0];
        if pause != c.paused {
            c.paused = pause;
            self.outputs.push_back(if pause {
                Output::PauseRead { conn: id }
            } else {
                Output::ResumeRead { conn: id }
            });
        }
    }

    fn set_timer(&mut self, id: ConnId, timer: Option<(Instant, TimerKind)>) {
        let Some(c) = self.conns.get_mut(id.0) else {
            return;
        };
        if let Some((old, _)) = c.timer {
            self.timers.remove(&(old, id));
        }
        c.timer = timer;
        if let Some((at, _)) = timer {
            c.due = at;
            self.timers.insert((at, id));
        }
    }

    /// Sets a deadline of `kind` at `due`. When the connection already has an entry of that
    /// kind that is not later, only its due time moves: a keep-alive connection answering
    /// request after request then touches the timer set once per timeout, not twice per request.
    fn push_back_timer(&mut self, id: ConnId, kind: TimerKind, due: Instant) {
        let Some(c) = self.conns.get_mut(id.0) else {
            return;
        };
        match c.timer {
            Some((at, k)) if k == kind && at <= due => c.due = due,
            _ => self.set_timer(id, Some((due, kind))),
        }
    }

    /// Queues bytes for a connection, cutting it off if its unsent bytes pass the cap.
    fn send(&mut self, id: ConnId, data: Bytes) {
        let Some(c) = self.conns.get_mut(id.0) else {
            return;
        };
        if matches!(c.state, State::Closing) {
            return;
        }
        c.unsent += data.len();
        self.metrics.bytes_sent += data.len() as u64;
        let over = c.unsent > self.config.max_unsent_bytes;
        self.outputs.push_back(Output::Send { conn: id, data });
        if over {
            self.release_hold(id);
            self.conns[id.0].state = State::Closing;
            self.outputs.push_back(Output::Abort { conn: id });
            self.set_timer(id, None);
        }
    }

    /// Sends `data` as the answer to a request, then closes if the answer says so.
    fn answer(&mut self, id: ConnId, data: Bytes, persist: Persist, now: Instant) {
        self.send(id, data);
        if persist == Persist::Close {
            self.close(id, now);
        }
    }

    /// Answers with an error and closes (for errors that end the connection).
    fn refuse(&mut self, id: ConnId, status: u16, reason: &'static str, now: Instant) {
        *self.metrics.rejected.entry(status).or_insert(0) += 1;
        let data = if status == 503 {
            response::error(
                status,
                reason,
                &[("Retry-After", RETRY_AFTER_SECS)],
                Persist::Close,
            )
        } else {
            self.cache.error(status, reason, Persist::Close)
        };
        self.send(id, data);
        self.close(id, now);
    }

    /// Asks the adapter to close after flushing; a close that does not finish in time is aborted.
    fn close(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id.0) else {
            return;
        };
        if matches!(c.state, State::Closing) {
            return;
        }
        self.release_hold(id);
        self.conns[id.0].state = State::Closing;
        self.outputs.push_back(Output::Close { conn: id });
        self.set_timer(
            id,
            Some((now + self.config.head_timeout, TimerKind::Closing)),
        );
    }

    /// Takes a held poll out of its room (the connection stays in the Held state's place as
    /// Open). Returns the hold, if there was one.
    fn release_hold(&mut self, id: ConnId) -> Option<Hold> {
        let c = self.conns.get_mut(id.0)?;
        let State::Held(hold) = c.state else {
            return None;
        };
        c.state = State::Open;
        self.rooms[hold.room].waiters.try_remove(hold.slot);
        self.metrics.held -= 1;
        Some(hold)
    }

    fn handle_request(&mut self, id: ConnId, request: Request, now: Instant) {
        let persist = if self.shutting_down {
            Persist::Close
        } else {
            Persist::for_request(request.version, request.keep_alive)
        };
        if self.shutting_down {
            return self.refuse(id, 503, "server is shutting down", now);
        }
        let head = request.method == Method::Head;
        let allowed = match request.path() {
            "/" | "/chat.js" | "/chat.css" | "/healthz" | "/metrics" => "GET, HEAD",
            "/subscribe" => "GET",
            "/publish" => "POST",
            _ => return self.error(id, 404, "not found", &[], persist, now),
        };
        if request.method == Method::Options {
            return self.preflight(id, &request, allowed, persist, now);
        }
        let method_ok = match request.method {
            Method::Get => allowed.contains("GET"),
            Method::Head => allowed.contains("HEAD"),
            Method::Post => allowed == "POST",
            _ => false,
        };
        if !method_ok {
            return self.error(
                id,
                405,
                "method not allowed",
                &[("Allow", allowed)],
                persist,
                now,
            );
        }
        match request.path() {
            "/" => {
                let data = self.page.get(persist, head);
                self.answer(id, data, persist, now);
            }
            "/chat.js" => {
                let data = self.script.get(persist, head);
                self.answer(id, data, persist, now);
            }
            "/chat.css" => {
                let data = self.style.get(persist, head);
                self.answer(id, data, persist, now);
            }
            "/healthz" => {
                let data = Response {
                    head_only: head,
                    persist,
                    ..Response::new(200, Some(response::TEXT_PLAIN), b"ok\n")
                }
                .encode();
                self.answer(id, data, persist, now);
            }
            "/metrics" => {
                let body = self.metrics_text();
                let data = Response {
                    head_only: head,
                    persist,
                    ..Response::new(200, Some("text/plain; version=0.0.4; charset=utf-8"), &body)
                }
                .encode();
                self.answer(id, data, persist, now);
            }
            "/subscribe" => self.subscribe(id, &request, persist, now),
            _ => self.publish(id, request, persist, now),
        }
    }

    /// Answers a request error that keeps the connection (unless the request ends it).
    fn error(
        &mut self,
        id: ConnId,
        status: u16,
        reason: &'static str,
        headers: &[(&str, &str)],
        persist: Persist,
        now: Instant,
    ) {
        *self.metrics.rejected.entry(status).or_insert(0) += 1;
        let data = if headers.is_empty() {
            self.cache.error(status, reason, persist)
        } else {
            response::error(status, reason, headers, persist)
        };
        self.answer(id, data, persist, now);
    }

    /// The room named in the query (default `main`), created on first use.
    fn room_for(&mut self, request: &Request) -> Result<usize, (u16, &'static str)> {
        let name = form::field(request.query().unwrap_or("").as_bytes(), "room")
            .map_err(|()| (400, "invalid room name"))?;
        let name = name.as_deref().unwrap_or("main");
        if !room::valid_room(name) {
            return Err((400, "invalid room name"));
        }
        if let Some(&i) = self.room_index.get(name) {
            return Ok(i);
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err((503, "too many rooms"));
        }
        self.rooms.push(Room::new(name));
        self.room_index.insert(name.into(), self.rooms.len() - 1);
        Ok(self.rooms.len() - 1)
    }

    fn subscribe(&mut self, id: ConnId, request: &Request, persist: Persist, now: Instant) {
        let query = request.query().unwrap_or("").as_bytes();
        let json = matches!(form::field(query, "format"), Ok(Some(f)) if f == "json")
            || request
                .headers
                .accept
                .as_deref()
                .is_some_and(form::accepts_json);
        let since = match form::field(query, "since") {
            Ok(Some(s)) => Some(s),
            Ok(None) => request.headers.last_event_id.clone(),
            Err(()) => return self.error(id, 400, "invalid cursor", &[], persist, now),
        };
        let since = match since.as_deref().map(|s| room::parse_since(s, &self.epoch)) {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => return self.error(id, 400, "invalid cursor", &[], persist, now),
        };
        let room_i = match self.room_for(request) {
            Ok(r) => r,
            Err((status, reason)) => return self.error(id, status, reason, &[], persist, now),
        };
        let room = &self.rooms[room_i];
        let (after, gap) = match since {
            None => (room.last_seq, 0),
            Some(Since::All) => (0, 0),
            Some(Since::OtherEpoch) => (0, room.first_seq() - 1),
            Some(Since::Seq(s)) if s > room.last_seq => {
                return self.error(id, 400, "cursor is ahead of the room", &[], persist, now)
            }
            Some(Since::Seq(s)) => (s, room.first_seq().saturating_sub(s + 1)),
        };
        let cors = self.cors_index(request);
        if room.last_seq > after {
            let (data, n) = self.encode_messages(room_i, after, gap, json, persist, cors);
            self.metrics.delivered += n;
            self.answer(id, data, persist, now);
            return;
        }
        // Nothing to send yet: hold the poll.
        let slot = self.rooms[room_i].waiters.insert(Waiter {
            conn: id,
            json,
            persist,
            cors,
        });
        self.conns[id.0].state = State::Held(Hold {
            room: room_i,
            slot,
            after,
            since_all: since == Some(Since::All),
            persist,
            cors,
        });
        self.metrics.held += 1;
        self.conns[id.0].reader.release();
        self.set_timer(id, Some((now + self.config.poll_timeout, TimerKind::Poll)));
    }

    /// Encodes the answer to a poll with messages after `after`: the oldest one as plain text,
    /// or a batch as JSON. Also returns how many messages it carries.
    fn encode_messages(
        &mut self,
        room_i: usize,
        after: u64,
        gap: u64,
        json: bool,
        persist: Persist,
        cors: Option<u16>,
    ) -> (Bytes, u64) {
        let room = &self.rooms[room_i];
        let origin = cors.and_then(|i| self.config.allow_origins.get(usize::from(i)));
        let epoch = &self.epoch;
        let cursor = |seq: u64| {
            let mut c = String::with_capacity(epoch.len() + 8);
            c.push_str(epoch);
            c.push('-');
            c.push_str(&seq.to_string());
            c
        };
        let gap_text = gap.to_string();
        if !json {
            let Some(m) = room.after(after).next() else {
                return (Bytes::new(), 0);
            };
            let c = cursor(m.seq);
            let headers = poll_headers(&c, gap, &gap_text, origin.map(String::as_str));
            let data = Response {
                headers: &headers,
                persist,
                ..Response::new(200, Some(response::TEXT_PLAIN), &m.text)
            }
            .encode();
            return (data, 1);
        }
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(b"{\"room\":");
        push_json_string(&mut body, room.name.as_bytes());
        body.extend_from_slice(b",\"messages\":[");
        let mut next = after;
        let mut count = 0;
        for (i, m) in room
            .after(after)
            .take(self.config.batch_messages)
            .enumerate()
        {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"cursor\":\"");
            body.extend_from_slice(epoch.as_bytes());
            body.push(b'-');
            push_u64(&mut body, m.seq);
            body.extend_from_slice(b"\",\"time\":");
            push_u64(&mut body, m.time_ms);
            body.extend_from_slice(b",\"text\":");
            push_json_string(&mut body, &m.text);
            body.push(b'}');
            next = m.seq;
            count += 1;
        }
        let next = cursor(next);
        body.extend_from_slice(b"],\"next\":\"");
        body.extend_from_slice(next.as_bytes());
        body.extend_from_slice(b"\",\"gap\":");
        push_u64(&mut body, gap);
        body.push(b'}');
        let headers = poll_headers(&next, gap, &gap_text, origin.map(String::as_str));
        let data = Response {
            headers: &headers,
            persist,
            ..Response::new(200, Some(response::APPLICATION_JSON), &body)
        }
        .encode();
        (data, count)
    }

    /// A held poll ran out of time: `204` with the unchanged cursor.
    fn answer_timeout(&mut self, id: ConnId, now: Instant) {
        let Some(hold) = self.release_hold(id) else {
            return;
        };
        let cursor = if hold.since_all {
            "0".to_string()
        } else {
            format!("{}-{}", self.epoch, hold.after)
        };
        let origin = hold
            .cors
            .and_then(|i| self.config.allow_origins.get(usize::from(i)));
        let headers = poll_headers(&cursor, 0, "", origin.map(String::as_str));
        let data = Response {
            headers: &headers,
            persist: hold.persist,
            ..Response::new(204, None, b"")
        }
        .encode();
        self.answer(id, data, hold.persist, now);
        self.ready.push(id);
    }

    fn publish(&mut self, id: ConnId, mut request: Request, persist: Persist, now: Instant) {
        if let Some(origin) = request.headers.origin.as_deref() {
            if !self.origin_allowed(origin, request.headers.host.as_deref()) {
                return self.error(
                    id,
                    403,
                    "cross-origin publish not allowed",
                    &[],
                    persist,
                    now,
                );
            }
        }
        let room_i = match self.room_for(&request) {
            Ok(r) => r,
            Err((status, reason)) => return self.error(id, status, reason, &[], persist, now),
        };
        let media = form::Media::of(request.headers.content_type.as_deref());
        let wants_json = media == form::Media::Json
            || request
                .headers
                .accept
                .as_deref()
                .is_some_and(form::accepts_json);
        let body = match form::publish_body(media, std::mem::take(&mut request.body)) {
            Ok(b) => b,
            Err((status, reason)) => return self.error(id, status, reason, &[], persist, now),
        };
        if body.message.trim().is_empty() {
            return self.error(id, 400, "empty message", &[], persist, now);
        }
        if body.message.len() > self.config.max_message_bytes {
            return self.error(id, 413, "message too large", &[], persist, now);
        }
        if body
            .id
            .as_ref()
            .is_some_and(|i| i.is_empty() || i.len() > MAX_ID_BYTES)
        {
            return self.error(id, 400, "id must be 1 to 128 bytes", &[], persist, now);
        }
        let repeated = body
            .id
            .as_deref()
            .and_then(|key| self.rooms[room_i].ids.get(key).copied());
        let seq = match repeated {
            Some(seq) => seq,
            None => {
                if let Some(wait) = self.take_rate_token(self.conns[id.0].peer, now) {
                    let wait = wait.to_string();
                    return self.error(
                        id,
                        429,
                        "too many messages, slow down",
                        &[("Retry-After", &wait)],
                        persist,
                        now,
                    );
                }
                let time_ms =
                    self.epoch_ms + now.saturating_duration_since(self.start).as_millis() as u64;
                let config = &self.config;
                let seq = self.rooms[room_i].push(
                    Bytes::from(body.message.into_bytes()),
                    body.id.map(String::into_boxed_str),
                    time_ms,
                    config.history_messages,
                    config.history_bytes,
                );
                self.metrics.published += 1;
                self.fan_out(room_i, seq, now);
                seq
            }
        };
        let cursor = format!("{}-{seq}", self.epoch);
        let (content_type, body) = if wants_json {
            (
                response::APPLICATION_JSON,
                format!("{{\"cursor\":\"{cursor}\"}}"),
            )
        } else {
            (response::TEXT_PLAIN, format!("{cursor}\n"))
        };
        let origin = self
            .cors_index(&request)
            .and_then(|i| self.config.allow_origins.get(usize::from(i)));
        let headers = poll_headers(&cursor, 0, "", origin.map(String::as_str));
        let data = Response {
            headers: &headers,
            persist,
            ..Response::new(200, Some(content_type), body.as_bytes())
        }
        .encode();
        self.answer(id, data, persist, now);
    }

    /// Answers every held poll of a room with the message `seq`, one shared `Bytes` per
    /// representation.
    fn fan_out(&mut self, room_i: usize, seq: u64, now: Instant) {
        let mut waiters = std::mem::take(&mut self.rooms[room_i].waiters);
        if waiters.is_empty() {
            self.rooms[room_i].waiters = waiters;
            return;
        }
        // One encoding per representation; there are only a handful, so a list beats a map.
        let mut encoded: Vec<(Representation, Bytes)> = Vec::new();
        let mut answered = Vec::with_capacity(waiters.len());
        for (_, w) in waiters.iter() {
            let key = (w.json, w.persist, w.cors);
            let data = match encoded.iter().find(|(k, _)| *k == key) {
                Some((_, d)) => d.clone(),
                None => {
                    let (d, _) =
                        self.encode_messages(room_i, seq - 1, 0, w.json, w.persist, w.cors);
                    encoded.push((key, d.clone()));
                    d
                }
            };
            answered.push((w.conn, data, w.persist));
        }
        waiters.clear();
        self.metrics.held -= answered.len();
        self.metrics.delivered += answered.len() as u64;
        for (conn, data, persist) in answered {
            // The slot was cleared above: the connection is Open again.
            self.conns[conn.0].state = State::Open;
            self.set_timer(conn, None);
            self.answer(conn, data, persist, now);
            self.ready.push(conn);
        }
        // Keep the slab's capacity for the next round unless new polls came in meanwhile.
        if self.rooms[room_i].waiters.is_empty() {
            self.rooms[room_i].waiters = waiters;
        }
    }

    /// The index of the request's `Origin` in the allow-list, if it is there.
    fn cors_index(&self, request: &Request) -> Option<u16> {
        let origin = request.headers.origin.as_deref()?;
        let i = self.config.allow_origins.iter().position(|o| o == origin)?;
        u16::try_from(i).ok()
    }

    /// Answers `OPTIONS`: a CORS preflight from an allow-listed origin gets its permissions, one
    /// from any other origin `403`, and a plain `OPTIONS` the `Allow` list.
    fn preflight(
        &mut self,
        id: ConnId,
        request: &Request,
        allowed: &'static str,
        persist: Persist,
        now: Instant,
    ) {
        let origin = match (request.headers.origin.as_deref(), self.cors_index(request)) {
            (None, _) => None,
            (Some(_), Some(i)) => Some(self.config.allow_origins[usize::from(i)].clone()),
            (Some(_), None) => {
                return self.error(
                    id,
                    403,
                    "cross-origin request not allowed",
                    &[],
                    persist,
                    now,
                )
            }
        };
        let mut headers = vec![("Allow", allowed)];
        if let Some(origin) = origin.as_deref() {
            headers.extend([
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Methods", allowed),
                (
                    "Access-Control-Allow-Headers",
                    "Content-Type, Last-Event-ID",
                ),
                ("Access-Control-Max-Age", "600"),
                ("Vary", "Origin"),
            ]);
        }
        let data = Response {
            headers: &headers,
            persist,
            ..Response::new(204, None, b"")
        }
        .encode();
        self.answer(id, data, persist, now);
    }

    /// Whether an `Origin` may publish: same host as the request, or in the allow-list.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.config.allow_origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
    }

    /// Takes one publish token for `peer`. `Some(seconds)`: none left, retry after that long.
    fn take_rate_token(&mut self, peer: IpAddr, now: Instant) -> Option<u64> {
        let rate = f64::from(self.config.publish_rate);
        if rate <= 0.0 {
            return None;
        }
        let burst = f64::from(self.config.publish_burst.max(1));
        if self.rate.len() >= MAX_RATE_ENTRIES && !self.rate.contains_key(&peer) {
            // Forget addresses whose bucket has refilled: they are indistinguishable from new.
            self.rate.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if self.rate.len() >= MAX_RATE_ENTRIES {
                self.rate.clear();
            }
        }
        let bucket = self.rate.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn metrics_text(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut s = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "parlor_connections",
            "gauge",
            "Open connections.",
            self.conns.len() as u64,
        );
        metric(
            "parlor_held_polls",
            "gauge",
            "Long-polls being held.",
            self.metrics.held as u64,
        );
        metric("parlor_rooms", "gauge", "Rooms.", self.rooms.len() as u64);
        metric(
            "parlor_connections_accepted_total",
            "counter",
            "Connections accepted.",
            self.metrics.accepted,
        );
        metric(
            "parlor_requests_total",
            "counter",
            "Requests read.",
            self.metrics.requests,
        );
        metric(
            "parlor_messages_published_total",
            "counter",
            "Messages published.",
            self.metrics.published,
        );
        metric(
            "parlor_messages_delivered_total",
            "counter",
            "Messages delivered to subscribers (one per message per response).",
            self.metrics.delivered,
        );
        metric(
            "parlor_bytes_sent_total",
            "counter",
            "Response bytes handed to the adapter.",
            self.metrics.bytes_sent,
        );
        let _ = write!(
            s,
            "# HELP parlor_requests_rejected_total Requests answered with an error, by status.\n\
             # TYPE parlor_requests_rejected_total counter\n"
        );
        let mut rejected: Vec<_> = self.metrics.rejected.iter().collect();
        rejected.sort();
        for (status, n) in rejected {
            let _ = writeln!(
                s,
                "parlor_requests_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        s.into_bytes()
    }

    /// Checks the state machine's internal invariants (for the fuzz harness and the simulation
    /// tests); not part of the API.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held = 0;
        for (k, c) in self.conns.iter() {
            if let State::Held(h) = c.state {
                held += 1;
                let w = self.rooms[h.room]
                    .waiters
                    .get(h.slot)
                    .ok_or(format!("conn {k}: held slot missing"))?;
                if w.conn != ConnId(k) {
                    return Err(format!("conn {k}: slot names conn {}", w.conn.0));
                }
            }
            if let Some((at, _)) = c.timer {
                if !self.timers.contains(&(at, ConnId(k))) {
                    return Err(format!("conn {k}: deadline missing from the timer set"));
                }
            }
            let cap = self.config.limits.max_head
                + self.config.limits.max_body
                + self.config.max_pipeline_bytes
                + 1024 * 1024;
            if c.reader.buffered() > cap {
                return Err(format!("conn {k}: {} bytes buffered", c.reader.buffered()));
            }
        }
        for &(_, id) in &self.timers {
            if !self.conns.contains(id.0) {
                return Err(format!("deadline for closed conn {}", id.0));
            }
        }
        let waiters: usize = self.rooms.iter().map(|r| r.waiters.len()).sum();
        if waiters != held || held != self.metrics.held {
            return Err(format!(
                "waiters {waiters}, held conns {held}, held gauge {}",
                self.metrics.held
            ));
        }
        for r in &self.rooms {
            for (_, w) in r.waiters.iter() {
                if !self.conns.contains(w.conn.0) {
                    return Err(format!("waiter for closed conn {}", w.conn.0));
                }
            }
            if r.history.len() > self.config.history_messages.max(1) {
                return Err("history over its cap".into());
            }
        }
        Ok(())
    }
}
