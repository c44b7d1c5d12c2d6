//! The message log: in this process's memory (the default), or shared through a broker.
//!
//! In memory, a room's history in `room.rs` *is* the log: a publish appends to it and is
//! delivered at once. With a shared log (`Config::shared_log`, e.g. Redis with `--redis`) the
//! log lives outside the core and the room's history becomes this node's **cache** of it; the
//! core talks to the log through the data types of [`crate::broker`]. This file holds what the
//! core keeps about that exchange and the rules that keep a room's cache true to the log:
//!
//! * [`Log`]: whether the log is shared and up, the queue of [`BrokerRequest`]s for the adapter
//!   ([`Server::poll_broker`](crate::Server::poll_broker)), the requests that wait for an answer
//!   (a publish until its append is stored, a poll until its room is loaded), and per room a
//!   [`Sync`]: the fetch in flight and the polls waiting for it. (Whether a room's epoch and
//!   last sequence are known is `Room::loaded`, so a room made anew starts unknown.)
//! * [`Log::needs_load`]: whether a poll may be answered from the cache. Not when the room was
//!   never loaded on this node (its epoch and last sequence are unknown, so a cursor handed out
//!   by another node could be misread), nor when the cursor is ahead of the cache or of another
//!   epoch (this node may simply not have heard yet): such a poll waits for the room's fetch.
//!   Nor when the cursor is older than the cache (the log may still hold what the cache let go):
//!   that poll gets a fetch of its own, and is answered from what it brings.
//! * [`restart`] and [`insert`]: the only two ways the cache changes. A message is cached only
//!   in sequence (`seq == last_seq + 1`); anything else is a duplicate (dropped) or a gap (a
//!   fetch fills it), so every node's cache is a contiguous run of the log.
//!
//! Delivery is one path in both modes: a message entering a room's history (pushed by a publish
//! in memory, or inserted here from the log) is fanned out by `Server::fan_out`. The driving
//! code (`handle_broker`, the publish and park steps) is in `server/shared.rs`, the cache's
//! updates from the feed and from fetches in `server/cache.rs`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::broker::BrokerRequest;
use crate::cursor::Since;
use crate::http::Request;
use crate::room::Room;
use crate::server::Reply;
use crate::ConnId;

/// What the core knows of the message log.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// The log is outside the core (`Config::shared_log`).
    pub shared: bool,
    /// The broker reported `Up` more recently than `Down` (always true in memory).
    pub up: bool,
    next_token: u64,
    /// Requests for the adapter, oldest first.
    requests: VecDeque<BrokerRequest>,
    /// Requests waiting for the log, by the token their connection waits for.
    pub waits: HashMap<u64, Wait>,
    /// Fetches in flight, by token.
    pub fetches: HashMap<u64, Fetching>,
    /// Per room name.
    pub rooms: HashMap<Box<str>, Sync>,
    /// Set while a parked poll is routed again, to the load it waited for: the same kind of
    /// load is not asked twice (after the room's fetch the cache is as fresh as it gets; after
    /// a poll's own fetch, what the log holds was lent to the room).
    pub replaying: Option<Load>,
    /// Appends and fetches that failed (for `/metrics`).
    pub failures: u64,
}

/// A fetch in flight.
#[derive(Debug)]
pub(crate) struct Fetching {
    pub room: Box<str>,
    /// It reads the messages after this sequence number.
    pub after_seq: u64,
    /// `None`: the room's own fetch (it brings the cache up to date). `Some(token)`: the fetch
    /// of the poll waiting with `token`, whose cursor is older than the cache.
    pub for_poll: Option<u64>,
}

/// What a poll must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Load {
    /// The room's fetch: the cache is unknown or behind.
    Room,
    /// The messages after this sequence, older than the cache.
    Older(u64),
}

/// A request waiting for the log.
#[derive(Debug)]
pub(crate) enum Wait {
    /// A publish whose append was requested.
    Publish(Pending),
    /// A poll parked until its room is loaded; it is routed again then.
    Poll {
        conn: ConnId,
        request: Box<Request>,
        reply: Reply,
    },
}

