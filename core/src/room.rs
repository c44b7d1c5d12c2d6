//! Rooms: bounded message history, cursors, and the slab of held polls.
//!
//! A message's cursor is `<epoch>-<seq>`: the server's epoch tag (its start time in base 36) and
//! the message's number in its room. Sequence numbers start at 1 and never repeat within an
//! epoch, so "everything after cursor C" is a range of the history, found by arithmetic, not by
//! a search.

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
}

/// One room.
#[derive(Debug)]
pub(crate) struct Room {
    pub name: Box<str>,
    pub history: VecDeque<Message>,
    /// Sum of the texts' lengths in `history`.
    pub bytes: usize,
    /// The sequence number of the newest message ever published (0: none yet).
    pub last_seq: u64,
    pub waiters: Slab<Waiter>,
    /// Client-chosen publish ids still in the history, and their messages' sequence numbers.
    pub ids: HashMap<Box<str>, u64>,
}

impl Room {
    pub fn new(name: &str) -> Room {
        Room {
            name: name.into(),
            history: VecDeque::new(),
            bytes: 0,
            last_seq: 0,
            waiters: Slab::new(),
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

/// What a `since` (or `Last-Event-ID`) value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Since {
    /// `since=0`: everything retained, no gap signalled.
    All,
    /// A cursor of this epoch: messages after this sequence number.
    Seq(u64),
    /// A cursor of another epoch (from before a restart).
    OtherEpoch,
}

/// Parses a cursor. `None`: not a cursor.
pub(crate) fn parse_since(value: &str, epoch: &str) -> Option<Since> {
    if value == "0" {
        return Some(Since::All);
    }
    let (tag, seq) = value.rsplit_once('-')?;
    let valid_tag = !tag.is_empty()
        && tag.len() <= 16
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let valid_seq = !seq.is_empty() && seq.len() <= 19 && seq.bytes().all(|b| b.is_ascii_digit());
    if !valid_tag || !valid_seq {
        return None;
    }
    if tag != epoch {
        return Some(Since::OtherEpoch);
    }
    seq.parse().ok().map(Since::Seq)
}

/// The base-36 tag of an epoch (ms since the Unix epoch).
pub(crate) fn epoch_tag(mut ms: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(ms % 36) as usize]);
        ms /= 36;
        if ms == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
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
        let mut room = Room::new("r");
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
        let mut room = Room::new("r");
        room.push(Bytes::from_static(b"a"), Some("k".into()), 0, 2, 100);
        assert_eq!(room.ids.get("k"), Some(&1));
        room.push(Bytes::from_static(b"b"), None, 0, 2, 100);
        room.push(Bytes::from_static(b"c"), None, 0, 2, 100);
        assert!(room.ids.is_empty());
    }

    #[test]
    fn after_is_a_range() {
        let mut room = Room::new("r");
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
    fn cursors_parse() {
        assert_eq!(parse_since("0", "abc"), Some(Since::All));
        assert_eq!(parse_since("abc-7", "abc"), Some(Since::Seq(7)));
        assert_eq!(parse_since("abd-7", "abc"), Some(Since::OtherEpoch));
        for bad in [
            "",
            "-",
            "abc-",
            "-7",
            "ABC-7",
            "abc-x",
            "abc-99999999999999999999",
            "7",
        ] {
            assert_eq!(parse_since(bad, "abc"), None, "{bad:?}");
        }
        assert_eq!(epoch_tag(0), "0");
        assert_eq!(epoch_tag(36 * 36 + 35), "10z");
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
