//! Connections: their states and every transition between them.
//!
//! # Theory of operation
//!
//! Every connection is a slot in a slab, named by its [`ConnId`], in one of three states. `State`
//! is assigned only in this file:
//!
//! ```text
//!            accept
//!              │
//!              ▼        request is a long-poll that must wait (hold)
//!   ┌───────► Open ─────────────────────────────────────────► Held
//!   │          │  ▲                                            │
//!   │          │  └── answered: publish (wake), poll timeout ──┘
//!   │          │      (release_hold)
//!   │          │ request is GET /events (stream) ──────────────► Streaming ──► Closing
//!   │          │ error (refuse), Connection: close, timeout, EOF, shutdown, write cap passed
//!   │          ▼       (close, or abort past the write cap)
//!   │       Closing ──── handle_closed (closed) ────► slot freed
//!   └─ (pipelined requests are read only in Open)
//! ```
//!
//! * **Open**: requests are read and answered in order. Pipelined bytes wait in the
//!   connection's [`RequestReader`].
//! * **Held**: a `GET /subscribe` is waiting in its room's slab of waiters. Bytes that arrive
//!   meanwhile are buffered, up to `max_pipeline_bytes`; past that the adapter is told to pause
//!   reading. Answering the poll returns the connection to Open and puts it on the ready list,
//!   so the server reads what was buffered.
//! * **Streaming**: a `GET /events` stream, in its room's slab of streams until the connection
//!   ends (EOF, maximum age, shutdown, write cap passed: Open → Streaming → Closing, never
//!   back). It reads no more requests: what arrives is dropped, so reading never pauses and the
//!   peer's EOF is seen. Its one deadline is the heartbeat, pushed back by every event sent, and
//!   capped by the stream's maximum age.
//! * **Waiting**: a request waits for the shared message log (`waiting.rs`): a publish until
//!   its append is stored, a poll until its room is loaded. Like Held, later bytes are buffered
//!   and reading pauses at the cap; the `Broker` deadline answers `503` if the log is too slow.
//!   Only with a shared log (`Config::shared_log`); the in-memory log answers at once.
//! * **Closing**: `Close` or `Abort` was emitted; only `handle_closed` frees the slot.
//!
//! Each connection has at most one deadline (see `timers.rs`), whose kind follows its state:
//! head read or idle keep-alive while Open, the poll while Held, the heartbeat while Streaming,
//! closing while Closing.
//! [`Conns::settle`] puts the deadline and the read pause in line after every change.
//!
//! This layer knows connections, bytes and rooms' waiter slots; it does not know routes, cursors
//! or message encodings (the server hands it encoded answers).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use core::net::IpAddr;
use slab::Slab;

use crate::cors::{self, Cors};
use crate::http::{Limits, RequestReader};
use crate::metrics::Metrics;
use crate::response::{ErrorAnswer, Persist, ResponseCache};
use crate::room::Rooms;
use crate::timers::{Deadline, TimerKind, Timers};
use crate::{ConnId, Error, Output};

mod check;
mod proxied;
mod table;
mod waiting;

pub(crate) use table::Received;

/// How long a client told to come back (503, 429) is asked to wait, at least.
pub(crate) const RETRY_AFTER_SECS: &str = "2";

/// A held poll: where its waiter sits and what its timeout answer needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    pub room: usize,
    pub slot: usize,
    /// The cursor answered with on timeout: the sequence number the poll waits after, or `0`
    /// itself when the poll asked for `since=0`.
    pub after: u64,
    pub since_all: bool,
    /// The poll's cursor was of another epoch: the timeout answer carries the reset signal.
    pub reset: bool,
    pub persist: Persist,
    /// Index of the request's allow-listed cross-origin `Origin`, if any (CORS headers).
    pub cors: Option<u16>,
}

/// The constant bytes of an event stream's framing, handed over by the route (`sse.rs`).
#[derive(Debug)]
pub(crate) struct StreamBytes {
    /// The heartbeat comment, sent after a heartbeat interval of silence.
    pub heartbeat: &'static [u8],
    /// What ends the body cleanly before the close (the terminating chunk, or nothing).
    pub end: &'static [u8],
}

