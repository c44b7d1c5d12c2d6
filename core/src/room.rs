//! Rooms: bounded message history and the slab of held polls.
//!
//! Messages are numbered from 1 in each room and never renumbered, so "everything after
//! sequence number N" is a range of the history, found by arithmetic, not by a search (see
//! `cursor.rs` for how the number travels to clients).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

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
    /// What `history` costs against `--history-bytes`: the sum of [`message_cost`].
    pub bytes: usize,
    /// The sequence number of the newest message ever published (0: none yet).
    pub last_seq: u64,
    pub waiters: Slab<Waiter>,
    /// Open event streams: unlike a poll, a stream stays after each delivery.
    pub streams: Slab<StreamWaiter>,
    /// Client-chosen publish ids still in the history, and their messages' sequence numbers.
    pub ids: HashMap<Box<str>, u64>,
    /// When a message was last published here or its last waiter left (set by [`Rooms`]).
    last_active: Option<Instant>,
    /// The room's key in the idle set of [`Rooms`], while it is there.
    idle_since: Option<Instant>,
    /// The JSON answer from the oldest retained message, shared by every poll that asks for
    /// it (`since=0`, the chat page's first request) until the room changes.
    pub shared: Option<Shared>,
    /// With a shared log: the room was read from the log, so `epoch` and `last_seq` are the
    /// log's (see `log.rs`). A room made anew starts unloaded.
    pub loaded: bool,
}

/// A JSON answer kept for the next poll that asks for the same: its representation (connection
/// header, CORS origin), its bytes and how many messages it carries.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub key: (Persist, Option<u16>),
    pub data: Bytes,
    pub messages: u64,
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
            last_active: None,
            idle_since: None,
            shared: None,
            loaded: false,
        }
    }

    /// Whether a held poll or an event stream waits here: such a room is never freed.
    pub fn in_use(&self) -> bool {
        !self.waiters.is_empty() || !self.streams.is_empty()
    }

    /// Sequence number of the oldest retained message (`last_seq + 1` when none is retained).
    pub fn first_seq(&self) -> u64 {
        self.history.front().map_or(self.last_seq + 1, |m| m.seq)
    }

    /// Appends a message and evicts the oldest ones past the caps (the newest one always stays).
    /// Returns its sequence number.
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
        self.shared = None;
        if let Some(id) = &id {
            self.ids.insert(id.clone(), seq);
        }
        self.bytes += message_cost(text.len(), id.as_deref());
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
            self.bytes -= message_cost(old.text.len(), old.id.as_deref());
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

/// Bytes a retained message costs besides its text and id: the `Message` itself, its slot in
/// the history and, for an id, its entry in the id map. Counted toward `--history-bytes`, so
/// the cap bounds memory, not only text.
pub(crate) const MESSAGE_OVERHEAD: usize = 96;

/// What a retained message costs against `--history-bytes`: its text, its id (kept twice: in
/// the message and as the key of the id map) and [`MESSAGE_OVERHEAD`].
pub(crate) fn message_cost(text: usize, id: Option<&str>) -> usize {
    text + id.map_or(0, |i| 2 * i.len()) + MESSAGE_OVERHEAD
}

/// Every room, in a slab (an index held by a waiter stays valid: a room with waiters is never
/// freed) and by name, with their lifecycle.
///
/// A room is created by a request that passed its checks ([`Rooms::create`]); one with neither
/// history nor waiters is freed at the end of the input that left it so ([`Rooms::collect`]);
/// one with history and no waiters sits in the idle set, ordered by its last activity, and is
/// freed after `room_idle` ([`Rooms::expire`]) or, oldest first, when a new room needs its place
/// under `max_rooms`. Every step is O(log rooms): nothing scans the table.
#[derive(Debug)]
pub(crate) struct Rooms {
    slab: Slab<Room>,
    index: HashMap<Box<str>, usize>,
    /// Rooms with history and no waiters, by last activity.
    idle: BTreeSet<(Instant, usize)>,
    /// Rooms that may have neither history nor waiters: checked by `collect`.
    pending: Vec<usize>,
    /// The time of the input being handled (the server sets it).
    now: Instant,
    room_idle: Duration,
    max_rooms: usize,
    /// Rooms with messages freed so far: a room created after such a free numbers its
    /// messages in a new epoch, so cursors of an earlier room of the same name are told apart.
    generation: u64,
    /// Rooms created since the start (`/metrics`).
    pub created: u64,
    /// Rooms freed since the start (`/metrics`).
    pub evicted: u64,
}

