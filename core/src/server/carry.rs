//! Carrying out: what a route decided, done through the connection layer.
//!
//! Answers and errors (with their CORS headers), holding a poll in its room, opening an event
//! stream, a held poll's timeout answer, and the fan-out of a publish to every waiter and
//! stream of its room (one shared `Bytes` per representation).

use std::time::Instant;

use core::net::IpAddr;

use super::{Reply, Server};
use crate::batch;
use crate::conn::{Hold, Stream, RETRY_AFTER_SECS};
use crate::cors;
use crate::cursor::Cursor;
use crate::response::ErrorAnswer;
use crate::room::{StreamWaiter, Waiter};
use crate::routes::Action;
use crate::sse;
use crate::ConnId;

impl Server {
    /// Carries out what a route decided, through the connection layer. `proxied`: the client's
    /// address, when a trusted proxy forwarded it (a poll held or a stream opened for it counts
    /// against the per-address cap).
    pub(super) fn carry_out(
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
                let hold = Hold::new(
                    wait.room,
                    slot,
                    wait.after,
                    wait.since_all,
                    wait.reset,
                    persist,
                    wait.cors,
                );
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
                let stream = Stream::new(open.room, slot, sse::stream_bytes(open.chunked));
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
    pub(super) fn answer_timeout(&mut self, id: ConnId, now: Instant) {
        let Some(hold) = self.conns.release_hold(id, &mut self.rooms) else {
            return;
        };
        let epoch = &self.rooms.get(hold.room()).epoch;
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
    pub(super) fn fan_out(&mut self, room_i: usize, seq: u64, now: Instant) {
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

    /// Sends the message `seq` to every event stream of a room (they stay in the room): one
    /// walk over the room's streams that queues each its shared event and pushes its heartbeat
    /// back (the same instant for all); the few that pass the unsent cap are cut off after it.
    fn stream_out(&mut self, room_i: usize, seq: u64, now: Instant) {
        let room = self.rooms.get(room_i);
        if room.streams.is_empty() {
            return;
        }
        let Some(mut event) = sse::Event::new(room, seq) else {
            return;
        };
        let beat = self.conns.heartbeat_after(now);
        // Allocates only when a stream is cut off.
        let mut over = Vec::new();
        for (_, s) in room.streams.iter() {
            let data = event.bytes(s.json, s.chunked);
            if !self.conns.queue_event(s.conn, data, beat) {
                over.push(s.conn);
            }
        }
        self.conns.metrics.events_sent += room.streams.len() as u64;
        for id in over {
            // A slow reader: it leaves the room.
            self.conns.cut_off(id, &mut self.rooms);
        }
    }
}
