//! The server's side of a shared message log: the broker input and output, publishes that wait
//! for their append, polls parked until their room is loaded, and keeping each room's cache in
//! step with the log (the rules are in `log.rs`; the contract in [`crate::broker`]).

use std::time::Instant;

use bytes::Bytes;

use super::{Reply, Server};
use crate::broker::{BrokerEvent, BrokerRequest, History};
use crate::conn::RETRY_AFTER_SECS;
use crate::cursor::Cursor;
use crate::http::Request;
use crate::log::{self, Fetching, Load, Pending, Wait};
use crate::room::Message;
use crate::routes::Action;
use crate::routes::{publish, Append};
use crate::ConnId;

/// Why a request that waited for the log is answered `503`.
const UNAVAILABLE: &str = "message log unavailable";

/// A message entering a room's cache.
struct Incoming {
    room: Box<str>,
    epoch: Box<str>,
    seq: u64,
    time_ms: u64,
    text: Bytes,
    id: Option<Box<str>>,
}

impl Server {
    /// The next request for the shared message log, if any. With
    /// [`Config::shared_log`](crate::Config::shared_log), drain it after every input, like
    /// [`poll_output`](Self::poll_output), and hand each request to the broker service; every
    /// request is answered by exactly one [`BrokerEvent`] with its token (see
    /// [`crate::broker`]). Always `None` with the log in memory.
    #[must_use]
    pub fn poll_broker(&mut self) -> Option<BrokerRequest> {
        self.log.poll_request()
    }

    /// The broker service reports `event` (with a shared log; ignored in memory). Feed events in
    /// the order the service produced them, then drain both output queues.
    pub fn handle_broker(&mut self, event: BrokerEvent, now: Instant) {
        self.tick(now);
        if !self.log.shared {
            return;
        }
        match event {
            BrokerEvent::Appended { token, result } => self.on_appended(token, result, now),
            BrokerEvent::Message {
                room,
                epoch,
                seq,
                time_ms,
                text,
                id,
            } => self.on_message(
                Incoming {
                    room,
                    epoch,
                    seq,
                    time_ms,
                    text,
                    id,
                },
                now,
            ),
            BrokerEvent::Fetched {
                token,
                room: _,
                result,
            } => self.on_fetched(token, result, now),
            BrokerEvent::Up => {
                self.log.up = true;
                // Catch up: the feed may have missed messages while down.
                let loaded: Vec<Box<str>> = self
                    .rooms
                    .iter()
                    .filter(|r| r.loaded)
                    .map(|r| r.name.clone())
                    .collect();
                for name in loaded {
                    if let Some(i) = self.rooms.find(&name) {
                        self.fetch(i);
                    }
                }
            }
            BrokerEvent::Down => self.log.up = false,
        }
        self.run_ready(now);
        // Rooms left with neither history nor waiters are freed, as after every input.
        self.rooms.collect();
    }

    /// Whether a connection is waiting for the log (for tests and the fuzz harness).
    #[doc(hidden)]
    pub fn is_waiting(&self, conn: ConnId) -> bool {
        self.conns.waiting_for(conn).is_some()
    }

    /// A publish: ask the log to append, and wait for its answer.
    pub(super) fn append(&mut self, id: ConnId, a: Append, reply: Reply, now: Instant) {
        let room = self.rooms.get(a.room).name.clone();
        let token = self.log.token();
        self.log.request(BrokerRequest::Append {
            token,
            room: room.clone(),
            text: a.text.clone(),
            id: a.id.clone(),
            time_ms: a.time_ms,
        });
        let pending = Pending {
            conn: id,
            room,
            text: a.text,
            id: a.id,
            json: a.json,
            cors: a.cors,
            reply,
        };
        self.log.waits.insert(token, Wait::Publish(pending));
        self.conns.wait(id, token, self.config.broker_timeout, now);
    }