/// An open event stream: where it sits in its room, and when it must end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream {
    pub room: usize,
    pub slot: usize,
    pub bytes: &'static StreamBytes,
    /// When the stream is ended (its maximum age), if ever.
    pub ends: Option<Instant>,
}

/// What a stream's deadline asks for (see [`Conns::stream_due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamDue {
    /// Silent for a heartbeat interval: the heartbeat was sent.
    Heartbeat,
    /// The stream reached its maximum age: it was ended.
    Ended,
}

#[derive(Debug)]
enum State {
    Open,
    Held(Hold),
    Streaming(Stream),
    /// Waiting for the message log's answer that `token` names (see `waiting.rs`).
    Waiting {
        token: u64,
    },
    Closing,
}

#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    reader: RequestReader,
    state: State,
    /// Bytes handed to the adapter and not yet reported flushed.
    unsent: usize,
    deadline: Deadline,
    /// A request completed since the deadline was last set: the next one starts afresh.
    rearm: bool,
    paused: bool,
    eof: bool,
}

/// The limits and timeouts this layer enforces (copied from the [`Config`](crate::Config)).
#[derive(Clone, Copy, Debug)]
struct Settings {
    limits: Limits,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_pipeline_bytes: usize,
    max_unsent_bytes: usize,
    head_timeout: Duration,
    idle_timeout: Duration,
    poll_timeout: Duration,
    sse_heartbeat: Duration,
    /// Zero: streams have no maximum age.
    sse_max_age: Duration,
}

/// Every connection, their deadlines and the outputs for the adapter.
#[derive(Debug)]
pub(crate) struct Conns {
    slab: Slab<Conn>,
    timers: Timers,
    outputs: VecDeque<Output>,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections whose held poll was just answered: their buffered requests are read next.
    /// A work list rather than recursion, so a chain of pipelined publishes cannot grow the stack.
    ready: Vec<ConnId>,
    /// Polls held now.
    held: usize,
    /// Event streams open now.
    streams: usize,
    /// Polls held through a trusted proxy, per forwarded client (the per-address cap there).
    proxied: proxied::ProxiedHolds,
    cache: ResponseCache,
    settings: Settings,
    /// The counters (this layer counts accepts, requests, bytes and errors).
    pub metrics: Metrics,
}

impl Conns {
    /// A new connection: Open with a head deadline, or refused `503` (over the caps, or while
    /// `shutting_down`). A `proxy` peer (a trusted reverse proxy) is not held to the
    /// per-address cap: its connections carry many clients.
    pub fn accept(
        &mut self,
        peer: IpAddr,
        proxy: bool,
        shutting_down: bool,
        rooms: &mut Rooms,
        now: Instant,
    ) -> ConnId {
        self.metrics.accepted += 1;
        let s = self.settings;
        let id = ConnId(self.slab.insert(Conn {
            peer,
            reader: RequestReader::new(),
            state: State::Open,
            unsent: 0,
            deadline: Deadline::none(now),
            rearm: false,
            paused: false,
            eof: false,
        }));
        let per_ip_over = !proxy && {
            let count = self.per_ip.entry(peer).or_insert(0);
            *count += 1;
            s.max_connections_per_ip > 0 && *count > s.max_connections_per_ip
        };
        let refusal = if shutting_down {
            Some("server is shutting down")
        } else if self.slab.len() > s.max_connections {
            Some("too many connections")
        } else if per_ip_over {
            Some("too many connections from this address")
        } else {
            None
        };
        match refusal {
            // No request was read yet: its method is unknown, so the body is sent.
            Some(reason) => self.refuse(id, ErrorAnswer::new(503, reason, false), rooms, now),
            None => self.set_timer(id, Some((now + s.head_timeout, TimerKind::Head))),
        }
        id
    }

    /// The peer closed its side: close, dropping a held poll.
    pub fn eof(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) -> Result<(), Error> {
        let c = self.get_mut(id)?;
        c.eof = true;
        if !matches!(c.state, State::Closing) {
            self.close(id, rooms, now);
        }
        Ok(())
    }