/// A publish waiting for its append to be stored.
#[derive(Debug)]
pub(crate) struct Pending {
    pub conn: ConnId,
    pub room: Box<str>,
    pub text: Bytes,
    pub id: Option<Box<str>>,
    pub json: bool,
    pub cors: Option<u16>,
    /// How to answer the publisher.
    pub reply: Reply,
}

/// One room's state against the log.
#[derive(Debug, Default)]
pub(crate) struct Sync {
    /// The token of the fetch in flight.
    pub fetching: Option<u64>,
    /// Fetch again once the one in flight is answered.
    pub again: bool,
    /// Tokens of the polls parked until the fetch in flight is answered.
    pub parked: Vec<u64>,
}

impl Log {
    /// The log of a server: in memory, or shared (and down until the broker reports `Up`).
    pub fn new(shared: bool) -> Log {
        Log {
            shared,
            up: !shared,
            ..Log::default()
        }
    }

    /// A fresh correlation token.
    pub fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Queues a request for the adapter.
    pub fn request(&mut self, request: BrokerRequest) {
        self.requests.push_back(request);
    }

    /// The next request for the adapter.
    pub fn poll_request(&mut self) -> Option<BrokerRequest> {
        self.requests.pop_front()
    }

    /// Asks the log for the messages of `room` after `after_seq`, at most `limit`: queues the
    /// request and remembers what its answer is for (`for_poll`: the wait of the one poll it
    /// answers, or a fetch of the room's cache). Returns the fetch's token.
    pub fn fetch(
        &mut self,
        room: Box<str>,
        after_seq: u64,
        for_poll: Option<u64>,
        limit: usize,
    ) -> u64 {
        let token = self.token();
        self.fetches.insert(
            token,
            Fetching {
                room: room.clone(),
                after_seq,
                for_poll,
            },
        );
        self.request(BrokerRequest::Fetch {
            token,
            room,
            after_seq,
            limit,
        });
        token
    }

    /// Ends the wait `token` if it is a parked poll: its connection, request and reply. A wait
    /// of another kind stays.
    pub fn take_poll(&mut self, token: u64) -> Option<(ConnId, Box<Request>, Reply)> {
        match self.waits.remove(&token)? {
            Wait::Poll {
                conn,
                request,
                reply,
            } => Some((conn, request, reply)),
            other => {
                self.waits.insert(token, other);
                None
            }
        }
    }

    /// Ends the wait `token` if it is a publish waiting for its append. A wait of another kind
    /// stays.
    pub fn take_publish(&mut self, token: u64) -> Option<Pending> {
        match self.waits.remove(&token)? {
            Wait::Publish(p) => Some(p),
            other => {
                self.waits.insert(token, other);
                None
            }
        }
    }

    /// Drops the state of `room` when nothing is in flight for it, so the table holds only
    /// rooms with a fetch or waiting polls (rooms come and go).
    pub fn forget_idle(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|s| s.fetching.is_none() && !s.again && s.parked.is_empty())
        {
            self.rooms.remove(room);
        }
    }

    /// Whether a poll in `room` with cursor `since` must wait for a fetch before it is answered
    /// (see the module docs), and which. Always `None` in memory.
    pub fn needs_load(&self, room: &Room, since: Option<Since>) -> Option<Load> {
        if !self.shared {
            return None;
        }
        let load = match since {
            _ if !room.loaded => Some(Load::Room),
            Some(Since::Seq(s)) if s > room.last_seq => Some(Load::Room),
            Some(Since::Seq(s)) if s + 1 < room.first_seq() => Some(Load::Older(s)),
            Some(Since::OtherEpoch) => Some(Load::Room),
            Some(Since::Seq(_) | Since::All) | None => None,
        };
        match (self.replaying, load) {
            (Some(Load::Older(_)), _) | (Some(Load::Room), Some(Load::Room)) => None,
            (_, load) => load,
        }
    }
}