    /// A poll the cache cannot answer yet: it waits for a fetch of its room, or for one of its
    /// own when its cursor is older than the cache.
    pub(super) fn park(
        &mut self,
        id: ConnId,
        room: usize,
        load: Load,
        request: Box<Request>,
        reply: Reply,
        now: Instant,
    ) {
        if !self.log.up {
            return self.unavailable(id, reply, now);
        }
        let token = self.log.token();
        self.log.waits.insert(
            token,
            Wait::Poll {
                conn: id,
                request,
                reply,
            },
        );
        let name = self.rooms.get(room).name.clone();
        match load {
            Load::Room => {
                self.log.rooms.entry(name).or_default().parked.push(token);
                self.fetch(room);
            }
            Load::Older(after_seq) => {
                let fetch = self.log.token();
                self.log.fetches.insert(
                    fetch,
                    Fetching {
                        room: name.clone(),
                        after_seq,
                        for_poll: Some(token),
                    },
                );
                self.log.request(BrokerRequest::Fetch {
                    token: fetch,
                    room: name,
                    after_seq,
                    limit: self.config.batch_messages,
                });
            }
        }
        self.conns.wait(id, token, self.config.broker_timeout, now);
    }

    /// A request waited for the log too long: `503` with `Retry-After`. A publish may still be
    /// stored; retrying it with the same id is safe.
    pub(super) fn broker_timeout(&mut self, id: ConnId, now: Instant) {
        let Some(token) = self.conns.waiting_for(id) else {
            return;
        };
        let reply = match self.log.waits.remove(&token) {
            Some(Wait::Publish(p)) => p.reply,
            Some(Wait::Poll { reply, .. }) => reply,
            None => Reply {
                persist: crate::response::Persist::KeepAlive,
                head: false,
                cors: None,
            },
        };
        if self.conns.end_wait(id, token) {
            self.log.failures += 1;
            self.unavailable(id, reply, now);
            self.conns.ready(id);
        }
    }

    /// Answers `503` with `Retry-After` (and the CORS headers the request earned).
    fn unavailable(&mut self, id: ConnId, reply: Reply, now: Instant) {
        let action = Action::Reject {
            status: 503,
            reason: UNAVAILABLE,
            header: Some(("Retry-After", RETRY_AFTER_SECS.to_string())),
        };
        self.carry_out(id, action, reply, None, now);
    }

    fn on_appended(
        &mut self,
        token: u64,
        result: Result<crate::broker::Stored, crate::broker::BrokerFailure>,
        now: Instant,
    ) {
        let p = match self.log.waits.remove(&token) {
            Some(Wait::Publish(p)) => p,
            Some(other) => {
                self.log.waits.insert(token, other);
                return;
            }
            None => return,
        };
        let stored = match result {
            Ok(stored) => stored,
            Err(_) => {
                self.log.failures += 1;
                if self.conns.end_wait(p.conn, token) {
                    self.unavailable(p.conn, p.reply, now);
                    self.conns.ready(p.conn);
                }
                return;
            }
        };
        if !stored.duplicate {
            self.conns.metrics.published += 1;
            // Stored: cache and deliver it here at once, as the feed would (its own copy of
            // the message is then a duplicate).
            self.on_message(
                Incoming {
                    room: p.room,
                    epoch: stored.epoch.clone(),
                    seq: stored.seq,
                    time_ms: stored.time_ms,
                    text: p.text,
                    id: p.id,
                },
                now,
            );
        }
        if self.conns.end_wait(p.conn, token) {
            let origin = self.cors.origin(p.cors);
            let cursor = Cursor::at(&stored.epoch, stored.seq);
            let data = publish::encode_answer(p.reply.persist, cursor, p.json, origin);
            self.conns
                .answer(p.conn, data, p.reply.persist, &mut self.rooms, now);
            self.conns.ready(p.conn);
        }
    }

    /// A message of the log: cached and fanned out if it is the next of a loaded room; a gap or
    /// another epoch asks for a fetch; a duplicate is dropped.
    fn on_message(&mut self, m: Incoming, now: Instant) {
        let Some(i) = self.rooms.find(&m.room) else {
            return; // not a room of this node
        };
        let caps = (self.config.history_messages, self.config.history_bytes);
        let room = self.rooms.get_mut(i);
        if !room.loaded {
            return; // its load will read it
        }
        if room.epoch.is_empty() {
            // The log had nothing of the room when it was loaded: this starts its numbering.
            log::restart(room, &m.epoch, 0);
        } else if room.epoch != m.epoch {
            // The log lost the room (or this message is late and from before that): a fetch
            // tells which.
            self.fetch(i);
            return;
        }
        if m.seq <= room.last_seq {
            return;
        }
        if !log::insert(room, m.seq, m.time_ms, m.text, m.id, caps) {
            self.fetch(i); // a gap: the feed missed messages
            return;
        }
        self.rooms.refile(i); // it has history now: in the idle set unless watched
        self.fan_out(i, m.seq, now);
    }

