//! Rooms: bounded message history and the slab of held polls.
//!
//! Messages are numbered from 1 in each room and never renumbered, so "everything after
//! sequence number N" is a range of the history, found by arithmetic, not by a search (see
//! `cursor.rs` for how the number travels to clients).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use slab::Slab;

use crate::response::Persist;
use crate::ConnId;

/// One published message.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub text: Bytes,
    pub id: Option<Box<str>>,
}

/// A held poll: who waits, and which representation it wants.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter {
    pub conn: ConnId,
    pub json: bool,
    pub persist: Persist,
    /// Index of an allow-listed cross-origin `Origin` (the answer carries CORS headers).
    pub cors: Option<u16>,
    /// The poll's cursor was of another epoch: its answer carries the reset signal.
    pub reset: bool,
}

/// An open event stream: who listens, and in which encoding (see `sse.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamWaiter {
    pub conn: ConnId,
    /// `format=json` events rather than the text as `data:` lines.
    pub json: bool,
    /// Each event is an HTTP/1.1 chunk (else the body is close-delimited).
    pub chunked: bool,
}

/// One room.
#[derive(Debug)]
pub(crate) struct Room {
    pub name: Box<str>,
    /// The epoch tag of this room's numbering: its cursors are `<epoch>-<seq>`. A room that
    /// is created again (after a restart, or in a shared log that lost its data) gets a new
    /// one, so a cursor from before is recognised rather than misread.
    pub epoch: Box<str>,
    pub history: VecDeque<Message>,
    /// Sum of the texts' lengths in `history`.
    pub bytes: usize,
    /// The sequence number of the newest message ever published (0: none yet).
    pub last_seq: u64,
    pub waiters: Slab<Waiter>,
    /// Open event streams: unlike a poll, a stream stays after each delivery.
    pub streams: Slab<StreamWaiter>,
    /// Client-chosen publish ids still in the history, and their messages' sequence numbers.
    pub ids: HashMap<Box<str>, u64>,
}

impl Room {
    pub fn new(name: &str, epoch: &str) -> Room {
        Room {
            name: name.into(),
            epoch: epoch.into(),
            history: VecDeque::new(),
            bytes: 0,
            last_seq: 0,
            waiters: Slab::new(),
            streams: Slab::new(),
            ids: HashMap::new(),
        }
    }

    /// Sequence number of the oldest retained message (`last_seq + 1` when none is retained).
    pub fn first_seq(&self) -> u64 {
        self.history.front().map_or(self.last_seq + 1, |m| m.seq)
    }

    /// Appends a message and evicts the oldest ones past the caps. Returns its sequence number.
    pub fn push(
        &mut self,
        text: Bytes,
        id: Option<Box<str>>,
        time_ms: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        if let Some(id) = &id {
            self.ids.insert(id.clone(), seq);
        }
        self.bytes += text.len();
        self.history.push_back(Message {
            seq,
            time_ms,
            text,
            id,
        });
        while self.history.len() > max_messages.max(1)
            || (self.bytes > max_bytes && self.history.len() > 1)
        {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.bytes -= old.text.len();
            if let Some(id) = old.id {
                if self.ids.get(&id) == Some(&old.seq) {
                    self.ids.remove(&id);
                }
            }
        }
        seq
    }

    /// The retained messages after sequence number `after`, oldest first.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Message> {
        let first = self.first_seq();
        let skip = after.saturating_add(1).saturating_sub(first);
        self.history
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }
}

/// Every room, by index (a room is never removed, so an index stays valid) and by name.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    list: Vec<Room>,
    index: HashMap<Box<str>, usize>,
}

impl Rooms {
    /// How many rooms exist.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The room at `i`.
    pub fn get(&self, i: usize) -> &Room {
        &self.list[i]
    }

    /// The room at `i`, to change.
    pub fn get_mut(&mut self, i: usize) -> &mut Room {
        &mut self.list[i]
    }

    /// Every room.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.list.iter()
    }

    /// The room named `name`, created on first use (numbered in `epoch`) unless there are
    /// `max_rooms` already.
    pub fn find_or_create(&mut self, name: &str, epoch: &str, max_rooms: usize) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if self.list.len() >= max_rooms {
            return None;
        }
        self.list.push(Room::new(name, epoch));
        self.index.insert(name.into(), self.list.len() - 1);
        Some(self.list.len() - 1)
    }

    /// Takes a held poll out of room `room`'s waiters.
    pub fn remove_waiter(&mut self, room: usize, slot: usize) {
        self.list[room].waiters.try_remove(slot);
    }

    /// Takes an event stream out of room `room`'s streams.
    pub fn remove_stream(&mut self, room: usize, slot: usize) {
        self.list[room].streams.try_remove(slot);
    }
}

/// Whether `name` is a valid room name: 1–64 of `[A-Za-z0-9_-]`.
pub(crate) fn valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let mut room = Room::new("r", "e");
        for i in 0..10 {
            room.push(Bytes::from(vec![b'x'; 10]), None, i, 4, 1000);
        }
        assert_eq!(room.history.len(), 4);
        assert_eq!(room.first_seq(), 7);
        assert_eq!(room.bytes, 40);
        room.push(Bytes::from(vec![b'y'; 35]), None, 0, 4, 50);
        assert_eq!(room.history.len(), 2);
        assert_eq!(room.bytes, 45);
    }

    #[test]
    fn ids_leave_with_their_messages() {
        let mut room = Room::new("r", "e");
        room.push(Bytes::from_static(b"a"), Some("k".into()), 0, 2, 100);
        assert_eq!(room.ids.get("k"), Some(&1));
        room.push(Bytes::from_static(b"b"), None, 0, 2, 100);
        room.push(Bytes::from_static(b"c"), None, 0, 2, 100);
        assert!(room.ids.is_empty());
    }

    #[test]
    fn after_is_a_range() {
        let mut room = Room::new("r", "e");
        for i in 0..5 {
            room.push(Bytes::from(format!("m{i}")), None, 0, 3, 100);
        }
        let seqs = |after| room.after(after).map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(0), [3, 4, 5]);
        assert_eq!(seqs(3), [4, 5]);
        assert_eq!(seqs(5), Vec::<u64>::new());
        assert_eq!(seqs(u64::MAX), Vec::<u64>::new());
    }

    #[test]
    fn room_names() {
        assert!(valid_room("main"));
        assert!(valid_room("A-b_9"));
        assert!(valid_room(&"a".repeat(64)));
        assert!(!valid_room(""));
        assert!(!valid_room(&"a".repeat(65)));
        assert!(!valid_room("a b"));
        assert!(!valid_room("é"));
    }
}