impl Rooms {
    /// No rooms yet; at most `max_rooms`, each freed after `room_idle` without activity.
    pub fn new(max_rooms: usize, room_idle: Duration, now: Instant) -> Rooms {
        Rooms {
            slab: Slab::new(),
            index: HashMap::new(),
            idle: BTreeSet::new(),
            pending: Vec::new(),
            now,
            room_idle,
            max_rooms,
            generation: 0,
            created: 0,
            evicted: 0,
        }
    }

    /// The time of the input being handled: activity is dated with it.
    pub fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// How many rooms exist.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// The room at `i` (an index the caller holds: a room with waiters, or one found or created
    /// during this input).
    pub fn get(&self, i: usize) -> &Room {
        &self.slab[i]
    }

    /// The room at `i`, if there is one.
    pub fn try_get(&self, i: usize) -> Option<&Room> {
        self.slab.get(i)
    }

    /// The room at `i`, to change.
    pub fn get_mut(&mut self, i: usize) -> &mut Room {
        &mut self.slab[i]
    }

    /// Every room.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.slab.iter().map(|(_, r)| r)
    }

    /// The room named `name`, if it exists.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The room named `name`, created if needed (its messages numbered in `run_epoch`, or in a
    /// new epoch derived from it once rooms with messages were freed). At `max_rooms`, the room
    /// idle the longest is freed to make space; `None` when every room is in use.
    pub fn create(&mut self, name: &str, run_epoch: &str) -> Option<usize> {
        if let Some(i) = self.find(name) {
            return Some(i);
        }
        if self.slab.len() >= self.max_rooms {
            self.collect();
        }
        if self.slab.len() >= self.max_rooms {
            let &(_, oldest) = self.idle.first()?;
            self.free(oldest);
        }
        let epoch = room_epoch(run_epoch, self.generation);
        let mut room = Room::new(name, &epoch);
        room.last_active = Some(self.now);
        let i = self.slab.insert(room);
        self.index.insert(name.into(), i);
        self.created += 1;
        // Freed at the end of this input unless it gets a message or a waiter.
        self.pending.push(i);
        Some(i)
    }

    /// Appends a message to room `i` (see [`Room::push`]) and dates the room's activity.
    pub fn push(
        &mut self,
        i: usize,
        text: Bytes,
        id: Option<Box<str>>,
        time_ms: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> u64 {
        let room = &mut self.slab[i];
        let seq = room.push(text, id, time_ms, max_messages, max_bytes);
        room.last_active = Some(self.now);
        self.refile(i);
        seq
    }

    /// Adds a held poll to room `i`'s waiters; returns its slot.
    pub fn add_waiter(&mut self, i: usize, waiter: Waiter) -> usize {
        let slot = self.slab[i].waiters.insert(waiter);
        self.refile(i);
        slot
    }

    /// Takes a held poll out of room `room`'s waiters.
    pub fn remove_waiter(&mut self, room: usize, slot: usize) {
        self.leave(room, |r| {
            r.waiters.try_remove(slot);
        });
    }

    /// Takes an event stream out of room `room`'s streams.
    pub fn remove_stream(&mut self, room: usize, slot: usize) {
        self.leave(room, |r| {
            r.streams.try_remove(slot);
        });
    }

    /// Takes a poll or a stream out of room `room` (`take`); a room left unused dates its
    /// activity from now and is refiled.
    fn leave(&mut self, room: usize, take: impl FnOnce(&mut Room)) {
        let Some(r) = self.slab.get_mut(room) else {
            return;
        };
        take(r);
        if !r.in_use() {
            r.last_active = Some(self.now);
            self.refile(room);
        }
    }

    /// Puts room `i` where its state says: out of the idle set while it has waiters, in it
    /// (by last activity) while it has history only, and up for freeing when it has neither.
    /// Call after every change to a room's waiters (a fan-out empties them by hand).
    pub fn refile(&mut self, i: usize) {
        let Some(r) = self.slab.get_mut(i) else {
            return;
        };
        let want = if !r.in_use() && !r.history.is_empty() {
            Some(r.last_active.unwrap_or(self.now))
        } else {
            None
        };
        if !r.in_use() && r.history.is_empty() {
            self.pending.push(i);
        }
        if r.idle_since == want {
            return;
        }
        if let Some(t) = r.idle_since.take() {
            self.idle.remove(&(t, i));
        }
        if let Some(t) = want {
            self.idle.insert((t, i));
            r.idle_since = Some(t);
        }
    }

    /// Frees the rooms left with neither history nor waiters (at the end of every input).
    pub fn collect(&mut self) {
        while let Some(i) = self.pending.pop() {
            if self
                .slab
                .get(i)
                .is_some_and(|r| !r.in_use() && r.history.is_empty())
            {
                self.free(i);
            }
        }
    }

    /// When the room idle the longest is due to be freed.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle.first().map(|&(t, _)| t + self.room_idle)
    }

    /// Frees every room without activity for `room_idle` at `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(t, i)) = self.idle.first() {
            if t + self.room_idle > now {
                break;
            }
            self.free(i);
        }
    }

    /// Removes room `i` (it has no waiters).
    fn free(&mut self, i: usize) {
        let Some(room) = self.slab.try_remove(i) else {
            return;
        };
        debug_assert!(!room.in_use(), "freed a room with waiters or streams");
        if let Some(t) = room.idle_since {
            self.idle.remove(&(t, i));
        }
        self.index.remove(&room.name);
        if room.last_seq > 0 {
            self.generation += 1;
        }
        self.evicted += 1;
    }

    /// Checks the lifecycle's invariants (for fuzzing and property tests).
    pub fn check(&self) -> Result<(), String> {
        if self.slab.len() > self.max_rooms {
            return Err(format!("{} rooms over the cap", self.slab.len()));
        }
        if self.index.len() != self.slab.len() {
            return Err("room index out of step".into());
        }
        let mut idle = 0;
        for (i, r) in self.slab.iter() {
            if self.index.get(&r.name) != Some(&i) {
                return Err(format!("room {i} not indexed by its name"));
            }
            if !r.in_use() && r.history.is_empty() {
                return Err(format!("room {i} is empty and was not freed"));
            }
            let should = !r.in_use() && !r.history.is_empty();
            match r.idle_since {
                Some(t) if should && self.idle.contains(&(t, i)) => idle += 1,
                None if !should => {}
                _ => return Err(format!("room {i} misfiled in the idle set")),
            }
        }
        if idle != self.idle.len() {
            return Err("idle set names freed rooms".into());
        }
        Ok(())
    }
}