    /// Asks the log for the messages of room `i` after its cache, unless a fetch is in flight
    /// (then once more after it) or the log is down (`Up` catches up). Returns whether a fetch
    /// is in flight now.
    fn fetch(&mut self, i: usize) -> bool {
        let room = self.rooms.get(i);
        let name = room.name.clone();
        let after_seq = room.last_seq;
        let sync = self.log.rooms.entry(name.clone()).or_default();
        if sync.fetching.is_some() {
            sync.again = true;
            return true;
        }
        if !self.log.up {
            return false;
        }
        let token = self.log.token();
        if let Some(sync) = self.log.rooms.get_mut(&name) {
            sync.fetching = Some(token);
        }
        self.log.fetches.insert(
            token,
            Fetching {
                room: name.clone(),
                after_seq,
                for_poll: None,
            },
        );
        self.log.request(BrokerRequest::Fetch {
            token,
            room: name,
            after_seq,
            limit: self.config.history_messages,
        });
        true
    }

    fn on_fetched(
        &mut self,
        token: u64,
        result: Result<History, crate::broker::BrokerFailure>,
        now: Instant,
    ) {
        let Some(Fetching {
            room: name,
            after_seq,
            for_poll,
        }) = self.log.fetches.remove(&token)
        else {
            return;
        };
        if let Some(wait) = for_poll {
            return self.answer_older(wait, &name, after_seq, result, now);
        }
        let sync = self.log.rooms.entry(name.clone()).or_default();
        if sync.fetching == Some(token) {
            sync.fetching = None;
        }
        let again = std::mem::take(&mut sync.again);
        // The room may have been freed meanwhile (a room with neither history nor waiters is,
        // and parked polls are not waiters yet): the log's answer makes it again.
        let Some(i) = self.rooms.create(&name, "") else {
            return self.answer_parked(&name, false, now);
        };
        let more = match result {
            Ok(history) => {
                let more = self.apply(i, after_seq, history, now);
                self.rooms.refile(i);
                self.rooms.get_mut(i).loaded = true;
                more
            }
            Err(_) => {
                self.log.failures += 1;
                self.answer_parked(&name, false, now);
                false
            }
        };
        if (more || again) && self.fetch(i) {
            return; // parked polls wait for the next answer
        }
        self.answer_parked(&name, true, now);
    }

    /// Brings room `i`'s cache in line with a fetch's answer; delivers what is new. Returns
    /// whether there is more to read.
    fn apply(&mut self, i: usize, after_seq: u64, h: History, now: Instant) -> bool {
        let caps = (self.config.history_messages, self.config.history_bytes);
        let room = self.rooms.get(i);
        let Some(epoch) = h.epoch else {
            // The log holds nothing of the room: what this node cached is gone.
            if !room.epoch.is_empty() {
                self.release_waiters(i, now);
                log::restart(self.rooms.get_mut(i), "", 0);
            }
            return false;
        };
        if room.epoch != epoch {
            // A new epoch: polls on the old one are answered (their cursor then gets the reset
            // signal), and the cache starts over from the epoch's beginning.
            if !room.epoch.is_empty() {
                self.release_waiters(i, now);
            }
            log::restart(self.rooms.get_mut(i), &epoch, 0);
            if after_seq != 0 {
                return true; // read the new epoch from its start
            }
        }
        let start = h.first_seq.saturating_sub(1);
        if start > self.rooms.get(i).last_seq {
            // What the cache misses was trimmed from the log: waiting polls are answered so
            // they come back with their cursor and get the gap signal.
            self.release_waiters(i, now);
            log::restart(self.rooms.get_mut(i), &epoch, start);
        }
        let room = self.rooms.get_mut(i);
        let from = room.last_seq + 1;
        for m in h.messages {
            if m.seq > room.last_seq && !log::insert(room, m.seq, m.time_ms, m.text, m.id, caps) {
                break;
            }
        }
        let last = room.last_seq;
        // Polls take everything new from the first call; event streams get one event per call.
        for seq in from..=last {
            self.fan_out(i, seq, now);
        }
        last < h.last_seq
    }

