//! The connection table's bookkeeping: creating it, looking up a connection, reading its
//! buffered requests, the output queue and the deadlines. Nothing here changes a connection's
//! state (that is `mod.rs`).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use core::net::IpAddr;
use slab::Slab;

use super::{Conn, Conns, Settings, State};
use crate::config::Config;
use crate::http::{HttpError, ReadEvent};
use crate::metrics::Metrics;
use crate::response::ResponseCache;
use crate::timers::{TimerKind, Timers};
use crate::{ConnId, Error, Output};

/// What [`Conns::receive`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Buffered on an Open connection: read its requests.
    Open,
    /// Buffered behind a held poll.
    Held,
    /// Dropped: the connection is closing or its peer already closed.
    Ignored,
}

impl Conns {
    pub fn new(config: &Config, now: Instant) -> Conns {
        Conns {
            slab: Slab::new(),
            timers: Timers::new(now),
            outputs: VecDeque::new(),
            per_ip: HashMap::new(),
            ready: Vec::new(),
            held: 0,
            streams: 0,
            proxied: Default::default(),
            cache: ResponseCache::new(),
            settings: Settings {
                limits: config.limits,
                max_connections: config.max_connections,
                max_connections_per_ip: config.max_connections_per_ip,
                max_pipeline_bytes: config.max_pipeline_bytes,
                max_unsent_bytes: config.max_unsent_bytes,
                head_timeout: config.head_timeout,
                idle_timeout: config.idle_timeout,
                poll_timeout: config.poll_timeout,
                sse_heartbeat: config.sse_heartbeat,
                sse_max_age: config.sse_max_age,
            },
            metrics: Metrics::default(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Polls held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether `id` is an open event stream.
    pub fn is_streaming(&self, id: ConnId) -> bool {
        self.slab
            .get(id.0)
            .is_some_and(|c| matches!(c.state, State::Streaming(_)))
    }

    /// The next output for the adapter.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether every connection is Closing with its answers flushed and no request unread.
    pub fn is_drained(&self) -> bool {
        self.slab
            .iter()
            .all(|(_, c)| matches!(c.state, State::Closing) && c.unsent == 0)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The peer address of an open connection.
    pub fn peer(&self, id: ConnId) -> Option<IpAddr> {
        self.slab.get(id.0).map(|c| c.peer)
    }

    pub(super) fn get_mut(&mut self, id: ConnId) -> Result<&mut Conn, Error> {
        self.slab.get_mut(id.0).ok_or(Error::UnknownConnection(id))
    }

    pub(super) fn set_timer(&mut self, id: ConnId, timer: Option<(Instant, TimerKind)>) {
        if let Some(c) = self.slab.get_mut(id.0) {
            self.timers.set(id, &mut c.deadline, timer);
        }
    }

    /// Buffers bytes that arrived, unless the connection is closing or past its EOF.
    pub fn receive(&mut self, id: ConnId, data: &[u8]) -> Result<Received, Error> {
        let c = self.get_mut(id)?;
        // A stream reads no more requests: what its peer sends is dropped.
        if matches!(c.state, State::Closing | State::Streaming(_)) || c.eof {
            return Ok(Received::Ignored);
        }
        c.reader.push(data);
        Ok(match c.state {
            State::Open => Received::Open,
            _ => Received::Held,
        })
    }

    /// `n` sent bytes were written to the socket.
    pub fn flushed(&mut self, id: ConnId, n: usize) -> Result<(), Error> {
        let c = self.get_mut(id)?;
        let n = n.min(c.unsent);
        c.unsent -= n;
        self.metrics.bytes_sent += n as u64;
        Ok(())
    }

    /// The next deadline due at `now`, disarmed, and its kind. Entries that were pushed back
    /// are re-filed on the way.
    pub fn next_expired(&mut self, now: Instant) -> Option<(ConnId, TimerKind)> {
        while let Some(id) = self.timers.expired(now) {
            let Some(c) = self.slab.get_mut(id.0) else {
                self.timers.forget_first();
                continue;
            };
            if let Some(kind) = self.timers.fire(id, &mut c.deadline, now) {
                return Some((id, kind));
            }
        }
        None
    }

    /// The next complete request (or `100 Continue`, or error) of an Open connection. `None`
    /// when the connection is not Open or has nothing complete.
    pub fn next_event(&mut self, id: ConnId) -> Option<Result<ReadEvent, HttpError>> {
        let c = self.slab.get_mut(id.0)?;
        if !matches!(c.state, State::Open) {
            return None;
        }
        let event = c.reader.next_event(&self.settings.limits)?;
        if let Ok(ReadEvent::Request(_)) = event {
            self.metrics.requests += 1;
            // A new request restarts the idle (or next head) clock once answered.
            c.rearm = true;
        }
        Some(event)
    }

    /// Marks a connection whose poll was answered: its buffered requests are read next.
    pub fn ready(&mut self, id: ConnId) {
        self.ready.push(id);
    }

    /// A connection whose poll was answered, to read its buffered requests next.
    pub fn pop_ready(&mut self) -> Option<ConnId> {
        self.ready.pop()
    }
}
