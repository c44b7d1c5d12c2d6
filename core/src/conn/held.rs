//! The Held state: a long-poll waiting in its room for a message or its deadline.
//!
//! A `GET /subscribe` with nothing new to return is held (Open → Held): its waiter sits in the
//! room's slab of waiters and the connection has one `Poll` deadline. A publish wakes it
//! (`wake`, the caller has already taken the waiter out), the deadline releases it
//! (`release_hold`, then the server answers `204`); either way it is Open again and marked
//! ready, so the requests buffered behind it are read next. Behind a trusted proxy each held
//! poll also counts against its forwarded client's cap (`proxied.rs`).

use std::time::Instant;

use core::net::IpAddr;

use super::{Conns, State};
use crate::response::Persist;
use crate::room::Rooms;
use crate::timers::TimerKind;
use crate::ConnId;

/// A held poll: where its waiter sits and what its timeout answer needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    /// The room and the waiter's slot in it, as `u32` (the config keeps the caps of rooms and
    /// connections under 2³², see [`Hold::new`]): 8 bytes less per connection slot.
    room: u32,
    slot: u32,
    /// The cursor answered with on timeout: the sequence number the poll waits after, or `0`
    /// itself when the poll asked for `since=0`.
    pub after: u64,
    pub since_all: bool,
    /// The poll's cursor was of another epoch: the timeout answer carries the reset signal.
    pub reset: bool,
    pub persist: Persist,
    /// Index of the request's allow-listed cross-origin `Origin`, if any (CORS headers).
    pub cors: Option<u16>,
}

impl Hold {
    /// A hold of waiter `slot` in `room`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        room: usize,
        slot: usize,
        after: u64,
        since_all: bool,
        reset: bool,
        persist: Persist,
        cors: Option<u16>,
    ) -> Hold {
        Hold {
            room: small_index(room),
            slot: small_index(slot),
            after,
            since_all,
            reset,
            persist,
            cors,
        }
    }

    /// The room the poll waits in.
    pub fn room(&self) -> usize {
        self.room as usize
    }

    /// The waiter's slot in its room.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }
}

/// A room index or a waiter slot as `u32`. Rooms number fewer than `max_rooms`, a room's
/// waiters and streams fewer than `max_connections`, and `Config::validate` keeps both under
/// 2³²: this cannot fail.
pub(crate) fn small_index(i: usize) -> u32 {
    u32::try_from(i).expect("rooms and connections are capped below 2^32 (Config::validate)")
}

impl Conns {
    /// Open → Held: the poll waits in `hold.room`'s waiter `hold.slot` until a publish or
    /// its deadline.
    pub fn hold(&mut self, id: ConnId, hold: Hold, now: Instant) {
        let c = &mut self.slab[id.0];
        c.state = State::Held(hold);
        self.held += 1;
        c.reader.release();
        let due = now + self.settings.poll_timeout;
        self.set_timer(id, Some((due, TimerKind::Poll)));
    }

    /// Takes a held poll out of its room (the connection stays in the Held state's place as
    /// Open). Returns the hold, if there was one.
    pub fn release_hold(&mut self, id: ConnId, rooms: &mut Rooms) -> Option<Hold> {
        let c = self.slab.get_mut(id.0)?;
        let State::Held(hold) = c.state else {
            return None;
        };
        c.state = State::Open;
        rooms.remove_waiter(hold.room(), hold.slot());
        self.held -= 1;
        self.proxied.release(id);
        Some(hold)
    }

    /// Held → Open for a poll answered by a publish, whose waiter slot the caller has already
    /// emptied. The caller then sends the answer and marks the connection
    /// [`ready`](Self::ready).
    pub fn wake(&mut self, id: ConnId) {
        let c = &mut self.slab[id.0];
        debug_assert!(
            matches!(c.state, State::Held(_)),
            "woke a connection not held"
        );
        c.state = State::Open;
        self.held -= 1;
        self.proxied.release(id);
        self.set_timer(id, None);
    }

    /// Before a poll from `client` behind a trusted proxy is held on `id` (or a stream opened):
    /// counts it, or says `false` when that client already holds `--max-connections-per-ip`.
    pub fn admit_proxied(&mut self, id: ConnId, client: IpAddr) -> bool {
        let cap = self.settings.max_connections_per_ip;
        self.proxied.admit(id, client, cap)
    }
}
