//! The server: the inputs and outputs of the state machine, and shutdown.
//!
//! [`Server`] is the one type an adapter drives. Each `handle_*` input is carried out by the
//! layers below: `conn/` moves connections between states (and owns their deadlines, in
//! `timers.rs`), `routes/` decides what a request asks for, `room.rs` keeps history and
//! waiters. Beside this file: `server/dispatch.rs` reads requests off Open connections and asks
//! the routes what to do; `server/carry.rs` carries the [`Action`](crate::routes::Action) out
//! through the connection layer, including the fan-out of a publish to every waiter of its room
//! (one shared `Bytes` per representation); `server/shared.rs` is the broker's side (a shared
//! message log).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use core::net::IpAddr;

use crate::config::Config;
use crate::conn::{Conns, Received};
use crate::cors::Cors;
use crate::cursor;
use crate::forwarded::Forwarding;
use crate::log::Log;
use crate::page::Page;
use crate::rate::RateLimit;
use crate::response::Persist;
use crate::room::Rooms;
use crate::timers::TimerKind;

mod cache;
mod carry;
mod dispatch;
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
            conns: Conns::new(&config, now),
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

    /// Whether `conn` is an open event stream (`GET /events`): what it is sent next is an event
    /// no request waits for, so an adapter may hold it back a little while it is busy, to write
    /// several in one go. A poll's answer is awaited: its client asks again only once it has it.
    #[must_use]
    pub fn is_streaming(&self, conn: ConnId) -> bool {
        self.conns.is_streaming(conn)
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