    /// Answers every poll held in room `i` as if it had timed out (`204`, its cursor unchanged),
    /// and ends its event streams: both come back with their cursor and get the reset or gap
    /// signal, rather than events of a numbering they cannot place.
    fn release_waiters(&mut self, i: usize, now: Instant) {
        let room = self.rooms.get(i);
        let polls: Vec<ConnId> = room.waiters.iter().map(|(_, w)| w.conn).collect();
        let streams: Vec<ConnId> = room.streams.iter().map(|(_, s)| s.conn).collect();
        for conn in polls {
            self.answer_timeout(conn, now);
        }
        for conn in streams {
            self.conns.end_stream(conn, &mut self.rooms, now);
        }
    }

    /// The polls parked on room `name`'s fetch: routed again now that the cache is loaded
    /// (`loaded`), or answered `503`.
    fn answer_parked(&mut self, name: &str, loaded: bool, now: Instant) {
        let Some(sync) = self.log.rooms.get_mut(name) else {
            return;
        };
        let parked = std::mem::take(&mut sync.parked);
        self.log.forget_idle(name);
        for token in parked {
            let (conn, request, reply) = match self.log.waits.remove(&token) {
                Some(Wait::Poll {
                    conn,
                    request,
                    reply,
                }) => (conn, request, reply),
                Some(other) => {
                    self.log.waits.insert(token, other);
                    continue;
                }
                None => continue,
            };
            let request = loaded.then_some(request);
            self.replay(conn, token, Load::Room, request, reply, now);
        }
    }

    /// Ends the wait `token` of `conn` for `done`: routes its request again against the cache as
    /// it is now (without asking for the same load again), or, without one, answers `503`.
    fn replay(
        &mut self,
        conn: ConnId,
        token: u64,
        done: Load,
        request: Option<Box<Request>>,
        reply: Reply,
        now: Instant,
    ) {
        if !self.conns.end_wait(conn, token) {
            return;
        }
        match (request, self.conns.peer(conn)) {
            (Some(request), Some(peer)) => {
                self.log.replaying = Some(done);
                // The request is read again as it came: the same client, forwarded or not.
                let client = self.forwarding.client(peer, &request);
                let action = self.route(&client, *request, reply.persist, now);
                self.log.replaying = None;
                let proxied = client.forwarded.then_some(client.addr);
                self.carry_out(conn, action, reply, proxied, now);
            }
            _ => self.unavailable(conn, reply, now),
        }
        self.conns.ready(conn);
    }

    /// The fetch of a poll whose cursor is older than the cache: the poll is answered from the
    /// messages the log still held after its cursor, lent to the room's history for the time of
    /// the answer (the cache itself does not change). When the log holds nothing more than the
    /// cache, or is of another epoch now, the cache answers (with the gap it knows of).
    fn answer_older(
        &mut self,
        wait: u64,
        room: &str,
        after_seq: u64,
        result: Result<History, crate::broker::BrokerFailure>,
        now: Instant,
    ) {
        let done = Load::Older(after_seq);
        let (conn, request, reply) = match self.log.waits.remove(&wait) {
            Some(Wait::Poll {
                conn,
                request,
                reply,
            }) => (conn, request, reply),
            Some(other) => {
                self.log.waits.insert(wait, other);
                return;
            }
            None => return,
        };
        let history = match result {
            Ok(h) => h,
            Err(_) => {
                self.log.failures += 1;
                return self.replay(conn, wait, done, None, reply, now);
            }
        };
        let i = self.rooms.find(room);
        let lend = i.filter(|&i| {
            let r = self.rooms.get(i);
            history.epoch.as_deref() == Some(&*r.epoch)
                && history
                    .messages
                    .first()
                    .is_some_and(|m| m.seq < r.first_seq())
        });
        let Some(i) = lend else {
            return self.replay(conn, wait, done, Some(request), reply, now);
        };
        let run = history
            .messages
            .into_iter()
            .map(|m| Message {
                seq: m.seq,
                time_ms: m.time_ms,
                text: m.text,
                id: m.id,
            })
            .collect();
        // The cached `since=0` answer belongs to the cache: kept aside, as the cache is.
        let room = self.rooms.get_mut(i);
        let cache = std::mem::replace(&mut room.history, run);
        let shared = room.shared.take();
        self.replay(conn, wait, done, Some(request), reply, now);
        // Rooms are freed only at the end of the input: `i` is still this room.
        let room = self.rooms.get_mut(i);
        room.history = cache;
        room.shared = shared;
    }
}
