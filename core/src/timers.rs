//! Deadlines: at most one per connection, in one ordered set.
//!
//! Entries are keyed by `(deadline, conn)`, so arming, disarming and finding the next one are
//! O(log n) and a timeout never scans. A deadline that only moves later (the idle clock of a
//! keep-alive connection after each request) keeps its entry and records the new due time in
//! the connection's [`Deadline`]; when the entry fires early it re-files itself.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

/// A connection's side of its deadline. Times are [`Ticks`] (16 bytes less per connection than
/// two `Instant`s and an `Option`), and the struct is packed to 4-byte alignment: 20 bytes,
/// not 24, so the connection's slot packs its small fields around it. Fields are only read and
/// written by value.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
pub(crate) struct Deadline {
    /// The connection's entry in the timer set, if armed.
    at: Ticks,
    /// When the timer is really due: later than its entry when a keep-alive or head deadline
    /// was pushed back without touching the set (the entry then re-files itself when it fires).
    due: Ticks,
    /// The kind of the armed entry; `None`: no entry (`at` and `due` mean nothing then).
    kind: Option<TimerKind>,
}

impl Deadline {
    /// No deadline.
    pub fn none() -> Deadline {
        Deadline {
            at: 0,
            kind: None,
            due: 0,
        }
    }

    /// The kind of the armed deadline, if any.
    pub fn kind(&self) -> Option<TimerKind> {
        self.kind
    }
}

/// A time as nanoseconds since the timers' origin (the server's start): 8 bytes, where an
/// `Instant` takes 16. Enough for 584 years.
pub(crate) type Ticks = u64;

/// Every connection's deadline, ordered.
#[derive(Debug)]
pub(crate) struct Timers {
    /// Entries keyed by `(deadline, conn)`: 16 bytes each.
    set: BTreeSet<(Ticks, ConnId)>,
    /// What tick 0 is. No time the core sees is earlier (its clock never goes backwards).
    origin: Instant,
}

impl Timers {
    /// No deadlines; times are counted from `origin`.
    pub fn new(origin: Instant) -> Timers {
        Timers {
            set: BTreeSet::new(),
            origin,
        }
    }

    /// `t` as ticks (a time before the origin, which the core never sees, counts as tick 0).
    pub fn ticks(&self, t: Instant) -> Ticks {
        let nanos = t.saturating_duration_since(self.origin).as_nanos();
        Ticks::try_from(nanos).unwrap_or(Ticks::MAX)
    }

    /// Ticks back to a time.
    fn instant(&self, t: Ticks) -> Instant {
        self.origin + Duration::from_nanos(t)
    }

    /// Ticks back to a time; `None` for `Ticks::MAX` ("never").
    pub fn time_of(&self, t: Ticks) -> Option<Instant> {
        (t != Ticks::MAX).then(|| self.instant(t))
    }

    /// Arms (`Some`) or disarms (`None`) the deadline of connection `id`.
    pub fn set(&mut self, id: ConnId, d: &mut Deadline, timer: Option<(Instant, TimerKind)>) {
        let timer = timer.map(|(at, kind)| (self.ticks(at), kind));
        self.set_ticks(id, d, timer);
    }

    fn set_ticks(&mut self, id: ConnId, d: &mut Deadline, timer: Option<(Ticks, TimerKind)>) {
        if d.kind.is_some() {
            self.set.remove(&(d.at, id));
        }
        d.kind = timer.map(|(_, kind)| kind);
        if let Some((at, _)) = timer {
            d.at = at;
            d.due = at;
            self.set.insert((at, id));
        }
    }

    /// Sets a deadline of `kind` at `due`. When the connection already has an entry of that
    /// kind that is not later, only its due time moves: a keep-alive connection answering
    /// request after request then touches the timer set once per timeout, not twice per request.
    pub fn push_back(&mut self, id: ConnId, d: &mut Deadline, kind: TimerKind, due: Instant) {
        self.push_back_ticks(id, d, kind, self.ticks(due));
    }

    /// [`push_back`](Self::push_back) to a time already in ticks (a fan-out converts its
    /// streams' common heartbeat time once, not once per stream).
    pub fn push_back_ticks(&mut self, id: ConnId, d: &mut Deadline, kind: TimerKind, due: Ticks) {
        match d.kind {
            Some(k) if k == kind && d.at <= due => d.due = due,
            _ => self.set_ticks(id, d, Some((due, kind))),
        }
    }

    /// When the earliest entry is due, if there is one.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(t, _)| self.instant(t))
    }

    /// The connection of the earliest entry, if it is due at `now`.
    pub fn expired(&self, now: Instant) -> Option<ConnId> {
        let now = self.ticks(now);
        self.set
            .first()
            .filter(|&&(deadline, _)| deadline <= now)
            .map(|&(_, id)| id)
    }

    /// Fires the entry of `id` at `now`: disarms it and returns its kind, or re-files it and
    /// returns `None` when it was pushed back past `now`.
    pub fn fire(&mut self, id: ConnId, d: &mut Deadline, now: Instant) -> Option<TimerKind> {
        let kind = d.kind();
        let due = d.due;
        self.set_ticks(id, d, None);
        let kind = kind?;
        if due > self.ticks(now) {
            // Pushed back meanwhile: file the entry again at its real deadline.
            self.set_ticks(id, d, Some((due, kind)));
            return None;
        }
        Some(kind)
    }

    /// Removes the earliest entry, which belongs to a connection whose slot is gone (it should
    /// have none).
    pub fn forget_first(&mut self) {
        self.set.pop_first();
    }

    /// Whether a connection's deadline is filed (for the invariant check).
    pub fn holds(&self, id: ConnId, d: &Deadline) -> bool {
        match d.kind {
            Some(_) => self.set.contains(&(d.at, id)),
            None => true,
        }
    }

    /// Every filed entry's connection.
    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.set.iter().map(|&(_, id)| id)
    }
}