    /// The socket is gone: frees the slot.
    pub fn closed(&mut self, id: ConnId, rooms: &mut Rooms) -> Result<(), Error> {
        self.get_mut(id)?;
        self.leave_room(id, rooms);
        self.set_timer(id, None);
        let c = self.slab.remove(id.0);
        if let Some(count) = self.per_ip.get_mut(&c.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&c.peer);
            }
        }
        Ok(())
    }

    /// Carries out an expired deadline other than a poll's (the server answers those).
    pub fn expire(&mut self, id: ConnId, kind: TimerKind, rooms: &mut Rooms, now: Instant) {
        match kind {
            TimerKind::Head => {
                let reader = &self.slab[id.0].reader;
                if reader.in_request() {
                    let head = reader.is_head();
                    let answer = ErrorAnswer::new(408, "request not received in time", head);
                    self.refuse(id, answer, rooms, now);
                } else {
                    self.close(id, rooms, now);
                }
            }
            TimerKind::Idle => self.close(id, rooms, now),
            TimerKind::Closing => self.outputs.push_back(Output::Abort { conn: id }),
            TimerKind::Heartbeat => {
                self.stream_due(id, rooms, now);
            }
            // The server answers these.
            TimerKind::Poll | TimerKind::Broker => {}
        }
    }

    /// Shutdown: held polls get `503` (with the CORS headers their poll was owed) and close,
    /// event streams end cleanly, idle connections close, a request whose head has arrived gets
    /// `503` (with `Retry-After`) and one that has only begun is closed.
    pub fn shutdown(&mut self, rooms: &mut Rooms, cors: &Cors, now: Instant) {
        let ids: Vec<ConnId> = self.slab.iter().map(|(k, _)| ConnId(k)).collect();
        for id in ids {
            let c = &self.slab[id.0];
            match c.state {
                State::Held(hold) => {
                    self.release_hold(id, rooms);
                    let origin = cors.origin(hold.cors);
                    let headers = origin.map(cors::answer_headers);
                    let answer = ErrorAnswer {
                        headers: headers.as_ref().map_or(&[], |h| &h[..]),
                        ..ErrorAnswer::new(503, "server is shutting down", false)
                    };
                    self.refuse(id, answer, rooms, now);
                }
                State::Streaming(_) => self.end_stream(id, rooms, now),
                State::Waiting { .. } => {
                    let answer = ErrorAnswer::new(503, "server is shutting down", false);
                    self.refuse(id, answer, rooms, now);
                }
                State::Open if c.reader.head_complete() => {
                    let head = c.reader.is_head();
                    let answer = ErrorAnswer::new(503, "server is shutting down", head);
                    self.refuse(id, answer, rooms, now)
                }
                State::Open => self.close(id, rooms, now),
                State::Closing => {}
            }
        }
    }

    /// Puts the connection's deadline and read state in line with its state.
    pub fn settle(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) {
        let s = self.settings;
        let Some(c) = self.slab.get_mut(id.0) else {
            return;
        };
        let pause = match c.state {
            State::Open => {
                if c.eof {
                    self.close(id, rooms, now);
                    return;
                }
                let kind = if c.reader.in_request() {
                    TimerKind::Head
                } else {
                    TimerKind::Idle
                };
                if c.rearm || c.deadline.kind() != Some(kind) {
                    c.rearm = false;
                    let after = match kind {
                        TimerKind::Head => s.head_timeout,
                        _ => s.idle_timeout,
                    };
                    self.timers
                        .push_back(id, &mut c.deadline, kind, now + after);
                }
                false
            }
            State::Held(_) | State::Waiting { .. } => c.reader.buffered() >= s.max_pipeline_bytes,
            // A stream discards what it reads (see `receive`), so it keeps reading to see EOF.
            State::Streaming(_) | State::Closing => false,
        };
        let c = &mut self.slab[id.0];
        if pause != c.paused {
            c.paused = pause;
            self.outputs.push_back(if pause {
                Output::PauseRead { conn: id }
            } else {
                Output::ResumeRead { conn: id }
            });
        }
    }

    /// Queues bytes for a connection, cutting it off if its unsent bytes pass the cap.
    pub fn send(&mut self, id: ConnId, data: Bytes, rooms: &mut Rooms) {
        let Some(c) = self.slab.get_mut(id.0) else {
            return;
        };
        if matches!(c.state, State::Closing) {
            return;
        }
        c.unsent += data.len();
        let over = c.unsent > self.settings.max_unsent_bytes;
        self.outputs.push_back(Output::Send { conn: id, data });
        if over {
            if matches!(self.slab[id.0].state, State::Streaming(_)) {
                self.metrics.stream_cutoffs += 1;
            }
            self.leave_room(id, rooms);
            self.slab[id.0].state = State::Closing;
            self.outputs.push_back(Output::Abort { conn: id });
            self.set_timer(id, None);
        }
    }

    /// Sends `data` as the answer to a request, then closes if the answer says so.
    pub fn answer(
        &mut self,
        id: ConnId,
        data: Bytes,
        persist: Persist,
        rooms: &mut Rooms,
        now: Instant,
    ) {
        self.send(id, data, rooms);
        if persist == Persist::Close {
            self.close(id, rooms, now);
        }
    }

    /// Answers a request error that keeps the connection (unless the request ends it).
    pub fn error(
        &mut self,
        id: ConnId,
        answer: ErrorAnswer<'_>,
        persist: Persist,
        rooms: &mut Rooms,
        now: Instant,
    ) {
        self.metrics.reject(answer.status);
        let data = answer.encode(persist, &mut self.cache);
        self.answer(id, data, persist, rooms, now);
    }

    /// Answers with an error and closes (for errors that end the connection). A `503` also
    /// says when to come back (`Retry-After`).
    pub fn refuse(&mut self, id: ConnId, answer: ErrorAnswer<'_>, rooms: &mut Rooms, now: Instant) {
        self.metrics.reject(answer.status);
        let data = if answer.status == 503 {
            let mut headers = vec![("Retry-After", RETRY_AFTER_SECS)];
            headers.extend_from_slice(answer.headers);
            let answer = ErrorAnswer {
                headers: &headers,
                ..answer
            };
            answer.encode(Persist::Close, &mut self.cache)
        } else {
            answer.encode(Persist::Close, &mut self.cache)
        };
        self.send(id, data, rooms);
        self.close(id, rooms, now);
    }

    /// The `Origin` of the request `id`'s reader refused, when its head was parsed.
    pub fn failed_origin(&self, id: ConnId) -> Option<&str> {
        self.slab.get(id.0).and_then(|c| c.reader.failed_origin())
    }

    /// Whether the request being read on `id` (or the one its reader refused) is a `HEAD`.
    pub fn is_head(&self, id: ConnId) -> bool {
        self.slab.get(id.0).is_some_and(|c| c.reader.is_head())
    }

    /// Asks the adapter to close after flushing; a close that does not finish in time is aborted.
    pub fn close(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) {
        let Some(c) = self.slab.get_mut(id.0) else {
            return;
        };
        if matches!(c.state, State::Closing) {
            return;
        }
        self.leave_room(id, rooms);
        self.slab[id.0].state = State::Closing;
        self.outputs.push_back(Output::Close { conn: id });
        let closing = now + self.settings.head_timeout;
        self.set_timer(id, Some((closing, TimerKind::Closing)));
    }

    /// Open → Held: the poll waits in `hold.room`'s waiter `hold.slot` until a publish or
    /// its deadline.
    pub fn hold(&mut self, id: ConnId, hold: Hold, now: Instant) {
        let c = &mut self.slab[id.0];
        c.state = State::Held(hold);
        self.held += 1;
        c.reader.release();
        let due = now + self.settings.poll_timeout;
        self.set_timer(id, Some((due, TimerKind::Poll)));
    }

    /// Takes a held poll out of its room (the connection stays in the Held state's place as
    /// Open). Returns the hold, if there was one.
    pub fn release_hold(&mut self, id: ConnId, rooms: &mut Rooms) -> Option<Hold> {
        let c = self.slab.get_mut(id.0)?;
        let State::Held(hold) = c.state else {
            return None;
        };
        c.state = State::Open;
        rooms.remove_waiter(hold.room, hold.slot);
        self.held -= 1;
        self.proxied.release(id);
        Some(hold)
    }

    /// Held → Open for a poll answered by a publish, whose waiter slot the caller has already
    /// emptied. The caller then sends the answer and marks the connection
    /// [`ready`](Self::ready).
    pub fn wake(&mut self, id: ConnId) {
        let c = &mut self.slab[id.0];
        debug_assert!(
            matches!(c.state, State::Held(_)),
            "woke a connection not held"
        );
        c.state = State::Open;
        self.held -= 1;
        self.proxied.release(id);
        self.set_timer(id, None);
    }

    /// Before a poll from `client` behind a trusted proxy is held on `id` (or a stream opened):
    /// counts it, or says `false` when that client already holds `--max-connections-per-ip`.
    pub fn admit_proxied(&mut self, id: ConnId, client: IpAddr) -> bool {
        let cap = self.settings.max_connections_per_ip;
        self.proxied.admit(id, client, cap)
    }
}