/// Empties a room's cache and numbers it anew: epoch `epoch` (empty: the log holds nothing of
/// the room), the last message being `last_seq`.
pub(crate) fn restart(room: &mut Room, epoch: &str, last_seq: u64) {
    room.history.clear();
    room.shared = None;
    room.ids.clear();
    room.bytes = 0;
    room.epoch = epoch.into();
    room.last_seq = last_seq;
}

/// Caches the message `seq` if it is the next one (`true`); a message already cached or beyond
/// the next is left out (`false`).
pub(crate) fn insert(
    room: &mut Room,
    seq: u64,
    time_ms: u64,
    text: Bytes,
    id: Option<Box<str>>,
    caps: (usize, usize),
) -> bool {
    if seq != room.last_seq + 1 {
        return false;
    }
    room.push(text, id, time_ms, caps.0, caps.1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_takes_messages_in_sequence_only() {
        let mut room = Room::new("r", "e");
        let text = || Bytes::from_static(b"x");
        assert!(insert(&mut room, 1, 0, text(), None, (10, 100_000)));
        assert!(
            !insert(&mut room, 1, 0, text(), None, (10, 100_000)),
            "duplicate"
        );
        assert!(!insert(&mut room, 3, 0, text(), None, (10, 100_000)), "gap");
        assert!(insert(
            &mut room,
            2,
            0,
            text(),
            Some("k".into()),
            (10, 100_000)
        ));
        assert_eq!((room.first_seq(), room.last_seq), (1, 2));
        restart(&mut room, "f", 40);
        assert_eq!((room.first_seq(), room.last_seq, room.bytes), (41, 40, 0));
        assert!(room.ids.is_empty() && &*room.epoch == "f");
        assert!(insert(&mut room, 41, 0, text(), None, (10, 100_000)));
    }

    #[test]
    fn idle_rooms_leave_the_table() {
        let mut log = Log::new(true);
        log.rooms.entry("a".into()).or_default().fetching = Some(1);
        log.rooms.entry("b".into()).or_default().parked.push(2);
        log.rooms.entry("c".into()).or_default();
        for room in ["a", "b", "c", "unknown"] {
            log.forget_idle(room);
        }
        let mut left: Vec<&str> = log.rooms.keys().map(|k| &**k).collect();
        left.sort();
        assert_eq!(left, ["a", "b"]);
    }

    #[test]
    fn polls_wait_for_what_the_cache_cannot_answer() {
        let mut log = Log::new(true);
        let mut room = Room::new("r", "e");
        room.last_seq = 5;
        assert_eq!(
            log.needs_load(&room, None),
            Some(Load::Room),
            "never loaded"
        );
        room.loaded = true;
        assert_eq!(log.needs_load(&room, None), None);
        assert_eq!(log.needs_load(&room, Some(Since::All)), None);
        assert_eq!(log.needs_load(&room, Some(Since::Seq(5))), None);
        assert_eq!(log.needs_load(&room, Some(Since::Seq(6))), Some(Load::Room));
        let other = Some(Since::OtherEpoch);
        assert_eq!(log.needs_load(&room, other), Some(Load::Room));
        room.history.push_back(crate::room::Message {
            seq: 5,
            time_ms: 0,
            text: Bytes::new(),
            id: None,
        });
        assert_eq!(log.needs_load(&room, Some(Since::Seq(4))), None);
        assert_eq!(
            log.needs_load(&room, Some(Since::Seq(3))),
            Some(Load::Older(3))
        );
        log.replaying = Some(Load::Room);
        assert_eq!(log.needs_load(&room, Some(Since::Seq(6))), None);
        assert_eq!(
            log.needs_load(&room, Some(Since::Seq(3))),
            Some(Load::Older(3))
        );
        log.replaying = Some(Load::Older(3));
        assert_eq!(log.needs_load(&room, Some(Since::Seq(3))), None);
        assert_eq!(Log::new(false).needs_load(&room, Some(Since::Seq(6))), None);
    }
}
