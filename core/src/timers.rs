//! Deadlines: at most one per connection, in one ordered set.
//!
//! Entries are keyed by `(deadline, conn)`, so arming, disarming and finding the next one are
//! O(log n) and a timeout never scans. A deadline that only moves later (the idle clock of a
//! keep-alive connection after each request) keeps its entry and records the new due time in
//! the connection's [`Deadline`]; when the entry fires early it re-files itself.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::ConnId;

/// Which deadline a connection has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// A request (head or body) is incomplete, or nothing has arrived on a new connection.
    Head,
    /// Keep-alive: waiting for the next request.
    Idle,
    /// A held poll.
    Poll,
    /// An event stream: its heartbeat (after silence) or its maximum age, whichever is first.
    Heartbeat,
    /// Waiting for the adapter to finish closing.
    Closing,
    /// A request waits for the shared message log (a publish being stored, a poll whose room
    /// is being loaded).
    Broker,
}

/// A connection's side of its deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// The connection's entry in the timer set, and its kind.
    entry: Option<(Instant, TimerKind)>,
    /// When the timer is really due: later than its entry when a keep-alive or head deadline
    /// was pushed back without touching the set (the entry then re-files itself when it fires).
    due: Instant,
}

impl Deadline {
    /// No deadline.
    pub fn none(now: Instant) -> Deadline {
        Deadline {
            entry: None,
            due: now,
        }
    }

    /// The kind of the armed deadline, if any.
    pub fn kind(&self) -> Option<TimerKind> {
        self.entry.map(|(_, k)| k)
    }
}

/// Every connection's deadline, ordered.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, ConnId)>,
}

impl Timers {
    /// Arms (`Some`) or disarms (`None`) the deadline of connection `id`.
    pub fn set(&mut self, id: ConnId, d: &mut Deadline, timer: Option<(Instant, TimerKind)>) {
        if let Some((old, _)) = d.entry {
            self.set.remove(&(old, id));
        }
        d.entry = timer;
        if let Some((at, _)) = timer {
            d.due = at;
            self.set.insert((at, id));
        }
    }

    /// Sets a deadline of `kind` at `due`. When the connection already has an entry of that
    /// kind that is not later, only its due time moves: a keep-alive connection answering
    /// request after request then touches the timer set once per timeout, not twice per request.
    pub fn push_back(&mut self, id: ConnId, d: &mut Deadline, kind: TimerKind, due: Instant) {
        match d.entry {
            Some((at, k)) if k == kind && at <= due => d.due = due,
            _ => self.set(id, d, Some((due, kind))),
        }
    }

    /// When the earliest entry is due, if there is one.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(t, _)| t)
    }

    /// The earliest entry, if it is due at `now`.
    pub fn expired(&self, now: Instant) -> Option<(Instant, ConnId)> {
        self.set
            .first()
            .filter(|&&(deadline, _)| deadline <= now)
            .copied()
    }

    /// Fires the entry of `id` at `now`: disarms it and returns its kind, or re-files it and
    /// returns `None` when it was pushed back past `now`.
    pub fn fire(&mut self, id: ConnId, d: &mut Deadline, now: Instant) -> Option<TimerKind> {
        let kind = d.kind();
        let due = d.due;
        self.set(id, d, None);
        let kind = kind?;
        if due > now {
            // Pushed back meanwhile: file the entry again at its real deadline.
            self.set(id, d, Some((due, kind)));
            return None;
        }
        Some(kind)
    }

    /// Removes the entry of a connection whose slot is gone (it should have none).
    pub fn forget(&mut self, at: Instant, id: ConnId) {
        self.set.remove(&(at, id));
    }

    /// Whether a connection's deadline is filed (for the invariant check).
    pub fn holds(&self, id: ConnId, d: &Deadline) -> bool {
        match d.entry {
            Some((at, _)) => self.set.contains(&(at, id)),
            None => true,
        }
    }

    /// Every filed entry's connection.
    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.set.iter().map(|&(_, id)| id)
    }
}
