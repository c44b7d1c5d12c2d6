//! Keeping each room's cache in step with the shared message log.
//!
//! A message of the log's feed enters a loaded room's cache in sequence and is fanned out; a gap
//! or another epoch asks for a fetch; a fetch's answer brings the cache in line (or starts it
//! over, answering the polls and ending the streams of a numbering that is gone) and then routes
//! the polls parked on it again. The rules of the cache are in `log.rs`.

use std::time::Instant;

use bytes::Bytes;

use super::Server;
use crate::broker::History;
use crate::log::{self, Fetching};
use crate::ConnId;

/// A message entering a room's cache.
pub(super) struct Incoming {
    pub room: Box<str>,
    pub epoch: Box<str>,
    pub seq: u64,
    pub time_ms: u64,
    pub text: Bytes,
    pub id: Option<Box<str>>,
}

impl Server {
    /// A message of the log: cached and fanned out if it is the next of a loaded room; a gap or
    /// another epoch asks for a fetch; a duplicate is dropped.
    pub(super) fn on_message(&mut self, m: Incoming, now: Instant) {
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
    pub(super) fn fetch(&mut self, i: usize) -> bool {
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
        let limit = self.config.history_messages;
        let token = self.log.fetch(name.clone(), after_seq, None, limit);
        if let Some(sync) = self.log.rooms.get_mut(&name) {
            sync.fetching = Some(token);
        }
        true
    }

    pub(super) fn on_fetched(
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
}
