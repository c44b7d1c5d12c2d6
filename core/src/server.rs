//! The server: the inputs and outputs of the state machine, shutdown, and dispatch.
//!
//! [`Server`] is the one type an adapter drives. Each `handle_*` input is carried out by the
//! layers below: `conn.rs` moves connections between states (and owns their deadlines, in
//! `timers.rs`), `routes/` decides what a request asks for, `room.rs` keeps history and
//! waiters. The dispatch here reads requests off Open connections, asks the routes what to do,
//! and carries the [`Action`] out through the connection layer, including the fan-out of a
//! publish to every waiter of its room (one shared `Bytes` per representation).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use core::net::IpAddr;

use crate::batch;
use crate::config::Config;
use crate::conn::{Conns, Hold, Received, Stream, RETRY_AFTER_SECS};
use crate::cors::{self, Cors};
use crate::cursor::{self, Cursor};
use crate::forwarded::{Client, Forwarding, Site};
use crate::http::{HttpError, Method, ReadEvent, Request};
use crate::log::Log;
use crate::metrics::Gauges;
use crate::page::Page;
use crate::rate::RateLimit;
use crate::response::{self, ErrorAnswer, Persist};
use crate::room::{Rooms, StreamWaiter, Waiter};
use crate::routes::{self, events, publish, subscribe, Action, Ctx, Route};
use crate::sse;
use crate::timers::TimerKind;

mod shared;

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

