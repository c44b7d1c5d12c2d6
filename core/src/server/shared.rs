//! The server's side of a shared message log: the broker input and output, publishes that wait
//! for their append, polls parked until their room is loaded (routed again, or answered `503`)
//! and the polls a fetch of their own answers (the rules are in `log.rs`; the contract in
//! [`crate::broker`]). Keeping each room's cache in step with the log is `cache.rs`.

use std::time::Instant;

use super::cache::Incoming;
use super::{Reply, Server};
use crate::broker::{BrokerEvent, BrokerRequest, History};
use crate::conn::RETRY_AFTER_SECS;
use crate::cursor::Cursor;
use crate::http::Request;
use crate::log::{Load, Pending, Wait};
use crate::room::Message;
use crate::routes::Action;
use crate::routes::{publish, Append};
use crate::ConnId;

/// Why a request that waited for the log is answered `503`.
const UNAVAILABLE: &str = "message log unavailable";

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
                let limit = self.config.batch_messages;
                self.log.fetch(name, after_seq, Some(token), limit);
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
        if self.fail_wait(id, token, reply, now) {
            self.log.failures += 1;
        }
    }

    /// Ends the wait `token` of `id` with a `503` (see [`unavailable`](Self::unavailable)), and
    /// reads the requests buffered behind it. `false` (nothing done) when `id` no longer waits
    /// for `token`.
    fn fail_wait(&mut self, id: ConnId, token: u64, reply: Reply, now: Instant) -> bool {
        if !self.conns.end_wait(id, token) {
            return false;
        }
        self.unavailable(id, reply, now);
        self.conns.ready(id);
        true
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
        let Some(p) = self.log.take_publish(token) else {
            return;
        };
        let stored = match result {
            Ok(stored) => stored,
            Err(_) => {
                self.log.failures += 1;
                self.fail_wait(p.conn, token, p.reply, now);
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

    /// The polls parked on room `name`'s fetch: routed again now that the cache is loaded
    /// (`loaded`), or answered `503`.
    pub(super) fn answer_parked(&mut self, name: &str, loaded: bool, now: Instant) {
        let Some(sync) = self.log.rooms.get_mut(name) else {
            return;
        };
        let parked = std::mem::take(&mut sync.parked);
        self.log.forget_idle(name);
        for token in parked {
            let Some((conn, request, reply)) = self.log.take_poll(token) else {
                continue;
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
                self.serve(conn, &client, *request, reply, now);
                self.log.replaying = None;
            }
            _ => self.unavailable(conn, reply, now),
        }
        self.conns.ready(conn);
    }

    /// The fetch of a poll whose cursor is older than the cache: the poll is answered from the
    /// messages the log still held after its cursor, lent to the room's history for the time of
    /// the answer (the cache itself does not change). When the log holds nothing more than the
    /// cache, or is of another epoch now, the cache answers (with the gap it knows of).
    pub(super) fn answer_older(
        &mut self,
        wait: u64,
        room: &str,
        after_seq: u64,
        result: Result<History, crate::broker::BrokerFailure>,
        now: Instant,
    ) {
        let done = Load::Older(after_seq);
        let Some((conn, request, reply)) = self.log.take_poll(wait) else {
            return;
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
