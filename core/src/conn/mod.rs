//! Connections: their states and every transition between them.
//!
//! # Theory of operation
//!
//! Every connection is a slot in a slab, named by its [`ConnId`], in one of these states. `State`
//! is assigned only in this module: here, and in the files named for a state (`held.rs`,
//! `stream.rs`, `waiting.rs`):
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
//! * **Held** (`held.rs`): a `GET /subscribe` is waiting in its room's slab of waiters. Bytes
//!   that arrive meanwhile are buffered, up to `max_pipeline_bytes`; past that the adapter is
//!   told to pause reading. Answering the poll returns the connection to Open and puts it on
//!   the ready list, so the server reads what was buffered.
//! * **Streaming** (`stream.rs`): a `GET /events` stream, in its room's slab of streams until
//!   the connection ends (EOF, maximum age, shutdown, write cap passed: Open → Streaming →
//!   Closing, never back). It reads no more requests: what arrives is dropped, so reading never
//!   pauses and the peer's EOF is seen. Its one deadline is the heartbeat, pushed back by every
//!   event sent, and capped by the stream's maximum age.
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
mod held;
mod proxied;
mod stream;
mod table;
mod waiting;

pub(crate) use held::Hold;
pub(crate) use stream::{Stream, StreamBytes};
pub(crate) use table::Received;

/// How long a client told to come back (503, 429) is asked to wait, at least.
pub(crate) const RETRY_AFTER_SECS: &str = "2";

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
            deadline: Deadline::none(),
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
            rooms.remove_stream(stream.room(), stream.slot());
            self.streams -= 1;
            self.proxied.release(id);
        }
    }
}
#[cfg(test)]
mod tests {
    /// Every connection, a held poll above all, costs its slot: keep it small (issue 15: 208
    /// bytes before the reader, the deadline and the states were shrunk).
    #[test]
    fn a_connection_slot_is_small() {
        use std::mem::size_of;
        let sizes = [
            ("Conn", size_of::<super::Conn>(), 136),
            ("RequestReader", size_of::<crate::http::RequestReader>(), 56),
            ("Deadline", size_of::<crate::timers::Deadline>(), 20),
            ("State", size_of::<super::State>(), 32),
        ];
        for (what, size, bound) in sizes {
            assert!(size <= bound, "{what}: {size} bytes, more than {bound}");
        }
    }
}