// --- event streams -------------------------------------------------------------------------

impl Conns {
    /// Event streams open now.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Open → Streaming: the connection listens in `stream.room`'s slot `stream.slot` from now
    /// on. Sends `start` (the head and first events) and arms the heartbeat. The connection
    /// reads no more requests; what arrives is discarded, so only its EOF matters.
    pub fn stream(
        &mut self,
        id: ConnId,
        mut stream: Stream,
        start: Bytes,
        rooms: &mut Rooms,
        now: Instant,
    ) {
        let s = self.settings;
        if !s.sse_max_age.is_zero() {
            stream.ends = Some(now + s.sse_max_age);
        }
        let c = &mut self.slab[id.0];
        c.state = State::Streaming(stream);
        c.reader.release();
        self.streams += 1;
        self.set_timer(
            id,
            Some((heartbeat_due(s, stream.ends, now), TimerKind::Heartbeat)),
        );
        self.send(id, start, rooms);
    }

    /// Sends an event on a stream and pushes its heartbeat back (without touching the timer
    /// set, so a busy stream costs no timer work per event).
    pub fn stream_send(&mut self, id: ConnId, data: Bytes, rooms: &mut Rooms, now: Instant) {
        self.send(id, data, rooms);
        let s = self.settings;
        if let Some(c) = self.slab.get_mut(id.0) {
            if let State::Streaming(stream) = c.state {
                let due = heartbeat_due(s, stream.ends, now);
                self.timers
                    .push_back(id, &mut c.deadline, TimerKind::Heartbeat, due);
            }
        }
    }