/// How to answer one request: its connection header, whether it was a `HEAD` (no body, even in
/// an error answer), and its allow-listed origin (every answer to it carries the CORS headers).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub persist: Persist,
    pub head: bool,
    pub cors: Option<u16>,
}

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
///    [`handle_timeout`](Self::handle_timeout), [`handle_shutdown`](Self::handle_shutdown),
///    and with a shared log ([`Config::shared_log`]) [`handle_broker`](Self::handle_broker).
/// 3. After **every** input, drain [`poll_output`](Self::poll_output) until it returns `None`,
///    carrying out each [`Output`] in order; with a shared log, also drain
///    [`poll_broker`](Self::poll_broker) and hand each request to the broker service.
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
    /// The latest time an input brought (time never goes backwards).
    last_now: Instant,
    conns: Conns,
    rooms: Rooms,
    cors: Cors,
    rate: RateLimit,
    forwarding: Forwarding,
    page: Page,
    /// The message log: in memory, or shared through a broker (`log.rs`, `server/shared.rs`).
    log: Log,
    shutting_down: bool,
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
            epoch: cursor::epoch_tag(epoch_ms),
            epoch_ms,
            start: now,
            last_now: now,
            conns: Conns::new(&config),
            rooms: Rooms::new(config.max_rooms, config.room_idle, now),
            cors: Cors::new(config.allow_origins.clone()),
            rate: RateLimit::new(config.publish_rate, config.publish_burst),
            forwarding: Forwarding::new(config.trusted_proxies.clone()),
            page: Page::new(),
            log: Log::new(config.shared_log),
            shutting_down: false,
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
        self.conns.held()
    }

    /// Whether [`handle_shutdown`](Self::handle_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The next output for the adapter, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.conns.poll_output()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.conns.next_deadline(), self.rooms.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a shutdown has nothing left to do: every connection has been answered, its
    /// answer handed over in full (reported with `handle_flushed`) and it has no request
    /// unread. The adapter may then exit without waiting for peers to close. O(connections):
    /// meant for the shutdown's end, not for every event of a running server.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.shutting_down && self.conns.is_drained()
    }

    /// Records the time an input brought; in debug builds, asserts it never goes backwards.
    fn tick(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
        self.rooms.set_now(self.last_now);
    }

    /// A connection from `peer` was accepted. Over the connection caps, or while shutting down,
    /// it gets a ready `503` and a `Close`. A trusted proxy (`--trusted-proxy`) is not held to
    /// the per-address cap: its connections are shared by many clients.
    pub fn handle_accept(&mut self, peer: IpAddr, now: Instant) -> ConnId {
        self.tick(now);
        let proxy = self.forwarding.trusts(peer);
        self.conns
            .accept(peer, proxy, self.shutting_down, &mut self.rooms, now)
    }

    /// Bytes arrived on `conn`.
    pub fn handle_data(&mut self, conn: ConnId, data: &[u8], now: Instant) -> Result<(), Error> {
        self.tick(now);
        match self.conns.receive(conn, data)? {
            Received::Open => self.advance(conn, now),
            Received::Held => self.conns.settle(conn, &mut self.rooms, now),
            Received::Ignored => return Ok(()),
        }
        self.run_ready(now);
        self.rooms.collect();
        Ok(())
    }

    /// The peer closed its side (a read returned 0). Requests already complete have been
    /// answered; a held poll is dropped (its client is gone); the connection closes.
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant) -> Result<(), Error> {
        self.tick(now);
        self.conns.eof(conn, &mut self.rooms, now)?;
        self.rooms.collect();
        Ok(())
    }

    /// `n` bytes of what was sent on `conn` were written to its socket. It never produces
    /// outputs, so an adapter may batch these reports, as long as it makes them before its next
    /// other input for the connection.
    pub fn handle_flushed(&mut self, conn: ConnId, n: usize, now: Instant) -> Result<(), Error> {
        self.tick(now);
        self.conns.flushed(conn, n)
    }

    /// `conn` is gone: its socket is closed. Frees its slot (the id may be reused after this).
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) -> Result<(), Error> {
        self.tick(now);
        self.conns.closed(conn, &mut self.rooms)?;
        self.rooms.collect();
        Ok(())
    }

    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some((id, kind)) = self.conns.next_expired(now) {
            match kind {
                TimerKind::Poll => self.answer_timeout(id, now),
                TimerKind::Broker => self.broker_timeout(id, now),
                _ => self.conns.expire(id, kind, &mut self.rooms, now),
            }
        }
        self.run_ready(now);
        self.rooms.collect();
        self.rooms.expire(now);
    }

    /// Begin a graceful shutdown: held polls are answered `503` with `Retry-After` and closed,
    /// idle connections close, a request whose head has arrived gets `503` (one only begun is
    /// closed), and every new connection or request gets `503`. The adapter stops accepting and
    /// waits until [`is_drained`](Self::is_drained) (every answer written, no need to wait for
    /// peers to close) or its grace period ends.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.tick(now);
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.conns.shutdown(&mut self.rooms, &self.cors, now);
        self.rooms.collect();
    }

    /// Reads the buffered requests of connections whose poll was answered.
    fn run_ready(&mut self, now: Instant) {
        while let Some(id) = self.conns.pop_ready() {
            self.advance(id, now);
        }
    }

    /// Reads and answers requests while the connection is Open, then settles its timer and
    /// read state.
    fn advance(&mut self, id: ConnId, now: Instant) {
        while let Some(event) = self.conns.next_event(id) {
            match event {
                Ok(ReadEvent::Continue) => {
                    let data = Bytes::from_static(response::CONTINUE);
                    self.conns.send(id, data, &mut self.rooms);
                }
                Ok(ReadEvent::Request(request)) => self.handle_request(id, request, now),
                Err(HttpError { status, reason }) => {
                    // A head that parsed (e.g. a body too large) still gets its CORS headers.
                    let allowed = self.cors.index(self.conns.failed_origin(id));
                    let headers = self.cors.origin(allowed).map(cors::answer_headers);
                    let answer = ErrorAnswer {
                        headers: headers.as_ref().map_or(&[], |h| &h[..]),
                        ..ErrorAnswer::new(status, reason, self.conns.is_head(id))
                    };
                    self.conns.refuse(id, answer, &mut self.rooms, now)
                }
            }
        }
        self.conns.settle(id, &mut self.rooms, now);
    }

    fn handle_request(&mut self, id: ConnId, request: Request, now: Instant) {
        let reply = Reply {
            persist: Persist::for_request(request.version, request.keep_alive),
            head: request.method == Method::Head,
            cors: self.cors.index(request.headers.origin.as_deref()),
        };
        if self.shutting_down {
            let headers = self.cors.origin(reply.cors).map(cors::answer_headers);
            let answer = ErrorAnswer {
                headers: headers.as_ref().map_or(&[], |h| &h[..]),
                ..ErrorAnswer::new(503, "server is shutting down", reply.head)
            };
            return self.conns.refuse(id, answer, &mut self.rooms, now);
        }
        let Some(peer) = self.conns.peer(id) else {
            return;
        };
        let client = self.forwarding.client(peer, &request);
        if client.malformed {
            self.conns.metrics.forwarded_malformed += 1;
        }
        let action = self.route(&client, request, reply.persist, now);
        let proxied = client.forwarded.then_some(client.addr);
        self.carry_out(id, action, reply, proxied, now);
    }

    /// What the request from `client` asks for.
    fn route(
        &mut self,
        client: &Client,
        request: Request,
        persist: Persist,
        now: Instant,
    ) -> Action {
        // DNS rebinding: on loopback, only loopback (or --allow-host) names are served. Behind a
        // trusted proxy the name checked is the public one it forwarded.
        if self.config.listen_loopback {
            let forwarded = client.forwarded.then(|| client.site(None)).flatten();
            let authority = forwarded.as_ref().map(Site::authority);
            let host = match &authority {
                Some(a) => Some(a.as_str()),
                None => request.headers.host.as_deref(),
            };
            if !cors::host_allowed(host, &self.config.allow_hosts) {
                return Action::reject(421, "this server answers only to localhost");
            }
        }
        let Some(route) = Route::from_path(request.path()) else {
            return Action::reject(404, "not found");
        };
        let ctx = Ctx {
            config: &self.config,
            cors: &self.cors,
            // A room of the shared log takes its epoch from the log once loaded.
            epoch: if self.log.shared { "" } else { &self.epoch },
            persist,
            client,
            log: &self.log,
        };
        if request.method == Method::Options {
            return routes::preflight(&ctx, &request, route.allowed());
        }
        if !route.allows(request.method) {
            return Action::Reject {
                status: 405,
                reason: "method not allowed",
                header: Some(("Allow", route.allowed().to_string())),
            };
        }
        let head = request.method == Method::Head;
        match route {
            Route::Page(file) => Action::Answer(self.page.file(file).get(persist, head)),
            Route::Healthz if !self.log.up => Action::Reject {
                status: 503,
                reason: "message log unavailable",
                header: Some(("Retry-After", crate::conn::RETRY_AFTER_SECS.to_string())),
            },
            Route::Healthz => Action::Answer(routes::healthz(head, persist)),
            Route::Metrics => {
                let text = self.conns.metrics.text(Gauges {
                    connections: self.conns.len(),
                    held: self.conns.held(),
                    streams: self.conns.streams(),
                    rooms: self.rooms.len(),
                    rooms_created: self.rooms.created,
                    rooms_evicted: self.rooms.evicted,
                    broker: self.log.shared.then_some(crate::metrics::Broker {
                        up: self.log.up,
                        waiting: self.log.waits.len(),
                        failures: self.log.failures,
                    }),
                });
                Action::Answer(routes::metrics(&text, head, persist))
            }
            Route::Subscribe => match subscribe::handle(&ctx, &mut self.rooms, &request) {
                Action::Load { room, load } => Action::Park {
                    room,
                    load,
                    request: Box::new(request),
                },
                action => action,
            },
            Route::Events => match events::handle(&ctx, &mut self.rooms, &request) {
                Action::Load { room, load } => Action::Park {
                    room,
                    load,
                    request: Box::new(request),
                },
                action => action,
            },
            Route::Publish => {
                let from = publish::Sender {
                    peer: client.addr,
                    now,
                    time_ms: self.epoch_ms
                        + now.saturating_duration_since(self.start).as_millis() as u64,
                };
                publish::handle(&ctx, &mut self.rooms, &mut self.rate, from, request)
            }
        }
    }

    /// Carries out what a route decided, through the connection layer. `proxied`: the client's
    /// address, when a trusted proxy forwarded it (a poll held or a stream opened for it counts
    /// against the per-address cap).
    fn carry_out(
        &mut self,
        id: ConnId,
        action: Action,
        reply: Reply,
        proxied: Option<IpAddr>,
        now: Instant,
    ) {
        let persist = reply.persist;
        let action = match action {
            Action::Hold(_) | Action::Stream(_)
                if proxied.is_some_and(|c| !self.conns.admit_proxied(id, c)) =>
            {
                Action::Reject {
                    status: 503,
                    reason: "too many connections from this address",
                    header: Some(("Retry-After", RETRY_AFTER_SECS.to_string())),
                }
            }
            action => action,
        };
        let rooms = &mut self.rooms;
        match action {
            Action::Answer(data) => self.conns.answer(id, data, persist, rooms, now),
            Action::Deliver { data, messages } => {
                self.conns.metrics.delivered += messages;
                self.conns.answer(id, data, persist, rooms, now);
            }
            Action::Reject {
                status,
                reason,
                header,
            } => {
                // Errors carry the CORS headers too, so a page can read why (and `Retry-After`).
                let mut headers: Vec<(&str, &str)> = Vec::new();
                if let Some((name, v)) = &header {
                    headers.push((name, v.as_str()));
                }
                if let Some(origin) = self.cors.origin(reply.cors) {
                    headers.extend(cors::answer_headers(origin));
                }
                let answer = ErrorAnswer {
                    status,
                    reason,
                    headers: &headers,
                    head_only: reply.head,
                };
                self.conns.error(id, answer, persist, rooms, now);
            }
            Action::Hold(wait) => {
                let slot = rooms.add_waiter(
                    wait.room,
                    Waiter {
                        conn: id,
                        json: wait.json,
                        persist,
                        cors: wait.cors,
                        reset: wait.reset,
                    },
                );
                let hold = Hold {
                    room: wait.room,
                    slot,
                    after: wait.after,
                    since_all: wait.since_all,
                    reset: wait.reset,
                    persist,
                    cors: wait.cors,
                };
                self.conns.hold(id, hold, now);
            }
            Action::Stream(open) => {
                let slot = rooms.get_mut(open.room).streams.insert(StreamWaiter {
                    conn: id,
                    json: open.json,
                    chunked: open.chunked,
                });
                // In use now: out of the idle set.
                rooms.refile(open.room);
                let stream = Stream {
                    room: open.room,
                    slot,
                    bytes: sse::stream_bytes(open.chunked),
                    ends: None,
                };
                self.conns.metrics.events_sent += open.events;
                self.conns.stream(id, stream, open.start, rooms, now);
            }
            Action::Published { room, seq, answer } => {
                if let Some(seq) = seq {
                    self.conns.metrics.published += 1;
                    self.fan_out(room, seq, now);
                }
                self.conns.answer(id, answer, persist, &mut self.rooms, now);
            }
            Action::Append(append) => self.append(id, append, reply, now),
            Action::Park {
                room,
                load,
                request,
            } => self.park(id, room, load, request, reply, now),
            Action::Load { room, .. } => {
                // The router always turns Load into Park; without the request there is
                // nothing to route again, so the client is asked to retry.
                debug_assert!(false, "Action::Load reached carry_out (room {room})");
                let answer = ErrorAnswer::new(503, "message log unavailable", reply.head);
                self.conns.refuse(id, answer, &mut self.rooms, now);
            }
        }
    }

    /// A held poll ran out of time: `204` with the unchanged cursor.
    fn answer_timeout(&mut self, id: ConnId, now: Instant) {
        let Some(hold) = self.conns.release_hold(id, &mut self.rooms) else {
            return;
        };
        let epoch = &self.rooms.get(hold.room).epoch;
        // An empty epoch: a shared room with nothing in the log, so everything is ahead.
        let cursor = if hold.since_all || epoch.is_empty() {
            Cursor::Start
        } else {
            Cursor::at(epoch, hold.after)
        };
        let origin = self.cors.origin(hold.cors);
        let data = batch::timed_out(cursor, hold.reset, origin, hold.persist);
        self.conns
            .answer(id, data, hold.persist, &mut self.rooms, now);
        self.conns.ready(id);
    }

    /// Answers every held poll of a room with the message `seq`, and sends it to every event
    /// stream of the room: one shared `Bytes` per representation.
    fn fan_out(&mut self, room_i: usize, seq: u64, now: Instant) {
        self.stream_out(room_i, seq, now);
        let mut waiters = std::mem::take(&mut self.rooms.get_mut(room_i).waiters);
        if waiters.is_empty() {
            self.rooms.get_mut(room_i).waiters = waiters;
            return;
        }
        let room = self.rooms.get(room_i);
        let caps = (self.config.batch_messages, self.config.batch_budget());
        let answered = batch::fan_out(room, &waiters, seq, caps, &self.cors);
        waiters.clear();
        self.conns.metrics.delivered += answered.len() as u64;
        for (conn, data, persist) in answered {
            // The slot was cleared above: waking only moves the connection back to Open.
            self.conns.wake(conn);
            self.conns.answer(conn, data, persist, &mut self.rooms, now);
            self.conns.ready(conn);
        }
        // Keep the slab's capacity for the next round unless new polls came in meanwhile.
        if self.rooms.get(room_i).waiters.is_empty() {
            self.rooms.get_mut(room_i).waiters = waiters;
        }
        self.rooms.refile(room_i);
    }

    /// Sends the message `seq` to every event stream of a room (they stay in the room).
    fn stream_out(&mut self, room_i: usize, seq: u64, now: Instant) {
        let room = self.rooms.get(room_i);
        if room.streams.is_empty() {
            return;
        }
        let sent = sse::fan_out(room, &room.streams, seq);
        self.conns.metrics.events_sent += sent.len() as u64;
        for (conn, data) in sent {
            // A slow reader is cut off here (past the unsent cap) and leaves the room.
            self.conns.stream_send(conn, data, &mut self.rooms, now);
        }
    }

    /// Checks the state machine's internal invariants (for fuzzing and property tests).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.conns.check_invariants(&self.rooms)?;
        self.rooms.check()?;
        for r in self.rooms.iter() {
            if r.history.len() > self.config.history_messages.max(1) {
                return Err("history over its cap".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "time went backwards")]
    #[allow(clippy::disallowed_methods)] // a test needs some origin instant
    fn time_never_goes_backwards() {
        let t0 = Instant::now();
        let mut server = Server::new(Config::default(), 0, t0 + Duration::from_secs(1));
        server.handle_timeout(t0 + Duration::from_secs(2));
        server.handle_timeout(t0);
    }
}