/// The epoch tag of a room created after `generation` rooms with messages were freed: the run's
/// tag, then the generation in base 36 (a cursor's tag is at most 16 characters).
fn room_epoch(run_epoch: &str, generation: u64) -> String {
    if generation == 0 {
        return run_epoch.to_owned();
    }
    let room = 16usize.saturating_sub(run_epoch.len()).min(12) as u32;
    let generation = generation % 36u64.pow(room.max(1));
    format!("{run_epoch}{}", crate::cursor::epoch_tag(generation))
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
        let cost = |n| message_cost(n, None);
        for i in 0..10 {
            room.push(Bytes::from(vec![b'x'; 10]), None, i, 4, 10_000);
        }
        assert_eq!(room.history.len(), 4);
        assert_eq!(room.first_seq(), 7);
        assert_eq!(room.bytes, 4 * cost(10));
        room.push(Bytes::from(vec![b'y'; 35]), None, 0, 4, cost(10) + cost(35));
        assert_eq!(room.history.len(), 2);
        assert_eq!(room.bytes, cost(10) + cost(35));
        room.push(Bytes::from(vec![b'z'; 1]), Some("k".into()), 0, 4, 10_000);
        assert_eq!(room.bytes, cost(10) + cost(35) + cost(1) + 2);
    }

    #[test]
    fn ids_leave_with_their_messages() {
        let mut room = Room::new("r", "e");
        room.push(Bytes::from_static(b"a"), Some("k".into()), 0, 2, 10_000);
        assert_eq!(room.ids.get("k"), Some(&1));
        room.push(Bytes::from_static(b"b"), None, 0, 2, 10_000);
        room.push(Bytes::from_static(b"c"), None, 0, 2, 10_000);
        assert!(room.ids.is_empty());
    }

    #[test]
    fn after_is_a_range() {
        let mut room = Room::new("r", "e");
        for i in 0..5 {
            room.push(Bytes::from(format!("m{i}")), None, 0, 3, 10_000);
        }
        let seqs = |after| room.after(after).map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(0), [3, 4, 5]);
        assert_eq!(seqs(3), [4, 5]);
        assert_eq!(seqs(5), Vec::<u64>::new());
        assert_eq!(seqs(u64::MAX), Vec::<u64>::new());
    }

    #[test]
    fn room_epochs_fit_a_cursor_tag() {
        assert_eq!(room_epoch("abc", 0), "abc");
        assert_eq!(room_epoch("abc", 36), "abc10");
        let long = room_epoch("abcdefghij", u64::MAX);
        assert!(long.len() <= 16, "{long}");
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