    /// A stream's deadline fired: past its maximum age it ends, else it gets a heartbeat.
    pub fn stream_due(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) -> Option<StreamDue> {
        let State::Streaming(stream) = self.slab.get(id.0)?.state else {
            return None;
        };
        if stream.ends.is_some_and(|end| end <= now) {
            self.end_stream(id, rooms, now);
            return Some(StreamDue::Ended);
        }
        // The deadline has just fired (disarmed): sending re-arms it.
        let beat = Bytes::from_static(stream.bytes.heartbeat);
        self.stream_send(id, beat, rooms, now);
        Some(StreamDue::Heartbeat)
    }

    /// Ends a stream cleanly (the terminating chunk, if chunked) and closes the connection.
    pub fn end_stream(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) {
        let Some(State::Streaming(stream)) = self.slab.get(id.0).map(|c| &c.state) else {
            return;
        };
        let end = stream.bytes.end;
        self.leave_room(id, rooms);
        if !end.is_empty() {
            self.send(id, Bytes::from_static(end), rooms);
        }
        self.close(id, rooms, now);
    }

    /// Takes a held poll or an event stream out of its room; the connection is Open after.
    fn leave_room(&mut self, id: ConnId, rooms: &mut Rooms) {
        if self.release_hold(id, rooms).is_some() {
            return;
        }
        let Some(c) = self.slab.get_mut(id.0) else {
            return;
        };
        if let State::Streaming(stream) = c.state {
            c.state = State::Open;
            rooms.remove_stream(stream.room, stream.slot);
            self.streams -= 1;
            self.proxied.release(id);
        }
    }
}

/// When a stream that sent something at `now` needs its heartbeat, or its end.
fn heartbeat_due(s: Settings, ends: Option<Instant>, now: Instant) -> Instant {
    let beat = now + s.sse_heartbeat;
    ends.map_or(beat, |end| end.min(beat))
}
